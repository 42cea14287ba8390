"""Low-rank factorization: SVD for linear layers, Tucker-2 (HOSVD) for convolutions; rank kept per layer.

Linear(in, out) -> Linear(in, r, no bias) -> Linear(r, out); Conv(C_in, C_out, k) -> 1x1 (C_in -> r_in)
-> k x k (r_in -> r_out, the original stride and padding) -> 1x1 (r_out -> C_out, the original bias).
The knob ``rank`` is the fraction of each mode's full rank kept; a layer is offered only at levels that
reduce its multiply-accumulates.
"""

from __future__ import annotations

from typing import Any

from edgeslim import hookimpl
from edgeslim.model import ModelSource
from edgeslim.plan import Plan, layer_decisions
from edgeslim.settings import module_available
from edgeslim.technique import BuildContext, Knob, Technique

RANK_LEVELS = (1.0, 0.5, 0.25)


def _rank(full: int, fraction: float) -> int:
    return max(1, int(round(full * fraction)))


def linear_saves(in_f: int, out_f: int, fraction: float) -> bool:
    r = _rank(min(in_f, out_f), fraction)
    return r * (in_f + out_f) < in_f * out_f


def conv_saves(c_in: int, c_out: int, k: int, fraction: float) -> bool:
    r_in, r_out = _rank(c_in, fraction), _rank(c_out, fraction)
    return c_in * r_in + r_in * r_out * k * k + r_out * c_out < c_in * c_out * k * k


def factorize_linear(layer: Any, fraction: float) -> Any:
    import torch

    w = layer.weight.detach()
    r = _rank(min(w.shape), fraction)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    first = torch.nn.Linear(w.shape[1], r, bias=False)
    second = torch.nn.Linear(r, w.shape[0], bias=layer.bias is not None)
    root = s[:r].sqrt()
    first.weight.data.copy_(root[:, None] * vh[:r])
    second.weight.data.copy_(u[:, :r] * root[None, :])
    if layer.bias is not None:
        second.bias.data.copy_(layer.bias.detach())
    return torch.nn.Sequential(first, second)


def factorize_conv(layer: Any, fraction: float) -> Any:
    import torch

    w = layer.weight.detach()  # (O, I, kh, kw)
    o, i, kh, kw = w.shape
    r_out, r_in = _rank(o, fraction), _rank(i, fraction)
    u_out = torch.linalg.svd(w.reshape(o, -1), full_matrices=False)[0][:, :r_out]  # (O, r_out)
    u_in = torch.linalg.svd(w.permute(1, 0, 2, 3).reshape(i, -1), full_matrices=False)[0][:, :r_in]  # (I, r_in)
    core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)  # (r_out, r_in, kh, kw)
    first = torch.nn.Conv2d(i, r_in, 1, bias=False)
    middle = torch.nn.Conv2d(r_in, r_out, (kh, kw), stride=layer.stride, padding=layer.padding,
                             dilation=layer.dilation, bias=False)
    last = torch.nn.Conv2d(r_out, o, 1, bias=layer.bias is not None)
    first.weight.data.copy_(u_in.t()[:, :, None, None])
    middle.weight.data.copy_(core)
    last.weight.data.copy_(u_out[:, :, None, None])
    if layer.bias is not None:
        last.bias.data.copy_(layer.bias.detach())
    return torch.nn.Sequential(first, middle, last)


class LowRankFactorization(Technique):
    name = "lowrank"
    description = "low-rank factorization: SVD for Linear, Tucker-2 for Conv2d; rank fraction per layer"
    stage = "torch"
    needs_recovery = True
    phase = "factorization"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("torch", "pip install 'edgeslim[torch]'")

    def decision_names(self) -> frozenset[str]:
        return frozenset({"rank"})

    def knobs(self, source: ModelSource) -> list[Knob]:
        if source.torch_model is None:
            return []
        import torch

        knobs = []
        for layer in source.layers:
            module = source.torch_model.get_submodule(source.module_name(layer.name))
            if isinstance(module, torch.nn.Linear):
                levels = [f for f in RANK_LEVELS[1:] if linear_saves(module.in_features, module.out_features, f)]
            elif isinstance(module, torch.nn.Conv2d) and module.groups == 1 and module.kernel_size != (1, 1):
                levels = [f for f in RANK_LEVELS[1:]
                          if conv_saves(module.in_channels, module.out_channels, module.kernel_size[0], f)]
            else:
                levels = []
            if levels:
                knobs.append(Knob(self.name, "rank", layer.name, (1.0, *levels), splits_layer=True))
        return knobs

    def apply_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        import torch

        for name, fraction in layer_decisions(plan, "rank").items():
            if float(fraction) >= 1.0:
                continue
            name = ctx.source.module_name(name)
            try:
                layer = module.get_submodule(name)
            except AttributeError:
                ctx.notes.append(f"lowrank: {name} no longer exists (removed by another technique)")
                continue
            if isinstance(layer, torch.nn.Linear):
                replacement = factorize_linear(layer, float(fraction))
            elif isinstance(layer, torch.nn.Conv2d) and layer.groups == 1:
                replacement = factorize_conv(layer, float(fraction))
            else:
                continue
            parent_name, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent_name) if parent_name else module, child, replacement)
        return module


@hookimpl
def edgeslim_register_techniques(register):
    register(LowRankFactorization())
