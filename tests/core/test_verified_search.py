"""When verification re-measures every in-budget candidate over the budget, the search goes on within a tighter
limit instead of ending without an answer (the demo did, at 0.47x in the search and 0.52x verified)."""

from __future__ import annotations

import json

import pytest

from edgeslim import outputs
from edgeslim.config import SearchConfig
from edgeslim.plan import empty_plan, set_knob
from edgeslim.records import CandidateRecord
from edgeslim.search import SearchSession
from edgeslim.strategy import SearchAPI, Strategy
from edgeslim.strategy_view import SessionView
from edgeslim.verified_search import MARGIN, tightened_share
from tests.conftest import strategy_registry

pytest.importorskip("torch_pruning", reason="the strategy cuts channels: pip install 'edgeslim[torch]'")


def uniform_cut(knobs: list, level: float) -> dict:
    """Every sparsity knob at ``level``."""
    plan = empty_plan()
    for knob in knobs:
        plan = set_knob(plan, knob.layer, knob.name, level, knob.levels[0])
    return plan


class LightestThatMeets(Strategy):
    """Uniform channel cuts, lightest first, until one meets ``budget_ms``: what the built-ins do at the edge."""

    name = "lightest-that-meets"
    description = "test strategy: the lightest uniform channel cut that meets the budget"

    def run(self, search: SearchAPI) -> None:
        knobs = [o.knob for o in search.knobs() if o.knob.name == "sparsity"]
        for level in knobs[0].levels[1:]:
            plan = uniform_cut(knobs, level)
            if search.meets_budget(search.measure(plan, purpose=f"uniform sparsity={level}")):
                self.after_the_one_that_met(search, knobs)
                return

    def after_the_one_that_met(self, search: SearchAPI, knobs: list) -> None:
        """Nothing more: the lightest cut that meets the budget is the answer."""


@pytest.fixture
def registry_with_strategy():
    yield from strategy_registry(LightestThatMeets)


def test_when_verification_rejects_every_candidate_the_search_goes_on_and_the_answer_is_a_deeper_cut(
        registry_with_strategy, tmp_path, resnet_onnx, fast_profile, monkeypatch):
    """Every verdict of the first search is turned into a miss (10% over the budget): a device that disagrees with
    itself by that much cannot be had on demand. Everything else is real: the strategy runs again, the 25% cut it
    measured is not verified again (one verdict per candidate), and the answer is a deeper cut that passes a real
    verification."""
    real_verify = outputs.verify

    def first_search_misses(session, record):
        verdict = real_verify(session, record)
        if session.budget.search_share == 1.0:
            verdict = {**verdict, "passed": False, "ratio": session.budget.ratio * 1.1, "judged_on": "made to miss"}
        return verdict

    monkeypatch.setattr(outputs, "verify", first_search_misses)
    config = SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), out_dir=str(tmp_path / "run"),
                          budget_ratio=0.95, trials=6, strategy="lightest-that-meets")
    manifest = SearchSession(config, registry=registry_with_strategy).run()
    levels = {layer["sparsity"] for layer in manifest["best"]["plan"]["layers"].values()}
    assert min(levels) >= 0.5


def test_the_tightened_share_clears_the_worst_disagreement_between_search_and_verification(tmp_path, resnet_onnx,
                                                                                             fast_profile):
    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ratio=0.5,
                                         out_dir=str(tmp_path / "run")))
    session.measure_baseline()
    base_ms = session.budget.baseline_ms  # what the search's ratios are of
    for key, searched, verified in (("a", 0.47, 0.52), ("b", 0.48, 0.51)):
        record = CandidateRecord.new(key, {"layers": {key: {"bits": 8}}, "model": {}}, "test", "measured",
                                     latency={"status": "ok", "p50_ms": searched * base_ms,
                                              "p90_ms": searched * base_ms})
        record.details["verification_missed"] = {"passed": False, "ratio": verified}
        session.store.put(record)
    # a ran 0.52 / 0.47 = 1.106x its search time, the worse of the two
    assert tightened_share(session) == pytest.approx(0.47 / 0.52 * MARGIN)


class TwoUniformCuts(Strategy):
    """Every channel group cut 50%, then 75%: two candidates, the lighter the more accurate. Not 25%: the digits
    CNN runs 0.027 ms, and a 25% cut measured no faster than that under CI's load (so it was dropped by the
    speed gate and there was nothing to fall back to); a 50% cut runs about half as long."""

    name = "two-uniform-cuts"
    description = "test strategy: two uniform channel cuts"

    def run(self, search: SearchAPI) -> None:
        knobs = [o.knob for o in search.knobs() if o.knob.name == "sparsity"]
        for level in (0.5, 0.75):
            plan = uniform_cut(knobs, level)
            search.measure(plan, purpose=f"uniform sparsity={level}")


@pytest.fixture
def registry_with_two_cuts():
    yield from strategy_registry(TwoUniformCuts)


def test_the_candidate_verification_falls_back_to_gets_the_final_recovery_too(
        registry_with_two_cuts, tmp_path, digits_task_file, fast_profile, monkeypatch):
    """The candidate the first final recovery was for, and that recovery, are made to miss verification (the
    FashionResNet OpenVINO search's best verified at 0.508x of a 0.5x budget; a device that misses on demand cannot
    be had). Everything else is real: verification falls back to the other cut, which then gets its own longer
    recovery, measured and verified."""
    real_verify = outputs.verify
    passed_over: list[str] = []  # the plan of the first final recovery, as JSON

    def first_recovered_plan_misses(session, record):
        if not passed_over:
            passed_over.extend(json.dumps(r.plan, sort_keys=True) for r in session.store.all()
                               if r.details.get("final_recovery"))
        verdict = real_verify(session, record)
        if json.dumps(record.plan, sort_keys=True) in passed_over:
            verdict = {**verdict, "passed": False, "ratio": 1.1, "judged_on": "made to miss"}
        return verdict

    monkeypatch.setattr(outputs, "verify", first_recovered_plan_misses)
    config = SearchConfig(model=str(digits_task_file), profile=str(fast_profile), out_dir=str(tmp_path / "run"),
                          budget_ms=1000.0, trials=4, finetune_epochs=1, final_epochs=3, strategy="two-uniform-cuts")
    session = SearchSession(config, registry=registry_with_two_cuts)
    session.run()
    recovered_plans = sorted(json.dumps(r.plan, sort_keys=True) for r in session.store.all()
                             if r.details.get("final_recovery"))
    assert len(recovered_plans) == 2 and len(set(recovered_plans)) == 2


class LightestThenOneLighter(LightestThatMeets):
    """The lightest uniform cut that meets the budget, then one lighter plan (one layer cut) as a last try, as
    the greedy strategy's refinements do: a candidate measured after the one that met."""

    name = "lightest-then-one-lighter"
    description = "test strategy: the lightest uniform cut that meets the budget, then a lighter plan"

    def after_the_one_that_met(self, search: SearchAPI, knobs: list) -> None:
        lighter = set_knob(empty_plan(), knobs[0].layer, knobs[0].name, knobs[0].levels[1], knobs[0].levels[0])
        search.measure(lighter, purpose="one layer cut")


@pytest.fixture
def registry_with_lightest_then_lighter():
    yield from strategy_registry(LightestThenOneLighter)


def test_when_the_baselines_retiming_tightens_the_budget_under_every_candidate_the_search_goes_on(
        registry_with_lightest_then_lighter, tmp_path, resnet_onnx, fast_profile, monkeypatch):
    """Once a candidate has met the budget, the baseline's next timings come out 45% faster (the machine quieted
    down; it cannot be made to on demand): the median, and so the 0.95x budget, drop below the candidate that met
    it. Everything else is real. The search goes on within the new budget and answers with a deeper cut."""
    from edgeslim.baseline_timing import BaselineTimer

    real_time_again_if_due = BaselineTimer.time_again_if_due
    quieted: list[bool] = []

    def quieter_after_a_candidate_met(self):
        session = self._session
        met = [r for r in session.store.all() if r.key != session.baseline.key and session.meets_budget(r)]
        if met and not quieted:
            quieted.append(True)
            faster = 0.55 * session.budget.baseline_ms
            for _ in range(2 * len(session.budget.baseline_timings_ms) + 1):
                session.budget.add_baseline_timing(faster)
            return
        real_time_again_if_due(self)

    monkeypatch.setattr(BaselineTimer, "time_again_if_due", quieter_after_a_candidate_met)
    config = SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), out_dir=str(tmp_path / "run"),
                          budget_ratio=0.95, trials=8, strategy="lightest-then-one-lighter")
    manifest = SearchSession(config, registry=registry_with_lightest_then_lighter).run()
    assert manifest["status"] == "ok", manifest["notes"]


def test_under_a_time_budget_the_answers_final_recovery_stops_at_half_of_it(
        registry_with_strategy, tmp_path, digits_task_file, fast_profile):
    """10,000 epochs of the digits model's recovery would take many minutes; --time-budget 90 gives the final
    recovery 45 s, and the notes say where it stopped. (At --time-budget 40 a loaded machine spent it all on
    loading the task and timing the baseline: nothing was measured, so nothing was recovered.)"""
    config = SearchConfig(model=str(digits_task_file), profile=str(fast_profile), out_dir=str(tmp_path / "run"),
                          budget_ms=1000.0, trials=2, finetune_epochs=1, final_epochs=10000, time_budget_s=90.0,
                          strategy="lightest-that-meets")
    manifest = SearchSession(config, registry=registry_with_strategy).run()
    assert any("--time-budget gave it 45 s" in note for note in manifest["notes"]), manifest["notes"]


def test_the_answers_final_recovery_rejected_by_one_verdict_while_its_own_plan_passed_is_verified_once_more(
        registry_with_two_cuts, tmp_path, digits_task_file, fast_profile, monkeypatch):
    """The final recovery's first verification is made to miss (FashionResNet at 0.3x: the recovery verified at
    0.306x, the same plan at its one epoch at 0.263x minutes later; a device that misses on demand cannot be had),
    verification falls back to the plan it was recovered from, which passes for real. The two are one
    architecture: the recovery is verified once more, for real, and is the answer."""
    real_verify = outputs.verify
    missed: list[str] = []

    def the_recoverys_first_verdict_misses(session, record):
        verdict = real_verify(session, record)
        if record.details.get("final_recovery") and not missed:
            missed.append(record.key)
            verdict = {**verdict, "passed": False, "ratio": 1.1, "judged_on": "made to miss"}
        return verdict

    monkeypatch.setattr(outputs, "verify", the_recoverys_first_verdict_misses)
    config = SearchConfig(model=str(digits_task_file), profile=str(fast_profile), out_dir=str(tmp_path / "run"),
                          budget_ms=1000.0, trials=4, finetune_epochs=1, final_epochs=3, strategy="two-uniform-cuts")
    manifest = SearchSession(config, registry=registry_with_two_cuts).run()
    assert manifest["best"].get("first_verification", {}).get("judged_on") == "made to miss", manifest["notes"]


def _a_candidate_measured_at(session: SearchSession, times_the_limit: float) -> CandidateRecord:
    """A 50% channel cut of the tiny ResNet (about half the original's time), built and measured for real, its
    search measurement then read as ``times_the_limit`` of the budget (a busy moment: one cannot be had on
    demand)."""
    view = SessionView(session)
    record = view.measure(uniform_cut([o.knob for o in view.knobs() if o.knob.name == "sparsity"], 0.5),
                          purpose="uniform sparsity=0.5")
    ms = times_the_limit * session.budget.latency_ms
    record.latency = {**record.latency, "p50_ms": ms, "p90_ms": ms}
    session.store.put(record)
    return record


def _a_baseline_timed_between(session: SearchSession, fastest: float, slowest: float) -> None:
    """Two more timings of the baseline, ``fastest`` and ``slowest`` times its median (which stays): a noisy
    machine's baseline (MobileNetV2-style on OpenVINO timed 0.93-1.46 ms, median 1.08, in one search)."""
    base_ms = session.budget.baseline_ms
    session.budget.add_baseline_timing(fastest * base_ms)
    session.budget.add_baseline_timing(slowest * base_ms)


def test_with_no_candidate_within_a_ratio_budget_one_missing_it_within_the_baselines_spread_is_verified(
        tmp_path, resnet_onnx, fast_profile):
    """The half-width cut's search measurement reads 1.1x the 0.95x budget while the baseline's own timings
    spread to 1.3x their median: verified side by side (for real: about 0.5x), it is the answer."""
    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ratio=0.95,
                                         out_dir=str(tmp_path / "run")))
    session.measure_baseline()
    _a_baseline_timed_between(session, 0.8, 1.3)
    near = _a_candidate_measured_at(session, 1.1)
    answer, _ = outputs.select_and_verify(session)
    assert answer.key == near.key


def test_a_candidate_missing_a_ratio_budget_beyond_the_baselines_spread_is_not_verified(tmp_path, resnet_onnx,
                                                                                        fast_profile):
    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ratio=0.95,
                                         out_dir=str(tmp_path / "run")))
    session.measure_baseline()
    _a_baseline_timed_between(session, 0.8, 1.3)
    far = _a_candidate_measured_at(session, 1.5)
    outputs.select_and_verify(session)
    assert session.store.get(far.key).verification is None
