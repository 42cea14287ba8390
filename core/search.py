"""A search run: the session that orchestrates model loading, the baseline, the strategy and the outputs.

What each step does lives in its own module: :mod:`edgeslim.inputs` (model and calibration inputs),
:mod:`edgeslim.build` (plan -> artifact), :mod:`edgeslim.device` (measurements), :mod:`edgeslim.budget`
(budget judgement), :mod:`edgeslim.latency_table` (the device-measured table), :mod:`edgeslim.outputs`
(verification, manifest, reports). Strategies see the session only through :class:`~edgeslim.strategy.SearchAPI`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from edgeslim.baseline_timing import BaselineTimer
from edgeslim.budget import Budget, metric_drop
from edgeslim.build import BuildPipeline, RecoveryChoice
from edgeslim.config import SearchConfig
from edgeslim.device import Device, runner_for_profile, target_for_profile
from edgeslim.errors import EdgeslimError
from edgeslim.evaluate import RANKING_SAMPLES, FidelityEvaluator, TaskEvaluator
from edgeslim.host import Registry, get_plugin_manager, load_registry
from edgeslim.inputs import calibration_feeds, resolve_model_ref
from edgeslim.latency_table import measure_latency_table, time_architecture
from edgeslim.measure import Runner
from edgeslim.outputs import write_outputs
from edgeslim.plan import Plan, canonical, empty_plan, plan_key
from edgeslim.predictor import NEAR_BUDGET, LatencyPredictor
from edgeslim.profile import Profile, load_profile
from edgeslim.progress import PhaseClock, Reporter
from edgeslim.records import CandidateRecord, Manifest
from edgeslim.recovery import resolved_options
from edgeslim.runtime_floor import floor_notes, runtime_floor_ms
from edgeslim.store import ROTATIONS_META, SharedEvaluations, Store
from edgeslim.strategy import TrialsExhausted
from edgeslim.technique import Knob
from edgeslim.verified_search import search_until_verified

__all__ = ["Reporter", "SearchConfig", "SearchSession"]

#: rotating rounds when close contenders are timed again side by side (:meth:`SearchSession.retime`)
RETIME_ROUNDS = 3


class SearchSession:
    """One search (or one ``apply``) of one model on one device: owns the run directory, the store, the build
    pipeline and the device. Constructing it loads the model and opens (or resumes) the store."""

    #: candidates measured on the device by this process (a resumed run counts from zero)
    measured_this_run = 0

    def __init__(self, config: SearchConfig, reporter: Reporter | None = None, registry: Registry | None = None,
                 runner: Runner | None = None, profile: Profile | None = None,
                 shared: SharedEvaluations | None = None) -> None:
        self.config = config
        self.shared = shared
        self.reporter = reporter or Reporter()
        self.registry = registry or load_registry()
        self.run_dir = Path(config.out_dir)
        self.profile = profile or load_profile(config.profile)
        self.target = target_for_profile(self.profile, self.registry.targets)
        self.notes: list[str] = list(self.target.baseline_notes())
        if runner is None:
            runner = runner_for_profile(self.profile)
            self.notes.extend(getattr(runner, "warnings", []))
        self.techniques = {name: t for name, t in self.registry.techniques.items() if t.available()[0]}
        self.clock = PhaseClock(self.reporter)
        self.predictor: LatencyPredictor | None = None
        self._baseline: CandidateRecord | None = None
        self._baseline_timer: BaselineTimer | None = None
        self._baseline_ranking_metric: float | None = None  # the baseline on the one-shot scores' samples
        self.budget = Budget(self.profile.budget, config.budget_ms, config.budget_ratio, self.profile.name,
                             config.max_metric_drop)
        created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.clock.phase("loading model")
        try:
            self.source, self.task, calib = resolve_model_ref(config.model, self.run_dir, config.input_shapes,
                                                              config.calib)
            self.calibration, calib_origin = calibration_feeds(self.source, self.task, calib)
        except BaseException:
            if created:  # a start that failed leaves nothing behind (a resumed run keeps its directory)
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        self.notes.extend(self.source.notes)  # why a technique is not offered for this model, said where it shows
        self.evaluator: TaskEvaluator | FidelityEvaluator
        if self.task is not None:
            self.evaluator = TaskEvaluator(self.task)
        else:
            reference = self.target.host_session(self.source.onnx_path)
            self.evaluator = FidelityEvaluator(self.calibration[:32], reference.run, calib_origin)
            if calib is None:
                self.notes.append("no --calib given: INT8 calibration and fidelity use synthetic standard-normal "
                                  "inputs, which may not resemble real data")
        recovery_settings = resolved_options(self.registry.recoveries, config.recovery, config.recovery_options)
        scoring = {"model": self.source.fingerprint, "target": self.target.name,
                   "finetune_epochs": config.finetune_epochs, "calibration": calib_origin,
                   "input_shapes": self.source.input_shapes(), "recovery": [config.recovery, recovery_settings]}
        self.context = canonical({**scoring, "target_settings": self.target.settings.model_dump()})
        # what decides the built model and its metric (not the device's speed settings): shared across devices
        self.scoring_context = canonical({**scoring, "scoring": self.target.scoring_settings()})
        self.store = self._open_store()
        #: measured plans that are not trials of --trials (speed-gate probes, other workers' bests), kept in the
        #: store so a resumed run counts the same
        self._uncounted: set[str] = set(self.store.get_meta("uncounted") or [])
        self.device = Device(self.target, runner, self.profile.measurement, self.source.input_shapes())
        recovery = RecoveryChoice(self.registry.recoveries, config.recovery, config.recovery_options,
                                  config.finetune_epochs, config.ranking_epochs)
        self.builder = BuildPipeline(self.source, self.calibration, self.task.train_data if self.task else None,
                                     self.target, self.techniques, recovery, self.run_dir, self.context,
                                     self.scoring_context, shared)

    def _open_store(self) -> Store:
        store = Store(self.run_dir / "store.sqlite")
        previous = store.get_meta("context")
        if previous is not None and previous != self.context:
            raise EdgeslimError(f"cannot resume {self.run_dir}: the model, target settings or calibration "
                                "differ from the stored run; use a new --out directory")
        store.set_meta("context", self.context)
        for stale in [*(self.run_dir / "candidates").glob("*.tmp"), *(self.run_dir / "probes").glob("*.tmp")]:
            shutil.rmtree(stale, ignore_errors=True)  # a build killed half-way; never presented as a result
        return store

    # --- reading ------------------------------------------------------------------------------------------------

    @property
    def baseline(self) -> CandidateRecord:
        if self._baseline is None:
            raise EdgeslimError("the baseline has not been measured yet (call measure_baseline first)")
        return self._baseline

    def latency_of(self, record: CandidateRecord) -> float | None:
        return self.budget.latency_of(record)

    def meets_budget(self, record: CandidateRecord) -> bool:
        return self.budget.meets(record)

    def metric_drop(self, record: CandidateRecord) -> float:
        assert self.baseline.metric is not None
        return metric_drop(record, self.baseline.metric, self.evaluator.info.higher_is_better)

    def trials_left(self) -> int:
        """Measured candidates left under ``--trials``; none once ``--time-budget`` is spent."""
        if self.time_left() == 0.0:
            return 0
        used = self.store.count_measured() - 1 - len(self._uncounted)  # the baseline is not a trial either
        return self.config.trials - max(0, used)

    def time_left(self) -> float | None:
        """Seconds of ``--time-budget`` left for the strategy (None without a time budget)."""
        if self.config.time_budget_s is None:
            return None
        return max(0.0, self.config.time_budget_s - self.clock.since_start())

    def offered_knobs(self) -> list[tuple[str, Knob, bool]]:
        """(owner, knob, reduces latency) for every knob a strategy may use: latency knobs always, size-only
        knobs (weight sharing, low-bit weights, unstructured masks) when the profile budgets size."""
        limits_size = self.profile.budget.limits_size
        offered = [(name, knob, tech.reduces_latency) for name, tech in self.techniques.items()
                   if tech.reduces_latency or limits_size for knob in tech.knobs(self.source)]
        return offered + [(self.target.name, knob, True) for knob in self.target.knobs()]

    def rel(self, path: Path) -> str:
        return os.path.relpath(path, self.run_dir)

    # --- what strategies do (through SessionView) ---------------------------------------------------------------

    def score(self, plan: Plan, purpose: str = "sensitivity", one_shot: bool = False,
              short_recovery: bool = False) -> CandidateRecord:
        """Build and score on the host without measuring latency (cheap; not counted as a trial). ``one_shot``
        builds without training (data-free recovery only): a ranking signal, kept apart from candidates.
        ``short_recovery`` trains for the sensitivity phase's ``ranking_epochs`` (a candidate build, reusable
        by a measurement of the same plan, when they equal the candidates' epochs)."""
        if one_shot:
            kind = "one_shot"
        elif short_recovery and self.config.ranking_epochs != self.config.finetune_epochs:
            kind = "ranking"
        else:
            kind = "candidate"
        key = self.builder.key(plan, kind)
        record = self.store.get(key)
        if record is not None and record.metric is not None:
            return record
        try:
            artifact = self.builder.build(plan, kind)
            metric = self._score_artifact(artifact, plan, kind)
            record = CandidateRecord.new(key, plan, purpose + (" (one-shot)" if one_shot else ""), "scored",
                                         metric=metric, artifact=self.rel(artifact))
        except EdgeslimError as exc:
            record = CandidateRecord.new(key, plan, purpose, "failed", note=str(exc))
        self.store.put(record)
        return record

    def evaluate(self, plan: Plan, purpose: str = "candidate", counts_as_trial: bool = True) -> CandidateRecord:
        """Build, measure on the device and score. Raises TrialsExhausted past ``--trials`` (unless the
        measurement is not a trial of this worker's own, e.g. checking another worker's best on this device)."""
        key = plan_key(plan, self.context)
        stored = self.store.get(key)
        if stored is not None and stored.latency is not None and stored.metric is not None:
            get_plugin_manager().hook.edgeslim_candidate_measured(record={**stored.to_dict(), "from_store": True})
            return stored
        is_baseline = plan == empty_plan()
        if counts_as_trial and not is_baseline and self.trials_left() <= 0:
            raise TrialsExhausted
        self.reporter.advance(purpose)
        try:
            artifact = self.builder.build(plan)
        except EdgeslimError as exc:
            if is_baseline:
                raise
            record = CandidateRecord.new(key, plan, purpose, "failed", note=str(exc))
            self.store.put(record)
            return record
        precision = self.builder.precision_details(plan, artifact)
        if why := self.builder.mostly_float(plan, precision):
            record = CandidateRecord.new(key, plan, purpose, "runs_float", artifact=self.rel(artifact), note=why,
                                         details=precision)
            self.store.put(record)
            return record
        metric = stored.metric if stored is not None else None
        record = self.measure_built(key, plan, purpose, artifact, metric, self.builder, precision=precision)
        if not counts_as_trial and not is_baseline:
            self.not_a_trial(key)
        return record

    def not_a_trial(self, key: str) -> None:
        """A measured record that does not use up ``--trials`` (gate probes, the final recovery)."""
        self._uncounted.add(key)
        self.store.set_meta("uncounted", sorted(self._uncounted))

    def measure_built(self, key: str, plan: Plan, purpose: str, artifact: Path, metric: float | None,
                      builder: BuildPipeline, details: dict | None = None,
                      precision: dict | None = None) -> CandidateRecord:
        """Measure a built artifact on the device, score it (unless ``metric`` is known), store and announce
        the record. The one place a measured candidate's record is made."""
        is_baseline = plan == empty_plan()
        if self._baseline_timer is not None and not is_baseline:
            self._baseline_timer.time_again_if_due()
        # the prediction is made before the measurement, so its recorded error is the one a ranking suffers (only
        # for plans the table describes: another INT8 encoding's kernels are not in it), of the precision each layer
        # really runs at (read back from the target's optimized graph: ``LatencyPredictor.as_run``)
        precision = precision if precision is not None else builder.precision_details(plan, artifact)
        as_run = self.predictor.as_run(plan, precision) if self.predictor is not None else plan
        predicted = self.predictor.predict(as_run) if self.predictor and self.predictor.covers(plan) else None
        stats = self.device.measure(artifact)
        if metric is None:
            metric = self._score_artifact(artifact, plan)
        status, note = ("measured" if stats.usable else f"measure_{stats.status}"), stats.error or ""
        measured_ms = stats.statistic(self.budget.statistic) if stats.usable else None
        if measured_ms is not None and not is_baseline and self._baseline is not None:
            base_ms = self.budget.baseline_ms
            if base_ms is not None and measured_ms >= base_ms:
                # the speed-up gate: a compressed model that is not faster is never a result
                status = "not_faster"
                note = f"measured {measured_ms:.3f} ms, baseline {base_ms:.3f} ms: not faster, dropped"
        details = {**(details or {}), **precision, **builder.size_details(plan, artifact)}
        if predicted is not None and measured_ms is not None and self.predictor is not None:
            details.update(predicted_ms=predicted, prediction_error=predicted / measured_ms - 1)
            self.predictor.observe(as_run, measured_ms)
        # the same architecture timed before (a recipe walk's probe): how well the device repeats itself bounds
        # how close any prediction can get (on this shared machine the two were 0.5x-1.9x apart on busy runs)
        timed_before = (self.store.get_meta("latency_only_probes") or {}).get(self.builder.key(plan, "probe"))
        if timed_before and measured_ms is not None:
            details.update(architecture_timed_before_ms=timed_before)
        record = CandidateRecord.new(key, plan, purpose, status, metric=metric, latency=stats.to_dict(),
                                     artifact=self.rel(artifact), note=note, details=details)
        self.measured_this_run += 1
        self.store.put(record)
        get_plugin_manager().hook.edgeslim_candidate_measured(record={**record.to_dict(), "from_store": False})
        return record

    def probe_latency(self, plan: Plan) -> float | None:
        """The device's latency of ``plan``'s architecture in the budget's statistic, never scored or offered as a
        result; stored, so a resumed run times it again never; counted with the latency table's device runs."""
        return time_architecture(plan, self.builder, self.device, self.store, self.budget.statistic,
                                 self.budget.search_limit_ms, self.predictor)

    def retime(self, records: list[CandidateRecord], why: str = "", rounds: int = RETIME_ROUNDS
               ) -> list[float | None]:
        """The measured ``records`` timed again side by side: ``rounds`` rotating rounds, one agent process per
        run, each record's median of the budget's statistic over them (None: no usable run). Single
        measurements minutes apart on a busy machine rank two INT8 encodings 10-40% apart either way round
        (MobileNetV2 here); close contenders are compared this way. Medians are only comparable within one
        rotation, so every rotation is kept in the run's meta (:data:`ROTATIONS_META`) with the keys it timed
        and ``why``; the same records asked for together again reuse theirs (a resumed run re-times nothing)."""
        rotations: list[dict[str, Any]] = self.store.get_meta(ROTATIONS_META) or []
        wanted = [r for r in records if r.artifact is not None]
        together = sorted({r.key for r in wanted})
        rotation = next((rot for rot in reversed(rotations) if rot["keys"] == together), None)
        if rotation is None:
            timed = self.device.rotate([self.run_dir / str(r.artifact) for r in wanted], rounds)
            runs = {record.key: [stats.statistic(self.budget.statistic) for stats in record_runs]
                    for record, record_runs in zip(wanted, timed, strict=True)}
            rotation = {"why": why, "keys": together, "rounds": runs,
                        "ms": {key: statistics.median(values) if values else None for key, values in runs.items()}}
            self.store.set_meta(ROTATIONS_META, [*rotations, rotation])
        return [rotation["ms"].get(r.key) for r in records]

    def skip_predicted(self, plan: Plan, purpose: str) -> CandidateRecord:
        """Record a plan the table ranks far over the budget: no build, no measurement, never a result."""
        key = plan_key(plan, self.context)
        existing = self.store.get(key)
        if existing is not None and existing.latency is not None:
            return existing
        predicted = self.predictor.predict(plan) if self.predictor is not None else float("nan")
        record = CandidateRecord.new(
            key, plan, purpose, "predicted_over_budget", metric=existing.metric if existing else None,
            artifact=existing.artifact if existing else None, details={"predicted_ms": predicted},
            note=f"predicted {predicted:.3f} ms > budget {self.budget.search_limit_ms:.3f} ms (+{NEAR_BUDGET:.0%}): "
                 "not measured")
        self.store.put(record)
        return record

    def build_predictor(self, base: Plan, knobs: list[Knob]) -> LatencyPredictor | None:
        """Measure the latency table (uniform probes, profiled on the device) for ``knobs`` on top of ``base``."""
        if not self.config.predictor or self._baseline is None:
            return None
        self.clock.phase("latency table (uniform probes, profiled on the target)")
        layers = {layer.name for layer in self.source.layers} | {k.layer for k in knobs if k.layer}
        model_knobs = {knob.name: knob.levels[0] for _, knob, _ in self.offered_knobs() if knob.layer is None}
        self.predictor = measure_latency_table(base, knobs, layers, self.builder, self.device, self.store,
                                               self.budget.statistic, self.notes, self.reporter, model_knobs)
        if self.predictor is not None:
            # candidates measured before (a resumed run) correct the table too
            for record in self.store.all():
                ms = self.latency_of(record)
                if ms is not None and record.key != self.baseline.key:
                    self.predictor.observe(record.plan, ms)
        return self.predictor

    def _score_artifact(self, artifact: Path, plan: Plan, kind: str = "candidate") -> float:
        if self.shared is None:
            return self._metric(artifact, kind)
        key = plan_key(plan, self.scoring_context + kind)
        metric, _ = self.shared.get(key)
        if metric is not None:
            self.shared.metrics_reused += 1
            return metric
        metric = self._metric(artifact, kind)
        self.shared.put(key, metric=metric)
        return metric

    def _metric(self, artifact: Path, kind: str) -> float:
        """The metric of a build. A one-shot build only ranks single moves, so it reads the first
        :data:`RANKING_SAMPLES` eval samples; its metric is the baseline's full-set metric moved by the difference
        the move makes on those samples (both scored on the same ones), so drops stay comparable."""
        if kind != "one_shot" or self._baseline is None or self._baseline.metric is None:
            return self.evaluator.score(self.target.host_session(artifact))
        if self._baseline_ranking_metric is None:
            baseline = self.run_dir / str(self._baseline.artifact)
            self._baseline_ranking_metric = self.evaluator.score(self.target.host_session(baseline), RANKING_SAMPLES)
        moved = self.evaluator.score(self.target.host_session(artifact), RANKING_SAMPLES)
        # the difference first: a move that changes nothing scores exactly the baseline (no rounding in between)
        return self._baseline.metric + (moved - self._baseline_ranking_metric)

    # --- the run ------------------------------------------------------------------------------------------------

    def measure_baseline(self) -> CandidateRecord:
        self.clock.phase("measuring the uncompressed model")
        baseline = self.evaluate(empty_plan(), purpose="baseline")
        baseline_ms = self.latency_of(baseline)
        if baseline_ms is None:
            lat = baseline.latency or {}
            raise EdgeslimError(f"the uncompressed model could not be measured on {self.profile.name}: "
                                f"{lat.get('status')}: {lat.get('error') or baseline.note}")
        self._baseline = baseline
        self.budget.baseline_metric = baseline.metric
        self.budget.higher_is_better = self.evaluator.info.higher_is_better
        self._baseline_timer = BaselineTimer(self, self.run_dir / str(baseline.artifact))
        self._baseline_timer.start(baseline_ms)
        return baseline

    def run(self, strategy_name: str | None = None) -> Manifest:
        started = time.time()
        self.config.save(self.run_dir / "run.json")
        self.measure_baseline()
        self.notes += floor_notes(self, runtime_floor_ms(self))
        name = strategy_name or self.config.strategy
        strategy_cls = self.registry.strategies.get(name)
        if strategy_cls is None:
            raise EdgeslimError(f"--strategy {name}: unknown strategy (installed: "
                                f"{', '.join(sorted(self.registry.strategies))})")
        ok, why = strategy_cls.available()
        if not ok:
            raise EdgeslimError(f"--strategy {name}: {why}")
        best, verification = search_until_verified(self, strategy_cls, name)
        self.clock.stop()
        return write_outputs(self, best, verification, time.time() - started)
