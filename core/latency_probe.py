"""A latency-table probe (one device measurement the table is built from) and the error summary the reports
quote. Apart from :mod:`edgeslim.predictor` so that the table's arithmetic stays in one readable module."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from edgeslim.plan import Plan


@dataclass
class Probe:
    """One device measurement used to build the table."""

    plan: Plan
    knob: str | None  # None: the baseline
    level: Any
    layers: list[str]  # the layers the probe set the knob on
    e2e_ms: float
    layer_ms: dict[str, float]
    rest_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "knob": self.knob, "level": self.level, "layers": self.layers,
                "e2e_ms": self.e2e_ms, "layer_ms": self.layer_ms, "rest_ms": self.rest_ms}


def to_end_to_end(probe: Probe) -> Probe:
    """The probe with its per-layer and rest times scaled so that they sum to its end-to-end time."""
    profiled = sum(probe.layer_ms.values()) + probe.rest_ms
    if profiled <= 0:
        return probe
    factor = probe.e2e_ms / profiled
    return Probe(probe.plan, probe.knob, probe.level, probe.layers, probe.e2e_ms,
                 {layer: ms * factor for layer, ms in probe.layer_ms.items()}, probe.rest_ms * factor)


def error_summary(errors: list[float]) -> dict[str, Any]:
    """Signed relative errors (predicted / measured - 1) -> the distribution the report quotes."""
    if not errors:
        return {"n": 0}
    absolute = sorted(abs(e) for e in errors)

    def pct(q: float) -> float:
        k = (len(absolute) - 1) * q
        lo, hi = math.floor(k), math.ceil(k)
        return absolute[lo] + (absolute[hi] - absolute[lo]) * (k - lo)

    return {"n": len(errors), "median_abs_pct": 100 * pct(0.5), "p90_abs_pct": 100 * pct(0.9),
            "max_abs_pct": 100 * absolute[-1], "mean_signed_pct": 100 * statistics.fmean(errors)}
