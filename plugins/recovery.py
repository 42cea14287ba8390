"""Recovery methods of their own: plain fine-tuning, and least-squares reconstruction for models without data.

- ``finetune``: cross-entropy on the task's training data (seeded, so a plan always gives the same model).
- ``least_squares``: needs no labels and no training data, only calibration inputs: every layer whose inputs
  pruning narrowed gets new weights that reproduce the original layer's outputs (He et al., ICCV 2017,
  "Channel Pruning for Accelerating Very Deep Neural Networks"), layer by layer in forward order. It is what
  a bare ONNX model (converted to torch with onnx2torch) recovers with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeslim import hookimpl
from edgeslim.errors import EdgeslimError
from edgeslim.finetune import finetune
from edgeslim.recovery import Recovery, RecoveryData
from edgeslim.settings import module_available


class FineTuneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)
    seed: int = 0


class FineTune(Recovery):
    name = "finetune"
    description = "recovery by fine-tuning on the task's labelled training data (cross-entropy)"
    Settings = FineTuneSettings

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("torch", "pip install 'edgeslim[torch]'")

    def recover(self, student: Any, teacher: Any, data: RecoveryData, epochs: int, settings: Any) -> list[str]:
        if data.train is None or data.train[1] is None:
            raise EdgeslimError("--recovery finetune needs labelled training data (the task's train_data); "
                                "use --recovery distillation for unlabelled data")
        finetune(student, (data.train[0], data.train[1]), epochs=epochs, lr=settings.lr,
                 batch_size=settings.batch_size, seed=settings.seed, after_epoch=data.epoch_done)
        return []


class LeastSquaresSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_rows: int = Field(default=20000, ge=16, description="rows of the least-squares system per layer")
    ridge: float = Field(default=1e-3, ge=0, description="ridge term, relative to the Gram matrix's diagonal")


class LeastSquaresReconstruction(Recovery):
    name = "least_squares"
    description = "rebuild narrowed layers from calibration inputs by least squares (no labels; bare ONNX)"
    needs_training_data = False
    Settings = LeastSquaresSettings

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("torch", "pip install 'edgeslim[torch]'")

    def recover(self, student: Any, teacher: Any, data: RecoveryData, epochs: int, settings: Any) -> list[str]:
        if data.calibration_inputs is None:
            return ["least squares: no calibration inputs, layers left as pruned"]
        return reconstruct_least_squares(student, teacher, data.calibration_inputs, settings.max_rows,
                                         settings.ridge)


def reconstruct_least_squares(pruned: Any, original: Any, inputs: np.ndarray, max_rows: int = 20000,
                              ridge: float = 1e-3) -> list[str]:
    """Channel pruning without labels (He et al. 2017): every layer whose inputs were narrowed gets new
    weights, by ridge least squares, that reproduce the original layer's (kept) outputs on ``inputs``."""
    import torch

    originals = dict(original.named_modules())
    targets = {}
    for name, module in pruned.named_modules():
        ref = originals.get(name)
        if isinstance(module, torch.nn.Conv2d) and isinstance(ref, torch.nn.Conv2d) and module.groups == 1:
            if module.in_channels != ref.in_channels:
                targets[name] = (module, ref)
        elif isinstance(module, torch.nn.Linear) and isinstance(ref, torch.nn.Linear):
            if module.in_features != ref.in_features:
                targets[name] = (module, ref)
    if not targets:
        return []
    # the original layers' outputs: the targets, computed once
    seen_out: dict[str, list[Any]] = {name: [] for name in targets}
    called: list[str] = []  # forward order of the pruned layers
    hooks = [ref.register_forward_hook(lambda m, i, o, k=name: seen_out[k].append(o.detach()))
             for name, (_module, ref) in targets.items()]
    hooks += [module.register_forward_hook(lambda m, i, o, k=name: called.append(k) if k not in called else None)
              for name, (module, _ref) in targets.items()]
    batches = [torch.from_numpy(np.asarray(inputs[s : s + 16], dtype=np.float32)) for s in range(0, len(inputs), 16)]
    try:
        with torch.no_grad():
            for batch in batches:
                original.eval()(batch)
            pruned.eval()(batches[0])
    finally:
        for h in hooks:
            h.remove()

    def inputs_of(name: str) -> Any:
        """The layer's inputs in the pruned network as it is now, earlier layers already rebuilt (He et al.
        reconstruct layer by layer, so each layer also corrects the error accumulated before it)."""
        seen: list[Any] = []
        hook = targets[name][0].register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
        try:
            with torch.no_grad():
                for batch in batches:
                    pruned(batch)
        finally:
            hook.remove()
        return torch.cat(seen)

    notes = []
    generator = torch.Generator().manual_seed(0)
    for name in called:
        module = targets[name][0]
        rows = _solve_layer(module, inputs_of(name), torch.cat(seen_out[name]), max_rows, ridge, generator)
        notes.append(f"least squares: rebuilt {name} from {rows} calibration rows")
    return notes


def _solve_layer(module: Any, x: Any, y: Any, max_rows: int, ridge: float, generator: Any) -> int:
    """New weights (and bias) for one narrowed layer: ridge least squares from its inputs ``x`` in the pruned
    network to the original layer's outputs ``y`` (its kept channels). Returns the rows used."""
    import torch
    import torch.nn.functional as F

    kept = getattr(module, "_edgeslim_kept_out", None)
    if kept is not None:
        y = y[:, kept]
    if isinstance(module, torch.nn.Conv2d):
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding,
                        stride=module.stride)  # (N, C*k*k, L)
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        target = y.reshape(y.shape[0], y.shape[1], -1).transpose(1, 2).reshape(-1, y.shape[1])
    else:
        rows, target = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    if rows.shape[0] > max_rows:
        pick = torch.randperm(rows.shape[0], generator=generator)[:max_rows]
        rows, target = rows[pick], target[pick]
    has_bias = module.bias is not None
    design = torch.cat([rows, torch.ones(rows.shape[0], 1)], dim=1) if has_bias else rows
    gram = design.T @ design
    gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0])
    solution = torch.linalg.solve(gram.double(), (design.T @ target).double()).float()  # (in(+1), out)
    weight = solution[: rows.shape[1]].T
    module.weight.data.copy_(weight.reshape(module.weight.shape))
    if has_bias:
        module.bias.data.copy_(solution[-1])
    return int(rows.shape[0])


@hookimpl
def edgeslim_register_recoveries(register):
    register(FineTune)
    register(LeastSquaresReconstruction)
