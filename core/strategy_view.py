"""The session as strategies see it: :class:`~edgeslim.strategy.SearchAPI` and nothing else of it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeslim.plan import Plan
from edgeslim.records import CandidateRecord
from edgeslim.strategy import AccuracyVariants, OfferedKnob, SpeedGate
from edgeslim.technique import Knob

if TYPE_CHECKING:
    from edgeslim.search import SearchSession


class SessionView:
    """Implements :class:`~edgeslim.strategy.SearchAPI` over a :class:`~edgeslim.search.SearchSession`."""

    def __init__(self, session: SearchSession) -> None:
        self._session = session

    @property
    def baseline(self) -> CandidateRecord:
        return self._session.baseline

    @property
    def baseline_ms(self) -> float:
        ms = self._session.budget.baseline_ms  # the median of the baseline's timings
        assert ms is not None  # measure_baseline refuses a baseline it could not measure
        return ms

    @property
    def budget_ms(self) -> float:
        ms = self._session.budget.search_limit_ms
        assert ms is not None  # resolved when the baseline was measured
        return ms

    @property
    def higher_is_better(self) -> bool:
        return self._session.evaluator.info.higher_is_better

    def knobs(self) -> list[OfferedKnob]:
        return [OfferedKnob(owner, knob, fast) for owner, knob, fast in self._session.offered_knobs()]

    def speed_gates(self) -> list[SpeedGate]:
        source = self._session.source
        gates = []
        for name, tech in self._session.techniques.items():
            knobs = tuple(k for k in tech.knobs(source) if k.layer is not None)
            if tech.speed_gated and knobs:
                variants = tuple(self._runnable(tech.variants(source)))
                refinements = tuple((v, tuple(self._runnable(tech.refinements(v)))) for v in variants)
                gates.append(SpeedGate(name, knobs, variants, refinements))
        return gates

    def model_variants(self) -> dict[str, list[dict[str, Any]]]:
        source = self._session.source
        return {name: variants for name, tech in self._session.techniques.items()
                if tech.reduces_latency and (variants := self._runnable(tech.variants(source)))}

    def _runnable(self, variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The variants the target can run (OpenVINO takes no QOperator model, TensorRT only symmetric int8)."""
        return [v for v in variants if self._session.target.accepts_model_settings(v)]

    def accuracy_variants(self) -> list[AccuracyVariants]:
        source = self._session.source
        found = []
        for name, tech in self._session.techniques.items():
            variants = tech.accuracy_variants(source)
            if len(variants) >= 2:
                knobs = tuple(k for k in tech.knobs(source) if k.layer is not None)
                found.append(AccuracyVariants(name, knobs, tuple(variants)))
        return found

    def trials_left(self) -> int:
        return self._session.trials_left()

    def time_left(self) -> float | None:
        return self._session.time_left()

    def predict(self, plan: Plan) -> float | None:
        predictor = self._session.predictor
        # None for a plan with other model-wide settings than the probes' (another INT8 encoding): other kernels
        return predictor.predict(plan) if predictor is not None and predictor.same_settings(plan) else None

    def predict_separable(self, plan: Plan) -> float | None:
        predictor = self._session.predictor
        if predictor is None or not predictor.same_settings(plan):
            return None
        return predictor.predict(plan, boundaries=False)

    def worth_measuring(self, plan: Plan) -> bool:
        predictor, budget_ms = self._session.predictor, self._session.budget.search_limit_ms
        if predictor is None or budget_ms is None:
            return True
        return predictor.near_budget(plan, budget_ms)

    def latency_of(self, record: CandidateRecord) -> float | None:
        return self._session.latency_of(record)

    def meets_budget(self, record: CandidateRecord) -> bool:
        return self._session.meets_budget(record)

    def over_other_budgets(self, record: CandidateRecord) -> list[str]:
        return self._session.budget.over_other_limits(record)

    def metric_drop(self, record: CandidateRecord) -> float:
        return self._session.metric_drop(record)

    def score(self, plan: Plan, purpose: str = "sensitivity", one_shot: bool = False,
              short_recovery: bool = False) -> CandidateRecord:
        return self._session.score(plan, purpose, one_shot, short_recovery)

    def measure(self, plan: Plan, purpose: str = "candidate", counts_as_trial: bool = True) -> CandidateRecord:
        return self._session.evaluate(plan, purpose, counts_as_trial)

    def skip(self, plan: Plan, purpose: str) -> CandidateRecord:
        return self._session.skip_predicted(plan, purpose)

    def probe_latency(self, plan: Plan) -> float | None:
        return self._session.probe_latency(plan)

    def retime(self, records: list[CandidateRecord], why: str = "") -> list[float | None]:
        return self._session.retime(records, why)

    def use_latency_table(self, base: Plan, knobs: list[Knob]) -> bool:
        return self._session.build_predictor(base, knobs) is not None

    def note(self, message: str) -> None:
        self._session.notes.append(message)

    def phase(self, name: str, total: int | None = None) -> None:
        self._session.clock.phase(name, total)

    def progress(self, label: str = "") -> None:
        self._session.reporter.advance(label)

    @property
    def run_id(self) -> str:
        return self._session.context

    @property
    def worker(self) -> str:
        return str(self._session.run_dir)

    @property
    def work_dir(self) -> Path:
        return self._session.run_dir

    @property
    def storage_url(self) -> str | None:
        return self._session.config.storage

    @property
    def trial_grace_s(self) -> float:
        return self._session.config.trial_grace_s
