"""Pruning: structured channel pruning of torch models, channels physically removed.

Torch-Pruning's dependency graph finds every layer coupled to a pruned
channel (the next layer's input, batch norms, residual partners), so the
exported ONNX model is really smaller and faster, not just sparse.
Importance: L1 magnitude of each output filter.
"""

from __future__ import annotations

from typing import Any

from edgeslim import hookimpl
from edgeslim.model import ModelSource
from edgeslim.plan import Plan, layer_decisions
from edgeslim.technique import BuildContext, Knob, Technique

SPARSITY_LEVELS = (0.0, 0.25, 0.5, 0.75)


def channels_to_keep(channels: int, sparsity: float) -> int:
    """Round kept channels to a multiple of 8 where possible: SIMD kernels are fastest on such widths."""
    keep = channels * (1.0 - sparsity)
    if channels >= 16:
        return max(8, int(round(keep / 8.0)) * 8)
    return max(1, int(round(keep)))


class ChannelPruning(Technique):
    name = "pruning"
    description = "structured channel pruning (L1 magnitude), channels physically removed via Torch-Pruning"
    stage = "torch"
    needs_recovery = True

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import torch_pruning  # noqa: F401
        except ImportError as exc:
            return False, f"needs torch and torch-pruning ({exc}); pip install 'edgeslim[torch]'"
        return True, ""

    def knob_names(self) -> list[Knob]:
        return [Knob(self.name, "sparsity", None, SPARSITY_LEVELS)]

    def knobs(self, source: ModelSource) -> list[Knob]:
        if source.kind != "torch":
            return []
        return [Knob(self.name, "sparsity", layer.name, SPARSITY_LEVELS)
                for layer in source.layers if layer.prunable and (layer.out_channels or 0) >= 4]

    def apply_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        import torch
        import torch_pruning as tp

        ratios = layer_decisions(plan, "sparsity")
        if not ratios:
            return module
        example = torch.from_numpy(ctx.source.example_input.astype("float32"))
        module.eval()
        graph = tp.DependencyGraph().build_dependency(module, example_inputs=example)
        order = [layer.name for layer in ctx.source.layers if layer.name in ratios]
        for name in order:
            layer = module.get_submodule(name)
            if isinstance(layer, torch.nn.Conv2d):
                channels, prune_fn, dims = layer.out_channels, tp.prune_conv_out_channels, (1, 2, 3)
            elif isinstance(layer, torch.nn.Linear):
                channels, prune_fn, dims = layer.out_features, tp.prune_linear_out_channels, (1,)
            else:
                continue
            original = ctx.source.layer(name).out_channels or channels
            keep = channels_to_keep(original, float(ratios[name]))
            remove = channels - keep
            if remove <= 0:
                continue  # already narrowed through a coupled layer
            importance = layer.weight.detach().abs().sum(dim=dims)
            idxs = importance.argsort()[:remove].tolist()
            group = graph.get_pruning_group(layer, prune_fn, idxs=idxs)
            if graph.check_pruning_group(group):
                group.prune()
            else:
                ctx.notes.append(f"pruning: {name} cannot be pruned (dependency check failed); kept whole")
        return module


@hookimpl
def edgeslim_register_techniques(register):
    register(ChannelPruning())
