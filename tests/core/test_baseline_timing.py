"""A ratio budget is of the median of the baseline's timings, taken before the search and again as it goes (a
MobileNetV2-style search once timed its baseline 5-11% slower than verification did, and every candidate that met its
0.2x budget missed in verification)."""

from __future__ import annotations

import statistics

import pytest

from edgeslim import baseline_timing
from edgeslim.config import SearchConfig
from edgeslim.search import SearchSession


def _session(tmp_path, resnet_onnx, fast_profile) -> SearchSession:
    return SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ratio=0.5,
                                      out_dir=str(tmp_path / "run")))


def test_the_baseline_is_timed_several_times_before_the_search_and_the_budget_is_of_their_median(
        tmp_path, resnet_onnx, fast_profile):
    session = _session(tmp_path, resnet_onnx, fast_profile)
    session.measure_baseline()
    timings = session.budget.baseline_timings_ms
    assert (len(timings), session.budget.latency_ms) == (baseline_timing.FIRST_TIMINGS,
                                                         pytest.approx(0.5 * statistics.median(timings)))


def test_the_baseline_is_timed_again_during_the_search(
        tmp_path, resnet_onnx, fast_profile, monkeypatch):
    monkeypatch.setattr(baseline_timing, "RETIME_EVERY_S", 0.0)  # due before every candidate
    config = SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ratio=0.5, trials=3,
                          out_dir=str(tmp_path / "run"), predictor=False)
    manifest = SearchSession(config).run()
    assert len(manifest["budget"]["baseline_timings_ms"]) > baseline_timing.FIRST_TIMINGS


def test_a_resumed_search_goes_on_from_the_stored_timings_without_timing_the_baseline_again(
        tmp_path, resnet_onnx, fast_profile):
    first = _session(tmp_path, resnet_onnx, fast_profile)
    first.measure_baseline()
    resumed = _session(tmp_path, resnet_onnx, fast_profile)
    resumed.measure_baseline()
    assert (resumed.budget.baseline_timings_ms, resumed.device.runs["baseline"]) == (
        first.budget.baseline_timings_ms, 0)
