"""Pruning, every kind: channels/filters and neurons, whole residual blocks, unstructured weights, 2:4.

- ``sparsity`` (torch stage): structured channel pruning of Conv2d filters and Linear neurons, channels
  physically removed through Torch-Pruning's dependency graph (coupled layers, batch norms, residual
  partners and depthwise groups shrink together), so the exported model is really smaller and faster.
  Importance (``plan.model.prune_importance``): ``magnitude`` (L1 of each filter) or ``taylor`` (first-order
  Taylor |w * dL/dw| summed over the filter, from a few batches of the task's training data).
- ``remove`` (torch stage): drop a whole residual block (a module whose output has its input's shape),
  replaced by the identity.
- ``weight_sparsity`` / ``global_weight_sparsity`` (ONNX stage, any model): unstructured magnitude pruning
  per layer or with one global threshold. Zeros do not make dense kernels faster; their size benefit is made
  real by :func:`pack_sparse` (bitmask + non-zero values), which the search records as ``packed_bytes``.
- ``nm_sparsity`` (ONNX stage): the 2:4 pattern (two of every four consecutive input weights zero), which
  TensorRT's sparse tensor cores run (the TensorRT target turns ``--sparsity=enable`` on for such plans).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgeslim import hookimpl
from edgeslim.model import ModelSource
from edgeslim.plan import Plan, layer_decisions
from edgeslim.plugins.channel_groups import channel_groups
from edgeslim.settings import module_available
from edgeslim.technique import BuildContext, Knob, Technique

SPARSITY_LEVELS = (0.0, 0.25, 0.5, 0.75)
WEIGHT_SPARSITY_LEVELS = (0.0, 0.5, 0.75, 0.9)


def channels_to_keep(channels: int, sparsity: float) -> int:
    """Round kept channels to a multiple of 8 where possible: SIMD kernels are fastest on such widths."""
    keep = channels * (1.0 - sparsity)
    if channels >= 16:
        return max(8, int(round(keep / 8.0)) * 8)
    return max(1, int(round(keep)))


def taylor_importance(module: Any, ctx: BuildContext, names: list[str], batches: int = 8,
                      batch_size: int = 64) -> dict[str, Any]:
    """First-order Taylor importance per output channel, from the task's labelled training data."""
    import torch

    x, y = ctx.train_data
    layers = {name: module.get_submodule(ctx.source.module_name(name)) for name in names}
    scores = {name: torch.zeros(layer.weight.shape[0]) for name, layer in layers.items()}
    module.eval()  # batch-norm statistics stay as trained
    loss_fn = torch.nn.CrossEntropyLoss()
    for b in range(batches):
        xb = torch.from_numpy(np.asarray(x[b * batch_size : (b + 1) * batch_size], dtype=np.float32))
        yb = torch.from_numpy(np.asarray(y[b * batch_size : (b + 1) * batch_size]).astype(np.int64))
        if len(xb) == 0:
            break
        module.zero_grad()
        loss_fn(module(xb), yb).backward()
        for name, layer in layers.items():
            contribution = (layer.weight * layer.weight.grad).detach().abs()
            scores[name] += contribution.reshape(contribution.shape[0], -1).sum(dim=1)
    module.zero_grad()
    return scores


class ChannelPruning(Technique):
    name = "pruning"
    description = "filter/channel and neuron pruning (magnitude or Taylor), channels removed via Torch-Pruning"
    stage = "torch"
    phase = "channels"
    needs_recovery = True

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("torch_pruning", "pip install 'edgeslim[torch]'")

    def decision_names(self) -> frozenset[str]:
        return frozenset({"sparsity"})

    def is_active(self, plan: Plan) -> bool:
        return bool(layer_decisions(plan, "sparsity"))

    def knobs(self, source: ModelSource) -> list[Knob]:
        """One knob per group of layers whose channels shrink together (:mod:`edgeslim.plugins.channel_groups`),
        on the group's first prunable layer; a layer whose group cannot be traced gets a knob of its own."""
        if source.torch_model is None:
            return []
        prunable = [layer.name for layer in source.layers if layer.prunable and (layer.out_channels or 0) >= 4]
        groups = channel_groups(source, prunable)
        knobs = []
        for name in prunable:
            group = groups.get(name)
            if group is None:
                knobs.append(Knob(self.name, "sparsity", name, SPARSITY_LEVELS, narrows_consumers=True))
            elif name == next(member for member in group.members if member in prunable):
                knobs.append(Knob(self.name, "sparsity", name, SPARSITY_LEVELS, narrows_consumers=True,
                                  shares_channels_with=tuple(m for m in group.members if m != name),
                                  narrows=group.consumers))
        return knobs

    def apply_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        import torch
        import torch_pruning as tp

        ratios = layer_decisions(plan, "sparsity")
        if not ratios:
            return module
        criterion = plan.get("model", {}).get("prune_importance", "magnitude")
        example = torch.from_numpy(ctx.source.example_input.astype("float32"))
        order = [layer.name for layer in ctx.source.layers if layer.name in ratios]
        taylor = None
        if criterion == "taylor":
            if ctx.train_data is None:
                ctx.notes.append("pruning: Taylor importance needs train_data; used magnitude")
            else:
                taylor = taylor_importance(module, ctx, order)
        module.eval()
        graph = tp.DependencyGraph().build_dependency(module, example_inputs=example)
        for name in order:
            layer = module.get_submodule(ctx.source.module_name(name))
            if isinstance(layer, torch.nn.Conv2d):
                channels, prune_fn = layer.out_channels, tp.prune_conv_out_channels
            elif isinstance(layer, torch.nn.Linear):
                channels, prune_fn = layer.out_features, tp.prune_linear_out_channels
            else:
                continue
            original = ctx.source.layer(name).out_channels or channels
            remove = channels - channels_to_keep(original, float(ratios[name]))
            if remove <= 0:
                continue  # already narrowed through a coupled layer
            if taylor is not None and taylor[name].shape[0] == channels:
                importance = taylor[name]
            else:
                importance = layer.weight.detach().abs().reshape(channels, -1).sum(dim=1)
            idxs = importance.argsort()[:remove].tolist()
            try:
                group = graph.get_pruning_group(layer, prune_fn, idxs=idxs)
            except ValueError as exc:  # not reached by the traced graph (e.g. behind an ArgMax), so unprunable
                ctx.notes.append(f"pruning: {name} kept whole ({exc})")
                continue
            if graph.check_pruning_group(group):
                _record_kept_outputs(group)
                group.prune()
            else:
                ctx.notes.append(f"pruning: {name} cannot be pruned (dependency check failed); kept whole")
        return module


def _record_kept_outputs(group: Any) -> None:
    """Remember which original output channels each layer keeps (least-squares reconstruction needs it)."""
    import torch

    for item in group:
        module = item.dep.target.module
        if not isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            continue
        if getattr(item.dep.handler, "__name__", "") != "prune_out_channels":
            continue
        count = module.out_channels if isinstance(module, torch.nn.Conv2d) else module.out_features
        previous = getattr(module, "_edgeslim_kept_out", list(range(count)))
        removed = set(item.idxs)
        module._edgeslim_kept_out = [previous[i] for i in range(len(previous)) if i not in removed]


def removable_blocks(source: ModelSource) -> list[str]:
    """Modules inside an nn.Sequential whose output has their input's shape and that hold a convolution:
    residual blocks, which the identity can replace."""
    import torch

    found: list[str] = []
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    hooks = []
    model = source.torch_model
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, torch.nn.Sequential):
            continue
        for child_name, child in parent.named_children():
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if any(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in child.modules()) and not isinstance(
                    child, (torch.nn.Conv2d, torch.nn.Linear)):
                hooks.append(child.register_forward_hook(
                    lambda m, i, o, k=full: shapes.__setitem__(k, (tuple(i[0].shape), tuple(o.shape)))))
    try:
        with torch.no_grad():
            model.eval()(torch.from_numpy(source.example_input.astype(np.float32)))
    finally:
        for h in hooks:
            h.remove()
    for name, (shape_in, shape_out) in shapes.items():
        if shape_in == shape_out:
            found.append(name)
    return found


class LayerPruning(Technique):
    name = "layer_pruning"
    description = "remove whole residual blocks (replaced by the identity) where shapes allow"
    stage = "torch"
    phase = "blocks"
    needs_recovery = True

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return ChannelPruning.available()

    def decision_names(self) -> frozenset[str]:
        return frozenset({"remove"})

    def knobs(self, source: ModelSource) -> list[Knob]:
        if source.torch_model is None:
            return []
        return [Knob(self.name, "remove", block, (False, True)) for block in removable_blocks(source)]

    def apply_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        import torch

        for name, remove in layer_decisions(plan, "remove").items():
            if not remove:
                continue
            parent_name, _, child = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, child, torch.nn.Identity())
        return module


def nm_mask(w: np.ndarray, n: int = 2, m: int = 4) -> np.ndarray:
    """Keep the n largest of every m consecutive weights along the input axis (TensorRT's 2:4 layout)."""
    moved = np.moveaxis(w, 1, -1) if w.ndim == 4 else w  # conv: (O, kh, kw, I); linear/gemm: (O, I)
    flat = moved.reshape(-1, moved.shape[-1])
    cols = flat.shape[1] - flat.shape[1] % m
    mask = np.ones_like(flat, dtype=bool)
    groups = np.abs(flat[:, :cols]).reshape(flat.shape[0], -1, m)
    drop = np.argsort(groups, axis=2)[:, :, : m - n]
    group_mask = np.ones_like(groups, dtype=bool)
    np.put_along_axis(group_mask, drop, False, axis=2)
    mask[:, :cols] = group_mask.reshape(flat.shape[0], cols)
    mask = mask.reshape(moved.shape)
    return np.moveaxis(mask, -1, 1) if w.ndim == 4 else mask


def unstructured_masks(arrays: dict[tuple[str, str], np.ndarray], plan: Plan) -> dict[tuple[str, str], np.ndarray]:
    """Keep-masks for weights keyed (layer, part): one global magnitude threshold, then each layer's own level,
    then the 2:4 pattern. Shared by the torch stage (masks held while retraining) and the ONNX stage."""
    per_layer = layer_decisions(plan, "weight_sparsity")
    pattern = layer_decisions(plan, "nm_sparsity")
    global_level = float(plan.get("model", {}).get("global_weight_sparsity", 0.0))
    masks = {key: np.ones_like(a, dtype=bool) for key, a in arrays.items()}
    if global_level > 0 and arrays:
        magnitudes = np.concatenate([np.abs(a).ravel() for a in arrays.values()])
        threshold = np.quantile(magnitudes, global_level)
        for key, a in arrays.items():
            masks[key] &= np.abs(a) > threshold
    for (layer, part), a in arrays.items():
        level = float(per_layer.get(layer, 0.0))
        if level > 0:
            masks[(layer, part)] &= np.abs(a) > np.quantile(np.abs(a), level)
        if pattern.get(layer) == "2:4":
            masks[(layer, part)] &= nm_mask(a)
    return masks


class UnstructuredPruning(Technique):
    name = "weight_pruning"
    description = "unstructured magnitude pruning (per layer or global) and the 2:4 pattern; sparse packing"
    stage = "onnx"
    # ONNX stage: before quantization (QDQ weights are stored quantized); torch stage: after channel pruning,
    # low-rank and block removal, so masks are computed on the weights that will be exported
    phase = "sparsity"
    reduces_latency = False  # dense kernels multiply zeros as fast as anything else
    # masks held during the recovery (Han et al. 2015: prune, retrain the survivors) when training data exist;
    # at 90% a one-shot mask after training loses most of the accuracy
    retrains_in_torch = True

    def decision_names(self) -> frozenset[str]:
        return frozenset({"weight_sparsity", "global_weight_sparsity", "nm_sparsity"})

    def knobs(self, source: ModelSource) -> list[Knob]:
        knobs = [Knob(self.name, "weight_sparsity", layer.name, WEIGHT_SPARSITY_LEVELS) for layer in source.layers
                 if layer.params >= 256]
        knobs.append(Knob(self.name, "global_weight_sparsity", None, WEIGHT_SPARSITY_LEVELS))
        return knobs

    def apply_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        import torch
        from torch.nn.utils import prune

        parts = ctx.torch_weight_layers(module)
        arrays = {key: part.weight.detach().cpu().numpy() for key, part in parts.items()}
        for key, mask in unstructured_masks(arrays, plan).items():
            if not mask.all():
                # weight = weight_orig * mask: the optimizer cannot revive a pruned weight during recovery
                prune.custom_from_mask(parts[key], "weight", torch.from_numpy(mask))
        return module

    def finalize_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        from torch.nn.utils import prune

        for part in ctx.torch_weight_layers(module).values():
            if prune.is_pruned(part):
                prune.remove(part, "weight")
        return module

    def stored_sizes(self, artifact: Path, plan: Plan, shrinks_storage: bool) -> dict[str, int]:
        """A sparse plan's zeros become real bytes saved in the bitmask + values pack; the dense model deflated
        the same way is recorded beside it, so packing is compared with compression, not with raw bytes."""
        if not self.is_active(plan) or artifact.suffix != ".onnx":
            return {}
        return {"packed_bytes": pack_sparse(artifact, artifact.parent / "model.sparse.zip"),
                "zipped_dense_bytes": zipped_size(artifact)}

    def apply_onnx(self, onnx_path: Path, plan: Plan, ctx: BuildContext, out_path: Path) -> Path:
        model = onnx.load(str(onnx_path))
        weights = ctx.weight_initializers(model)
        arrays = {key: numpy_helper.to_array(init).copy() for key, init in weights.items()}
        # after a masked retraining the pruned weights are exactly zero: the same masks come out again
        for key, mask in unstructured_masks(arrays, plan).items():
            if not mask.all():
                init = weights[key]
                init.CopyFrom(numpy_helper.from_array(np.where(mask, arrays[key], 0).astype(arrays[key].dtype),
                                                      init.name))
        onnx.save(model, str(out_path))
        return out_path


# --- sparse packing --------------------------------------------------------------------------------------

PACK_MIN_ZEROS = 0.3  # below this, a bitmask plus values is larger than the dense tensor


def pack_sparse(onnx_path: Path, out_path: Path) -> int:
    """Store a model with sparse initializers as bitmask + non-zero values (zip, deflated); return its size."""
    model = onnx.load(str(onnx_path))
    manifest = {}
    with zipfile.ZipFile(out_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for init in model.graph.initializer:
            array = numpy_helper.to_array(init)
            zeros = float((array == 0).mean()) if array.size else 0.0
            if array.size >= 64 and zeros >= PACK_MIN_ZEROS:
                mask = array != 0
                zf.writestr(f"{init.name}.mask", np.packbits(mask.ravel()).tobytes())
                zf.writestr(f"{init.name}.values", array[mask].tobytes())
                manifest[init.name] = {"dtype": str(array.dtype), "shape": list(array.shape)}
                init.ClearField("raw_data")
                for field in ("float_data", "int32_data", "int64_data", "double_data"):
                    init.ClearField(field)
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("model.onnx", model.SerializeToString())
    return out_path.stat().st_size


def unpack_sparse(packed: Path) -> onnx.ModelProto:
    """Restore the exact model :func:`pack_sparse` stored."""
    with zipfile.ZipFile(packed) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        model = onnx.load_model_from_string(zf.read("model.onnx"))
        for init in model.graph.initializer:
            if init.name in manifest:
                meta = manifest[init.name]
                dtype, shape = np.dtype(meta["dtype"]), meta["shape"]
                count = int(np.prod(shape))
                mask = np.unpackbits(np.frombuffer(zf.read(f"{init.name}.mask"), dtype=np.uint8))[:count].astype(bool)
                dense = np.zeros(count, dtype=dtype)
                dense[mask] = np.frombuffer(zf.read(f"{init.name}.values"), dtype=dtype)
                init.CopyFrom(numpy_helper.from_array(dense.reshape(shape), init.name))
    return model


def zipped_size(onnx_path: Path) -> int:
    """The dense model deflated the same way, so packing is compared with compression, not with raw bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(onnx_path, "model.onnx")
    return len(buffer.getvalue())


@hookimpl
def edgeslim_register_techniques(register):
    register(ChannelPruning())
    register(LayerPruning())
    register(UnstructuredPruning())
