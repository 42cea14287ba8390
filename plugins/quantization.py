"""Quantization: INT8 static post-training quantization to QDQ ONNX, and weight-only bit-widths, per layer.

Which layers are INT8 is a per-layer knob (``bits``: 32 or 8). How INT8 is
encoded (activation type, per-channel weights) is a model-wide knob the
search probes on the target, because it decides whether INT8 is faster at
all: on a ResNet-18 with ONNX Runtime on x86 the default QDQ settings leave
the convolutions that feed residual Adds in float and run slower than FP32,
while uint8 activations with per-channel int8 weights quantize them.

How the INT8 ranges are calibrated (``int8_calibration``: min-max, entropy, percentile) changes accuracy,
not speed: the search scores each on the host and keeps the most accurate.

Weight-only bit-widths (``weight_bits``: 16, 4, 2, 1) shrink a layer's weights while its arithmetic stays
float: fp16 weights with a Cast; int4 per-output-channel symmetric (ONNX's INT4 type, opset 21) with a
DequantizeLinear; 2-bit (signed levels -2..1 per channel, range fitted by least squares) and 1-bit
(binary, sign times the channel's mean magnitude, as XNOR-Net) held in int8 containers, so their size is
only real in the Deep Compression packed file. No target here runs 4/2/1-bit arithmetic natively; ONNX
Runtime and OpenVINO dequantize the weights once at load (the latency is FP32's). TensorRT runs
``weight_bits = 16`` layers in fp16.
"""

from __future__ import annotations

import contextlib
import io
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
#: plan.model.int8_calibration -> ONNX Runtime's CalibrationMethod
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
WEIGHT_BITS = (32, 16, 4, 2, 1)


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

    def accuracy_variants(self, source: ModelSource) -> list[dict[str, Any]]:
        return [{"int8_calibration": method} for method in CALIBRATION_METHODS]

    def apply_onnx(self, onnx_path: Path, plan: Plan, ctx: BuildContext, out_path: Path) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
        from onnxruntime.quantization import quantize_static as _quantize

        bits = layer_decisions(plan, "bits")
        scheme = plan.get("model", {}).get("int8_scheme", DEFAULT_SCHEME)
        if scheme not in INT8_SCHEMES:
            raise EdgeslimError(f"plan.model.int8_scheme: unknown scheme {scheme!r} (known: {sorted(INT8_SCHEMES)})")
        calibration = plan.get("model", {}).get("int8_calibration", "minmax")
        if calibration not in CALIBRATION_METHODS:
            raise EdgeslimError(f"plan.model.int8_calibration: unknown method {calibration!r} "
                                f"(known: {', '.join(CALIBRATION_METHODS)})")
        if not ctx.calibration:
            raise EdgeslimError("INT8 quantization needs calibration inputs (a task's data or --calib FILE.npz)")
        model = onnx.load(str(onnx_path))
        float_nodes = []
        for node in weighted_nodes(model):
            layer = ctx.layer_of_node(node.name)
            if layer is None or bits.get(layer, 32) != 8:
                float_nodes += [node.name, *_activation_chain(model, node)]
        activation, weight, per_channel = INT8_SCHEMES[scheme]
        extra: dict[str, Any] = {}
        method = CalibrationMethod.MinMax
        if calibration == "percentile":
            # clip the top 0.01% of |activation| (ORT's default 99.999 keeps nearly everything)
            method, extra = CalibrationMethod.Percentile, {"CalibPercentile": 99.99}
        elif calibration == "entropy":
            extra = {"TensorQuantOverrides": _entropy_ranges(onnx_path, ctx)}
        with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):  # its calibrators print
            _quantize(
                str(onnx_path), str(out_path), _FeedReader(ctx.calibration),
                quant_format=QuantFormat.QDQ, activation_type=getattr(QuantType, activation),
                weight_type=getattr(QuantType, weight), per_channel=per_channel,
                nodes_to_exclude=float_nodes, calibrate_method=method, extra_options=extra,
            )
        return out_path


def _entropy_ranges(onnx_path: Path, ctx: BuildContext) -> dict[str, list[dict[str, Any]]]:
    """Activation ranges minimising the KL divergence of the quantized histogram (TensorRT's calibration).

    quantize_static's own Entropy method cannot be given histogram sizes, and its defaults (128 bins, 128
    quantized bins) leave one candidate threshold: the full range, i.e. min-max. So the histogram runs here
    with 2048 bins and the ranges go in as overrides.
    """
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(str(onnx_path), None, str(ctx.work_dir / "entropy_augmented.onnx"),
                                       CalibrationMethod.Entropy,
                                       extra_options={"num_bins": 2048, "num_quantized_bins": 255})
        calibrator.collect_data(_FeedReader(ctx.calibration))
        ranges = calibrator.compute_data()
    (ctx.work_dir / "entropy_augmented.onnx").unlink(missing_ok=True)
    return {name: [{"rmin": np.float32(data.range_value[0]), "rmax": np.float32(data.range_value[1])}]
            for name, data in ranges.items()}


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
    order = 45  # after pruning and clustering (their zeros and shared values), before INT8 QDQ
    reduces_latency = False  # every target here dequantizes these weights at load and computes in float

    def knob_names(self) -> list[Knob]:
        return [Knob(self.name, "weight_bits", None, WEIGHT_BITS)]

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



# --- quantization-aware training ----------------------------------------------------------------------------

def fold_batchnorms(module: Any, example: np.ndarray) -> list[str]:
    """Fold every BatchNorm2d that directly follows a Conv2d into the conv (BN replaced by the identity).

    Found by running the model once: a BN whose input is exactly a conv's output. QAT must see the weights
    the exported model will hold; ONNX export folds BN into the conv anyway, which would move weights
    trained onto the quantization grid off it again.
    """
    import torch

    produced: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    names = {id(m): n for n, m in module.named_modules()}
    hooks = []
    for child in module.modules():
        if isinstance(child, torch.nn.Conv2d):
            hooks.append(child.register_forward_hook(lambda m, i, o: produced.__setitem__(id(o), names[id(m)])))
        elif isinstance(child, torch.nn.BatchNorm2d):
            hooks.append(child.register_forward_hook(
                lambda m, i, o: pairs.append((produced[id(i[0])], names[id(m)])) if id(i[0]) in produced else None))
    try:
        with torch.no_grad():
            module.eval()(torch.from_numpy(np.asarray(example, dtype=np.float32)))
    finally:
        for h in hooks:
            h.remove()
    folded = []
    for conv_name, bn_name in pairs:
        conv, bn = module.get_submodule(conv_name), module.get_submodule(bn_name)
        with torch.no_grad():
            factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(factor.reshape(-1, 1, 1, 1))
            conv.bias = torch.nn.Parameter(bn.bias + (bias - bn.running_mean) * factor)
        parent_name, _, child = bn_name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, child, torch.nn.Identity())
        folded.append(f"{bn_name} -> {conv_name}")
    return folded


def _fake_quant_modules() -> tuple[Any, Any]:
    import torch

    class WeightFakeQuant(torch.nn.Module):
        """Weights as the ONNX stage will store them, gradients straight through (STE).

        8 bits: symmetric per channel in [-127, 127], scale = max|w| / 127 (ONNX Runtime's rule for symmetric
        QInt8 weights, so its post-training quantizer finds the trained grid again).
        4 bits: scale = max|w| / 7, so the trained weights fill the grid quantize_weight_only reproduces
        exactly. 2 bits: the least-squares scale found at the start, kept. 1 bit: sign * mean|w|.
        A mask (pruned weights) keeps zeros at zero.
        """

        def __init__(self, bits: int, weight: Any, mask: Any | None) -> None:
            super().__init__()
            self.bits = bits
            self.register_buffer("mask", mask if mask is not None else torch.ones_like(weight, dtype=torch.bool))
            fixed = quantize_weight_only(weight.detach().cpu().numpy(), 2)[1] if bits == 2 else np.ones(1)
            self.register_buffer("fixed_scale", torch.from_numpy(fixed))

        def forward(self, w: Any) -> Any:
            w = w * self.mask
            flat = w.reshape(w.shape[0], -1)
            if self.bits == 1:
                alpha = flat.abs().mean(dim=1, keepdim=True)
                fake = torch.where(flat >= 0, alpha, -alpha)
                # straight-through: the value is exactly fake (x - x == 0), the gradient is flat's
                return (fake.detach() + (flat - flat.detach())).reshape(w.shape) * self.mask
            if self.bits == 8:
                scale, low, high = flat.abs().amax(dim=1).detach() / 127, -127, 127
            elif self.bits == 4:
                scale, low, high = flat.abs().amax(dim=1).detach() / 7, -8, 7
            else:
                scale, low, high = self.fixed_scale.to(w.dtype), -2, 1
            scale = torch.where(scale > 0, scale, torch.ones_like(scale)).float()
            zero = torch.zeros(len(scale), dtype=torch.int32)
            fake = torch.fake_quantize_per_channel_affine(w, scale, zero, 0, low, high)
            return fake * self.mask

    class ActivationFakeQuant(torch.nn.Module):
        """uint8 per-tensor fake quantization of a layer's input, its range an exponential moving min/max."""

        def __init__(self, momentum: float = 0.01) -> None:
            super().__init__()
            self.momentum = momentum
            self.register_buffer("low", torch.tensor(float("nan")))
            self.register_buffer("high", torch.tensor(float("nan")))

        def forward(self, x: Any) -> Any:
            if self.training or torch.isnan(self.low):
                low, high = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
                if torch.isnan(self.low):
                    self.low.copy_(low)
                    self.high.copy_(high)
                else:
                    self.low.lerp_(low, self.momentum)
                    self.high.lerp_(high, self.momentum)
            scale = float(max((self.high - self.low).item() / 255, 1e-8))
            zero = int(min(max(round(-self.low.item() / scale), 0), 255))
            return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)

    return WeightFakeQuant, ActivationFakeQuant


class QuantizationAwareTraining(Technique):
    """``plan.model.qat = true``: the recovery trains with the plan's quantization simulated (fake-quant with
    a straight-through estimator), then the weights, now on their quantization grid, go to the ONNX stage,
    which stores them in the same QDQ / weight-only form as post-training quantization (losslessly for
    the weights; activation ranges are calibrated again there)."""

    name = "qat"
    description = "quantization-aware training (fake-quant, STE) for INT8 and 4/2/1-bit weight layers"
    stage = "torch"
    needs_recovery = True
    pipeline_step = 2  # last: train with quantization once pruning and weight sharing have settled

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("torch", "pip install 'edgeslim[torch]'")

    def knob_names(self) -> list[Knob]:
        return [Knob(self.name, "qat", None, (False, True))]

    def is_active(self, plan: Plan) -> bool:
        return bool(plan.get("model", {}).get("qat")) and bool(self._bits(plan))

    @staticmethod
    def _bits(plan: Plan) -> dict[str, int]:
        """{layer: simulated weight bits}: INT8 layers, and weight-only layers below 16 bits."""
        out = {layer: 8 for layer, b in layer_decisions(plan, "bits").items() if int(b) == 8}
        for layer, b in layer_decisions(plan, "weight_bits").items():
            if int(b) in (4, 2, 1) and layer not in out:
                out[layer] = int(b)
        return out

    def apply_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        from torch.nn.utils import parametrize, prune

        from edgeslim.plugins.pruning import UnstructuredPruning

        ctx.notes += [f"qat: folded {pair}" for pair in fold_batchnorms(module, ctx.source.example_input)]
        weight_fq, activation_fq = _fake_quant_modules()
        bits = self._bits(plan)
        for (layer, _part), holder in UnstructuredPruning._torch_weights(module, ctx).items():
            if layer not in bits:
                continue
            mask = None
            if prune.is_pruned(holder):
                mask = holder.weight_mask.bool().clone()
                prune.remove(holder, "weight")
            elif parametrize.is_parametrized(holder, "weight"):  # shared weights: freeze them as they are
                parametrize.remove_parametrizations(holder, "weight", leave_parametrized=True)
                mask = holder.weight.detach() != 0
            parametrize.register_parametrization(holder, "weight", weight_fq(bits[layer], holder.weight, mask),
                                                 unsafe=True)
            if bits[layer] == 8:
                holder._edgeslim_act_fq = activation_fq()
                holder._edgeslim_act_hook = holder.register_forward_pre_hook(
                    lambda m, args: (m._edgeslim_act_fq(args[0]), *args[1:]))
        return module

    def finalize_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        from torch.nn.utils import parametrize

        from edgeslim.plugins.pruning import UnstructuredPruning

        for holder in UnstructuredPruning._torch_weights(module, ctx).values():
            if parametrize.is_parametrized(holder, "weight"):
                # the exported weight is the fake-quantized one: exactly on the grid the ONNX stage uses
                parametrize.remove_parametrizations(holder, "weight", leave_parametrized=True)
            if hasattr(holder, "_edgeslim_act_hook"):
                holder._edgeslim_act_hook.remove()
                del holder._edgeslim_act_hook, holder._edgeslim_act_fq
        return module


@hookimpl
def edgeslim_register_techniques(register):
    register(Int8Quantization())
    register(WeightOnlyQuantization())
    register(QuantizationAwareTraining())
