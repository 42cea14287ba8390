"""Quantization: INT8 static post-training quantization to QDQ ONNX, chosen per layer.

Which layers are INT8 is a per-layer knob (``bits``: 32 or 8). How INT8 is
encoded (activation type, per-channel weights) is a model-wide knob the
search probes on the target, because it decides whether INT8 is faster at
all: on a ResNet-18 with ONNX Runtime on x86 the default QDQ settings leave
the convolutions that feed residual Adds in float and run slower than FP32,
while uint8 activations with per-channel int8 weights quantize them.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeslim import hookimpl
from edgeslim.errors import EdgeslimError
from edgeslim.model import ModelSource, weighted_nodes
from edgeslim.plan import Plan, layer_decisions
from edgeslim.settings import module_available
from edgeslim.technique import BuildContext, Knob, Technique

#: name -> (activation type, weight type, per-channel weights)
INT8_SCHEMES: dict[str, tuple[str, str, bool]] = {
    "u8s8-per-channel": ("QUInt8", "QInt8", True),
    "s8s8-per-channel": ("QInt8", "QInt8", True),
    "s8s8-per-tensor": ("QInt8", "QInt8", False),
}
DEFAULT_SCHEME = "u8s8-per-channel"


#: Ops that follow a layer element-wise; ONNX Runtime fuses DQ -> Conv -> Relu -> Q into QLinearConv
#: even when the Conv's weights are float, so a float layer must not have its activation quantized either.
ELEMENTWISE_FOLLOWERS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
                         "BatchNormalization", "Mul", "Add")


def _activation_chain(model: onnx.ModelProto, node: onnx.NodeProto) -> list[str]:
    """Names of the element-wise nodes a layer's output flows through alone (its activation)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    chain, current = [], node
    while True:
        nxt = consumers.get(current.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type not in ELEMENTWISE_FOLLOWERS:
            return chain
        if nxt[0].op_type in ("Mul", "Add") and sum(1 for i in nxt[0].input if i in consumers) > 1:
            return chain  # a residual Add joins two branches: not this layer's alone
        chain.append(nxt[0].name)
        current = nxt[0]


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs advice on the root logger at WARNING for every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _FeedReader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._feeds):
            return None
        self._next += 1
        return self._feeds[self._next - 1]

    def rewind(self) -> None:
        self._next = 0


class Int8Quantization(Technique):
    name = "quantization"
    description = "INT8 static post-training quantization (QDQ, per-channel weights), per layer int8 or float"
    stage = "onnx"
    speed_gated = True

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("onnxruntime.quantization", "pip install onnxruntime")

    def knob_names(self) -> list[Knob]:
        return [Knob(self.name, "bits", None, (32, 8))]

    def knobs(self, source: ModelSource) -> list[Knob]:
        return [Knob(self.name, "bits", layer.name, (32, 8)) for layer in source.layers]

    def variants(self, source: ModelSource) -> list[dict[str, Any]]:
        return [{"int8_scheme": scheme} for scheme in INT8_SCHEMES]

    def apply_onnx(self, onnx_path: Path, plan: Plan, ctx: BuildContext, out_path: Path) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
        from onnxruntime.quantization import quantize_static as _quantize

        bits = layer_decisions(plan, "bits")
        scheme = plan.get("model", {}).get("int8_scheme", DEFAULT_SCHEME)
        if scheme not in INT8_SCHEMES:
            raise EdgeslimError(f"plan.model.int8_scheme: unknown scheme {scheme!r} (known: {sorted(INT8_SCHEMES)})")
        if not ctx.calibration:
            raise EdgeslimError("INT8 quantization needs calibration inputs (a task's data or --calib FILE.npz)")
        model = onnx.load(str(onnx_path))
        float_nodes = []
        for node in weighted_nodes(model):
            layer = ctx.layer_of_node(node.name)
            if layer is None or bits.get(layer, 32) != 8:
                float_nodes += [node.name, *_activation_chain(model, node)]
        activation, weight, per_channel = INT8_SCHEMES[scheme]
        with _quiet_root_logger():
            _quantize(
                str(onnx_path), str(out_path), _FeedReader(ctx.calibration),
                quant_format=QuantFormat.QDQ, activation_type=getattr(QuantType, activation),
                weight_type=getattr(QuantType, weight), per_channel=per_channel,
                nodes_to_exclude=float_nodes, calibrate_method=CalibrationMethod.MinMax,
            )
        return out_path


@hookimpl
def edgeslim_register_techniques(register):
    register(Int8Quantization())
