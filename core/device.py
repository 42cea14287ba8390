"""The device a run measures on: the target's benchmark jobs, executed by a runner, with every run counted."""

from __future__ import annotations

from pathlib import Path

from edgeslim.errors import EdgeslimError
from edgeslim.measure import Comparison, LatencyStats, LocalRunner, Runner, compare_interleaved, measure
from edgeslim.profile import MeasurementSettings, Profile
from edgeslim.records import AgentJob
from edgeslim.target import Target


class Device:
    """One profile's target on its runner (this machine or a pool of boards)."""

    def __init__(self, target: Target, runner: Runner, settings: MeasurementSettings,
                 input_shapes: dict[str, list[int]]) -> None:
        self.target = target
        self.runner = runner
        self.settings = settings
        self.input_shapes = input_shapes
        #: agent runs on the device, whatever they were for (candidates, the baseline timed again, latency table,
        #: verification, re-timing close contenders side by side)
        self.runs = {"candidates": 0, "baseline": 0, "latency_table": 0, "verification": 0, "retiming": 0}

    @property
    def where(self) -> str:
        return self.runner.where

    def job(self, artifact: Path) -> AgentJob:
        return AgentJob(**self.target.benchmark_job(artifact, self.input_shapes))  # type: ignore[typeddict-item]

    def measure(self, artifact: Path, counted_as: str = "candidates", layer_profile: bool = False) -> LatencyStats:
        """Time ``artifact`` (re-measured when noisy); ``layer_profile`` adds per-node times."""
        stats = measure(self.runner, dict(self.job(artifact)), self.settings, layer_profile=layer_profile)
        self.runs[counted_as] += stats.attempts
        return stats

    def rotate(self, artifacts: list[Path], rounds: int) -> list[list[LatencyStats]]:
        """Each artifact once per round, each run in its own agent process; every round starts one artifact later,
        so none always runs first or after the same neighbour. Per artifact, its usable measurements."""
        timed: list[list[LatencyStats]] = [[] for _ in artifacts]
        order = list(range(len(artifacts)))
        for r in range(rounds if artifacts else 0):
            shift = r % len(order)
            for i in order[shift:] + order[:shift]:
                stats = self.measure(artifacts[i], counted_as="retiming")
                if stats.usable:
                    timed[i].append(stats)
        return timed

    def compare(self, reference: Path, candidate: Path) -> Comparison:
        """Both models in alternating agent processes (raises MeasurementFailed)."""
        comparison = compare_interleaved(self.runner, dict(self.job(reference)), dict(self.job(candidate)),
                                         self.settings)
        self.runs["verification"] += len(comparison.reference_p50s) + len(comparison.candidate_p50s)
        return comparison


def runner_for_profile(profile: Profile, accept_new_host_keys: bool = False) -> Runner:
    """This machine when the profile lists no boards; otherwise a pool of its boards over SSH."""
    if not profile.boards:
        return LocalRunner()
    try:
        import paramiko  # noqa: F401
    except ImportError:
        raise EdgeslimError(f"profile {profile.name} lists boards: measuring over SSH needs paramiko "
                            "(pip install 'edgeslim[ssh]')") from None
    from edgeslim.pool import BoardPool
    from edgeslim.ssh import SSHRunner

    pool = BoardPool([SSHRunner(b, accept_new_host_keys=accept_new_host_keys, profile_ref=profile.ref)
                      for b in profile.boards])
    pool.check_host_keys()
    return pool


def target_for_profile(profile: Profile, targets: dict[str, type[Target]]) -> Target:
    """The profile's target, its options validated; an unknown or unavailable target is a clear error."""
    target_cls = targets.get(profile.target.name)
    if target_cls is None:
        raise EdgeslimError(f"profile {profile.name}: target.name: unknown target {profile.target.name!r} "
                            f"(installed: {', '.join(sorted(targets))})")
    ok, why = target_cls.available()
    if not ok:
        raise EdgeslimError(f"target {target_cls.name} is not available here: {why}")
    return target_cls.from_options(profile.target.options(), profile.source)
