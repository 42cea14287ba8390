"""The answer's final recovery: the most accurate candidate within the budget is rebuilt with a longer recovery
(``--final-epochs``, by default three times the search's) and measured again, before verification chooses.

The search recovers every candidate briefly, which is enough to rank them; the model a user takes home
deserves more. Its plan is unchanged, so its speed is too (measured again all the same); the manifest keeps
the metric before and after.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeslim.build import BuildPipeline, RecoveryChoice
from edgeslim.errors import EdgeslimError
from edgeslim.records import CandidateRecord
from edgeslim.technique import torch_stage_techniques

if TYPE_CHECKING:
    from edgeslim.search import SearchSession

#: the final recovery's default length, as a multiple of the search's recovery epochs
FINAL_EPOCHS_FACTOR = 3


def final_epochs(session: SearchSession) -> int:
    configured = session.config.final_epochs
    return FINAL_EPOCHS_FACTOR * session.config.finetune_epochs if configured is None else configured


def final_recovery(session: SearchSession) -> CandidateRecord | None:
    """Rebuild the best in-budget candidate with the longer recovery; None (and a note) when there is none to
    do: no answer yet, no training data, no torch-stage change in its plan, or no longer recovery asked for."""
    epochs = final_epochs(session)
    contenders = [r for r in session.store.all() if r.key != session.baseline.key and session.meets_budget(r)
                  and not r.details.get("final_recovery")]
    if not contenders or session.task is None or session.task.train_data is None:
        return None
    best = min(contenders, key=session.metric_drop)
    trained = torch_stage_techniques([t for t in session.techniques.values() if t.is_active(best.plan)], best.plan,
                                     can_train=True)
    if not trained or epochs <= session.config.finetune_epochs:
        return None
    recovery = RecoveryChoice(session.registry.recoveries, session.config.recovery, session.config.recovery_options,
                              epochs)
    builder = BuildPipeline(session.source, session.calibration, session.task.train_data, session.target,
                            session.techniques, recovery, session.run_dir, f"{session.context}\nfinal:{epochs}",
                            f"{session.scoring_context}\nfinal:{epochs}")
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
                                  "metric_before": best.metric}}
    record = session.measure_built(key, best.plan, "final recovery", artifact, None, builder, details)
    session.not_a_trial(key)
    session.notes.append(f"final recovery: {best.key} retrained for {epochs} epochs: {session.evaluator.info.name} "
                         f"{best.metric:.4f} -> {record.metric:.4f}")
    return record
