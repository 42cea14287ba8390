"""The typed records that cross modules: a candidate's result, the agent job, the manifest.

``CandidateRecord`` is built in one place (:meth:`CandidateRecord.new`), stored by ``edgeslim.store``,
written to ``candidates.jsonl`` and handed to plugins as a plain dict (:meth:`CandidateRecord.to_dict`), so a
reader of any of those sees the same keys.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypedDict

from edgeslim.plan import Plan


@dataclass
class CandidateRecord:
    """One plan's result within a run: its metric on the host, its latency on the device, where its artifact is.

    ``latency`` is the agent's statistics (``LatencyStats.to_dict()``) or None when the plan was not measured;
    ``details`` holds what was learnt about the built model (sizes, precision that really runs, the latency
    table's prediction and its error)."""

    key: str
    plan: Plan
    purpose: str
    #: what became of the plan: "scored" (host only), "measured", "not_faster", "failed",
    #: "predicted_over_budget", or "measure_<agent status>" (timeout, crash, unsupported...)
    status: str
    metric: float | None = None
    latency: dict[str, Any] | None = None
    artifact: str | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    #: set on a verified answer: the interleaved re-measurement against the baseline
    verification: dict[str, Any] | None = None

    @classmethod
    def new(cls, key: str, plan: Plan, purpose: str, status: str, *, metric: float | None = None,
            latency: dict[str, Any] | None = None, artifact: str | None = None, note: str = "",
            details: dict[str, Any] | None = None) -> CandidateRecord:
        return cls(key=key, plan=plan, purpose=purpose, status=status, metric=metric, latency=latency,
                   artifact=artifact, note=note, details=dict(details or {}))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidateRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["details"] = dict(known.get("details") or {})
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["verification"] is None:
            del data["verification"]
        return data

    @property
    def measured(self) -> bool:
        """The device gave a usable latency for this plan."""
        return bool(self.latency) and (self.latency or {}).get("status") in ("ok", "noisy")

    def latency_ms(self, statistic: str) -> float | None:
        """The measured ``p50``/``p90`` in ms, or None where there is no usable measurement."""
        return (self.latency or {})[f"{statistic}_ms"] if self.measured else None


class AgentJob(TypedDict, total=False):
    """What the board-side agent is told to run (written as ``job.json`` beside the artifact).

    ``runtime`` and ``artifact`` are required; a target adds its own ``options`` (threads, device, precision).
    The measurement settings (warm-up, minimum runs and seconds, per-node profiling) are added by
    ``edgeslim.measure.measurement_job``."""

    runtime: str
    artifact: str
    input_shapes: dict[str, list[int]]
    options: dict[str, Any]
    warmup: int
    min_runs: int
    min_seconds: float
    max_seconds: float
    max_cv: float
    deadline_s: float
    layer_profile_runs: int


class ManifestBest(TypedDict, total=False):
    key: str
    plan: Plan | None
    artifact: str | None
    latency: dict[str, Any]
    metric: dict[str, Any]
    meets_budget: bool
    speedup: float
    verification: dict[str, Any]


class Manifest(TypedDict, total=False):
    """``manifest.json`` of one device's run: the output contract of ``edgeslim search`` and ``apply``.

    The keys named in ``DESIGN.md`` (profile, target, budget.latency_ms, baseline.latency.p50_ms, baseline.metric,
    best.*, candidates_evaluated, versions) are relied on by users' scripts; others may be added."""

    edgeslim: str
    status: Literal["ok", "budget_not_met"]
    command: Literal["search", "apply"]
    profile: str
    profile_source: str
    target: dict[str, Any]
    model: str
    budget: dict[str, Any]
    baseline: dict[str, Any]
    best: ManifestBest
    fastest: dict[str, Any] | None
    most_accurate: dict[str, Any] | None
    metric: dict[str, Any]
    candidates_evaluated: int
    candidates_scored_only: int
    candidates_not_faster: int
    measured_this_run: int
    device_runs: dict[str, int]
    predictor: dict[str, Any] | None
    candidates_skipped_by_predictor: int
    #: the speed gate's uniform probes (each INT8 encoding...): settings, status, latency, ratio, layers in INT8
    speed_gate: list[dict[str, Any]]
    strategy: str
    trials: int
    recovery: dict[str, Any]
    layers: list[dict[str, Any]]
    measurement: dict[str, Any]
    notes: list[str]
    wall_time_s: float
    #: wall time per phase (loading, baseline, gate, sensitivity, latency table, search, final recovery...)
    phases_s: dict[str, float]
    time_budget_s: float | None
    #: the runtime's own cost per inference on the device (a model that only hands its input back), in the
    #: budget's statistic; None when not timed (``edgeslim apply``, or a target that cannot run it)
    runtime_floor_ms: float | None
    versions: dict[str, str]
