"""Verification and outputs: re-measure the answer against the baseline, then write the run directory
(``manifest.json``, ``candidates.jsonl``, ``best/``, ``report.md``, ``report.html``) and announce it."""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import edgeslim
from edgeslim.host import get_plugin_manager
from edgeslim.measure import Comparison, MeasurementFailed
from edgeslim.near_miss import near_miss_factor, near_misses
from edgeslim.predictor import error_summary
from edgeslim.records import CandidateRecord, Manifest, ManifestBest
from edgeslim.report import write_html_report, write_report
from edgeslim.runtime_floor import FLOOR_META
from edgeslim.store import ROTATIONS_META

if TYPE_CHECKING:
    from edgeslim.budget import Budget
    from edgeslim.search import SearchSession

#: how many of the most accurate in-budget candidates are re-measured before giving up
VERIFY_TOP = 3
#: when the first VERIFY_TOP all miss in verification, the second pass takes only candidates that ran at most
#: this share of the budget in the search: the first ones sat at its edge (FashionResNet at 0.5x: every
#: accurate candidate ran 0.46-0.50x in the search, all six verified ran 0.51-0.66x on a busy machine, and the
#: run ended with no answer while recipes at 0.42x were in the store)
FALLBACK_HEADROOM = 0.9

def verify(session: SearchSession, record: CandidateRecord) -> dict[str, Any]:
    """Re-measure ``record`` against the baseline, interleaved, and judge it on the budget (raises
    MeasurementFailed). The verdict is ``verification["passed"]``."""
    budget = session.budget
    reference, candidate = session.run_dir / str(session.baseline.artifact), session.run_dir / str(record.artifact)
    comparison = session.device.compare(reference, candidate)
    extended = straddles_budget(comparison, budget)
    if extended:
        # the budget lies inside the rounds' spread (a 0.3 ms OpenVINO model's process-to-process timings spread
        # 2x): one set of rounds more before the verdict, judged on the median of all of them
        comparison = comparison.merged(session.device.compare(reference, candidate))
    verification = comparison.to_dict()
    verification["extended"] = extended
    stat = "candidate_p50_ms" if budget.statistic == "p50" else "candidate_p90_ms"
    if budget.ratio is not None:
        passed = comparison.ratio <= budget.ratio
        verification["judged_on"] = f"ratio {comparison.ratio:.3f} <= {budget.ratio}"
    else:
        assert budget.latency_ms is not None
        passed = verification[stat] <= budget.latency_ms
        verification["judged_on"] = f"{stat} {verification[stat]:.3f} <= {budget.latency_ms:.3f} ms"
    over = budget.over_other_limits(record)
    if over:
        passed = False
        verification["judged_on"] += "; over " + ", ".join(over)
    verification["passed"] = passed
    return verification


def straddles_budget(comparison: Comparison, budget: Budget) -> bool:
    """Whether the budget lies inside the spread of the comparison's rounds: some met it, some did not."""
    limit = budget.ratio if budget.ratio is not None else budget.latency_ms
    rounds = comparison.round_values(budget.statistic, per_reference=budget.ratio is not None)
    return limit is not None and min(rounds) <= limit < max(rounds)


def verification_candidates(records: list[CandidateRecord], baseline_key: str, budget: Budget
                            ) -> list[CandidateRecord]:
    """What verification may pick from: every candidate measured within the budget, and the final recovery of
    one that was even when its own single measurement missed: the same plan and architecture, only retrained
    weights (on FashionResNet under OpenVINO, one plan ran 0.18 ms in the search and 0.32 ms after its final
    recovery); the interleaved re-measurement decides. A candidate verification rejected before is not one: one
    verdict per candidate (a search again re-verifying its edge cases would keep the first noisy pass).
    The candidate the final recovery was given to stays one, with its recovery, when the budget moved below it
    afterwards: it met the budget when chosen, and a ratio budget moves with the baseline's re-timings. A
    MobileNetV2-style search on OpenVINO at 0.3x gave 75% channels (0.144 ms, 65.8%) three epochs while the
    budget was 0.149 ms; one more baseline timing made it 0.142 ms, neither it nor its recovery (0.143 ms, 82.7%)
    was verified, and the one candidate left (59.4%) missed: no answer."""
    recoveries = [r for r in records if r.latency is not None and r.details.get("final_recovery")]
    eligible = {r.key for r in records if r.key != baseline_key and budget.meets(r, metric=False)}
    eligible |= {r.key for r in recoveries} | {r.details["final_recovery"].get("of") for r in recoveries}
    return [r for r in records if r.key in eligible and budget.over_metric_limit(r) is None
            and not r.details.get("verification_missed")]


def select_and_verify(session: SearchSession) -> tuple[CandidateRecord | None, dict[str, Any] | None]:
    """Re-measure the most accurate in-budget candidates against the baseline, interleaved; the first whose
    re-measurement still meets the budget is the answer. Nothing unverified is reported."""
    baseline = session.baseline
    contenders = verification_candidates(session.store.all(), baseline.key, session.budget)
    contenders.sort(key=lambda r: (session.metric_drop(r), session.latency_of(r)))
    base_ms = session.budget.baseline_ms or 1.0
    references: list[float] = []  # the baseline as each failed verification re-measured it
    answer, verification = verify_in_order(session, contenders[:VERIFY_TOP], references)
    if answer is None and references:
        # the search judged against its own baseline measurement; when that ran at a busier moment than the
        # re-measurements, every search-time ratio was too good. Judge the rest against the re-measured
        # baseline and try the most accurate that would still meet the budget with FALLBACK_HEADROOM to spare
        # (the ones that missed sat at its edge; the next at the edge would most likely miss too).
        reference_ms = sorted(references)[len(references) // 2]
        limit = FALLBACK_HEADROOM * (session.budget.latency_ms or base_ms) / base_ms
        tried = {r.key for r in contenders[:VERIFY_TOP]}
        rest = [r for r in contenders
                if r.key not in tried and (session.latency_of(r) or base_ms) / reference_ms <= limit]
        answer, verification = verify_in_order(session, rest[:VERIFY_TOP], references)
    if answer is None and session.budget.ratio is not None:
        answer, verification = _near_misses_verified(session, references)
    if answer is not None and verification is not None and session.budget.ratio is not None:
        answer, verification = _more_accurate_near_misses(session, answer, verification)
    return answer, verification


def _near_misses_verified(session: SearchSession, references: list[float]
                          ) -> tuple[CandidateRecord | None, dict[str, Any] | None]:
    """With no answer, the most accurate candidates that missed the budget within the baseline's own spread
    (:mod:`edgeslim.near_miss`), verified in turn."""
    budget = session.budget
    factor = near_miss_factor(budget)
    found = near_misses(session, factor)
    if not found:
        return None, None
    session.notes.append(
        f"no candidate met the budget ({budget.latency_ms:.3f} ms) on its search measurement; {len(found)} missed "
        f"it by at most {factor:.2f}x, within the baseline's own spread (its timings "
        f"{min(budget.baseline_timings_ms):.3f}-{max(budget.baseline_timings_ms):.3f} ms): the most accurate "
        f"{min(len(found), VERIFY_TOP)} are verified side by side with the original")
    return verify_in_order(session, found[:VERIFY_TOP], references)


def _more_accurate_near_misses(session: SearchSession, answer: CandidateRecord, verification: dict[str, Any]
                               ) -> tuple[CandidateRecord, dict[str, Any]]:
    """Candidates more accurate than the answer that the search counted over the budget by no more than its
    noise (the baseline's own spread, or how much slower verification timed the baseline than the search did:
    :func:`~edgeslim.near_miss.near_miss_factor`), verified most accurate first; the first that passes replaces
    the answer. Each is judged, as every answer is, on its own interleaved ratio."""
    base_ms = session.budget.baseline_ms or 0.0
    if base_ms <= 0.0:
        return answer, verification
    reference_ms = float(verification["reference_p50_ms"])
    factor = near_miss_factor(session.budget, reference_ms)
    more_accurate = near_misses(session, factor, than=answer)
    if not more_accurate:
        return answer, verification
    session.notes.append(
        f"{len(more_accurate)} candidate(s) more accurate than the answer {answer.key} measured at most {factor:.2f}x "
        f"over the budget in the search (the baseline timed {min(session.budget.baseline_timings_ms):.3f}-"
        f"{max(session.budget.baseline_timings_ms):.3f} ms in the search, {reference_ms:.3f} ms in verification): "
        f"the most accurate {min(len(more_accurate), VERIFY_TOP)} are verified too")
    found, found_verification = verify_in_order(session, more_accurate[:VERIFY_TOP], [])
    if found is None or found_verification is None:
        return answer, verification
    found_verification["instead_of"] = {"key": answer.key, "metric": answer.metric, "near_miss_factor": factor,
                                        "search_baseline_p50_ms": base_ms, "reference_p50_ms": reference_ms}
    return found, found_verification


def verify_in_order(session: SearchSession, records: list[CandidateRecord], references: list[float]
                    ) -> tuple[CandidateRecord | None, dict[str, Any] | None]:
    """Verify ``records`` in turn; the first that passes and its verification, or (None, None). Each miss is
    kept with its candidate and its re-measured baseline appended to ``references``."""
    for record in records:
        try:
            verification = verify(session, record)
        except MeasurementFailed as exc:
            session.notes.append(f"verification of {record.key} failed: {exc}")
            continue
        record.verification = verification
        if verification["passed"]:
            return record, verification
        # kept with the candidate: what a search again tightens its limit by (edgeslim.verified_search)
        record.details["verification_missed"] = verification
        session.store.put(record)
        references.append(verification["reference_p50_ms"])
        searched, limit = session.latency_of(record), session.budget.search_limit_ms
        how = "met the budget in the search" if searched is not None and limit is not None and searched <= limit \
            else "missed the budget narrowly in the search (a near miss)"
        session.notes.append(f"candidate {record.key} {how}; re-measured side by side, {verification['judged_on']} "
                             "is false: not reported")
    return None, None


def summary(session: SearchSession, record: CandidateRecord) -> dict[str, Any]:
    lat = record.latency or {}
    return {
        "key": record.key, "plan": record.plan, "artifact": record.artifact,
        "latency": {"p50_ms": lat.get("p50_ms"), "p90_ms": lat.get("p90_ms"), "cv": lat.get("cv"),
                    "n": lat.get("n"), "status": lat.get("status")},
        "metric": {"name": session.evaluator.info.name, "value": record.metric},
        **record.details,
    }


def _best_section(session: SearchSession, answer: CandidateRecord | None, verification: dict[str, Any] | None,
                  fastest: CandidateRecord | None) -> ManifestBest:
    if answer is None or verification is None:
        if fastest is None:
            return ManifestBest(plan=None, artifact=None, latency={},
                                metric={"name": session.evaluator.info.name}, meets_budget=False)
        return ManifestBest(**summary(session, fastest), meets_budget=False)  # type: ignore[typeddict-item]
    best_dir = session.run_dir / "best"
    shutil.rmtree(best_dir, ignore_errors=True)
    shutil.copytree(session.run_dir / Path(str(answer.artifact)).parent, best_dir)
    best: ManifestBest = ManifestBest(**summary(session, answer))  # type: ignore[typeddict-item]
    best["artifact"] = session.rel(best_dir / Path(str(answer.artifact)).name)
    # the reported latency is the independent re-measurement, not the search-time number
    best["latency"].update(p50_ms=verification["candidate_p50_ms"], p90_ms=verification["candidate_p90_ms"],
                           measured_by="verification")
    best["meets_budget"] = bool(verification["passed"])
    best["speedup"] = 1.0 / verification["ratio"]
    best["verification"] = verification
    return best


def write_outputs(session: SearchSession, answer: CandidateRecord | None, verification: dict[str, Any] | None,
                  wall_s: float, command: str = "search") -> Manifest:
    """Write the run directory and fire ``edgeslim_search_finished``. ``answer`` with a verification that did
    not pass (``edgeslim apply`` of a plan over budget) is reported as missing the budget everywhere."""
    records = session.store.all()
    _write_atomic(session.run_dir / "candidates.jsonl",
                  "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in records))
    baseline = session.baseline
    measured = [r for r in records if session.latency_of(r) is not None and r.key != baseline.key]
    # a candidate slower than the original is no one's "fastest": the speed-up gate dropped it
    faster = [r for r in measured if r.status != "not_faster"]
    fastest = min(faster, key=lambda r: session.latency_of(r) or 0.0) if faster else None
    most_accurate = min(measured, key=session.metric_drop) if measured else None
    best = _best_section(session, answer, verification, fastest)
    if command == "search":  # apply replays one plan: what else was measured says nothing about it
        session.notes += metric_loss_notes(session, answer if best["meets_budget"] else None, measured)
    config, profile, target = session.config, session.profile, session.target
    manifest = Manifest(
        edgeslim=edgeslim.__version__, status="ok" if best["meets_budget"] else "budget_not_met", command=command,
        profile=profile.name, profile_source=profile.source,
        target={"name": target.name, **target.settings.model_dump()}, model=config.model,
        budget=session.budget.describe(), baseline=summary(session, baseline), best=best,
        fastest=summary(session, fastest) if fastest else None,
        most_accurate=summary(session, most_accurate) if most_accurate else None,
        metric=asdict(session.evaluator.info), candidates_evaluated=len(measured),
        candidates_scored_only=len([r for r in records if r.latency is None]),
        candidates_not_faster=len([r for r in records if r.status == "not_faster"]),
        measured_this_run=session.measured_this_run,
        # every agent run on the device this run (re-measurements of noisy results included)
        device_runs={**session.device.runs, "total": sum(session.device.runs.values())},
        predictor=_predictor_summary(session, records),
        candidates_skipped_by_predictor=len([r for r in records if r.status == "predicted_over_budget"]),
        speed_gate=_gate_probes(session, records),
        strategy=config.strategy, trials=config.trials,
        # how structurally changed candidates were trained back (only used when the task has train_data)
        recovery={"method": config.recovery, "epochs": config.finetune_epochs, "options": config.recovery_options,
                  # a search's sensitivity phase trains single moves this long; apply has no such phase
                  **({"sensitivity_epochs": config.ranking_epochs} if command == "search" else {}),
                  "used": bool(session.task and session.task.train_data is not None)},
        layers=session.source.describe_layers(),
        measurement={"how": "board-side agent in its own process per model: warm-up, then timed runs until "
                            "min_runs and min_seconds are both reached; noisy runs (cv > max_cv) re-measured",
                     "where": session.device.where, **profile.measurement.model_dump()},
        notes=session.notes, wall_time_s=round(wall_s, 1), phases_s=session.clock.summary(),
        time_budget_s=config.time_budget_s, runtime_floor_ms=session.store.get_meta(FLOOR_META) or None,
        versions={"edgeslim": edgeslim.__version__, "python": platform.python_version(), "numpy": np.__version__,
                  **target.versions(), **_optional_versions()},
    )
    record_dicts = [r.to_dict() for r in records]
    _write_atomic(session.run_dir / "manifest.json", json.dumps(manifest, indent=2))
    write_report(session.run_dir, dict(manifest), record_dicts)
    write_html_report(session.run_dir, dict(manifest), record_dicts)
    get_plugin_manager().hook.edgeslim_search_finished(manifest=manifest)
    return manifest


#: an answer that loses more than this share of the baseline's metric is flagged in the notes (when no
#: ``--max-metric-drop`` judges it): on a CPU whose OpenVINO runs FashionResNet's original in 0.1 ms (bf16 on AMX),
#: half of that is the runtime's own cost per inference, and the one model that met a 0.5x budget kept 36% of 90%
LARGE_LOSS_SHARE = 0.1


def metric_loss_notes(session: SearchSession, answer: CandidateRecord | None,
                      measured: list[CandidateRecord]) -> list[str]:
    """What the metric limit ruled out when nothing met the budget, or, without a limit, that the answer lost a
    large share of the metric: the budget is then near what the target can do with the model at all."""
    budget, baseline = session.budget, session.baseline.metric
    if baseline is None:
        return []
    name = session.evaluator.info.name
    if budget.max_metric_drop is not None:
        if answer is not None:
            return []
        in_time = [r for r in measured if r.status != "not_faster" and budget.over_metric_limit(r)
                   and (session.latency_of(r) or float("inf")) <= (budget.latency_ms or 0.0)]
        if not in_time:
            return []
        closest = min(in_time, key=session.metric_drop)
        return [f"{len(in_time)} candidate(s) met the latency budget but lost more {name} than --max-metric-drop "
                f"{budget.max_metric_drop:g}; the least loss among them was {session.metric_drop(closest):.4f} "
                f"({closest.key}, {session.latency_of(closest):.3f} ms)"]
    if answer is None or session.metric_drop(answer) <= LARGE_LOSS_SHARE * abs(baseline):
        return []
    return [f"the answer loses {session.metric_drop(answer):.4f} of {name} ({baseline:.4f} uncompressed): nothing "
            f"measured within the budget kept more. The budget may be near what {session.target.name} can do with "
            "this model at all (its fixed cost per inference); --max-metric-drop (or the profile's "
            "budget.max_metric_drop) makes such a run end without an answer (exit 3) instead"]


def _gate_probes(session: SearchSession, records: list[CandidateRecord]) -> list[dict[str, Any]]:
    """Every speed-gate probe (e.g. each INT8 encoding, uniformly): what it asked, what ran, what it measured
    (and, for those timed again side by side, each rotation's median and why; ``retimed_ms`` the last)."""
    base_ms = session.budget.baseline_ms
    rotations = session.store.get_meta(ROTATIONS_META) or []
    probes = []
    for r in records:
        if not r.purpose.startswith("gate:"):
            continue
        ms = session.latency_of(r)
        effective = list((r.details.get("effective_precision") or {}).values())
        probes.append({"technique": r.purpose.removeprefix("gate:"), "settings": r.plan.get("model", {}),
                       "status": r.status, "latency_ms": ms, "ratio": ms / base_ms if ms and base_ms else None,
                       "metric": r.metric,
                       "metric_drop": session.metric_drop(r) if r.metric is not None else None,
                       "layers_int8": f"{effective.count('int8')} of {len(effective)}" if effective else None,
                       "side_by_side": (side_by_side := [{"why": rot["why"], "ms": rot["ms"][r.key],
                                                          "rotation_of": len(rot["keys"])}
                                                         for rot in rotations if r.key in rot["keys"]]),
                       "retimed_ms": side_by_side[-1]["ms"] if side_by_side else None, "note": r.note})
    return probes


def _predictor_summary(session: SearchSession, records: list[CandidateRecord]) -> dict[str, Any] | None:
    if session.predictor is None:
        return None
    errors = [r.details["prediction_error"] for r in records if r.details.get("prediction_error") is not None]
    repeats = [ms / r.details["architecture_timed_before_ms"] - 1 for r in records
               if r.details.get("architecture_timed_before_ms") and (ms := session.latency_of(r)) is not None]
    return {**session.predictor.describe(), "error": error_summary(errors), "repeatability": error_summary(repeats),
            "how": "per-layer table from uniform probes profiled on the target, scaled online by end-to-end "
                   "measurements (candidates' and architectures timed alone); error = prediction made before each "
                   "measurement / measured - 1; repeatability = a candidate's measurement / its architecture's "
                   "earlier timing - 1 (how far the device is from itself: no prediction gets nearer)"}


def _write_atomic(path: Path, text: str) -> None:
    """Readers (``report``, a resuming run, a user's script) never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _optional_versions() -> dict[str, str]:
    versions = {}
    for module in ("onnx", "torch", "torch_pruning"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 (an optional package missing or broken is only not reported)
            continue
    return versions
