"""Budget judgement: what a run's budget is in milliseconds, and whether a measured candidate meets it."""

from __future__ import annotations

import statistics
from typing import Any

from edgeslim.errors import EdgeslimError
from edgeslim.profile import BudgetSettings
from edgeslim.records import CandidateRecord


class Budget:
    """The latency budget (resolved against the measured baseline) and the profile's size and memory limits.

    The command line (``--budget-ms``/``--budget-ratio``) overrides the profile; a ratio is of the uncompressed
    model's measured latency, so it is known only once the baseline has been measured (:meth:`resolve`)."""

    def __init__(self, limits: BudgetSettings, budget_ms: float | None = None, budget_ratio: float | None = None,
                 profile_name: str = "", max_metric_drop: float | None = None) -> None:
        self.limits = limits
        #: the most of the metric a model may lose (``--max-metric-drop``, else the profile's); judged once the
        #: baseline's metric is known (:attr:`baseline_metric`)
        self.max_metric_drop = limits.max_metric_drop if max_metric_drop is None else max_metric_drop
        self.baseline_metric: float | None = None
        self.higher_is_better = True
        self.statistic = limits.statistic
        self._cli_ms = budget_ms
        self._cli_ratio = budget_ratio
        self._profile_name = profile_name
        #: the budget in ms once :meth:`resolve` has seen the baseline
        self.latency_ms: float | None = None
        #: the share of the budget the search itself aims within: below 1 once verification re-measured every
        #: in-budget candidate over the budget and the search went on (:mod:`edgeslim.verified_search`). The
        #: verdict on the answer is always the budget itself
        self.search_share = 1.0
        #: every timing of the baseline in the budget's statistic; a ratio budget is of their median
        #: (:mod:`edgeslim.baseline_timing`)
        self.baseline_timings_ms: list[float] = []

    @property
    def ratio(self) -> float | None:
        """The budget as a fraction of the baseline, when it was given that way (else None)."""
        if self._cli_ms is not None:
            return None
        if self._cli_ratio is not None:
            return self._cli_ratio
        return None if self.limits.latency_ms is not None else self.limits.ratio

    @property
    def baseline_ms(self) -> float | None:
        """The median of the baseline's timings: what a ratio budget and the speed-up gate are relative to."""
        return statistics.median(self.baseline_timings_ms) if self.baseline_timings_ms else None

    def add_baseline_timing(self, baseline_ms: float) -> float:
        """One more timing of the baseline; the budget is resolved again against the median of them all."""
        self.baseline_timings_ms.append(baseline_ms)
        return self.resolve(statistics.median(self.baseline_timings_ms))

    def resolve(self, baseline_ms: float) -> float:
        if self._cli_ms is not None:
            self.latency_ms = self._cli_ms
        elif self._cli_ratio is not None:
            self.latency_ms = self._cli_ratio * baseline_ms
        elif self.limits.latency_ms is not None:
            self.latency_ms = self.limits.latency_ms
        elif self.limits.ratio is not None:
            self.latency_ms = self.limits.ratio * baseline_ms
        else:
            raise EdgeslimError(f"profile {self._profile_name} sets no budget; give --budget-ms or --budget-ratio")
        return self.latency_ms

    def latency_of(self, record: CandidateRecord) -> float | None:
        """The record's measured latency in the budget's statistic (p50 or p90), or None if not measured."""
        return record.latency_ms(self.statistic)

    @property
    def search_limit_ms(self) -> float | None:
        """What a candidate must measure in the search: the budget, times :attr:`search_share`."""
        return None if self.latency_ms is None else self.latency_ms * self.search_share

    def meets(self, record: CandidateRecord, metric: bool = True) -> bool:
        """Measured within the search's limit (the budget, unless verification tightened it), faster than the
        baseline, and within every size/memory limit and (unless ``metric`` is False: a candidate whose longer
        final recovery may still bring it within) the metric limit."""
        if record.status == "not_faster":
            return False
        latency, limit = self.latency_of(record), self.search_limit_ms
        if latency is None or limit is None or latency > limit:
            return False
        return not self.over_other_limits(record, metric=metric)

    def over_metric_limit(self, record: CandidateRecord) -> str | None:
        """How the record loses more of the metric than ``max_metric_drop`` allows, in words (None: it does not)."""
        if self.max_metric_drop is None or self.baseline_metric is None:
            return None
        drop = metric_drop(record, self.baseline_metric, self.higher_is_better)
        return f"metric drop {drop:.4f} > max_metric_drop {self.max_metric_drop:g}" \
            if drop > self.max_metric_drop + 1e-12 else None

    def over_other_limits(self, record: CandidateRecord, metric: bool = True) -> list[str]:
        """The profile's size, memory and (with ``metric``) metric budgets this (measured) record exceeds, each
        said in words."""
        limits, details = self.limits, record.details
        over = []
        over_metric = self.over_metric_limit(record) if metric else None
        if over_metric:
            over.append(over_metric)
        size_kb = (details.get("artifact_bytes") or 0) / 1e3
        if limits.size_kb is not None and size_kb > limits.size_kb:
            over.append(f"artifact {size_kb:.1f} kB > size_kb {limits.size_kb}")
        stored = [v for v in (details.get("artifact_bytes"), details.get("packed_bytes"),
                              details.get("deep_compression_bytes")) if v]
        if limits.stored_kb is not None and stored and min(stored) / 1e3 > limits.stored_kb:
            over.append(f"smallest stored form {min(stored) / 1e3:.1f} kB > stored_kb {limits.stored_kb}")
        rss = (record.latency or {}).get("peak_rss_mb")
        if limits.memory_mb is not None and rss is not None and rss > limits.memory_mb:
            over.append(f"peak memory {rss:.0f} MB > memory_mb {limits.memory_mb}")
        return over

    def describe(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "ratio": self.ratio, "statistic": self.statistic,
                "search_limit_ms": self.search_limit_ms, "baseline_ms": self.baseline_ms,
                "baseline_timings_ms": self.baseline_timings_ms,
                "size_kb": self.limits.size_kb, "stored_kb": self.limits.stored_kb, "memory_mb": self.limits.memory_mb,
                "max_metric_drop": self.max_metric_drop}


def metric_drop(record: CandidateRecord, baseline_metric: float, higher_is_better: bool) -> float:
    """How much worse than the baseline (positive = worse), whatever the metric's direction."""
    if record.metric is None:
        return float("inf")
    delta = baseline_metric - record.metric
    return delta if higher_is_better else -delta
