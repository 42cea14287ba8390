"""Weight-only bit-widths per layer and INT8 calibration methods, through ONNX Runtime and OpenVINO."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeslim.host import load_registry
from edgeslim.model import load_onnx_source
from edgeslim.plugins.clustering import pack_model, unpack_model
from edgeslim.plugins.weight_quantization import quantize_weight_only
from edgeslim.targets.tensorrt import layer_precisions_for
from edgeslim.technique import BuildContext

FEED = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)


def run(path, feed=FEED) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"images": x[None]})[0] for x in feed])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize(("bits", "max_error"), [(4, 0.12), (2, 0.4), (1, 0.65)])
def test_weight_only_codes(bits, max_error):
    w = np.random.default_rng(1).standard_normal((16, 8, 3, 3)).astype(np.float32)
    q, scale, zero = quantize_weight_only(w, bits)
    assert len(np.unique(q)) <= 2**bits and scale.shape == zero.shape == (16,)
    restored = (q.reshape(16, -1).astype(np.float32) - zero[:, None]) * scale[:, None]
    error = np.abs(restored.reshape(w.shape) - w).mean() / np.abs(w).mean()
    assert error < max_error, error


def test_mixed_weight_bits_run_on_ort_and_openvino(resnet_onnx, tmp_path):
    src = load_onnx_source(resnet_onnx, tmp_path / "s", {}, None)
    registry = load_registry()
    layers = [layer.name for layer in src.layers if layer.params >= 256]
    levels = dict(zip(layers, [16, 4, 2, 1, 4, 16, 8], strict=False))
    plan = {"layers": {name: {"weight_bits": level} if level != 8 else {"bits": 8}
                       for name, level in levels.items()}, "model": {}}
    ctx = BuildContext(src, [{"images": FEED[i : i + 1]} for i in range(4)], tmp_path)
    path = registry.techniques["weight_quantization"].apply_onnx(src.onnx_path, plan, ctx, tmp_path / "w.onnx")
    path = registry.techniques["quantization"].apply_onnx(path, plan, ctx, tmp_path / "wq.onnx")
    model = onnx.load(str(path))
    types = {init.data_type for init in model.graph.initializer}
    assert {onnx.TensorProto.FLOAT16, onnx.TensorProto.INT4} <= types
    reference, ours = run(src.onnx_path), run(path)
    assert ours.shape == reference.shape and cosine(ours, reference) > 0.5
    sixteen = {"layers": {name: {"weight_bits": 16} for name in layers}, "model": {}}
    half = registry.techniques["weight_quantization"].apply_onnx(src.onnx_path, sixteen, ctx, tmp_path / "h.onnx")
    assert half.stat().st_size < 0.6 * src.onnx_path.stat().st_size
    assert cosine(run(half), reference) > 0.9999
    openvino = pytest.importorskip("openvino")
    compiled = openvino.Core().compile_model(str(path), "CPU")
    assert cosine(np.concatenate([compiled(x[None])[0] for x in FEED]), ours) > 0.99
    # binary and 2-bit weights in int8 containers: real size only in the packed file, restored exactly
    stats = pack_model(path, tmp_path / "w.dc")
    assert unpack_model(tmp_path / "w.dc").SerializeToString() == model.SerializeToString()
    assert stats["packed_bytes"] < path.stat().st_size


def test_tensorrt_runs_fp16_weight_layers_in_fp16():
    plan = {"layers": {"a": {"weight_bits": 16}, "b": {"weight_bits": 16, "bits": 8}, "c": {"bits": 32}}}
    assert layer_precisions_for(plan, {"a": "A", "b": "B", "c": "C"}, "fp16") == {"A": "fp16", "C": "fp32"}


def test_calibration_methods_give_different_ranges(resnet_onnx, tmp_path):
    src = load_onnx_source(resnet_onnx, tmp_path / "s", {}, None)
    tech = load_registry().techniques["quantization"]
    rng = np.random.default_rng(3)
    calib = [{"images": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(16)]
    ctx = BuildContext(src, calib, tmp_path)
    int8 = {layer.name: {"bits": 8} for layer in src.layers}
    scales = {}
    for method in ("minmax", "entropy", "percentile"):
        out = tech.apply_onnx(src.onnx_path, {"layers": int8, "model": {"int8_calibration": method}}, ctx,
                              tmp_path / f"{method}.onnx")
        model = onnx.load(str(out))
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        scales[method] = np.array([float(inits[n.input[1]]) for n in model.graph.node
                                   if n.op_type == "QuantizeLinear"])
        run(out, FEED[:1])
    # percentile clips the extremes min-max keeps; entropy picks its own thresholds
    assert (scales["percentile"] <= scales["minmax"] + 1e-9).all() and (scales["percentile"] < scales["minmax"]).any()
    assert not np.allclose(scales["entropy"], scales["minmax"])
    from edgeslim.errors import EdgeslimError

    with pytest.raises(EdgeslimError, match="unknown method 'kl'"):
        tech.apply_onnx(src.onnx_path, {"layers": int8, "model": {"int8_calibration": "kl"}}, ctx, tmp_path / "x.onnx")
