"""The build pipeline: plan -> torch stage -> recovery -> export -> ONNX stage -> target compile.

Artifacts are cached per plan key in ``candidates/KEY/`` (latency probes in ``probes/KEY/``), built in a
``KEY.tmp`` folder and renamed when complete, so a build killed half-way is never taken for a result. The
torch stage's export (pruned, recovered) is kept in ``torch_stage/KEY/``, keyed by the torch-stage decisions
only: plans that differ only in ONNX-stage decisions (INT8 on the same pruning) train once.
"""

from __future__ import annotations

import copy
import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeslim.errors import EdgeslimError
from edgeslim.model import ModelSource, ensure_node_names, export_torch, torch_layer_trace, weighted_nodes
from edgeslim.plan import Plan, plan_key
from edgeslim.profile_attribution import graph_summary
from edgeslim.recovery import BestEpoch, EpochSelection, Recovery, RecoveryData, choose_recovery
from edgeslim.store import SharedEvaluations
from edgeslim.target import Target
from edgeslim.technique import (
    BuildContext,
    Technique,
    pipeline_order,
    recovery_rounds,
    torch_stage_techniques,
)

#: beside a build whose last recovery round was watched per epoch: the scores, the epoch kept
RECOVERY_EPOCHS_FILE = "recovery_epochs.json"
#: compact stored forms written beside an artifact: not what the target loads
PACKED_SUFFIXES = (".sparse.zip", ".dc")

#: what a build is for -> (folder, key suffix, which recovery runs). A candidate recovers fully; a ranking
#: build (a single move scored by the sensitivity phase) fully but for the shorter ``ranking_epochs``; a
#: one-shot build (cheap sensitivity scores) only by data-free means (least squares from calibration inputs); a
#: latency probe not at all (its weights do not change its speed), and is never scored or reported as a model.
BUILD_KINDS = {"candidate": ("candidates", "", "full"), "ranking": ("ranking", "\nranking", "full"),
               "one_shot": ("oneshot", "\none_shot", "data_free"), "probe": ("probes", "\nlatency_probe", "none")}


@dataclass
class RecoveryChoice:
    """How a build recovers after structural changes: the method, its checked settings, and the epochs (of a
    candidate; ``ranking_epochs`` of a single move the sensitivity phase scores, the same when not given)."""

    recoveries: dict[str, type[Recovery]]
    requested: str
    options: dict[str, Any]
    epochs: int
    ranking_epochs: int | None = None

    def epochs_of(self, kind: str) -> int:
        if kind == "ranking" and self.ranking_epochs is not None:
            return self.ranking_epochs
        return self.epochs


class BuildPipeline:
    """Builds plans into compiled artifacts for one model on one target."""

    def __init__(self, source: ModelSource, calibration: list[dict[str, np.ndarray]],
                 train_data: tuple[np.ndarray, np.ndarray] | None, target: Target,
                 techniques: dict[str, Technique], recovery: RecoveryChoice, run_dir: Path, context: str,
                 scoring_context: str, shared: SharedEvaluations | None = None,
                 epoch_selection: EpochSelection | None = None) -> None:
        self.source = source
        self.calibration = calibration
        self.train_data = train_data
        self.target = target
        self.techniques = techniques
        self.recovery = recovery
        self.run_dir = run_dir
        self.context = context
        self.scoring_context = scoring_context
        self.shared = shared
        #: watch the last recovery round epoch by epoch and keep its best epoch (the answer's final recovery);
        #: the context must then say so, since the kept weights depend on the eval data
        self.epoch_selection = epoch_selection

    def key(self, plan: Plan, kind: str = "candidate") -> str:
        # a ranking build's length is in its key: a resumed run asked for other sensitivity epochs scores again
        length = f" {self.recovery.epochs_of(kind)} epochs" if kind == "ranking" else ""
        return plan_key(plan, self.context + BUILD_KINDS[kind][1] + length)

    def artifact_path(self, plan: Plan, kind: str = "candidate") -> Path:
        folder = self.run_dir / BUILD_KINDS[kind][0] / self.key(plan, kind)
        return folder / f"model{self.target.artifact_suffix}"

    def build(self, plan: Plan, kind: str = "candidate") -> Path:
        """Apply a plan and compile the result; artifacts are cached per plan key and :data:`BUILD_KINDS`."""
        artifact = self.artifact_path(plan, kind)
        final_dir = artifact.parent
        if artifact.exists():
            return artifact
        if kind == "candidate" and self._copy_shared_build(plan, final_dir, artifact.name):
            return artifact
        tmp_dir = final_dir.parent / f"{final_dir.name}.tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        ctx = BuildContext(source=self.source, calibration=self.calibration, work_dir=tmp_dir,
                           train_data=self.train_data, layer_nodes=dict(self.source.layer_nodes))
        onnx_path, epochs_seen = self._torch_stage(plan, ctx, tmp_dir, BUILD_KINDS[kind][2],
                                                   self.recovery.epochs_of(kind))
        if epochs_seen is not None:
            (tmp_dir / RECOVERY_EPOCHS_FILE).write_text(json.dumps(epochs_seen, indent=1))
        # every ONNX-stage technique runs here, also those whose decisions the torch stage held during training
        onnx_stage = [t for t in pipeline_order(self._active(plan)) if t.stage == "onnx"]
        for index, tech in enumerate(onnx_stage):
            onnx_path = tech.apply_onnx(onnx_path, plan, ctx, tmp_dir / f"onnx_stage_{index}_{tech.name}.onnx")
        self._write_build_files(tmp_dir, onnx_path, plan, ctx)
        compiled = self.target.compile(onnx_path, tmp_dir, plan)
        if compiled.name != artifact.name:
            raise EdgeslimError(f"target {self.target.name} wrote {compiled.name}, expected {artifact.name}")
        for leftover in tmp_dir.glob("*stage*.onnx"):
            leftover.unlink()  # intermediate models; the artifact is what the target compiled
        shutil.rmtree(final_dir, ignore_errors=True)
        tmp_dir.rename(final_dir)
        if self.shared is not None and kind == "candidate":
            self.shared.put(plan_key(plan, self.scoring_context), artifact_dir=str(final_dir.resolve()))
        return artifact

    def _active(self, plan: Plan) -> list[Technique]:
        return [t for t in self.techniques.values() if t.is_active(plan)]

    def _can_train(self, recovery: str, epochs: int) -> bool:
        return (self.source.torch_model is not None and self.train_data is not None
                and epochs > 0 and recovery == "full")

    def _in_torch(self, plan: Plan, recovery: str, epochs: int) -> list[Technique]:
        return torch_stage_techniques(self._active(plan), plan, self._can_train(recovery, epochs))

    def _copy_shared_build(self, plan: Plan, final_dir: Path, artifact_name: str) -> bool:
        """Another device of this run built the same model: copy it rather than train it again."""
        if self.shared is None:
            return False
        _, built = self.shared.get(plan_key(plan, self.scoring_context))
        if not built or not (Path(built) / artifact_name).exists():
            return False
        tmp = final_dir.parent / f"{final_dir.name}.tmp"
        shutil.copytree(built, tmp, dirs_exist_ok=True)
        shutil.rmtree(final_dir, ignore_errors=True)
        tmp.rename(final_dir)
        self.shared.builds_reused += 1
        return True

    def _torch_stage(self, plan: Plan, ctx: BuildContext, tmp_dir: Path, recovery: str, epochs: int
                     ) -> tuple[Path, dict[str, Any] | None]:
        """Apply the torch-stage techniques round by round, recovering after each (as ``recovery`` allows:
        "full", "data_free", "none"; ``epochs`` in all, shared among the rounds); export. Returns the ONNX model
        the ONNX stage starts from (the original when no torch-stage technique is active) and, when the last
        round was watched per epoch (``epoch_selection``), what it saw (:meth:`BestEpoch.summary`)."""
        torch_stage = self._in_torch(plan, recovery, epochs)
        if not torch_stage:
            return self.source.onnx_path, None
        if self.source.torch_model is None:
            raise EdgeslimError(f"plan uses {', '.join(t.name for t in torch_stage)}, which need a torch model; "
                                "this model is ONNX (install onnx2torch to convert it: pip install onnx2torch)")
        cache = self._torch_stage_cache(plan, torch_stage, recovery, epochs)
        onnx_path = tmp_dir / "torch_stage.onnx"
        if cache is not None and (cache / "torch_stage.onnx").exists():
            # a plan that differs only in ONNX-stage decisions (INT8 on top of the same pruning): the trained,
            # exported module is the same, so its recovery is not paid twice
            shutil.copyfile(cache / "torch_stage.onnx", onnx_path)
            saved = json.loads((cache / "torch_stage.json").read_text())
            ctx.layer_nodes, ctx.notes = saved["layer_nodes"], ctx.notes + saved["notes"]
            return onnx_path, saved.get("recovery_epochs")
        notes_before = len(ctx.notes)
        module, epochs_seen = self._apply_and_recover(plan, ctx, torch_stage, recovery, epochs)
        for tech in torch_stage:
            module = tech.finalize_torch(module, plan, ctx)
        export_torch(module, self.source.example_input, onnx_path, self.source.inputs[0].name)
        exported = onnx.load(str(onnx_path))
        ensure_node_names(exported)
        onnx.save(exported, str(onnx_path))
        ctx.layer_nodes = {self.source.layer_of_module(mod): node for mod, node in
                           traced_layer_nodes(module, self.source.example_input, exported).items()}
        if cache is not None:
            # written aside and renamed: a killed build leaves no half entry, and of two builds of the same
            # torch stage at once (same result, seeded) the second's rename fails and it drops its copy
            staging = cache.parent / f"{cache.name}.{uuid.uuid4().hex}.tmp"
            staging.mkdir(parents=True)
            shutil.copyfile(onnx_path, staging / "torch_stage.onnx")
            (staging / "torch_stage.json").write_text(json.dumps({"layer_nodes": ctx.layer_nodes,
                                                                  "notes": ctx.notes[notes_before:],
                                                                  "recovery_epochs": epochs_seen}))
            try:
                staging.rename(cache)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
        return onnx_path, epochs_seen

    def _apply_and_recover(self, plan: Plan, ctx: BuildContext, torch_stage: list[Technique], recovery: str,
                           epochs: int) -> tuple[Any, dict[str, Any] | None]:
        """A copy of the torch model with the torch-stage techniques applied round by round, each round
        recovered; with ``epoch_selection``, the last round's best epoch kept. Returns it and what the watched
        round saw (None when none was watched)."""
        module = copy.deepcopy(self.source.torch_model)
        rounds = recovery_rounds(torch_stage)
        watched: BestEpoch | None = None
        for index, ((_, group), round_epochs) in enumerate(zip(rounds, split_epochs(epochs, len(rounds)),
                                                               strict=True)):
            for tech in group:
                module = tech.apply_torch(module, plan, ctx)
            if recovery != "none" and any(t.needs_recovery or t.retrains_in_torch for t in group):
                # only the last round's best epoch is the model's: an earlier round is followed by more changes
                last = index == len(rounds) - 1
                if last and recovery == "full" and self.epoch_selection is not None:
                    watched = BestEpoch(self.epoch_selection, module)
                ctx.notes += self._recover(module, round_epochs, data_free=recovery == "data_free",
                                           after_epoch=watched if last else None)
                if last and watched is not None:
                    ctx.notes += watched.restore()
        return module, (watched.summary() if watched is not None and watched.scores else None)

    def _torch_stage_cache(self, plan: Plan, torch_stage: list[Technique], recovery: str, epochs: int
                           ) -> Path | None:
        """Where the torch stage's export for ``plan`` is kept, keyed by the decisions the torch-stage
        techniques read (their :meth:`~edgeslim.technique.Technique.decision_names`), the recovery mode and
        its length; None (no sharing) when one of them does not declare what it reads."""
        names = [tech.decision_names() for tech in torch_stage]
        if not all(names):
            return None
        read = frozenset().union(*names)
        sub_plan = {"layers": {layer: kept for layer, decisions in plan["layers"].items()
                               if (kept := {k: v for k, v in decisions.items() if k in read})},
                    "model": {k: v for k, v in plan["model"].items() if k in read}}
        stage = [t.name for t in torch_stage]
        context = f"{self.context}\ntorch stage: {stage} recovery {recovery}, {epochs} epochs"
        return self.run_dir / "torch_stage" / plan_key(sub_plan, context)

    def _recover(self, module: Any, epochs: int, data_free: bool = False,
                 after_epoch: Callable[[int], bool] | None = None) -> list[str]:
        has_data = self.train_data is not None and not data_free
        if has_data and epochs <= 0:
            return []
        method = choose_recovery(self.recovery.recoveries, self.recovery.requested, has_data)
        if method is None:
            return ["no recovery could run (no training data and no data-free recovery installed)"]
        options = self.recovery.options if method.name == self.recovery.requested else {}
        settings = method.settings_from(options, "recovery_options")
        inputs = np.concatenate([f[self.source.inputs[0].name] for f in self.calibration]) if self.calibration else None
        data = RecoveryData(train=self.train_data if has_data else None, calibration_inputs=inputs,
                            after_epoch=after_epoch if has_data else None)
        return method().recover(module, self.source.torch_model, data, epochs, settings)

    def _write_build_files(self, tmp_dir: Path, onnx_path: Path, plan: Plan, ctx: BuildContext) -> None:
        (tmp_dir / "layer_nodes.json").write_text(json.dumps(ctx.layer_nodes, indent=1))
        # the graph's structure, so per-node profiles (fused kernels named after tensors) map back to layers
        graph = graph_summary(onnx.load(str(onnx_path), load_external_data=False))
        (tmp_dir / "graph.json").write_text(json.dumps(graph))
        (tmp_dir / "plan.json").write_text(json.dumps(plan, indent=2, sort_keys=True))
        if ctx.notes:
            (tmp_dir / "notes.txt").write_text("\n".join(ctx.notes) + "\n")

    # --- what the built model is --------------------------------------------------------------------------------

    def size_details(self, plan: Plan, artifact: Path) -> dict[str, Any]:
        """The artifact's size, and the sizes of compact stored forms the plan's techniques can write."""
        compiled = [p for p in artifact.parent.glob("model.*") if not p.name.endswith(PACKED_SUFFIXES)]
        details: dict[str, Any] = {"artifact_bytes": sum(p.stat().st_size for p in compiled)}
        active = self._active(plan)
        shrinks_storage = any(not t.reduces_latency for t in active)
        for tech in self.techniques.values():
            details.update(tech.stored_sizes(artifact, plan, shrinks_storage))
        return details

    def precision_details(self, plan: Plan, artifact: Path) -> dict[str, Any]:
        """What precision each layer really runs at on the target, and where that differs from the plan."""
        mapping_file = artifact.parent / "layer_nodes.json"
        if not mapping_file.exists():
            return {}
        layer_nodes = json.loads(mapping_file.read_text())
        try:
            by_node = self.target.effective_precision(artifact)
        except Exception as exc:  # noqa: BLE001 (a diagnostic must not sink the candidate)
            return {"effective_precision_error": str(exc)}
        effective = {layer: by_node[node] for layer, node in layer_nodes.items() if node in by_node}
        if not effective:
            return {}
        asked = {layer: self.planned_precision(plan, layer) for layer in effective}
        differs = {layer: f"planned {asked[layer]}, runs {effective[layer]}"
                   for layer in effective if asked[layer] != effective[layer]}
        return {"effective_precision": effective, "precision_differs_from_plan": differs}

    def mostly_float(self, plan: Plan, precision: dict[str, Any]) -> str | None:
        """Why a candidate is not worth timing: more than half the layers its plan makes INT8 run in float on the
        target (``precision``: from :meth:`precision_details`, e.g. an INT8 encoding the runtime does not fuse),
        or None. Such a model is no faster than the float one, and timing it at length would only say so."""
        effective = precision.get("effective_precision") or {}
        planned_int8 = [layer for layer in effective if self.planned_precision(plan, layer) == "int8"]
        left_float = [layer for layer in planned_int8 if effective[layer] == "float"]
        if not planned_int8 or 2 * len(left_float) <= len(planned_int8):
            return None
        return (f"{len(left_float)} of {len(planned_int8)} layers planned INT8 run in float on the target (read "
                "back from its optimized graph): not measured")

    def planned_precision(self, plan: Plan, layer: str) -> str:
        """What the plan's techniques ask for ``layer``; a factorized layer's parts ("fc.0") follow "fc"."""
        while layer:
            for tech in self.techniques.values():
                asked = tech.planned_precision(plan, layer)
                if asked is not None:
                    return asked
            layer = layer.rpartition(".")[0]
        return "float"


def traced_layer_nodes(module: Any, example: np.ndarray, exported: onnx.ModelProto) -> dict[str, str]:
    """{module name: node name} for a (changed) torch module and its export, matched in execution order."""
    trace = torch_layer_trace(module, example)
    nodes = weighted_nodes(exported)
    if len(trace) != len(nodes):
        return {}
    return {name: node.name for (name, _, _, _), node in zip(trace, nodes, strict=True)}


def split_epochs(epochs: int, rounds: int) -> list[int]:
    """Recovery epochs per round: an even share each (at least one), the remainder to the first."""
    if epochs <= 0:
        return [0] * max(rounds, 1)
    if rounds <= 1:
        return [epochs]
    base, extra = divmod(epochs, rounds)
    return [max(1, base + (1 if i < extra else 0)) for i in range(rounds)]
