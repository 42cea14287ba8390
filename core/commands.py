"""``edgeslim apply`` and ``edgeslim bench``: thin callers of the session and the device."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from edgeslim.config import SearchConfig
from edgeslim.device import Device, runner_for_profile, target_for_profile
from edgeslim.errors import EdgeslimError
from edgeslim.host import load_registry
from edgeslim.measure import LatencyStats, MeasurementFailed, Runner
from edgeslim.model import load_onnx_source
from edgeslim.outputs import verify, write_outputs
from edgeslim.plan import Plan, validate_plan
from edgeslim.profile import Profile, load_profile
from edgeslim.progress import Reporter
from edgeslim.records import Manifest
from edgeslim.search import SearchSession


def apply_plan(config: SearchConfig, plan: Plan, reporter: Reporter | None = None) -> Manifest:
    """Build one plan, measure it and the original interleaved, write the run directory. A plan that misses
    the budget is reported as missing it (manifest, reports, the finished hook); the CLI then exits 3."""
    session = SearchSession(config, reporter)
    session.measure_baseline()
    decisions = {name for t in session.techniques.values() for name in t.decision_names()}
    decisions |= {k.name for k in session.target.knobs()}
    layer_names = {layer.name for layer in session.source.layers}
    layer_names |= {k.layer for t in session.techniques.values() for k in t.knobs(session.source) if k.layer}
    try:
        plan = validate_plan(plan, layer_names, decisions)
    except ValueError as exc:
        raise EdgeslimError(f"--plan: {exc}") from None
    record = session.evaluate(plan, purpose="apply")
    if record.status == "failed":
        raise EdgeslimError(f"applying the plan failed: {record.note}")
    try:
        verification = verify(session, record)
    except MeasurementFailed as exc:
        raise EdgeslimError(f"the applied model could not be measured against the original: {exc}") from None
    if record.status == "not_faster":
        session.notes.append(f"the plan's model is not faster than the original on this device ({record.note})")
    record.verification = verification
    return write_outputs(session, record, verification, 0.0, command="apply")


def bench(model: str, profile_ref: str, input_shapes: dict[str, list[int]],
          runner_factory: Callable[[Profile], Runner] | None = None) -> LatencyStats:
    """Time one ONNX model as-is on the profile's target."""
    profile = load_profile(profile_ref)
    target = target_for_profile(profile, load_registry().targets)
    with tempfile.TemporaryDirectory(prefix="edgeslim-bench-") as tmp:
        source = load_onnx_source(Path(model), Path(tmp), input_shapes, None)
        artifact = target.compile(source.onnx_path, Path(tmp) / "artifact", None)
        runner = runner_factory(profile) if runner_factory else runner_for_profile(profile)
        device = Device(target, runner, profile.measurement, source.input_shapes())
        return device.measure(artifact)
