"""The contract of a search strategy: what it may read of a run and what it may do, nothing more.

A strategy is a class with ``name``, ``description`` and ``run(search)``; ``search`` is a :class:`SearchAPI`.
It proposes plans and reads (latency, metric) back::

    class Halving(Strategy):
        name = "halving"
        description = "every per-layer knob at its first level, then half of them"

        def run(self, search: SearchAPI) -> None:
            knobs = [o.knob for o in search.knobs() if o.knob.layer]
            plan = empty_plan()
            for knob in knobs:
                plan = set_knob(plan, knob.layer, knob.name, knob.levels[1], knob.levels[0])
            record = search.measure(plan, purpose="halving:all")
            search.note(f"all knobs: {search.latency_of(record)} ms, meets budget: {search.meets_budget(record)}")

The run stores every result, enforces ``--trials`` (``measure`` raises :class:`TrialsExhausted`), and picks and
verifies the answer afterwards from everything measured: a strategy never needs to remember results, and
asking again for a plan already measured costs nothing (on ``--resume`` too).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from edgeslim.plan import Plan
from edgeslim.records import CandidateRecord
from edgeslim.technique import Knob


class TrialsExhausted(Exception):
    """Raised by :meth:`SearchAPI.measure` when ``--trials`` measured candidates have been used."""


@dataclass(frozen=True)
class OfferedKnob:
    """A knob the run offers to strategies: who owns it (a technique or the target) and whether it buys speed
    (size-only knobs are offered only when the profile budgets size)."""

    owner: str
    knob: Knob
    reduces_latency: bool = True


@dataclass(frozen=True)
class SpeedGate:
    """A technique that is all-or-nothing for speed (INT8): worth probing uniformly, once per variant, before
    allocating it per layer. ``knobs`` are its per-layer knobs, ``variants`` its model-wide encodings."""

    technique: str
    knobs: tuple[Knob, ...]
    variants: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: (first-round variant, its second-round variants): probed only after that variant won the first round
    refinements: tuple[tuple[dict[str, Any], tuple[dict[str, Any], ...]], ...] = field(default_factory=tuple)

    def refinements_of(self, variant: dict[str, Any] | None) -> tuple[dict[str, Any], ...]:
        return next((after for first, after in self.refinements if first == variant), ())


@dataclass(frozen=True)
class AccuracyVariants:
    """Model-wide settings of a technique that change accuracy, not speed (INT8 calibration method)."""

    technique: str
    knobs: tuple[Knob, ...]
    variants: tuple[dict[str, Any], ...]


class SearchAPI(Protocol):
    """Everything a strategy may use. Records are :class:`~edgeslim.records.CandidateRecord`."""

    # --- what a strategy reads -------------------------------------------------------------------------------
    @property
    def baseline(self) -> CandidateRecord:
        """The uncompressed model as measured on the device and scored on the host."""

    @property
    def baseline_ms(self) -> float:
        """The baseline's latency in the budget's statistic: the median of its timings, taken before the search and
        again as it goes (:mod:`edgeslim.baseline_timing`), so it can move a little while a strategy runs."""

    @property
    def budget_ms(self) -> float:
        """The latency budget in ms (a ratio budget resolved against the measured baseline); tighter when the
        run searches again because verification re-measured every in-budget candidate over the budget."""

    @property
    def higher_is_better(self) -> bool:
        """The metric's direction (accuracy: True; error rate: False)."""

    def knobs(self) -> list[OfferedKnob]:
        """Every knob offered for this model: techniques' per-layer and model-wide knobs, and the target's."""

    def speed_gates(self) -> list[SpeedGate]:
        """Techniques to probe uniformly before using them (and drop where they are not faster)."""

    def model_variants(self) -> dict[str, list[dict[str, Any]]]:
        """{technique: model-wide settings that change speed} (INT8 encodings), for strategies that sample them."""

    def accuracy_variants(self) -> list[AccuracyVariants]:
        """Model-wide settings that change accuracy only: score each on the host, keep the best."""

    def trials_left(self) -> int:
        """Measured candidates left under ``--trials`` (0 once ``--time-budget`` is spent)."""

    def time_left(self) -> float | None:
        """Seconds left of ``--time-budget`` (None without one)."""

    def predict(self, plan: Plan) -> float | None:
        """The latency table's prediction in ms (None without a table)."""

    def predict_separable(self, plan: Plan) -> float | None:
        """:meth:`predict` without what the quantize/dequantize steps cost where float and INT8 layers meet: the
        part that adds up layer by layer, for a model that sums per-layer changes (the integer program's
        options; :meth:`predict` of the whole solution then checks it)."""

    def worth_measuring(self, plan: Plan) -> bool:
        """False when the table predicts ``plan`` well over the budget."""

    def latency_of(self, record: CandidateRecord) -> float | None:
        """A record's measured latency in the budget's statistic, or None."""

    def meets_budget(self, record: CandidateRecord) -> bool:
        """Measured, faster than the baseline, within the latency, size and memory budgets."""

    def over_other_budgets(self, record: CandidateRecord) -> list[str]:
        """Size or memory budgets a measured record exceeds, in words."""

    def metric_drop(self, record: CandidateRecord) -> float:
        """How much worse than the baseline (positive = worse); infinite when unscored."""

    # --- what a strategy does --------------------------------------------------------------------------------
    def score(self, plan: Plan, purpose: str = "sensitivity", one_shot: bool = False,
              short_recovery: bool = False) -> CandidateRecord:
        """Build and score on the host, no device run (cheap; not a trial). ``one_shot``: without training
        (data-free recovery only), the cheap ranking signal for sensitivity. ``short_recovery``: trained for the
        run's sensitivity epochs (``--sensitivity-epochs``) rather than a candidate's, to rank single moves."""

    def measure(self, plan: Plan, purpose: str = "candidate", counts_as_trial: bool = True) -> CandidateRecord:
        """Build, measure on the device, score. Raises :class:`TrialsExhausted` past ``--trials``."""

    def skip(self, plan: Plan, purpose: str) -> CandidateRecord:
        """Record a plan the table predicts over the budget: never built, measured or chosen."""

    def probe_latency(self, plan: Plan) -> float | None:
        """The device's latency (ms, the budget's statistic) of ``plan``'s architecture, built without recovery
        and never scored: cheap, to find where a family of plans meets the budget before paying for recovery.
        Not a trial and never a result; stored, so a resumed run does not time it again. None when it cannot
        be built or measured."""

    def retime(self, records: list[CandidateRecord], why: str = "") -> list[float | None]:
        """Measured ``records`` timed again side by side (a few rotating rounds, one process per run): per record
        the median of the budget's statistic, None if it could not run. For choosing between close contenders
        whose single measurements, minutes apart, are within the machine's noise of each other. ``why`` is kept
        with the rotation for the manifest. Not trials; stored, so a resumed run times none again."""

    def use_latency_table(self, base: Plan, knobs: list[Knob]) -> bool:
        """Measure the latency table for these per-layer ``knobs`` on top of ``base``'s model-wide settings (probes
        are stored; a resumed run measures none again). False when there is none (disabled, or the target
        cannot profile): then ``predict`` returns None and ``worth_measuring`` True."""

    def note(self, message: str) -> None:
        """A sentence for the manifest's notes (why a technique was dropped, what was kept)."""

    def phase(self, name: str, total: int | None = None) -> None:
        """Progress: a new phase of the strategy."""

    def progress(self, label: str = "") -> None:
        """Progress: one step done."""

    # --- for strategies that share their work (Optuna's storage) ----------------------------------------------
    @property
    def run_id(self) -> str:
        """A stable id of what is searched (model, target settings, scoring): equal for workers of one search."""

    @property
    def worker(self) -> str:
        """This worker's identity (its run directory)."""

    @property
    def work_dir(self) -> Path:
        """A folder the strategy may write its own files to (kept with the run, resumed with it)."""

    @property
    def storage_url(self) -> str | None:
        """``--storage URL`` when given."""

    @property
    def trial_grace_s(self) -> float:
        """``--trial-grace``: seconds without a worker's heartbeat before its trial is retried."""


class Strategy(abc.ABC):
    """Subclasses set ``name`` and ``description`` and implement :meth:`run`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    @abc.abstractmethod
    def run(self, search: SearchAPI) -> None:
        """Propose and measure plans until done (or until TrialsExhausted)."""
