"""Near misses: candidates whose single search measurement put them over a ratio budget by no more than the
machine's own noise, verified side by side before the search settles for less.

One measurement on a shared machine can land anywhere in the baseline's own spread; the interleaved ratio of
verification cannot. So verification (:func:`edgeslim.outputs.select_and_verify`) also takes, most accurate first,
candidates that missed the budget by at most :func:`near_miss_factor`: when no candidate met it at all, and, once
there is an answer, those more accurate than it. Each is judged as every answer is, on its own interleaved ratio
against the original; nothing is reported faster than it measured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeslim.records import CandidateRecord

if TYPE_CHECKING:
    from edgeslim.budget import Budget
    from edgeslim.search import SearchSession

#: a search measurement at most this share over the budget is a near miss however quiet the baseline's timings
#: were. MobileNetV2-style on OpenVINO at 0.5x on a busy machine: the baseline timed 0.93-1.46 ms (median 1.08),
#: every block removed measured 0.631 ms against a 0.541 ms limit, and the search ended with no answer, unverified;
#: at 0.3x, every block removed + NNCF INT8 (84.74%) met the budget side by side at 0.298x while the search
#: answered 80.74%
NEAR_MISS_AT_LEAST = 0.05
#: verification re-measured the baseline this much slower than the search's own measurement of it: the search
#: judged every candidate against a baseline that ran at a quiet moment, so a candidate it counted over the budget
#: by up to that factor may well meet it (OpenVINO's FP32 FashionResNet: 0.54 ms in one search, 0.81 ms verifying)
REFERENCE_SLACK = 0.15


def near_miss_factor(budget: Budget, reference_ms: float | None = None) -> float:
    """How far over a ratio budget a search measurement may lie and still be the machine's noise: the baseline's
    slowest timing over their median, at least 1 + :data:`NEAR_MISS_AT_LEAST`; and, given verification's
    re-measured baseline ``reference_ms`` more than :data:`REFERENCE_SLACK` over the search's, that ratio when
    larger."""
    timings, base_ms = budget.baseline_timings_ms, budget.baseline_ms
    spread = max(timings) / base_ms if timings and base_ms else 1.0
    factor = max(1.0 + NEAR_MISS_AT_LEAST, spread)
    if reference_ms is not None and base_ms and reference_ms > base_ms * (1.0 + REFERENCE_SLACK):
        factor = max(factor, reference_ms / base_ms)
    return factor


def near_misses(session: SearchSession, factor: float, than: CandidateRecord | None = None
                ) -> list[CandidateRecord]:
    """Measured candidates never verified whose search time is within ``factor`` of the budget and within every
    other limit, most accurate first: those over the search's limit, or, given the answer ``than``, those more
    accurate than it."""
    budget = session.budget
    if budget.latency_ms is None:
        return []
    limit = budget.search_limit_ms or budget.latency_ms
    skip = {session.baseline.key} | ({than.key} if than is not None else set())

    def wanted(record: CandidateRecord) -> bool:
        ms = session.latency_of(record)
        if ms is None or ms > budget.latency_ms * factor:
            return False
        if than is None:
            return ms > limit
        return session.metric_drop(record) < session.metric_drop(than)

    found = [r for r in session.store.all()
             if r.key not in skip and r.status == "measured" and r.verification is None
             and not r.details.get("verification_missed") and wanted(r) and not budget.over_other_limits(r)]
    return sorted(found, key=lambda r: (session.metric_drop(r), session.latency_of(r)))
