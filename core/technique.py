"""The contract of a compression technique: which knobs it offers per layer, and how it applies a plan."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from edgeslim.errors import EdgeslimError
from edgeslim.model import ModelSource, weighted_nodes
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
    #: other layers whose output channels this knob sets too: Torch-Pruning's coupled group (a residual stream's
    #: convolutions all add into one tensor; a depthwise layer keeps its producer's channels). A plan names the
    #: group by ``layer``; the latency table times every member with it
    shares_channels_with: tuple[str, ...] = ()
    #: the layers whose input channels this knob narrows, where the technique knows them exactly (a residual
    #: stream feeds layers through an Add, which the graph walk does not follow)
    narrows: tuple[str, ...] = ()
    #: the knob replaces the layer's kernel with others (low rank: two thinner convolutions, each quantized on its
    #: own under INT8), so INT8 on top does not save the product of their ratios: the latency table probes each
    #: level with INT8 too (ResNet-18-style rank 0.5 + INT8 ran 27-32% slower than the product predicted)
    splits_layer: bool = False


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

    def weight_initializers(self, model: onnx.ModelProto) -> dict[tuple[str, str], onnx.TensorProto]:
        """{(layer, node name): weight initializer} for weighted nodes whose weight is an initializer (a
        factorized layer has several nodes). What ONNX-stage techniques change in place."""
        inits = {init.name: init for init in model.graph.initializer}
        found = {}
        for node in weighted_nodes(model):
            layer = self.layer_of_node(node.name)
            weight = node.input[1] if len(node.input) > 1 else None
            if layer is not None and weight in inits:
                found[(layer, node.name)] = inits[weight]
        return found

    def torch_weight_layers(self, module: Any) -> dict[tuple[str, str], Any]:
        """{(layer, submodule): Conv2d/Linear} of ``module`` for every plan layer still in it; a factorized
        layer contributes its parts. What torch-stage techniques hold masks or shared values on."""
        import torch

        found = {}
        for layer in self.source.layers:
            try:
                holder = module.get_submodule(self.source.module_name(layer.name))
            except AttributeError:
                continue  # removed with its block
            for part_name, part in holder.named_modules():
                if isinstance(part, (torch.nn.Conv2d, torch.nn.Linear)):
                    found[(layer.name, part_name)] = part
        return found


#: The phases a plan's techniques pass through, in this order, whatever plugins are installed. A technique
#: declares its ``phase`` by name; within a stage, techniques run in phase order (ties by name).
#:
#: - ``input``: what the model sees (a region-of-interest cascade, input resolution): settings only
#: - ``channels``: filters/channels removed (must see the original module names)
#: - ``factorization``: layers replaced by low-rank products
#: - ``blocks``: whole residual blocks removed
#: - ``sparsity``: individual weights zeroed (the survivors are what later phases share and quantize)
#: - ``sharing``: weights clustered to shared values
#: - ``weight_precision``: weights stored at fewer bits
#: - ``precision``: activations and weights computed in INT8 (QDQ), last
PHASES: tuple[str, ...] = ("input", "channels", "factorization", "blocks", "sparsity", "sharing",
                           "weight_precision", "precision")

#: Torch-stage techniques run in recovery rounds: the network recovers from one round's changes before the next
#: round builds on them (Deep Compression: prune and retrain, then cluster the survivors and retrain, then train
#: with quantization simulated).
RECOVERY_ROUNDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("structure", ("input", "channels", "factorization", "blocks", "sparsity")),
    ("sharing", ("sharing",)),
    ("precision", ("weight_precision", "precision")),
)


class Technique:
    """Base class. ``stage`` is "torch" (before export, needs a torch model) or "onnx" (after export)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    stage: ClassVar[str] = "onnx"
    #: where in :data:`PHASES` this technique changes the model
    phase: ClassVar[str] = "precision"
    #: A plan using this technique needs a recovery (training, or least squares without data) after it.
    needs_recovery: ClassVar[bool] = False
    #: Probe the uniform setting (every layer at its first level) before the search, and drop the
    #: technique when it makes the model slower on the target (e.g. INT8 slower than FP32).
    speed_gated: ClassVar[bool] = False
    #: False for techniques that buy size, not speed (unstructured zeros): a latency search skips them.
    reduces_latency: ClassVar[bool] = True
    #: An ONNX-stage technique that also has a torch stage, used when a torch model and training data exist:
    #: its decisions are applied before the recovery and held during it (e.g. pruning masks), so the
    #: network retrains around them instead of losing accuracy to a one-shot change after training.
    retrains_in_torch: ClassVar[bool] = False

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    def decision_names(self) -> frozenset[str]:
        """The knob names this technique reads in a plan (``plan["layers"][layer][NAME]``, ``plan["model"][NAME]``)."""
        return frozenset()

    def knobs(self, source: ModelSource) -> list[Knob]:
        """The per-layer (and model-wide) knobs this technique offers for ``source``."""
        return []

    def variants(self, source: ModelSource) -> list[dict[str, Any]]:
        """Model-wide settings worth probing on the target (each a dict merged into ``plan["model"]``)."""
        return []

    def refinements(self, variant: dict[str, Any]) -> list[dict[str, Any]]:
        """Second-round variants worth probing only when ``variant`` won the first round (e.g. the per-tensor
        form of the fastest per-channel INT8 encoding): keeps the probe count low without leaving them out."""
        return []

    def accuracy_variants(self, source: ModelSource) -> list[dict[str, Any]]:
        """Model-wide settings that change accuracy but not speed (e.g. INT8 calibration): a strategy scores
        each on the host and keeps the most accurate, without measuring."""
        return []

    def is_active(self, plan: Plan) -> bool:
        names = self.decision_names()
        return any(names & set(d) for d in plan.get("layers", {}).values()) or bool(names & set(plan.get("model", {})))

    def apply_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        """Torch stage: return the module with the plan's decisions applied (may modify in place)."""
        raise TypeError(f"{self.name} has no torch stage (stage = {self.stage!r})")

    def finalize_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        """Torch stage, after the recovery and before export: make held decisions permanent (remove hooks)."""
        return module

    def apply_onnx(self, onnx_path: Path, plan: Plan, ctx: BuildContext, out_path: Path) -> Path:
        """ONNX stage: write the transformed model to ``out_path`` and return it."""
        raise TypeError(f"{self.name} has no ONNX stage (stage = {self.stage!r})")

    def stored_sizes(self, artifact: Path, plan: Plan, shrinks_storage: bool) -> dict[str, int]:
        """Sizes in bytes of compact stored forms this technique can write beside ``artifact`` (e.g. a sparse
        pack, a Deep Compression file), keyed by the manifest's detail name (``packed_bytes``...).

        ``shrinks_storage`` is true when any active technique of the plan only changes what the weights hold
        (zeros, shared values, low-bit values): then a packer may find something to pack. The size budget
        (``stored_kb``) is judged on the smallest form."""
        return {}

    def planned_precision(self, plan: Plan, layer: str) -> str | None:
        """The precision ("int8", "fp16"...) this technique's decisions in ``plan`` ask for ``layer``, or None
        where it decides nothing for it. The run compares it with what the target really runs."""
        return None


def pipeline_order(techniques: Iterable[Technique]) -> list[Technique]:
    """Techniques in :data:`PHASES` order (ties by name); an unknown phase is a plugin bug, said plainly."""
    def rank(tech: Technique) -> tuple[int, str]:
        if tech.phase not in PHASES:
            raise EdgeslimError(f"technique {tech.name}: phase {tech.phase!r} is not one of {', '.join(PHASES)}")
        return PHASES.index(tech.phase), tech.name

    return sorted(techniques, key=rank)


def torch_stage_techniques(techniques: Iterable[Technique], plan: Plan, can_train: bool) -> list[Technique]:
    """The techniques of ``plan`` that change the torch module before export, in pipeline order.

    Torch-stage techniques always do; ONNX-stage techniques that can retrain around their decisions join them
    when the module will be trained (``can_train``), so the recovery holds their masks. Used by the search's
    build and by :mod:`edgeslim.training`, so both apply the same decisions in the same order."""
    return [t for t in pipeline_order(techniques) if t.is_active(plan)
            and (t.stage == "torch" or (can_train and t.retrains_in_torch))]


def recovery_rounds(techniques: list[Technique]) -> list[tuple[str, list[Technique]]]:
    """``techniques`` grouped by :data:`RECOVERY_ROUNDS`, empty rounds left out, in order."""
    rounds = [(name, [t for t in techniques if t.phase in phases]) for name, phases in RECOVERY_ROUNDS]
    return [(name, group) for name, group in rounds if group]
