"""A third strategy, written against the declared SearchAPI only, runs a real search without touching core/."""

from __future__ import annotations

import json

import pytest

from edgeslim.config import SearchConfig
from edgeslim.plan import empty_plan, set_knob
from edgeslim.search import SearchSession
from edgeslim.strategy import SearchAPI, Strategy
from edgeslim.strategy_view import SessionView
from tests.conftest import strategy_registry


class EveryKnobAtOnce(Strategy):
    """Every latency knob at its first level, then each gate's fastest variant on top: two measurements."""

    name = "every-knob-at-once"
    description = "test strategy: one plan with every latency knob at its first level"
    seen: dict = {}

    def run(self, search: SearchAPI) -> None:
        plan = empty_plan()
        for offered in search.knobs():
            if offered.reduces_latency and offered.knob.layer is not None and offered.owner == "quantization":
                knob = offered.knob
                plan = set_knob(plan, knob.layer, knob.name, knob.levels[1], knob.levels[0])
        record = search.measure(plan, purpose="every-knob")
        EveryKnobAtOnce.seen = {"baseline_ms": search.baseline_ms, "budget_ms": search.budget_ms,
                                "latency": search.latency_of(record), "meets": search.meets_budget(record),
                                "drop": search.metric_drop(record), "trials_left": search.trials_left(),
                                "status": record.status}
        search.note(f"every-knob: {search.latency_of(record)} ms")


@pytest.fixture
def registry_with_strategy():
    yield from strategy_registry(EveryKnobAtOnce)


def test_the_view_offers_nothing_beyond_the_declared_interface():
    declared = {name for name in dir(SearchAPI) if not name.startswith("_")}
    offered = {name for name in dir(SessionView) if not name.startswith("_")}
    assert offered == declared


def test_a_strategy_written_against_the_api_runs_a_search(registry_with_strategy, tmp_path, resnet_onnx,
                                                          fast_profile):
    config = SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), out_dir=str(tmp_path / "run"),
                          budget_ratio=1.0, trials=3, strategy="every-knob-at-once")
    manifest = SearchSession(config, registry=registry_with_strategy).run()
    seen = EveryKnobAtOnce.seen
    stored = [json.loads(line) for line in (tmp_path / "run" / "candidates.jsonl").open()]
    mine = [r for r in stored if r["purpose"] == "every-knob"]
    assert len(mine) == 1 and mine[0]["status"] == seen["status"]
    assert seen["budget_ms"] == pytest.approx(seen["baseline_ms"])
    assert seen["trials_left"] == 2
    assert any(note.startswith("every-knob:") for note in manifest["notes"])
