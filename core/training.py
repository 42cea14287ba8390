"""Compression during training, inside the user's own training loop.

The search compresses a trained model and recovers it briefly. Users who can retrain for longer get more
out of the same decisions by training with them in place:

- :class:`GradualPruning`: unstructured magnitude pruning whose sparsity grows along Zhu & Gupta's (2017)
  cubic schedule while the network trains, masks held between updates (one global threshold, or per layer).
- :func:`compress_for_training`: apply a plan's torch-stage decisions (channel/neuron pruning, low-rank
  factors, removed blocks, unstructured masks held) to the user's model, train it with any recipe, then
  ``finish()`` and export; ``edgeslim apply EXPORTED.onnx --plan PLAN`` adds the ONNX-stage decisions
  (quantization) and measures the result on the device.

    compressed = compress_for_training(model, plan, example_input)
    train(compressed.module)                  # the user's own loop, any recipe
    while compressed.next_step():             # e.g. weight sharing, after the pruned network has retrained
        train(compressed.module)              # (a new optimizer: the step adds parameters)
    model = compressed.finish()
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim.errors import EdgeslimError
from edgeslim.plan import Plan
from edgeslim.technique import BuildContext, Technique, recovery_rounds, torch_stage_techniques


def cubic_sparsity(step: int, final: float, start_step: int, end_step: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's schedule: prune fast early, when the network has redundancy to spare, then slowly."""
    if step < start_step:
        return 0.0
    if step >= end_step:
        return final
    progress = (step - start_step) / (end_step - start_step)
    return final + (initial - final) * (1.0 - progress) ** 3


class GradualPruning:
    """Call :meth:`step` after every optimizer step; the masks follow the schedule every ``frequency`` steps.

    ``sparsity`` is one global level (a single magnitude threshold over all Conv2d/Linear weights) or
    ``{module name: level}``. Masked weights stay zero in between (``torch.nn.utils.prune``'s
    ``weight = weight_orig * mask``) and :meth:`finish` leaves plain parameters with the zeros in them.
    """

    def __init__(self, model: Any, sparsity: float | dict[str, float], start_step: int, end_step: int,
                 frequency: int = 100) -> None:
        import torch

        if not 0 <= start_step < end_step:
            raise EdgeslimError(f"GradualPruning: need 0 <= start_step < end_step, got {start_step}, {end_step}")
        if frequency < 1:
            raise EdgeslimError(f"GradualPruning: frequency must be >= 1, got {frequency}")
        levels = sparsity.values() if isinstance(sparsity, dict) else [sparsity]
        if any(not 0 <= level < 1 for level in levels):
            raise EdgeslimError(f"GradualPruning: sparsity must be in [0, 1), got {sparsity}")
        layers = {name: m for name, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
        if isinstance(sparsity, dict):
            unknown = sorted(set(sparsity) - set(layers))
            if unknown:
                raise EdgeslimError(f"GradualPruning: {', '.join(unknown)} are not Conv2d/Linear modules of the "
                                    f"model (known: {', '.join(layers)})")
            layers = {name: layers[name] for name in sparsity}
        self.model, self.sparsity, self.layers = model, sparsity, layers
        self.start_step, self.end_step, self.frequency = start_step, end_step, frequency
        self.steps = 0
        self.current = 0.0

    def step(self) -> None:
        self.steps += 1
        if self.steps < self.start_step or self.steps > self.end_step:
            return
        if (self.steps - self.start_step) % self.frequency == 0 or self.steps == self.end_step:
            self._update(self.steps)

    def _update(self, step: int) -> None:
        import torch
        from torch.nn.utils import prune

        weights = {name: self._weight(layer) for name, layer in self.layers.items()}
        if isinstance(self.sparsity, dict):
            levels = {name: cubic_sparsity(step, level, self.start_step, self.end_step)
                      for name, level in self.sparsity.items()}
            thresholds = {name: _magnitude_cut(w, levels[name]) for name, w in weights.items()}
            self.current = max(levels.values(), default=0.0)
        else:
            self.current = cubic_sparsity(step, float(self.sparsity), self.start_step, self.end_step)
            cut = _magnitude_cut(torch.cat([w.flatten() for w in weights.values()]), self.current)
            thresholds = dict.fromkeys(weights, cut)
        for name, layer in self.layers.items():
            if thresholds[name] is None:
                continue
            mask = weights[name].abs() > thresholds[name]
            if prune.is_pruned(layer):
                prune.remove(layer, "weight")  # the zeros stay; the next mask contains the previous one
            prune.custom_from_mask(layer, "weight", mask)

    @staticmethod
    def _weight(layer: Any) -> Any:
        return (layer.weight_orig * layer.weight_mask if hasattr(layer, "weight_orig") else layer.weight).detach()

    def finish(self) -> Any:
        """Make the masks permanent (plain parameters) and return the model."""
        from torch.nn.utils import prune

        for layer in self.layers.values():
            if prune.is_pruned(layer):
                prune.remove(layer, "weight")
        return self.model


def _magnitude_cut(weights: Any, level: float) -> Any:
    """The magnitude below (and at) which a fraction ``level`` of ``weights`` lies; None for nothing to prune.
    kthvalue rather than torch.quantile, which refuses tensors of over 16M elements."""
    k = int(level * weights.numel())
    return weights.abs().flatten().kthvalue(k).values if k > 0 else None


@dataclass
class CompressedForTraining:
    """A user's model with a plan's torch-stage decisions in place; train ``module``, then :meth:`finish`."""

    module: Any
    plan: Plan
    techniques: list[Technique]
    context: BuildContext
    notes: list[str] = field(default_factory=list)
    #: techniques of later recovery rounds, applied by :meth:`next_step` after the user has trained
    pending: list[Technique] = field(default_factory=list)
    applied: list[Technique] = field(default_factory=list)

    def next_step(self) -> bool:
        """Apply the next recovery round's decisions (False when none is left): the user trains between rounds,
        as the search's build recovers between them (:data:`edgeslim.technique.RECOVERY_ROUNDS`)."""
        rounds = recovery_rounds(self.pending)
        if not rounds:
            return False
        for tech in rounds[0][1]:
            self.module = tech.apply_torch(self.module, self.plan, self.context)
            self.pending.remove(tech)
            self.applied.append(tech)
        return True

    def finish(self) -> Any:
        """Apply any step not applied yet, make held decisions permanent, and return the module."""
        while self.next_step():
            pass
        for tech in self.applied:
            self.module = tech.finalize_torch(self.module, self.plan, self.context)
        return self.module.eval()


def compress_for_training(model: Any, plan: Plan, example_input: np.ndarray, input_name: str = "input",
                          plugins: tuple[Any, ...] = ()) -> CompressedForTraining:
    """Apply ``plan``'s torch-stage decisions to (a copy of) ``model`` for training with them in place."""
    import copy

    from edgeslim.host import load_registry
    from edgeslim.model import torch_source

    registry = load_registry(plugins)
    # the user trains the module, so techniques that retrain around their decisions join the torch stage
    active = torch_stage_techniques(registry.techniques.values(), plan, can_train=True)
    with tempfile.TemporaryDirectory(prefix="edgeslim-train-") as tmp:
        source = torch_source(model, np.asarray(example_input, dtype=np.float32), Path(tmp) / "src", input_name)
        known = {layer.name for layer in source.layers}
        unknown = sorted(set(plan.get("layers", {})) - known - _block_names(plan))
        if unknown:
            raise EdgeslimError(f"plan names layers the model does not have: {', '.join(unknown)} "
                                f"(its layers: {', '.join(sorted(known))})")
        ctx = BuildContext(source=source, calibration=[], work_dir=Path(tmp))
        compressed = CompressedForTraining(module=copy.deepcopy(model), plan=plan, techniques=active, context=ctx,
                                           notes=ctx.notes, pending=list(active))
        compressed.next_step()
    return compressed


def _block_names(plan: Plan) -> set[str]:
    """Layer pruning's decisions name residual blocks, not Conv/Linear layers."""
    return {name for name, decisions in plan.get("layers", {}).items() if "remove" in decisions}
