"""Weight-only bit-widths per layer (``weight_bits``: 16, 4, 2, 1): smaller weights, float arithmetic.

fp16 weights with a Cast; int4 per-output-channel symmetric (ONNX's INT4 type, opset 21) with a
DequantizeLinear; 2-bit (signed levels -2..1 per channel, range fitted by least squares) and 1-bit (binary, sign
times the channel's mean magnitude, as XNOR-Net) held in int8 containers, so their size is only real in the Deep
Compression packed file. No target here runs 4/2/1-bit arithmetic natively; ONNX Runtime and OpenVINO dequantize
the weights once at load (the latency is FP32's). TensorRT runs ``weight_bits = 16`` layers in fp16. INT8 weights
and activations (``bits``) are :mod:`edgeslim.plugins.quantization`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgeslim import hookimpl
from edgeslim.errors import EdgeslimError
from edgeslim.model import ModelSource, weighted_nodes
from edgeslim.plan import Plan, layer_decisions
from edgeslim.technique import BuildContext, Knob, Technique

WEIGHT_BITS = (32, 16, 4, 2, 1)


def _channel_view(w: np.ndarray) -> np.ndarray:
    """(output channels, everything else): the axis every layer kind quantizes per channel."""
    return w.reshape(w.shape[0], -1)


def quantize_weight_only(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, scale, zero_point) per output channel with ``w ~= (q - zero_point) * scale``.

    4 and 2 bits: signed uniform levels ([-8, 7], [-2, 1]) with each channel's clipping range chosen to
    minimise the squared error (at 2 bits clipping the rare large weights beats spanning them: 4 levels
    over the full range leave most weights far from any level). 1 bit: sign times the channel's mean |w|.
    """
    flat = _channel_view(w).astype(np.float64)
    if bits == 1:
        scale = np.abs(flat).mean(axis=1)
        scale[scale == 0] = 1.0
        q = np.where(flat >= 0, 1, -1)
    elif bits in (4, 2):
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        peak = np.abs(flat).max(axis=1)
        peak[peak == 0] = 1.0
        best_error, scale = np.full(len(peak), np.inf), peak / high
        for fraction in np.linspace(0.2, 1.0, 33):
            trial = fraction * peak / high
            restored = np.clip(np.round(flat / trial[:, None]), low, high) * trial[:, None]
            error = ((restored - flat) ** 2).sum(axis=1)
            better = error < best_error
            best_error[better], scale[better] = error[better], trial[better]
        q = np.clip(np.round(flat / scale[:, None]), low, high)
    else:
        raise EdgeslimError(f"weight_bits {bits}: supported are {', '.join(map(str, WEIGHT_BITS))}")
    return q.reshape(w.shape).astype(np.int8), scale.astype(np.float32), np.zeros(len(scale), dtype=np.int8)


class WeightOnlyQuantization(Technique):
    name = "weight_quantization"
    description = "weight-only fp16 / int4 / 2-bit / binary weights per layer (size; float arithmetic)"
    stage = "onnx"
    phase = "weight_precision"  # after pruning and clustering (their zeros and shared values), before INT8 QDQ
    reduces_latency = False  # every target here dequantizes these weights at load and computes in float

    def decision_names(self) -> frozenset[str]:
        return frozenset({"weight_bits"})

    def is_active(self, plan: Plan) -> bool:
        return any(int(b) != 32 for b in layer_decisions(plan, "weight_bits").values())

    def knobs(self, source: ModelSource) -> list[Knob]:
        return [Knob(self.name, "weight_bits", layer.name, WEIGHT_BITS) for layer in source.layers
                if layer.params >= 256]

    def apply_onnx(self, onnx_path: Path, plan: Plan, ctx: BuildContext, out_path: Path) -> Path:
        from onnx import TensorProto, helper, numpy_helper

        bits = {layer: int(b) for layer, b in layer_decisions(plan, "weight_bits").items()}
        int8_layers = {layer for layer, b in layer_decisions(plan, "bits").items() if int(b) == 8}
        model = onnx.load(str(onnx_path))
        if any(b == 4 for b in bits.values()) and _opset(model) < 21:
            from onnx import version_converter

            try:  # INT4 tensors need opset 21 and IR version 10
                converted = version_converter.convert_version(model, 21)
                converted.ir_version = max(converted.ir_version, 10)
                model = converted
            except Exception as exc:  # noqa: BLE001 (the converter raises many kinds)
                ctx.notes.append(f"weight_quantization: opset {_opset(model)} -> 21 failed ({exc}); int4 weights "
                                 "are held in int8 containers")
        inits = {init.name: init for init in model.graph.initializer}
        new_nodes = []
        for node in weighted_nodes(model):
            layer = ctx.layer_of_node(node.name)
            level = bits.get(layer or "", 32)
            weight = node.input[1] if len(node.input) > 1 else None
            if level == 32 or weight not in inits:
                continue
            if layer in int8_layers:
                ctx.notes.append(f"weight_quantization: {layer} is INT8 (bits = 8); weight_bits {level} ignored")
                continue
            w = numpy_helper.to_array(inits[weight])
            model.graph.initializer.remove(inits[weight])
            stored = f"{weight}__w{level}"
            if level == 16:
                model.graph.initializer.append(numpy_helper.from_array(w.astype(np.float16), stored))
                new_nodes.append(helper.make_node("Cast", [stored], [weight], to=TensorProto.FLOAT,
                                                  name=f"{node.name}/weight_fp16"))
                continue
            q, scale, zero = quantize_weight_only(w, level)
            if level == 4 and _opset(model) >= 21:
                q_init = helper.make_tensor(stored, TensorProto.INT4, list(q.shape), q.ravel().tolist())
                zero_init = helper.make_tensor(f"{stored}_zero", TensorProto.INT4, [len(zero)], zero.tolist())
            else:
                q_init = numpy_helper.from_array(q, stored)
                zero_init = numpy_helper.from_array(zero, f"{stored}_zero")
            # per output channel: scale has one entry per channel; reshape q to 2-D when the layer is a conv
            model.graph.initializer.extend([q_init, zero_init, numpy_helper.from_array(scale, f"{stored}_scale")])
            new_nodes.append(helper.make_node("DequantizeLinear", [stored, f"{stored}_scale", f"{stored}_zero"],
                                              [weight], axis=0, name=f"{node.name}/weight_dq{level}"))
        # weights are produced before anything reads them: the new nodes go first
        nodes = new_nodes + list(model.graph.node)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        onnx.save(model, str(out_path))
        return out_path


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


@hookimpl
def edgeslim_register_techniques(register):
    register(WeightOnlyQuantization())
