import json

import numpy as np
import pytest

from edgeslim.host import load_registry
from edgeslim.measure import LocalRunner, measure
from edgeslim.profile import MeasurementSettings, load_profile
from tests.conftest import random_feed, run_cli

ov = pytest.importorskip("openvino")
FAST = MeasurementSettings(warmup=2, min_runs=10, min_seconds=0.05)


@pytest.fixture
def target():
    return load_registry().targets["openvino"].from_options(load_profile("local-cpu-openvino").target.options())


def test_compile_to_ir_runs_and_matches_onnx(tmp_path, resnet_onnx, target):
    import onnxruntime as ort

    xml = target.compile(resnet_onnx, tmp_path / "ir", None)
    assert xml.suffix == ".xml" and xml.with_suffix(".bin").stat().st_size > 10_000
    feed = random_feed()
    ref = ort.InferenceSession(str(resnet_onnx), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    out = target.host_session(xml).run(feed)[0]
    assert np.allclose(ref, out, atol=1e-3)
    stats = measure(LocalRunner(), target.benchmark_job(xml, {}), FAST)
    assert stats.usable and stats.runtime == "openvino"


def test_qdq_int8_becomes_int8_kernels(tmp_path, resnet_onnx, target):
    from edgeslim.model import load_onnx_source
    from edgeslim.technique import BuildContext

    source = load_onnx_source(resnet_onnx, tmp_path / "s", {}, None)
    plan = {"layers": {layer.name: {"bits": 8} for layer in source.layers}, "model": {}}
    tech = load_registry().techniques["quantization"]
    ctx = BuildContext(source=source, calibration=[random_feed(seed=i) for i in range(8)], work_dir=tmp_path)
    qdq = tech.apply_onnx(source.onnx_path, plan, ctx, tmp_path / "q.onnx")
    xml = target.compile(qdq, tmp_path / "ir", plan)
    precision = target.effective_precision(xml)
    assert "int8" in precision.values(), precision


def test_precision_is_a_knob_where_the_device_has_several(target):
    supported = target.supported_precisions()
    assert bool(target.knobs()) == ("bf16" in supported or "f16" in supported)


def test_the_built_in_profile_measures_at_openvinos_default_precision(tmp_path, resnet_onnx, target):
    """The baseline is what a user running the original model with OpenVINO gets: no precision hint at all."""
    xml = target.compile(resnet_onnx, tmp_path / "ir", None)
    properties = target.benchmark_job(xml, {})["options"]["properties"]
    assert (target.settings.inference_precision, "INFERENCE_PRECISION_HINT" in properties) == ("default", False)


def test_a_pinned_precision_other_than_the_default_is_noted(target):
    default = target.default_precision()
    other = "bf16" if default != "bf16" else "f32"
    pinned = load_registry().targets["openvino"].from_options({"inference_precision": other})
    notes = pinned.baseline_notes()
    assert len(notes) == 1 and f"pins inference_precision = {other!r}" in notes[0] and repr(default) in notes[0]


def test_unknown_option_is_refused():
    from edgeslim.errors import EdgeslimError

    with pytest.raises(EdgeslimError, match="target.precision: unknown field"):
        load_registry().targets["openvino"].from_options({"precision": "f16"})


def test_search_with_the_openvino_profile(tmp_path, resnet_onnx):
    profile = tmp_path / "ov.toml"
    profile.write_text('name = "fast-ov"\nextends = "local-cpu-openvino"\n[measurement]\nwarmup = 3\nmin_runs = 15\n'
                       'min_seconds = 0.15\nverify_rounds = 3\n')
    proc = run_cli("search", resnet_onnx, "--profile", profile, "--budget-ms", "0.0001", "--trials", "6",
                   "--out", tmp_path / "run", "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["target"]["name"] == "openvino"
    assert manifest["baseline"]["artifact"].endswith(".xml")
    assert "openvino" in manifest["versions"]
    assert any("runs at its default precision" in note for note in manifest["notes"])
