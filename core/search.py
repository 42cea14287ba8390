"""A search run: load the model, measure the baseline, let the strategy propose plans, verify, write outputs."""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import edgeslim
from edgeslim.errors import EdgeslimError
from edgeslim.evaluate import FidelityEvaluator, TaskEvaluator
from edgeslim.host import Registry, get_plugin_manager, load_registry
from edgeslim.measure import LatencyStats, LocalRunner, MeasurementFailed, Runner, compare_interleaved, measure
from edgeslim.model import (
    ModelSource,
    ensure_node_names,
    export_torch,
    load_onnx_source,
    torch_source,
    weighted_nodes,
)
from edgeslim.plan import Plan, canonical, empty_plan, plan_key
from edgeslim.predictor import (
    NEAR_BUDGET,
    LatencyPredictor,
    Probe,
    attribute_profile,
    error_summary,
    graph_summary,
    layer_producers,
)
from edgeslim.profile import Profile, load_profile
from edgeslim.store import SharedEvaluations, Store
from edgeslim.strategy import TrialsExhausted
from edgeslim.target import Target
from edgeslim.task import Task, load_task
from edgeslim.technique import BuildContext

CALIBRATION_SAMPLES = 128
SYNTHETIC_SAMPLES = 16


@dataclass
class SearchConfig:
    """Everything a run was started with; saved as ``run.json`` so ``--resume DIR`` repeats it exactly."""

    model: str
    profile: str
    out_dir: str
    budget_ms: float | None = None
    budget_ratio: float | None = None
    calib: str | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    strategy: str = "greedy"
    trials: int = 30
    finetune_epochs: int = 2
    recovery: str = "distillation"
    recovery_options: dict[str, Any] = field(default_factory=dict)
    #: Optuna storage URL for the tpe/nsga2 strategies (default: SQLite in the run directory)
    storage: str | None = None
    #: Optuna: seconds without a heartbeat after which a worker's running trial is failed and retried
    trial_grace_s: float = 120.0
    #: rank candidates with a per-layer latency table measured on the device; measure only those near the budget
    predictor: bool = True

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> SearchConfig:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EdgeslimError(f"cannot resume: {path} is missing or damaged ({exc})") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> SearchConfig:
        try:
            return cls(**data)
        except TypeError as exc:
            raise EdgeslimError(f"cannot resume: {path} is missing or damaged ({exc})") from None


class Reporter:
    """Progress callbacks; the CLI draws rich progress bars, tests stay quiet."""

    def phase(self, name: str, total: int | None = None) -> None: ...

    def advance(self, label: str = "") -> None: ...

    def log(self, message: str) -> None: ...


def resolve_model_ref(ref: str, run_dir: Path, input_shapes: dict[str, list[int]], calib_path: str | None
                      ) -> tuple[ModelSource, Task | None, dict[str, np.ndarray] | None]:
    """A ``.onnx`` file, a ``TASK.py`` file, or ``builtin:demo``."""
    calib = load_calib(calib_path) if calib_path else None
    if ref == "builtin:demo":
        from edgeslim.demo import make_task

        task = make_task()
    elif ref.endswith(".py"):
        task = load_task(ref)
    else:
        if not Path(ref).exists():
            raise EdgeslimError(f"model not found: {ref}")
        if not ref.endswith(".onnx") and Path(ref).is_file():
            head = Path(ref).read_bytes()[:64]
            if head.lstrip().startswith((b"import", b"from", b"#", b"def")):
                raise EdgeslimError(f"{ref} looks like Python; a task file must end in .py")
        return load_onnx_source(Path(ref), run_dir, input_shapes, calib), None, calib
    if isinstance(task.model, (str, Path)):
        source = load_onnx_source(Path(task.model), run_dir, input_shapes, None)
    else:
        source = torch_source(task.model, np.asarray(task.example_input, dtype=np.float32), run_dir, task.input_name)
    return source, task, calib


def load_calib(path: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise EdgeslimError(f"--calib file not found: {path}")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except Exception as exc:
        raise EdgeslimError(f"--calib {path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if not arrays:
        raise EdgeslimError(f"--calib {path}: holds no arrays; save one per model input, keyed by input name")
    for name, arr in arrays.items():
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise EdgeslimError(f"--calib {path}: array {name!r} needs a leading batch axis with samples")
    return arrays


def calibration_feeds(source: ModelSource, task: Task | None, calib: dict[str, np.ndarray] | None
                      ) -> tuple[list[dict[str, np.ndarray]], str]:
    names = [spec.name for spec in source.inputs]
    if calib is not None:
        missing = [n for n in names if n not in calib]
        if missing:
            raise EdgeslimError(f"--calib has no array for model input(s) {missing}; it has {sorted(calib)}")
        count = min(len(calib[n]) for n in names)
        feeds = [{n: np.ascontiguousarray(calib[n][i : i + 1]).astype(_dtype(source, n)) for n in names}
                 for i in range(min(count, CALIBRATION_SAMPLES))]
        return feeds, "calibration (--calib)"
    if task is not None:
        data = task.calibration_inputs(CALIBRATION_SAMPLES)
        return [{names[0]: np.asarray(data[i : i + 1], dtype=np.float32)} for i in range(len(data))], "task"
    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(SYNTHETIC_SAMPLES):
        feed = {}
        for spec in source.inputs:
            if spec.dtype.startswith("float"):
                feed[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
            else:
                feed[spec.name] = np.zeros(spec.shape, dtype=spec.dtype)
        feeds.append(feed)
    return feeds, "synthetic standard-normal"


def _dtype(source: ModelSource, name: str) -> str:
    return next(s.dtype for s in source.inputs if s.name == name)


class SearchSession:
    """One search (or one ``apply``): owns the store, the target, the runner and the run directory."""

    def __init__(self, config: SearchConfig, reporter: Reporter | None = None, registry: Registry | None = None,
                 runner: Runner | None = None, profile: Profile | None = None,
                 shared: SharedEvaluations | None = None) -> None:
        self.config = config
        self.shared = shared
        self.reporter = reporter or Reporter()
        self.registry = registry or load_registry()
        self.run_dir = Path(config.out_dir)
        self.profile = profile or load_profile(config.profile)
        target_cls = self.registry.targets.get(self.profile.target.name)
        if target_cls is None:
            raise EdgeslimError(f"profile {self.profile.name}: target.name: unknown target "
                                f"{self.profile.target.name!r} (installed: {', '.join(sorted(self.registry.targets))})")
        ok, why = target_cls.available()
        if not ok:
            raise EdgeslimError(f"target {target_cls.name} is not available here: {why}")
        self.target: Target = target_cls.from_options(self.profile.target.options())
        self.notes: list[str] = []
        self.runner = runner or self._runner_for_profile()
        self.techniques = {name: t for name, t in self.registry.techniques.items() if t.available()[0]}
        self.measured_this_run = 0
        #: agent runs on the device this run, whatever they were for (candidates, latency table, verification)
        self.device_runs = {"candidates": 0, "latency_table": 0, "verification": 0}
        self.predictor: LatencyPredictor | None = None
        self.baseline: dict[str, Any] | None = None
        self.budget_ms: float | None = None

    def _runner_for_profile(self) -> Runner:
        runner = runner_for_profile(self.profile)
        self.notes.extend(getattr(runner, "warnings", []))
        return runner

    # --- setup -------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.reporter.phase("loading model")
        self.source, self.task, calib = resolve_model_ref(
            self.config.model, self.run_dir, self.config.input_shapes, self.config.calib)
        self.calibration, calib_origin = calibration_feeds(self.source, self.task, calib)
        if self.task is not None:
            self.evaluator: TaskEvaluator | FidelityEvaluator = TaskEvaluator(self.task)
        else:
            reference = self.target.host_session(self.source.onnx_path)
            feeds = self.calibration[:32]
            self.evaluator = FidelityEvaluator(feeds, reference.run, calib_origin)
            if calib is None:
                self.notes.append("no --calib given: INT8 calibration and fidelity use synthetic standard-normal "
                                  "inputs, which may not resemble real data")
        self.context = canonical({
            "model": self.source.fingerprint, "target": self.target.name,
            "target_settings": self.target.settings.model_dump(), "finetune_epochs": self.config.finetune_epochs,
            "calibration": calib_origin, "input_shapes": self.source.input_shapes(),
            "recovery": [self.config.recovery, self.config.recovery_options],
        })
        # what decides the built model and its metric (not the device's speed settings): shared across devices
        self.scoring_context = canonical({
            "model": self.source.fingerprint, "target": self.target.name,
            "scoring": self.target.scoring_settings(), "finetune_epochs": self.config.finetune_epochs,
            "calibration": calib_origin, "input_shapes": self.source.input_shapes(),
            "recovery": [self.config.recovery, self.config.recovery_options],
        })
        self.store = Store(self.run_dir / "store.sqlite")
        previous = self.store.get_meta("context")
        if previous is not None and previous != self.context:
            raise EdgeslimError(f"cannot resume {self.run_dir}: the model, target settings or calibration "
                                "differ from the stored run; use a new --out directory")
        self.store.set_meta("context", self.context)
        for stale in [*(self.run_dir / "candidates").glob("*.tmp"), *(self.run_dir / "probes").glob("*.tmp")]:
            shutil.rmtree(stale, ignore_errors=True)  # a build killed half-way; never presented as a result

    def technique_for_knob(self, knob: str) -> str | None:
        for name, tech in self.techniques.items():
            if any(k.name == knob for k in tech.knob_names()):
                return name
        return None

    # --- building -------------------------------------------------------------------------------------------

    def build(self, plan: Plan, latency_probe: bool = False) -> Path:
        """Apply a plan and compile the result; artifacts are cached per plan key.

        A ``latency_probe`` is built without recovery training (its weights do not change its speed) and kept
        apart from the candidates: it is timed for the latency table, never scored or reported as a model."""
        key = plan_key(plan, self.context + "\nlatency_probe" if latency_probe else self.context)
        final_dir = self.run_dir / ("probes" if latency_probe else "candidates") / key
        artifact = final_dir / f"model{self.target.artifact_suffix}"
        if artifact.exists():
            return artifact
        if self.shared is not None and not latency_probe:
            _, built = self.shared.get(plan_key(plan, self.scoring_context))
            if built and (Path(built) / artifact.name).exists():
                # another device of this run built the same model: copy it rather than train it again
                shutil.copytree(built, final_dir.parent / f"{key}.tmp", dirs_exist_ok=True)
                shutil.rmtree(final_dir, ignore_errors=True)
                (final_dir.parent / f"{key}.tmp").rename(final_dir)
                self.shared.builds_reused += 1
                return artifact
        tmp_dir = final_dir.parent / f"{key}.tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        ctx = BuildContext(source=self.source, calibration=self.calibration, work_dir=tmp_dir,
                           train_data=self.task.train_data if self.task else None,
                           layer_nodes=dict(self.source.layer_nodes))
        active = sorted((t for t in self.techniques.values() if t.is_active(plan) and not t.recovers),
                        key=lambda t: t.order)
        can_train = (self.source.torch_model is not None and ctx.train_data is not None
                     and self.config.finetune_epochs > 0 and not latency_probe)
        # with a torch model and training data, ONNX-stage techniques that can retrain around their decisions
        # (pruning masks held during the recovery) run in the torch stage too
        torch_stage = [t for t in active if t.stage == "torch" or (can_train and t.retrains_in_torch)]
        onnx_path = self.source.onnx_path
        if torch_stage:
            if self.source.torch_model is None:
                raise EdgeslimError(f"plan uses {', '.join(t.name for t in torch_stage)}, which need a torch model; "
                                    "this model is ONNX")
            module = copy.deepcopy(self.source.torch_model)
            steps = sorted({t.pipeline_step for t in torch_stage})
            for step, epochs in zip(steps, split_epochs(self.config.finetune_epochs, len(steps)), strict=True):
                # Deep Compression's order: the network retrains around one step's changes (pruning) before
                # the next builds on them (clustering the survivors), then that step recovers in its turn
                group = [t for t in torch_stage if t.pipeline_step == step]
                for tech in group:
                    module = tech.apply_torch(module, plan, ctx)
                if any(t.needs_recovery or t.retrains_in_torch for t in group):
                    if latency_probe:
                        pass
                    elif ctx.train_data is not None and epochs > 0:
                        self._recover(module, ctx.train_data, epochs)
                    elif ctx.train_data is None:
                        # no training data (a bare ONNX model): rebuild each narrowed layer's weights by least
                        # squares so it reproduces the original layer's outputs on the calibration inputs
                        from edgeslim.plugins.pruning import reconstruct_least_squares

                        inputs = np.concatenate([f[self.source.inputs[0].name] for f in self.calibration])
                        ctx.notes += reconstruct_least_squares(module, self.source.torch_model, inputs)
            for tech in torch_stage:
                module = tech.finalize_torch(module, plan, ctx)
            onnx_path = tmp_dir / "torch_stage.onnx"
            export_torch(module, self.source.example_input, onnx_path, self.source.inputs[0].name)
            exported = onnx.load(str(onnx_path))
            ensure_node_names(exported)
            onnx.save(exported, str(onnx_path))
            ctx.layer_nodes = {self.source.layer_of_module(mod): node for mod, node in
                               traced_layer_nodes(module, self.source.example_input, exported).items()}
        for index, tech in enumerate(t for t in active if t.stage == "onnx"):
            onnx_path = tech.apply_onnx(onnx_path, plan, ctx, tmp_dir / f"onnx_stage_{index}_{tech.name}.onnx")
        layer_nodes = {name: node for name, node in ctx.layer_nodes.items()}
        (tmp_dir / "layer_nodes.json").write_text(json.dumps(layer_nodes, indent=1))
        # the graph's structure, so per-node profiles (fused kernels named after tensors) map back to layers
        (tmp_dir / "graph.json").write_text(json.dumps(graph_summary(onnx.load(str(onnx_path),
                                                                               load_external_data=False))))
        compiled = self.target.compile(onnx_path, tmp_dir, plan)
        if compiled.name != artifact.name:
            raise EdgeslimError(f"target {self.target.name} wrote {compiled.name}, expected {artifact.name}")
        (tmp_dir / "plan.json").write_text(json.dumps(plan, indent=2, sort_keys=True))
        if ctx.notes:
            (tmp_dir / "notes.txt").write_text("\n".join(ctx.notes) + "\n")
        for leftover in tmp_dir.glob("*stage*.onnx"):
            leftover.unlink()  # intermediate models; the artifact is what the target compiled
        shutil.rmtree(final_dir, ignore_errors=True)
        tmp_dir.rename(final_dir)
        if self.shared is not None and not latency_probe:
            self.shared.put(plan_key(plan, self.scoring_context), artifact_dir=str(final_dir.resolve()))
        return artifact

    def size_details(self, plan: Plan, artifact: Path) -> dict[str, Any]:
        """Artifact size; for unstructured-sparse ONNX candidates also the packed size (bitmask + values)."""
        # what the target loads (an engine may come with side files), not the packed copies written below
        compiled = [p for p in artifact.parent.glob("model.*") if p.name not in ("model.sparse.zip", "model.dc")]
        details: dict[str, Any] = {"artifact_bytes": sum(p.stat().st_size for p in compiled)}
        sparse = any(k in d for d in plan.get("layers", {}).values() for k in ("weight_sparsity", "nm_sparsity"))
        sparse = sparse or "global_weight_sparsity" in plan.get("model", {})
        if sparse and artifact.suffix == ".onnx":
            from edgeslim.plugins.pruning import pack_sparse, zipped_size

            details["packed_bytes"] = pack_sparse(artifact, artifact.parent / "model.sparse.zip")
            details["zipped_dense_bytes"] = zipped_size(artifact)
        # weight sharing, and 4/2/1-bit weights held in int8 containers: their size is real in the packed file
        clustered = any(int(d.get("cluster_bits", 0)) > 0 or int(d.get("weight_bits", 32)) < 16
                        for d in plan.get("layers", {}).values())
        if (sparse or clustered) and artifact.suffix == ".onnx" and "clustering" in self.techniques:
            from edgeslim.plugins.clustering import pack_model

            # Deep Compression file (mask + codebook + entropy-coded indices); unpack_model restores the ONNX
            packed = pack_model(artifact, artifact.parent / "model.dc")
            details["deep_compression_bytes"] = packed["packed_bytes"]
        return details

    def _recover(self, module: Any, train_data: tuple[np.ndarray, np.ndarray], epochs: int) -> None:
        """Recovery after a structural change: the chosen recovery technique, or plain fine-tuning."""
        name = self.config.recovery
        if name != "finetune":
            tech = self.techniques.get(name)
            if tech is None or not tech.recovers:
                known = ["finetune", *[n for n, t in self.techniques.items() if t.recovers]]
                raise EdgeslimError(f"--recovery {name}: not an installed recovery technique ({', '.join(known)})")
            tech.recover(module, self.source.torch_model, train_data, epochs, self.config.recovery_options)
            return
        from edgeslim.finetune import finetune

        finetune(module, train_data, epochs=epochs)

    def precision_details(self, plan: Plan, artifact: Path) -> dict[str, Any]:
        """What precision each layer really runs at on the target, and where that differs from the plan."""
        mapping_file = artifact.parent / "layer_nodes.json"
        if not mapping_file.exists():
            return {}
        layer_nodes = json.loads(mapping_file.read_text())
        try:
            by_node = self.target.effective_precision(artifact)
        except Exception as exc:  # a diagnostic must not sink the candidate
            return {"effective_precision_error": str(exc)}
        effective = {layer: by_node[node] for layer, node in layer_nodes.items() if node in by_node}
        if not effective:
            return {}
        def planned_bits(layer: str) -> Any:
            while layer:  # a factorized layer's parts ("fc.0") follow the plan of "fc"
                if layer in plan.get("layers", {}):
                    return plan["layers"][layer].get("bits")
                layer = layer.rpartition(".")[0]
            return None

        asked = {layer: ("int8" if planned_bits(layer) == 8 else "float") for layer in effective}
        differs = {layer: f"planned {asked[layer]}, runs {effective[layer]}"
                   for layer in effective if asked[layer] != effective[layer]}
        return {"effective_precision": effective, "precision_differs_from_plan": differs}

    def _score_artifact(self, artifact: Path, plan: Plan | None = None) -> float:
        if self.shared is None or plan is None:
            return self.evaluator.score(self.target.host_session(artifact))
        key = plan_key(plan, self.scoring_context)
        metric, _ = self.shared.get(key)
        if metric is not None:
            self.shared.metrics_reused += 1
            return metric
        metric = self.evaluator.score(self.target.host_session(artifact))
        self.shared.put(key, metric=metric)
        return metric

    def _job(self, artifact: Path) -> dict[str, Any]:
        return self.target.benchmark_job(artifact, self.source.input_shapes())

    # --- what strategies call ----------------------------------------------------------------------------------

    def score(self, plan: Plan, purpose: str = "sensitivity") -> dict[str, Any]:
        """Build and score on the host without measuring latency (cheap; not counted as a trial)."""
        key = plan_key(plan, self.context)
        record = self.store.get(key)
        if record is not None and record["metric"] is not None:
            return record
        try:
            artifact = self.build(plan)
            metric = self._score_artifact(artifact, plan)
            status, note = "scored", ""
        except EdgeslimError as exc:
            artifact, metric, status, note = None, None, "failed", str(exc)
        record = {"key": key, "plan": plan, "purpose": purpose, "metric": metric, "latency": None,
                  "artifact": self._rel(artifact) if artifact else None, "status": status, "note": note}
        self.store.put(record)
        return record

    def evaluate(self, plan: Plan, purpose: str = "candidate", counts_as_trial: bool = True) -> dict[str, Any]:
        """Build, measure on the target and score. Raises TrialsExhausted past ``--trials`` (unless the
        measurement is not a trial of this worker's own, e.g. checking another worker's best on this device)."""
        key = plan_key(plan, self.context)
        record = self.store.get(key)
        if record is not None and record["latency"] is not None and record["metric"] is not None:
            get_plugin_manager().hook.edgeslim_candidate_measured(record={**record, "from_store": True})
            return record
        is_baseline = plan == empty_plan()
        if counts_as_trial and not is_baseline and self.store.count_measured() - 1 >= self.config.trials:
            raise TrialsExhausted
        self.reporter.advance(purpose)
        try:
            artifact = self.build(plan)
        except EdgeslimError as exc:
            if is_baseline:
                raise
            record = {"key": key, "plan": plan, "purpose": purpose, "metric": None, "latency": None,
                      "artifact": None, "status": "failed", "note": str(exc)}
            self.store.put(record)
            return record
        # the prediction is made before the measurement, so its recorded error is the one a ranking suffers
        predicted = self.predictor.predict(plan) if self.predictor is not None else None
        stats = measure(self.runner, self._job(artifact), self.profile.measurement)
        self.device_runs["candidates"] += stats.attempts
        metric = record["metric"] if record is not None and record["metric"] is not None else \
            self._score_artifact(artifact, plan)
        status = "measured" if stats.usable else f"measure_{stats.status}"
        note = stats.error or ""
        if stats.usable and not is_baseline and self.baseline is not None:
            base_ms = self.latency_of(self.baseline)
            mine = stats.statistic(self.profile.budget.statistic)
            if base_ms is not None and mine >= base_ms:
                # the speed-up gate: a compressed model that is not faster is never a result
                status = "not_faster"
                note = f"measured {mine:.3f} ms, baseline {base_ms:.3f} ms: not faster, dropped"
        details = {**self.precision_details(plan, artifact), **self.size_details(plan, artifact)}
        if predicted is not None and stats.usable:
            measured_ms = stats.statistic(self.profile.budget.statistic)
            details.update(predicted_ms=predicted, prediction_error=predicted / measured_ms - 1)
            self.predictor.observe(plan, measured_ms)
        record = {"key": key, "plan": plan, "purpose": purpose, "metric": metric, "latency": stats.to_dict(),
                  "artifact": self._rel(artifact), "status": status, "note": note, "details": details}
        self.measured_this_run += 1
        self.store.put(record)
        get_plugin_manager().hook.edgeslim_candidate_measured(record={**record, "from_store": False})
        return record

    # --- the latency table ---------------------------------------------------------------------------------------

    def build_predictor(self, base: Plan, knobs: list[Any]) -> LatencyPredictor | None:
        """Measure the probes (baseline profile, one uniform probe per knob level) and build the table.

        ``base`` holds the model-wide values every candidate will share; ``knobs`` are the per-layer knobs
        the strategy will use. Probes are stored, so a resumed run does not measure them again. Returns None
        (and says why in the notes) when the target gives no per-node profile."""
        if not self.config.predictor or self.baseline is None:
            return None
        self.reporter.phase("latency table (uniform probes, profiled on the target)")
        stored: dict[str, Any] = self.store.get_meta("latency_probes") or {}
        layers = {layer.name for layer in self.source.layers} | {k.layer for k in knobs if k.layer}
        by_knob: dict[tuple[str, str], list[str]] = {}
        levels: dict[str, list[Any]] = {}
        for knob in knobs:
            if knob.layer is None:
                continue
            by_knob.setdefault((knob.name, "layers"), []).append(knob.layer)
            levels.setdefault(knob.name, [lv for lv in knob.levels[1:]])
        wanted: list[tuple[str | None, Any, Plan, list[str]]] = [(None, None, base, [])]
        for (name, _), knob_layers in by_knob.items():
            for level in levels[name]:
                plan = {"layers": {layer: {name: level} for layer in knob_layers}, "model": dict(base["model"])}
                wanted.append((name, level, plan, knob_layers))
        probes: list[Probe] = []
        for name, level, plan, knob_layers in wanted:
            key = plan_key(plan, self.context + "\nlatency_probe")
            if key not in stored:
                self.reporter.advance(f"probe {name}={level}" if name else "probe baseline")
                try:
                    artifact = self.build(plan, latency_probe=True)
                except EdgeslimError as exc:
                    self.notes.append(f"latency table: probe {name}={level} could not be built ({exc}); "
                                      "those entries predict no change")
                    continue
                stats = measure(self.runner, self._job(artifact), self.profile.measurement, layer_profile=True)
                self.device_runs["latency_table"] += stats.attempts
                if not stats.usable or not stats.layer_profile:
                    self.notes.append(f"latency table: probe {name}={level} gave no per-node profile "
                                      f"({stats.status}: {stats.error or 'the target does not profile'})")
                    continue
                layer_nodes = json.loads((artifact.parent / "layer_nodes.json").read_text())
                graph = json.loads((artifact.parent / "graph.json").read_text())
                layer_ms, rest_ms = attribute_profile(stats.layer_profile, layer_nodes, graph, layers)
                stored[key] = Probe(plan, name, level, knob_layers, stats.statistic(self.profile.budget.statistic),
                                    layer_ms, rest_ms).to_dict()
                self.store.set_meta("latency_probes", stored)
            probes.append(Probe(**stored[key]))
        if not any(p.knob is None for p in probes):
            self.notes.append("latency table not built: the baseline gave no per-node profile on this target; "
                              "every candidate the strategy proposes is measured")
            return None
        base_dir = self.build(base, latency_probe=True).parent
        producers = layer_producers(json.loads((base_dir / "layer_nodes.json").read_text()),
                                    json.loads((base_dir / "graph.json").read_text()), layers)
        self.predictor = LatencyPredictor(probes, base_model=dict(base["model"]), producers=producers,
                                          consumer_knobs={k.name for k in knobs if k.narrows_consumers})
        # candidates measured before (a resumed run) correct the table too
        for record in self.store.all():
            ms = self.latency_of(record)
            if ms is not None and record["key"] != self.baseline["key"]:
                self.predictor.observe(record["plan"], ms)
        return self.predictor

    def predict(self, plan: Plan) -> float | None:
        return self.predictor.predict(plan) if self.predictor is not None else None

    def worth_measuring(self, plan: Plan) -> bool:
        """False when the table predicts the plan well over the budget (never measured, so never chosen)."""
        if self.predictor is None or self.budget_ms is None:
            return True
        return self.predictor.near_budget(plan, self.budget_ms)

    def skip_predicted(self, plan: Plan, purpose: str) -> dict[str, Any]:
        """Record a plan the table ranks far over the budget: no build, no measurement, never a result."""
        key = plan_key(plan, self.context)
        existing = self.store.get(key)
        if existing is not None and existing["latency"] is not None:
            return existing
        predicted = self.predict(plan)
        record = {"key": key, "plan": plan, "purpose": purpose, "metric": existing["metric"] if existing else None,
                  "latency": None, "artifact": existing["artifact"] if existing else None,
                  "status": "predicted_over_budget",
                  "note": f"predicted {predicted:.3f} ms > budget {self.budget_ms:.3f} ms (+{NEAR_BUDGET:.0%}): "
                          "not measured", "details": {"predicted_ms": predicted}}
        self.store.put(record)
        return record

    def latency_of(self, record: dict[str, Any]) -> float | None:
        lat = record.get("latency")
        if not lat or lat.get("status") not in ("ok", "noisy"):
            return None
        return lat[f"{self.profile.budget.statistic}_ms"]

    def meets_budget(self, record: dict[str, Any]) -> bool:
        if record.get("status") == "not_faster":
            return False
        latency = self.latency_of(record)
        if latency is None or self.budget_ms is None or latency > self.budget_ms:
            return False
        return not self.over_other_budgets(record)

    def over_other_budgets(self, record: dict[str, Any]) -> list[str]:
        """The profile's size and memory budgets this (measured) record exceeds, each said in words."""
        budget, details = self.profile.budget, record.get("details") or {}
        over = []
        size_kb = (details.get("artifact_bytes") or 0) / 1e3
        if budget.size_kb is not None and size_kb > budget.size_kb:
            over.append(f"artifact {size_kb:.1f} kB > size_kb {budget.size_kb}")
        stored = [v for v in (details.get("artifact_bytes"), details.get("packed_bytes"),
                              details.get("deep_compression_bytes")) if v]
        if budget.stored_kb is not None and stored and min(stored) / 1e3 > budget.stored_kb:
            over.append(f"smallest stored form {min(stored) / 1e3:.1f} kB > stored_kb {budget.stored_kb}")
        rss = (record.get("latency") or {}).get("peak_rss_mb")
        if budget.memory_mb is not None and rss is not None and rss > budget.memory_mb:
            over.append(f"peak memory {rss:.0f} MB > memory_mb {budget.memory_mb}")
        return over

    def offers(self, tech: Any) -> bool:
        """Whether a strategy should use this technique's knobs: for latency always; for size when the profile
        budgets size (weight sharing, low-bit weights, unstructured masks only shrink the stored model)."""
        return tech.reduces_latency or self.profile.budget.limits_size

    def metric_drop(self, record: dict[str, Any]) -> float:
        """How much worse than the baseline (positive = worse), whatever the metric's direction."""
        assert self.baseline is not None
        if record.get("metric") is None:
            return float("inf")
        delta = self.baseline["metric"] - record["metric"]
        return delta if self.evaluator.info.higher_is_better else -delta

    def trials_left(self) -> int:
        return self.config.trials - max(0, self.store.count_measured() - 1)

    def _rel(self, path: Path) -> str:
        return os.path.relpath(path, self.run_dir)

    # --- the run ---------------------------------------------------------------------------------------------

    def measure_baseline(self) -> dict[str, Any]:
        self.reporter.phase("measuring the uncompressed model")
        self.baseline = self.evaluate(empty_plan(), purpose="baseline")
        if self.latency_of(self.baseline) is None:
            lat = self.baseline["latency"] or {}
            raise EdgeslimError(f"the uncompressed model could not be measured on {self.profile.name}: "
                                f"{lat.get('status')}: {lat.get('error') or self.baseline['note']}")
        budget = self.profile.budget
        if self.config.budget_ms is not None:
            self.budget_ms = self.config.budget_ms
        elif self.config.budget_ratio is not None:
            self.budget_ms = self.config.budget_ratio * self.latency_of(self.baseline)
        elif budget.latency_ms is not None:
            self.budget_ms = budget.latency_ms
        elif budget.ratio is not None:
            self.budget_ms = budget.ratio * self.latency_of(self.baseline)
        else:
            raise EdgeslimError(f"profile {self.profile.name} sets no budget; give --budget-ms or --budget-ratio")
        return self.baseline

    @property
    def budget_ratio(self) -> float | None:
        if self.config.budget_ms is not None:
            return None
        if self.config.budget_ratio is not None:
            return self.config.budget_ratio
        return None if self.profile.budget.latency_ms is not None else self.profile.budget.ratio

    def run(self, strategy_name: str | None = None) -> dict[str, Any]:
        started = time.time()
        self.prepare()
        self.config.save(self.run_dir / "run.json")
        self.measure_baseline()
        name = strategy_name or self.config.strategy
        strategy_cls = self.registry.strategies.get(name)
        if strategy_cls is None:
            raise EdgeslimError(f"--strategy {name}: unknown strategy (installed: "
                                f"{', '.join(sorted(self.registry.strategies))})")
        self.reporter.phase(f"searching ({name})")
        try:
            strategy_cls().run(self)
        except TrialsExhausted:
            self.notes.append(f"stopped after --trials {self.config.trials} measured candidates")
        self.reporter.phase("verifying the best candidates (interleaved, one process per model)")
        best, verification = self.select_and_verify()
        manifest = self.write_outputs(best, verification, time.time() - started)
        return manifest

    def select_and_verify(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Re-measure the most accurate in-budget candidates against the baseline, interleaved; the first
        whose re-measurement still meets the budget is the answer. Nothing unverified is reported."""
        assert self.baseline is not None
        contenders = [r for r in self.store.all() if r["key"] != self.baseline["key"] and self.meets_budget(r)]
        contenders.sort(key=lambda r: (self.metric_drop(r), self.latency_of(r)))
        baseline_job = self._job(self.run_dir / self.baseline["artifact"])
        for record in contenders[:3]:
            try:
                comparison = compare_interleaved(self.runner, baseline_job,
                                                 self._job(self.run_dir / record["artifact"]), self.profile.measurement)
            except MeasurementFailed as exc:
                self.notes.append(f"verification of {record['key']} failed: {exc}")
                continue
            self.device_runs["verification"] += len(comparison.reference_p50s) + len(comparison.candidate_p50s)
            verification = comparison.to_dict()
            stat = "candidate_p50_ms" if self.profile.budget.statistic == "p50" else "candidate_p90_ms"
            if self.budget_ratio is not None:
                passed = comparison.ratio <= self.budget_ratio
                verification["judged_on"] = f"ratio {comparison.ratio:.3f} <= {self.budget_ratio}"
            else:
                passed = verification[stat] <= self.budget_ms
                verification["judged_on"] = f"{stat} {verification[stat]:.3f} <= {self.budget_ms:.3f} ms"
            verification["passed"] = passed
            record["verification"] = verification
            if passed:
                return record, verification
            self.notes.append(f"candidate {record['key']} met the budget in the search but not when re-measured "
                              f"({verification['judged_on']} is false); not reported")
        return None, None

    # --- outputs -------------------------------------------------------------------------------------------------

    def predictor_summary(self, records: list[dict[str, Any]]) -> dict[str, Any] | None:
        if self.predictor is None:
            return None
        errors = [r["details"]["prediction_error"] for r in records
                  if (r.get("details") or {}).get("prediction_error") is not None]
        return {**self.predictor.describe(), "error": error_summary(errors),
                "how": "per-layer table from uniform probes profiled on the target, scaled online by end-to-end "
                       "measurements; error = prediction made before each measurement / measured - 1"}

    def _summary(self, record: dict[str, Any]) -> dict[str, Any]:
        lat = record.get("latency") or {}
        return {
            "key": record["key"], "plan": record["plan"], "artifact": record.get("artifact"),
            "latency": {"p50_ms": lat.get("p50_ms"), "p90_ms": lat.get("p90_ms"), "cv": lat.get("cv"),
                        "n": lat.get("n"), "status": lat.get("status")},
            "metric": {"name": self.evaluator.info.name, "value": record.get("metric")},
            **(record.get("details") or {}),
        }

    def write_outputs(self, best: dict[str, Any] | None, verification: dict[str, Any] | None,
                      wall_s: float) -> dict[str, Any]:
        assert self.baseline is not None
        records = self.store.all()
        with open(self.run_dir / "candidates.jsonl.tmp", "w") as fh:
            for r in records:
                fh.write(json.dumps(r, sort_keys=True) + "\n")
        os.replace(self.run_dir / "candidates.jsonl.tmp", self.run_dir / "candidates.jsonl")
        measured = [r for r in records if self.latency_of(r) is not None and r["key"] != self.baseline["key"]]
        fastest = min(measured, key=self.latency_of) if measured else None
        most_accurate = min(measured, key=self.metric_drop) if measured else None
        baseline = self._summary(self.baseline)
        if best is not None:
            best_dir = self.run_dir / "best"
            shutil.rmtree(best_dir, ignore_errors=True)
            shutil.copytree(self.run_dir / Path(best["artifact"]).parent, best_dir)
            best_out = self._summary(best)
            best_out["artifact"] = self._rel(best_dir / Path(best["artifact"]).name)
            # Reported latency is the independent re-measurement, not the search-time number.
            best_out["latency"].update(p50_ms=verification["candidate_p50_ms"],
                                       p90_ms=verification["candidate_p90_ms"], measured_by="verification")
            best_out["meets_budget"] = True
            best_out["speedup"] = 1.0 / verification["ratio"]
            best_out["verification"] = verification
        else:
            best_out = self._summary(fastest) if fastest else {"plan": None, "artifact": None, "latency": {},
                                                                "metric": {"name": self.evaluator.info.name}}
            best_out["meets_budget"] = False
        manifest = {
            "edgeslim": edgeslim.__version__,
            "status": "ok" if best is not None else "budget_not_met",
            "profile": self.profile.name, "profile_source": self.profile.source,
            "target": {"name": self.target.name, **self.target.settings.model_dump()},
            "model": self.config.model,
            "budget": {"latency_ms": self.budget_ms, "ratio": self.budget_ratio,
                       "statistic": self.profile.budget.statistic, "size_kb": self.profile.budget.size_kb,
                       "stored_kb": self.profile.budget.stored_kb, "memory_mb": self.profile.budget.memory_mb},
            "baseline": baseline,
            "best": best_out,
            "fastest": self._summary(fastest) if fastest else None,
            "most_accurate": self._summary(most_accurate) if most_accurate else None,
            "metric": asdict(self.evaluator.info),
            "candidates_evaluated": len(measured),
            "candidates_scored_only": len([r for r in records if r["latency"] is None]),
            "candidates_not_faster": len([r for r in records if r["status"] == "not_faster"]),
            "measured_this_run": self.measured_this_run,
            # every agent run on the device this run (re-measurements of noisy results included)
            "device_runs": {**self.device_runs, "total": sum(self.device_runs.values())},
            "predictor": self.predictor_summary(records),
            "candidates_skipped_by_predictor": len([r for r in records if r["status"] == "predicted_over_budget"]),
            "strategy": self.config.strategy, "trials": self.config.trials,
            # how structurally changed candidates were trained back (only used when the task has train_data)
            "recovery": {"method": self.config.recovery, "epochs": self.config.finetune_epochs,
                         "options": self.config.recovery_options,
                         "used": bool(self.task and self.task.train_data is not None)},
            "layers": self.source.describe_layers(),
            "measurement": {
                "how": "board-side agent in its own process per model: warm-up, then timed runs until min_runs "
                       "and min_seconds are both reached; noisy runs (cv > max_cv) re-measured",
                "where": self.runner.where, **self.profile.measurement.model_dump()},
            "notes": self.notes,
            "wall_time_s": round(wall_s, 1),
            "versions": {"edgeslim": edgeslim.__version__, "python": platform.python_version(),
                         "numpy": np.__version__, **self.target.versions(), **_optional_versions()},
        }
        tmp = self.run_dir / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, self.run_dir / "manifest.json")
        from edgeslim.report import write_html_report, write_report

        write_report(self.run_dir, manifest, records)
        write_html_report(self.run_dir, manifest, records)
        get_plugin_manager().hook.edgeslim_search_finished(manifest=manifest)
        return manifest


def traced_layer_nodes(module: Any, example: np.ndarray, exported: onnx.ModelProto) -> dict[str, str]:
    """{module name: node name} for a (changed) torch module and its export, matched in execution order."""
    from edgeslim.model import torch_layer_trace

    trace = torch_layer_trace(module, example)
    nodes = weighted_nodes(exported)
    if len(trace) != len(nodes):
        return {}
    return {name: node.name for (name, _, _, _), node in zip(trace, nodes, strict=True)}


def runner_for_profile(profile: Profile, accept_new_host_keys: bool = False) -> Runner:
    """This machine when the profile lists no boards; otherwise a pool of its boards over SSH."""
    if not profile.boards:
        return LocalRunner()
    try:
        import paramiko  # noqa: F401
    except ImportError:
        raise EdgeslimError(f"profile {profile.name} lists boards: measuring over SSH needs paramiko "
                            "(pip install 'edgeslim[ssh]')") from None
    from edgeslim.pool import BoardPool
    from edgeslim.ssh import SSHRunner

    pool = BoardPool([SSHRunner(b, accept_new_host_keys=accept_new_host_keys) for b in profile.boards])
    pool.check_host_keys()
    return pool


def _optional_versions() -> dict[str, str]:
    versions = {}
    for module in ("onnx", "torch", "torch_pruning"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:
            continue
    return versions


def split_epochs(epochs: int, steps: int) -> list[int]:
    """Recovery epochs per pipeline step: an even share each (at least one), the remainder to the first."""
    if epochs <= 0:
        return [0] * max(steps, 1)
    if steps <= 1:
        return [epochs]
    base, extra = divmod(epochs, steps)
    return [max(1, base + (1 if i < extra else 0)) for i in range(steps)]


def apply_plan(config: SearchConfig, plan: Plan, reporter: Reporter | None = None) -> dict[str, Any]:
    """``edgeslim apply``: build one plan, measure it and the original interleaved, write it out."""
    session = SearchSession(config, reporter)
    session.prepare()
    session.measure_baseline()
    from edgeslim.plan import validate_plan

    knob_names = {k.name for t in session.techniques.values() for k in t.knob_names()}
    knob_names |= {k.name for k in session.target.knobs()}
    layer_names = {layer.name for layer in session.source.layers}
    layer_names |= {k.layer for t in session.techniques.values() for k in t.knobs(session.source) if k.layer}
    try:
        plan = validate_plan(plan, layer_names, knob_names)
    except ValueError as exc:
        raise EdgeslimError(f"--plan: {exc}") from None
    record = session.evaluate(plan, purpose="apply")
    if record["status"] == "failed":
        raise EdgeslimError(f"applying the plan failed: {record['note']}")
    comparison = compare_interleaved(session.runner, session._job(session.run_dir / session.baseline["artifact"]),
                                     session._job(session.run_dir / record["artifact"]), session.profile.measurement)
    verification = comparison.to_dict()
    meets = session.meets_budget(record)
    verification["passed"] = meets
    manifest = session.write_outputs(record, verification, 0.0)
    manifest["best"]["meets_budget"] = meets
    manifest["status"] = "ok" if meets else "budget_not_met"
    (session.run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def bench(model: str, profile_ref: str, input_shapes: dict[str, list[int]],
          runner_factory: Callable[[Profile], Runner] | None = None) -> LatencyStats:
    """``edgeslim bench``: time one ONNX model as-is on the profile's target."""
    import tempfile

    profile = load_profile(profile_ref)
    registry = load_registry()
    target_cls = registry.targets.get(profile.target.name)
    if target_cls is None:
        raise EdgeslimError(f"profile {profile.name}: unknown target {profile.target.name!r}")
    target = target_cls.from_options(profile.target.options())
    with tempfile.TemporaryDirectory(prefix="edgeslim-bench-") as tmp:
        source = load_onnx_source(Path(model), Path(tmp), input_shapes, None)
        artifact = target.compile(source.onnx_path, Path(tmp) / "artifact", None)
        runner = runner_factory(profile) if runner_factory else runner_for_profile(profile)
        return measure(runner, target.benchmark_job(artifact, source.input_shapes()), profile.measurement)
