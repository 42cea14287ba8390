"""Quantization-aware training: the recovery trains with the plan's quantization simulated.

``plan.model.qat = true`` (``edgeslim apply --qat``): batch norms are folded into their convolutions, weights of
INT8 layers and of 4/2/1-bit weight-only layers are fake-quantized with a straight-through estimator (INT8
layers' inputs too), and after training the weights, now on their grid, go to the ONNX stage, which stores
them exactly as post-training quantization does (:mod:`edgeslim.plugins.quantization`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeslim import hookimpl
from edgeslim.plan import Plan, layer_decisions
from edgeslim.plugins.weight_quantization import quantize_weight_only
from edgeslim.settings import module_available
from edgeslim.technique import BuildContext, Technique


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


def _weight_fake_quant_class() -> Any:
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

    return WeightFakeQuant


def _activation_fake_quant_class() -> Any:
    import torch

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

    return ActivationFakeQuant


def _fake_quant_modules() -> tuple[Any, Any]:
    """The two fake-quant module classes, made on first use: torch is an optional dependency."""
    return _weight_fake_quant_class(), _activation_fake_quant_class()


class QuantizationAwareTraining(Technique):
    """``plan.model.qat = true``: the recovery trains with the plan's quantization simulated (fake-quant with
    a straight-through estimator), then the weights, now on their quantization grid, go to the ONNX stage,
    which stores them in the same QDQ / weight-only form as post-training quantization (losslessly for
    the weights; activation ranges are calibrated again there)."""

    name = "qat"
    description = "quantization-aware training (fake-quant, STE) for INT8 and 4/2/1-bit weight layers"
    stage = "torch"
    # last: train with quantization simulated once pruning and weight sharing have settled (its own round)
    phase = "precision"
    needs_recovery = True

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("torch", "pip install 'edgeslim[torch]'")

    def decision_names(self) -> frozenset[str]:
        return frozenset({"qat"})

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

        ctx.notes += [f"qat: folded {pair}" for pair in fold_batchnorms(module, ctx.source.example_input)]
        weight_fq, activation_fq = _fake_quant_modules()
        bits = self._bits(plan)
        for (layer, _part), holder in ctx.torch_weight_layers(module).items():
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

        for holder in ctx.torch_weight_layers(module).values():
            if parametrize.is_parametrized(holder, "weight"):
                # the exported weight is the fake-quantized one: exactly on the grid the ONNX stage uses
                parametrize.remove_parametrizations(holder, "weight", leave_parametrized=True)
            if hasattr(holder, "_edgeslim_act_hook"):
                holder._edgeslim_act_hook.remove()
                del holder._edgeslim_act_hook, holder._edgeslim_act_fq
        return module


@hookimpl
def edgeslim_register_techniques(register):
    register(QuantizationAwareTraining())
