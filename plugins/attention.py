"""Selective attention: a tiny upstream model finds the region of interest, the main model runs on its crop.

:class:`Cascade` is one torch module, so it exports to one ONNX graph (Resize -> attention -> ArgMax ->
crop by GridSample -> main) and every target measures the whole cascade end to end, and every other
technique (pruning, INT8, ...) applies to the layers of both stages. The knobs (``plan.model``):

- ``attention_size``: the side the scene is resized to before the attention model sees it. Smaller is
  faster and localises worse; levels come from the cascade (``attention_sizes``), the first is the default.
- ``crop_size``: the side, in scene pixels, of the region handed to the main model (resampled to the main
  model's input side). It costs nothing in latency and trades context against localisation slack, so the
  search scores each on the host and keeps the most accurate (an accuracy variant, like INT8 calibration).

The attention model returns a heat map (N, 1, h, w) (or anything ``heat`` turns into one); cell (i, j)
stands for the scene point ``(stride * (i, j) + offset) / attention_size`` of the resized scene, by default
the cell centres of a map that covers the input evenly.
"""

from __future__ import annotations

from typing import Any

from edgeslim import hookimpl
from edgeslim.errors import EdgeslimError
from edgeslim.model import ModelSource
from edgeslim.plan import Plan
from edgeslim.settings import module_available
from edgeslim.technique import BuildContext, Knob, Technique


def _cascade_class() -> Any:
    import torch
    import torch.nn.functional as F

    class Cascade(torch.nn.Module):
        def __init__(self, attention: Any, main: Any, main_size: int, attention_sizes: tuple[int, ...],
                     crop_sizes: tuple[int, ...], heat: Any = None, stride: float | None = None,
                     offset: float | None = None) -> None:
            super().__init__()
            if not attention_sizes or not crop_sizes:
                raise EdgeslimError("Cascade: give at least one attention size and one crop size")
            self.attention, self.main = attention, main
            self.heat = heat if heat is not None else torch.nn.Identity()
            self.main_size = int(main_size)
            self.attention_sizes, self.crop_sizes = tuple(attention_sizes), tuple(crop_sizes)
            self.attention_size, self.crop_size = self.attention_sizes[0], self.crop_sizes[0]
            self.stride, self.offset = stride, offset

        def locate(self, scene: Any) -> Any:
            """(N, 2) centres (x, y) in [0, 1] of the most salient cell."""
            small = F.interpolate(scene, size=(self.attention_size, self.attention_size), mode="bilinear",
                                  align_corners=False)
            heat = self.heat(self.attention(small))
            n, _, h, w = heat.shape
            index = heat.reshape(n, h * w).argmax(dim=1)
            row = torch.div(index, w, rounding_mode="floor").float()
            col = (index - torch.div(index, w, rounding_mode="floor") * w).float()
            stride = self.stride if self.stride is not None else self.attention_size / w
            offset = self.offset if self.offset is not None else stride / 2
            return torch.stack([(col * stride + offset) / self.attention_size,
                                (row * stride + offset) / self.attention_size], dim=1)

        def crop(self, scene: Any, centres: Any) -> Any:
            """The crop_size x crop_size region around each centre, resampled to main_size (zeros outside)."""
            n, _, height, width = scene.shape
            m = self.main_size
            base = (torch.arange(m, dtype=scene.dtype) * 2 + 1) / m - 1  # sample centres in [-1, 1]
            gx = base[None, :] * (self.crop_size / width) + (centres[:, 0:1] * 2 - 1)
            gy = base[None, :] * (self.crop_size / height) + (centres[:, 1:2] * 2 - 1)
            grid = torch.stack([gx[:, None, :].expand(n, m, m), gy[:, :, None].expand(n, m, m)], dim=-1)
            return F.grid_sample(scene, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

        def forward(self, scene: Any) -> Any:
            return self.main(self.crop(scene, self.locate(scene)))

    return Cascade


def Cascade(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 (a class made lazily: torch is optional)
    """``Cascade(attention, main, main_size, attention_sizes, crop_sizes, heat=None, stride=None, offset=None)``"""
    return _cascade_class()(*args, **kwargs)


def is_cascade(module: Any) -> bool:
    return module is not None and type(module).__name__ == "Cascade" and hasattr(module, "attention_sizes")


class SelectiveAttention(Technique):
    name = "attention"
    description = "attention cascade: input resolution of the upstream model and crop size as knobs"
    stage = "torch"
    phase = "input"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("torch", "pip install 'edgeslim[torch]'")

    def decision_names(self) -> frozenset[str]:
        return frozenset({"attention_size", "crop_size"})

    def knobs(self, source: ModelSource) -> list[Knob]:
        if not is_cascade(source.torch_model):
            return []
        sizes = source.torch_model.attention_sizes
        return [Knob(self.name, "attention_size", None, sizes)] if len(sizes) > 1 else []

    def accuracy_variants(self, source: ModelSource) -> list[dict[str, Any]]:
        if not is_cascade(source.torch_model):
            return []
        return [{"crop_size": size} for size in source.torch_model.crop_sizes]

    def is_active(self, plan: Plan) -> bool:
        return bool({"attention_size", "crop_size"} & set(plan.get("model", {})))

    def apply_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        if not is_cascade(module):
            raise EdgeslimError("plan sets attention_size/crop_size, but the model is not an edgeslim Cascade")
        settings = plan.get("model", {})
        for key, allowed in (("attention_size", module.attention_sizes), ("crop_size", module.crop_sizes)):
            if key in settings:
                if settings[key] not in allowed:
                    raise EdgeslimError(f"plan.model.{key} = {settings[key]}: this cascade offers {list(allowed)}")
                setattr(module, key, int(settings[key]))
        return module


@hookimpl
def edgeslim_register_techniques(register):
    register(SelectiveAttention())
