"""The answer's final recovery: the most accurate candidate within the budget is rebuilt with a longer recovery
(``--final-epochs``, by default three times the search's) and measured again, before verification chooses.

The search recovers every candidate briefly, which is enough to rank them; the model a user takes home
deserves more. Its plan is unchanged, so its speed is too (measured again all the same); the manifest keeps
the metric before and after.

More epochs do not always help (on the ResNet-18-style benchmark model, 3 epochs of distillation scored below
1), so the recovery is scored on the task's eval data after every epoch, in torch, and its best epoch is kept;
``--final-patience N`` stops it after N epochs without a better one (not by default: on that model the eval
score dipped for three epochs before its best, the fifth; benchmarks/results/final_recovery_epochs.md).
The recovery's ``final_defaults`` apply under the user's ``--recovery-option``s: for distillation, the weights
scored and kept are their moving average (``average=ema``), which over three epochs scored 0.06-1.55 points
above the last step's on the benchmark models (benchmarks/results/recovery_average.md). The candidate it
started from stays in the store, so a final recovery that scores or runs worse never replaces it: what the
target then runs (INT8 after it, say) is scored and verified as every candidate is. The manifest's
``final_recovery.epochs_watched`` has the per-epoch scores and ``final_recovery.recovery_options`` the settings.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from edgeslim.build import RECOVERY_EPOCHS_FILE, BuildPipeline, RecoveryChoice
from edgeslim.errors import EdgeslimError
from edgeslim.evaluate import TaskEvaluator, torch_metric
from edgeslim.records import CandidateRecord
from edgeslim.recovery import EpochSelection
from edgeslim.technique import torch_stage_techniques

if TYPE_CHECKING:
    from edgeslim.search import SearchSession

#: the final recovery's default length, as a multiple of the search's recovery epochs
FINAL_EPOCHS_FACTOR = 3
#: under ``--time-budget S``, the final recovery stops before an epoch that would end past this share of S
FINAL_TIME_SHARE = 0.5


def final_epochs(session: SearchSession) -> int:
    configured = session.config.final_epochs
    return FINAL_EPOCHS_FACTOR * session.config.finetune_epochs if configured is None else configured


def final_time_cap(session: SearchSession) -> float | None:
    """Under ``--time-budget``, the most the final recovery may take (:data:`FINAL_TIME_SHARE` of it, at least
    one epoch): the ResNet-18-style model's three epochs took 402 s after a 300 s search."""
    budget = session.config.time_budget_s
    return None if budget is None else FINAL_TIME_SHARE * budget


def final_options(session: SearchSession) -> dict[str, Any]:
    """The recovery's settings for the final recovery: its ``final_defaults`` under what the user set."""
    method = session.registry.recoveries.get(session.config.recovery)
    defaults = method.final_defaults if method is not None else {}
    return {**defaults, **session.config.recovery_options}


def final_recovery(session: SearchSession, of: CandidateRecord | None = None) -> CandidateRecord | None:
    """Rebuild ``of`` (by default the best in-budget candidate) with the longer recovery; None (and a note)
    when there is none to do: no answer yet, no training data, no torch-stage change in its plan, or no longer
    recovery asked for. A plan recovered before is not trained again: its stored record is returned."""
    epochs = final_epochs(session)
    contenders = [of] if of is not None else [
        # the metric limit is not asked of it yet: the longer recovery may bring it within
        r for r in session.store.all() if r.key != session.baseline.key and session.budget.meets(r, metric=False)
        and not r.details.get("final_recovery")]
    if not contenders or session.task is None or session.task.train_data is None:
        return None
    best = min(contenders, key=session.metric_drop)
    trained = torch_stage_techniques([t for t in session.techniques.values() if t.is_active(best.plan)], best.plan,
                                     can_train=True)
    if not trained or epochs <= session.config.finetune_epochs:
        return None
    options = final_options(session)
    recovery = RecoveryChoice(session.registry.recoveries, session.config.recovery, options, epochs)
    patience, cap = session.config.final_patience, final_time_cap(session)
    selection = None
    if isinstance(session.evaluator, TaskEvaluator):
        selection = EpochSelection(torch_metric(session.task), session.evaluator.info.higher_is_better, patience,
                                   session.evaluator.info.name, time_cap_s=cap)
    # the kept epoch depends on the eval data, the patience and the time cap: all part of what the build stands for
    final = f"final:{epochs} best epoch on the eval data, patience {patience}" if selection else f"final:{epochs}"
    if selection and cap is not None:
        final += f", within {cap:g} s"
    if options != session.config.recovery_options:
        final += f", recovery options {json.dumps(options, sort_keys=True)}"
    builder = BuildPipeline(session.source, session.calibration, session.task.train_data, session.target,
                            session.techniques, recovery, session.run_dir, f"{session.context}\n{final}",
                            f"{session.scoring_context}\n{final}", epoch_selection=selection)
    key = builder.key(best.plan)
    stored = session.store.get(key)
    if stored is not None and stored.latency is not None:
        return stored
    session.reporter.advance(f"final recovery ({epochs} epochs)")
    try:
        artifact = builder.build(best.plan)
    except EdgeslimError as exc:
        session.notes.append(f"final recovery of {best.key} failed ({exc}); the search's model stands")
        return None
    details = {"final_recovery": {"of": best.key, "epochs": epochs, "search_epochs": session.config.finetune_epochs,
                                  "metric_before": best.metric, "recovery_options": options}}
    watched_file = artifact.parent / RECOVERY_EPOCHS_FILE
    watched = json.loads(watched_file.read_text()) if watched_file.exists() else None
    if watched is not None:
        details["final_recovery"]["epochs_watched"] = watched
    record = session.measure_built(key, best.plan, "final recovery", artifact, None, builder, details)
    session.not_a_trial(key)
    how = (f"{epochs} epochs" if watched is None else
           f"up to {epochs} epochs, epoch {watched['kept_epoch']} of {watched['epochs_trained']} trained kept "
           f"(in torch: {', '.join(f'{s:.4f}' for s in watched['scores'])})")
    if watched is not None and watched.get("stopped_by_time_cap"):
        how += f"; --time-budget gave it {cap:g} s, so it stopped there"
    session.notes.append(f"final recovery: {best.key} retrained for {how}: {session.evaluator.info.name} "
                         f"{best.metric:.4f} -> {record.metric:.4f}")
    return record
