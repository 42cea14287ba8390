import json

import numpy as np
import pytest

from edgeslim.host import load_registry
from edgeslim.measure import LocalRunner, measure
from edgeslim.profile import MeasurementSettings, load_profile
from tests.conftest import FAST_MEASUREMENT, random_feed, run_cli

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


def nncf_build(tmp_path, resnet_onnx, int8_every: int = 1):
    """The model with every ``int8_every``-th layer INT8, quantized by NNCF; (QDQ ONNX, {layer: node}, int8 layers)."""
    from edgeslim.model import load_onnx_source
    from edgeslim.technique import BuildContext

    source = load_onnx_source(resnet_onnx, tmp_path / "s", {}, None)
    int8 = [layer.name for layer in source.layers][::int8_every]
    plan = {"layers": {name: {"bits": 8} for name in int8}, "model": {"int8_scheme": "nncf"}}
    ctx = BuildContext(source=source, calibration=[random_feed(seed=i) for i in range(16)], work_dir=tmp_path)
    qdq = load_registry().techniques["quantization"].apply_onnx(source.onnx_path, plan, ctx, tmp_path / "q.onnx")
    return qdq, dict(source.layer_nodes), int8


def test_int8_on_openvino_is_quantized_by_nncf_and_onnx_runtime_keeps_its_own(tmp_path, resnet_onnx, target):
    pytest.importorskip("nncf")
    from edgeslim.model import load_onnx_source

    source = load_onnx_source(resnet_onnx, tmp_path / "s", {}, None)
    offered = load_registry().techniques["quantization"].variants(source)
    ort_target = load_registry().targets["onnxruntime"].from_options({})
    runnable = {name: [v["int8_scheme"] for v in offered if t.accepts_model_settings(v)]
                for name, t in (("openvino", target), ("onnxruntime", ort_target))}
    assert (runnable["openvino"], "nncf" in runnable["onnxruntime"]) == (["nncf"], False)


def test_an_nncf_model_is_close_to_fp32(tmp_path, resnet_onnx, target):
    pytest.importorskip("nncf")
    qdq, _, _ = nncf_build(tmp_path, resnet_onnx)
    feed = random_feed(seed=99)
    ref = target.host_session(target.compile(resnet_onnx, tmp_path / "fp32", None)).run(feed)[0]
    out = target.host_session(target.compile(qdq, tmp_path / "ir", None)).run(feed)[0]
    assert float(np.dot(ref.ravel(), out.ravel()) / np.linalg.norm(ref) / np.linalg.norm(out)) > 0.99


def test_an_nncf_per_layer_plan_runs_its_float_layers_in_float(tmp_path, resnet_onnx, target):
    """The plan means the same on OpenVINO as on ONNX Runtime: a layer left at 32 bits runs in float."""
    pytest.importorskip("nncf")
    qdq, nodes, int8 = nncf_build(tmp_path, resnet_onnx, int8_every=2)
    runs = target.effective_precision(target.compile(qdq, tmp_path / "ir", None))
    # OpenVINO renames a Gemm (to a MatMul): its runtime node is not found by name, as in the search's read-back
    found = {layer: runs[node] for layer, node in nodes.items() if node in runs}
    assert (found, len(found)) == ({layer: "int8" if layer in int8 else "float" for layer in found}, len(nodes) - 1)


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
    proc = run_cli("search", resnet_onnx, "--profile", profile, "--budget-ms", "0.0001", "--trials", "3",
                   "--no-predictor", "--out", tmp_path / "run", "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["target"]["name"] == "openvino"
    assert manifest["baseline"]["artifact"].endswith(".xml")
    assert "openvino" in manifest["versions"]
    assert any("runs at its default precision" in note for note in manifest["notes"])


def test_the_openvino_search_probes_nncfs_int8(tmp_path, resnet_onnx):
    """The speed gate a search on OpenVINO runs first: one INT8 probe, NNCF's, whose layers run in INT8."""
    pytest.importorskip("nncf")
    from edgeslim.config import SearchConfig
    from edgeslim.search import SearchSession
    from edgeslim.speed_gate import speed_gate
    from edgeslim.strategy_view import SessionView

    profile = tmp_path / "fast-openvino.toml"
    profile.write_text('name = "fast-openvino"\nextends = "local-cpu-openvino"\n' + FAST_MEASUREMENT)
    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(profile), budget_ratio=0.5,
                                         out_dir=str(tmp_path / "run")))
    session.measure_baseline()
    speed_gate(SessionView(session), set())
    probes = [r for r in session.store.all() if r.purpose.startswith("gate:")]
    assert [(r.plan["model"], "int8" in r.details["effective_precision"].values()) for r in probes] == [
        ({"int8_scheme": "nncf"}, True)]


def test_openvinos_per_node_profile_is_attributed_to_every_layer(tmp_path, resnet_onnx, target):
    """OpenVINO names a convolution with a bias ".../Conv/WithoutBiases" in its performance counters: every
    weighted layer's time still lands on that layer, not in the rest of the graph (the latency table of a
    ResNet-18-style model on OpenVINO saw one layer of 21)."""
    import onnx

    from edgeslim.model import load_onnx_source
    from edgeslim.profile_attribution import attribute_profile, graph_summary

    source = load_onnx_source(resnet_onnx, tmp_path / "s", {}, None)
    layers = {layer.name for layer in source.layers}
    artifact = target.compile(source.onnx_path, tmp_path / "ov", None)
    settings = MeasurementSettings(warmup=2, min_runs=10, min_seconds=0.05, layer_profile_runs=10)
    stats = measure(LocalRunner(), target.benchmark_job(artifact, {}), settings, layer_profile=True)
    per_layer, _ = attribute_profile(stats.layer_profile, dict(source.layer_nodes),
                                     graph_summary(onnx.load(str(source.onnx_path))), layers)
    assert sorted(per_layer) == sorted(layers)


def test_openvinos_own_cost_per_inference_is_timed_under_the_original_models(tmp_path, resnet_onnx):
    """The runtime floor: a model that only hands its input back, built and timed by OpenVINO like a candidate."""
    from edgeslim.config import SearchConfig
    from edgeslim.runtime_floor import runtime_floor_ms
    from edgeslim.search import SearchSession

    profile = tmp_path / "fast-openvino.toml"
    profile.write_text('name = "fast-openvino"\nextends = "local-cpu-openvino"\n' + FAST_MEASUREMENT)
    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(profile), budget_ratio=0.5,
                                         out_dir=str(tmp_path / "run")))
    session.measure_baseline()
    assert 0.0 < (runtime_floor_ms(session) or 0.0) < (session.budget.baseline_ms or 0.0)
