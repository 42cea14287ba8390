"""ONNX Runtime's INT8 encodings (QDQ and QOperator; U8S8, S8S8, U8U8; per-channel and per-tensor), per-layer plans
in each, the read-back of what really runs INT8, and the pre-processing that keeps exporters' Identity-wrapped
weights from staying float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from edgeslim.host import load_registry
from edgeslim.model import load_onnx_source
from edgeslim.plugins.quantization import GATE_SCHEMES, INT8_SCHEMES
from edgeslim.technique import BuildContext
from tests.conftest import random_feed


def build(model: Path, tmp_path: Path, scheme: str, int8_layers: int | None = None) -> tuple[Path, list[str]]:
    source = load_onnx_source(model, tmp_path / "src", {}, None)
    names = [layer.name for layer in source.layers]
    chosen = names if int8_layers is None else names[:int8_layers]
    plan = {"layers": {name: {"bits": 8} for name in chosen}, "model": {"int8_scheme": scheme}}
    ctx = BuildContext(source=source, calibration=[random_feed(seed=i) for i in range(8)], work_dir=tmp_path)
    out = load_registry().techniques["quantization"].apply_onnx(source.onnx_path, plan, ctx, tmp_path / "q.onnx")
    return out, names


def runs_as(path: Path) -> dict[str, str]:
    return load_registry().targets["onnxruntime"].from_options({}).effective_precision(path)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b))


def output(path: Path) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, random_feed(seed=99))[0]


def test_the_grid_holds_every_format_type_and_granularity():
    by_onnx_runtime = [name for name, encoding in INT8_SCHEMES.items() if encoding.quantizer == "onnxruntime"]
    # 3 type pairs x 2 formats x 2 granularities, and U8S8's four with 7-bit weights
    assert (len(by_onnx_runtime), len(GATE_SCHEMES), GATE_SCHEMES[-1]) == (16, 7, "nncf")


@pytest.mark.parametrize("scheme", sorted(INT8_SCHEMES))
def test_every_encoding_builds_a_model_close_to_fp32(scheme, tmp_path, resnet_onnx):
    quantized, _ = build(resnet_onnx, tmp_path, scheme)
    assert cosine(output(resnet_onnx), output(quantized)) > 0.98


def test_a_qoperator_model_reads_back_as_int8_layer_by_layer(tmp_path, resnet_onnx):
    quantized, names = build(resnet_onnx, tmp_path, "qop-u8s8-per-channel")
    assert [runs_as(quantized).get(name) for name in names] == ["int8"] * len(names)


@pytest.mark.parametrize("scheme", ["u8s8-per-channel", "qop-u8s8-per-channel"])
def test_a_per_layer_plan_keeps_the_float_layers_float(scheme, tmp_path, resnet_onnx):
    """The third layer feeds a residual Add: ONNX Runtime would fuse it into QLinearConv if its output were
    quantized for the Add, float weights or not."""
    quantized, names = build(resnet_onnx, tmp_path, scheme, int8_layers=2)
    precision = runs_as(quantized)
    assert [precision.get(name) for name in names] == ["int8", "int8"] + ["float"] * (len(names) - 2)


def wrap_weights_in_identity(model_path: Path, out: Path) -> Path:
    """What the TorchScript exporter does to shared weights: Conv reads its weight through an Identity node."""
    model = onnx.load(str(model_path))
    inits = {init.name for init in model.graph.initializer}
    wrapped = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") and node.input[1] in inits:
            wrapped.append(helper.make_node("Identity", [node.input[1]], [node.input[1] + "_id"],
                                            name=f"Identity_{len(wrapped)}"))
            node.input[1] = node.input[1] + "_id"
    model.graph.node.extend(wrapped)  # appended, then sorted: ONNX wants producers first
    nodes = sorted(model.graph.node, key=lambda n: n.op_type != "Identity")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(out))
    return out


def test_weights_behind_identity_nodes_are_quantized(tmp_path, resnet_onnx):
    wrapped = wrap_weights_in_identity(resnet_onnx, tmp_path / "wrapped.onnx")
    quantized, names = build(wrapped, tmp_path, "u8s8-per-channel")
    assert [runs_as(quantized).get(name) for name in names] == ["int8"] * len(names)


def test_weights_behind_identity_nodes_count_as_the_layers_parameters(tmp_path, resnet_onnx):
    wrapped = wrap_weights_in_identity(resnet_onnx, tmp_path / "wrapped.onnx")
    plain = load_onnx_source(resnet_onnx, tmp_path / "plain", {}, None)
    folded = load_onnx_source(wrapped, tmp_path / "folded", {}, None)
    assert [layer.params for layer in folded.layers] == [layer.params for layer in plain.layers]


def test_the_winner_of_the_first_round_is_refined_to_its_per_tensor_and_7_bit_forms():
    quantization = load_registry().techniques["quantization"]
    assert quantization.refinements({"int8_scheme": "qop-u8s8-per-channel"}) == [
        {"int8_scheme": "qop-u8s8-per-tensor"}, {"int8_scheme": "qop-u8s8-per-channel-7bit"}]


def test_a_7_bit_encoding_writes_weights_within_seven_bits(tmp_path, resnet_onnx):
    """ONNX Runtime's reduce_range: U8S8 weights in [-64, 63], so u8 x s8 pair sums cannot saturate int16 on a
    CPU without VNNI."""
    quantized, _ = build(resnet_onnx, tmp_path, "u8s8-per-channel-7bit")
    weights = [onnx.numpy_helper.to_array(init) for init in onnx.load(str(quantized)).graph.initializer
               if init.data_type == onnx.TensorProto.INT8 and init.name.endswith("_quantized")]
    assert (len(weights) > 5, max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64) == (True, True)


def test_a_bias_from_a_constant_node_quantizes_in_qoperator(tmp_path, resnet_onnx):
    """Candidates exported from torch can hand a bias over as a Constant node; ONNX Runtime's QOperator quantizer
    crashed on it (AttributeError: 'NoneType' object has no attribute 'data_type')."""
    model = onnx.load(str(resnet_onnx))
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and len(n.input) == 3)
    bias = next(init for init in model.graph.initializer if init.name == conv.input[2])
    model.graph.initializer.remove(bias)
    model.graph.node.insert(0, helper.make_node("Constant", [], [bias.name], name="bias_constant", value=bias))
    source_path = tmp_path / "constant_bias.onnx"
    onnx.save(model, str(source_path))
    source = load_onnx_source(resnet_onnx, tmp_path / "src", {}, None)  # the plan's layers: same node names
    plan = {"layers": {layer.name: {"bits": 8} for layer in source.layers},
            "model": {"int8_scheme": "qop-u8s8-per-channel"}}
    ctx = BuildContext(source=source, calibration=[random_feed(seed=i) for i in range(4)], work_dir=tmp_path)
    quantized = load_registry().techniques["quantization"].apply_onnx(source_path, plan, ctx, tmp_path / "q.onnx")
    assert cosine(output(resnet_onnx), output(quantized)) > 0.98
