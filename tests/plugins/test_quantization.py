from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgeslim.host import load_registry
from edgeslim.model import load_onnx_source
from edgeslim.technique import BuildContext
from tests.conftest import random_feed


def quantize(resnet_onnx: Path, tmp_path: Path, plan: dict) -> tuple[Path, object]:
    source = load_onnx_source(resnet_onnx, tmp_path / "src", {}, None)
    feeds = [random_feed(seed=i) for i in range(16)]
    ctx = BuildContext(source=source, calibration=feeds, work_dir=tmp_path)
    tech = load_registry().techniques["quantization"]
    assert tech.is_active(plan)
    return tech.apply_onnx(source.onnx_path, plan, ctx, tmp_path / "q.onnx"), source


def run(path: Path, feed) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_uniform_int8_is_qdq_and_close_to_fp32(tmp_path, resnet_onnx):
    source = load_onnx_source(resnet_onnx, tmp_path / "s", {}, None)
    plan = {"layers": {layer.name: {"bits": 8} for layer in source.layers}, "model": {}}
    qpath, _ = quantize(resnet_onnx, tmp_path, plan)
    ops = [n.op_type for n in onnx.load(str(qpath)).graph.node]
    assert ops.count("QuantizeLinear") >= len(source.layers) and "DequantizeLinear" in ops
    feed = random_feed(seed=99)
    ref, out = run(resnet_onnx, feed), run(qpath, feed)
    cos = float(np.dot(ref.ravel(), out.ravel()) / np.linalg.norm(ref) / np.linalg.norm(out))
    assert cos > 0.98


def test_float_layer_really_runs_float(tmp_path, resnet_onnx):
    """The head stays float; ONNX Runtime's own precision report must agree (it fuses DQ->Conv->Q otherwise)."""
    source = load_onnx_source(resnet_onnx, tmp_path / "s", {}, None)
    head = source.layers[-1].name
    plan = {"layers": {layer.name: {"bits": 8} for layer in source.layers[:-1]}, "model": {}}
    qpath, _ = quantize(resnet_onnx, tmp_path, plan)
    target_cls = load_registry().targets["onnxruntime"]
    precision = target_cls.from_options({}).effective_precision(qpath)
    assert precision[head] == "float"
    assert precision[source.layers[0].name] == "int8"


def test_the_numpy_kl_search_picks_onnx_runtimes_entropy_threshold():
    """kl_threshold replaces ONNX Runtime's Python-loop KL search in entropy calibration: same ranges, not new ones.
    Post-ReLU, Gaussian and heavy-tailed activations, 2048 bins, TensorRT's 255 quantized bins."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    from edgeslim.plugins.quantization import kl_threshold

    rng = np.random.default_rng(0)
    collector = HistogramCollector("entropy", symmetric=False, num_bins=2048, num_quantized_bins=255,
                                   percentile=99.99, scenario="same")
    collector.collect({"relu": [np.maximum(rng.normal(0.3, 1.0, 20000), 0).astype(np.float32)],
                       "gaussian": [rng.normal(0.0, 2.0, 20000).astype(np.float32)],
                       "heavy_tailed": [rng.standard_t(2, 20000).astype(np.float32)]})
    ours = {name: kl_threshold(h, 255) for name, h in collector.histogram_dict.items()}
    theirs = {name: collector.get_entropy_threshold(h, 255) for name, h in collector.histogram_dict.items()}
    assert ours == theirs
