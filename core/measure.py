"""Latency measurement: the runners that execute the board-side agent, and how results are judged.

Every model is timed in its own agent process. Two ONNX Runtime sessions in
one process distort each other (their worker threads spin), so comparisons
interleave separate processes: A, B, A, B, ... and report medians.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgeslim.profile import MeasurementSettings


def agent_path() -> Path:
    """The board-side agent: a self-contained script shipped as a data file beside the built-in targets. It is
    copied to the device and run there, never imported, so the host locates it without importing a target."""
    return Path(str(importlib.resources.files("edgeslim.targets").joinpath("agent.py"))).resolve()


USABLE = ("ok", "noisy", "throttled")
#: Usable but suspicious: measured again, the steadiest result kept.
REMEASURE = ("noisy", "throttled")


@dataclass
class LatencyStats:
    """One agent run. ``status`` is typed; a failed run has no latency numbers, never zeros."""

    status: str
    p50_ms: float | None = None
    p90_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    cv: float | None = None
    n: int = 0
    load_ms: float | None = None
    peak_rss_mb: float | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    error: str | None = None
    throttling: list[str] = field(default_factory=list)
    where: str = "local"
    attempts: int = 1
    samples_ms: list[float] = field(default_factory=list)
    board: dict[str, Any] = field(default_factory=dict)
    #: per-node times from the runtime's profiler, in a run of its own after the timed runs (when asked)
    layer_profile: list[dict[str, Any]] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.status in USABLE and self.p50_ms is not None

    def statistic(self, name: str) -> float:
        value = self.p50_ms if name == "p50" else self.p90_ms
        if value is None:
            raise ValueError(f"no {name} latency: measurement status {self.status} ({self.error})")
        return value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_agent(cls, data: dict[str, Any], where: str) -> LatencyStats:
        stats = cls.from_dict(data)
        stats.where = where
        stats.board = {"before": data.get("board_before"), "after": data.get("board_after"),
                       "python": data.get("python"), "machine": data.get("machine")}
        return stats


class Runner(Protocol):
    """Executes one agent job somewhere (this machine, a board over SSH) and returns its result."""

    where: str

    def run_job(self, job: dict[str, Any], timeout_s: float) -> LatencyStats: ...


class LocalRunner:
    """Runs the agent as a subprocess of this machine's Python."""

    where = "local"

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def run_job(self, job: dict[str, Any], timeout_s: float) -> LatencyStats:
        with tempfile.TemporaryDirectory(prefix="edgeslim-job-") as tmp:
            job_file = Path(tmp) / "job.json"
            job_file.write_text(json.dumps(job))
            # Run a copy from the job folder, as on a board: next to the original, targets/onnxruntime.py
            # would shadow the real onnxruntime package on the script's sys.path.
            agent = Path(tmp) / "edgeslim_agent.py"
            shutil.copyfile(agent_path(), agent)
            try:
                proc = subprocess.run(
                    [self.python, str(agent), "--job", str(job_file)],
                    capture_output=True, text=True, timeout=timeout_s,
                )
            except subprocess.TimeoutExpired:
                return LatencyStats(status="timeout", error=f"agent did not finish within {timeout_s:.0f}s")
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return LatencyStats(status="crash", error=f"agent exited {proc.returncode}: {tail}")
        return LatencyStats.from_agent(json.loads(lines[-1]), self.where)


def measurement_job(base: dict[str, Any], settings: MeasurementSettings, layer_profile: bool = False
                    ) -> dict[str, Any]:
    job = dict(base)
    job.update(warmup=settings.warmup, min_runs=settings.min_runs, min_seconds=settings.min_seconds,
               max_seconds=settings.max_seconds, max_cv=settings.max_cv, deadline_s=settings.timeout_s,
               layer_profile_runs=settings.layer_profile_runs if layer_profile else 0)
    return job


def measure(runner: Runner, job: dict[str, Any], settings: MeasurementSettings, layer_profile: bool = False
            ) -> LatencyStats:
    """Measure once; re-measure a noisy result up to ``settings.retries`` times and keep the steadiest.

    ``layer_profile`` also asks the agent for per-node times (a separate profiled run; the latency table)."""
    full_job = measurement_job(job, settings, layer_profile)
    result = runner.run_job(full_job, settings.timeout_s)
    attempts = 1
    while result.status in REMEASURE and attempts <= settings.retries:
        again = runner.run_job(full_job, settings.timeout_s)
        attempts += 1
        if again.usable and (again.status == "ok" or (again.cv or 1e9) < (result.cv or 1e9)):
            result = again
    result.attempts = attempts
    return result


@dataclass
class Comparison:
    """Two models timed in alternating processes; ratio = candidate / reference (below 1 is faster)."""

    reference_p50s: list[float]
    candidate_p50s: list[float]
    reference_p90s: list[float]
    candidate_p90s: list[float]
    reference: LatencyStats
    candidate: LatencyStats

    @property
    def reference_ms(self) -> float:
        return statistics.median(self.reference_p50s)

    @property
    def candidate_ms(self) -> float:
        return statistics.median(self.candidate_p50s)

    @property
    def ratio(self) -> float:
        return self.candidate_ms / self.reference_ms

    def round_values(self, statistic: str, per_reference: bool) -> list[float]:
        """Each round's candidate ``statistic`` ("p50"/"p90"), or its p50 over that round's reference when
        ``per_reference``: the spread a verdict on their median hides."""
        if per_reference:  # a ratio is judged on p50s
            return [c / r for c, r in zip(self.candidate_p50s, self.reference_p50s, strict=True)]
        return list(self.candidate_p50s if statistic == "p50" else self.candidate_p90s)

    def merged(self, more: Comparison) -> Comparison:
        """Both comparisons' rounds together (the latest stats kept)."""
        return Comparison(self.reference_p50s + more.reference_p50s, self.candidate_p50s + more.candidate_p50s,
                          self.reference_p90s + more.reference_p90s, self.candidate_p90s + more.candidate_p90s,
                          more.reference, more.candidate)

    def spread(self) -> dict[str, float]:
        return {
            "reference_min_ms": min(self.reference_p50s), "reference_max_ms": max(self.reference_p50s),
            "candidate_min_ms": min(self.candidate_p50s), "candidate_max_ms": max(self.candidate_p50s),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": f"{len(self.reference_p50s)} interleaved rounds, each model in its own agent process; "
                      "medians of per-round p50",
            "reference_p50_ms": self.reference_ms, "candidate_p50_ms": self.candidate_ms,
            "candidate_p90_ms": statistics.median(self.candidate_p90s),
            "ratio": self.ratio, "reference_p50s": self.reference_p50s, "candidate_p50s": self.candidate_p50s,
            **self.spread(),
        }


class MeasurementFailed(Exception):
    def __init__(self, stats: LatencyStats) -> None:
        super().__init__(f"{stats.status}: {stats.error}")
        self.stats = stats


def compare_interleaved(
    runner: Runner, reference_job: dict[str, Any], candidate_job: dict[str, Any], settings: MeasurementSettings,
    rounds: int | None = None,
) -> Comparison:
    """Alternate the two models' agent processes ``rounds`` times (order flipped every round)."""
    rounds = rounds or settings.verify_rounds
    ref_p50, cand_p50, ref_p90, cand_p90 = [], [], [], []
    last_ref = last_cand = None
    for i in range(rounds):
        order = [("ref", reference_job), ("cand", candidate_job)]
        if i % 2:
            order.reverse()
        for which, job in order:
            stats = measure(runner, job, settings)
            if not stats.usable:
                raise MeasurementFailed(stats)
            if which == "ref":
                ref_p50.append(stats.p50_ms)
                ref_p90.append(stats.p90_ms)
                last_ref = stats
            else:
                cand_p50.append(stats.p50_ms)
                cand_p90.append(stats.p90_ms)
                last_cand = stats
    assert last_ref is not None and last_cand is not None
    return Comparison(ref_p50, cand_p50, ref_p90, cand_p90, last_ref, last_cand)
