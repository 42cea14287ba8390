"""The contract of a compression technique: which knobs it offers per layer, and how it applies a plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgeslim.model import ModelSource
from edgeslim.plan import Plan


@dataclass(frozen=True)
class Knob:
    """One decision a technique offers. ``levels[0]`` is "off"; later levels compress more.

    ``layer`` is None for a model-wide knob.
    """

    technique: str
    name: str
    layer: str | None
    levels: tuple[Any, ...]
    #: the knob also shrinks the input of the layers this one feeds (removed output channels): the latency
    #: table then splits a uniform probe's effect on each layer into its own part and its producer's part
    narrows_consumers: bool = False


@dataclass
class BuildContext:
    """What a technique may use while applying a plan."""

    source: ModelSource
    calibration: list[dict[str, np.ndarray]]
    work_dir: Path
    train_data: tuple[np.ndarray, np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)
    #: {layer name: ONNX node name} for the model being built. Torch-stage techniques may replace a layer
    #: (low-rank: "fc" -> "fc.0", "fc.1") or remove it (layer pruning); the build re-traces the result.
    layer_nodes: dict[str, str] = field(default_factory=dict)

    def layer_of_node(self, node_name: str) -> str | None:
        """The plan's layer a node belongs to; a factorized layer's parts ("fc.0") belong to "fc"."""
        if not self.layer_nodes:  # nothing changed the graph's structure: the uncompressed mapping holds
            self.layer_nodes = dict(self.source.layer_nodes)
        known = {lay.name for lay in self.source.layers}
        for layer, node in self.layer_nodes.items():
            if node == node_name:
                while layer and layer not in known:
                    layer = layer.rpartition(".")[0]
                return layer or None
        return None


class Technique:
    """Base class. ``stage`` is "torch" (before export, needs a torch model) or "onnx" (after export)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    stage: ClassVar[str] = "onnx"
    #: A plan using this technique needs a recovery fine-tune when training data exist.
    needs_recovery: ClassVar[bool] = False
    #: Probe the uniform setting (every layer at its first level) before the search, and drop the
    #: technique when it makes the model slower on the target (e.g. INT8 slower than FP32).
    speed_gated: ClassVar[bool] = False
    #: Order within a stage (lower first): channel pruning must see the original module names.
    order: ClassVar[int] = 50
    #: False for techniques that buy size, not speed (unstructured zeros): a latency search skips them.
    reduces_latency: ClassVar[bool] = True
    #: A recovery method (fine-tune, distillation) rather than a compression: ``--recovery NAME`` picks it.
    recovers: ClassVar[bool] = False
    #: An ONNX-stage technique that also has a torch stage, used when a torch model and training data exist:
    #: its decisions are applied before the recovery and held during it (e.g. pruning masks), so the
    #: network retrains around them instead of losing accuracy to a one-shot change after training.
    retrains_in_torch: ClassVar[bool] = False
    #: Torch-stage techniques run in steps, each followed by its own share of the recovery: a later step
    #: (weight sharing, 1) builds on a network that has already retrained around the earlier ones (pruning, 0).
    pipeline_step: ClassVar[int] = 0

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    def knobs(self, source: ModelSource) -> list[Knob]:
        """The per-layer (and model-wide) knobs this technique offers for ``source``."""
        return []

    def variants(self, source: ModelSource) -> list[dict[str, Any]]:
        """Model-wide settings worth probing on the target (each a dict merged into ``plan["model"]``)."""
        return []

    def accuracy_variants(self, source: ModelSource) -> list[dict[str, Any]]:
        """Model-wide settings that change accuracy but not speed (e.g. INT8 calibration): a strategy scores
        each on the host and keeps the most accurate, without measuring."""
        return []

    def is_active(self, plan: Plan) -> bool:
        names = {k.name for k in self.knob_names()}
        return any(names & set(d) for d in plan.get("layers", {}).values()) or bool(names & set(plan.get("model", {})))

    def knob_names(self) -> list[Knob]:
        """Knob templates (layer=None) used to recognise this technique's decisions in a plan."""
        return []

    def recover(self, student: Any, teacher: Any, train_data: tuple[np.ndarray, np.ndarray], epochs: int,
                options: dict[str, Any]) -> Any:
        """Recovery techniques: train ``student`` (the compressed module) back towards ``teacher``."""
        raise TypeError(f"{self.name} is not a recovery technique")

    def apply_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        """Torch stage: return the module with the plan's decisions applied (may modify in place)."""
        raise TypeError(f"{self.name} has no torch stage (stage = {self.stage!r})")

    def finalize_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        """Torch stage, after the recovery and before export: make held decisions permanent (remove hooks)."""
        return module

    def apply_onnx(self, onnx_path: Path, plan: Plan, ctx: BuildContext, out_path: Path) -> Path:
        """ONNX stage: write the transformed model to ``out_path`` and return it."""
        raise TypeError(f"{self.name} has no ONNX stage (stage = {self.stage!r})")
