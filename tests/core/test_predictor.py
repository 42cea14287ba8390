"""The latency table (probes profiled on the device, online correction), several devices in one run, and the
device lock that keeps two agents from timing at once."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from edgeslim.measure import agent_path
from edgeslim.predictor import LatencyPredictor, Probe, error_summary
from edgeslim.technique import Knob
from tests.conftest import FAST_MEASUREMENT, run_cli


def test_search_records_the_tables_prediction_and_error_for_every_measured_candidate(tmp_path, resnet_onnx,
                                                                                     fast_profile):
    out = tmp_path / "run"
    # an impossible budget: the outcome (exit 3) is known, the table is built and used all the same
    proc = run_cli("search", resnet_onnx, "--profile", fast_profile, "--budget-ms", "0.0001", "--trials", "8",
                   "--out", out, "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    predictor = manifest["predictor"]
    assert predictor is not None, manifest["notes"]
    weighted = [layer for layer in manifest["layers"] if layer["op"] in ("Conv", "Gemm", "MatMul")]
    # every layer of the real ONNX Runtime profile found its layer (fused kernels carry other names)
    assert predictor["layers_profiled"] == len(weighted)
    assert predictor["probes"] >= 2 and predictor["entries"] >= len(weighted)
    assert manifest["device_runs"]["latency_table"] >= predictor["probes"]
    assert manifest["device_runs"]["total"] == sum(v for k, v in manifest["device_runs"].items() if k != "total")
    records = [json.loads(line) for line in (out / "candidates.jsonl").open()]
    # greedy's uniform-INT8 shortcut is measured before the table exists (it may make the table unneeded)
    predicted = [r for r in records if r["purpose"].startswith("greedy:") and r["latency"]
                 and not r["purpose"].startswith("greedy:uniform")]
    assert predicted, "the strategy measured nothing after the table was built"
    for r in predicted:
        d = r["details"]
        assert d["predicted_ms"] > 0
        assert d["prediction_error"] == pytest.approx(d["predicted_ms"] / r["latency"]["p50_ms"] - 1)
    with_error = [r for r in records if "prediction_error" in (r.get("details") or {})]
    assert predictor["error"]["n"] == len(with_error)
    assert "latency table" in (out / "report.html").read_text()
    report = " ".join(run_cli("report", out).stdout.split())
    assert f"device runs: {manifest['device_runs']['total']} " in report
    assert f"over {predictor['error']['n']} measured candidates" in report


def test_no_predictor_measures_without_a_table(tmp_path, resnet_onnx, fast_profile):
    proc = run_cli("search", resnet_onnx, "--profile", fast_profile, "--budget-ms", "0.0001", "--trials", "4",
                   "--no-predictor", "--out", tmp_path / "run", "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["predictor"] is None and manifest["device_runs"]["latency_table"] == 0


def test_table_splits_channel_cuts_between_a_layer_and_its_consumer():
    """Uniform probes cut both sides of an inner layer; a plan cutting only the producer narrows the consumer's
    input alone: the table predicts that from the split, and the correction maps table sums to end-to-end."""
    base = Probe({"layers": {}, "model": {}}, None, None, [], 1.3, {"a": 0.4, "b": 0.8}, 0.1)
    half = Probe({"layers": {"a": {"sparsity": 0.5}, "b": {"sparsity": 0.5}}, "model": {}}, "sparsity", 0.5,
                 ["a", "b"], 0.5, {"a": 0.2, "b": 0.2}, 0.1)
    table = LatencyPredictor([base, half], producers={"b": "a"}, consumer_knobs={"sparsity"})
    only_a = {"layers": {"a": {"sparsity": 0.5}}, "model": {}}
    # a: its own cut (0.2); b: input halved, sqrt of its uniform ratio 0.25 -> 0.5 -> 0.4; rest 0.1
    assert table.table_sum(only_a) == pytest.approx(0.2 + 0.4 + 0.1)
    before = table.predict(only_a)
    table.observe(only_a, 0.9)
    table.observe({"layers": {"b": {"sparsity": 0.5}}, "model": {}}, 1.0)
    assert abs(table.predict(only_a) - 0.9) < abs(before - 0.9)  # the online correction moved towards the device
    assert error_summary([0.1, -0.2, 0.05])["median_abs_pct"] == pytest.approx(10.0)


@pytest.mark.parametrize("named", ["a", "c"])
def test_a_channel_groups_cut_is_predicted_on_every_member_and_on_the_layers_its_stream_feeds(named: str):
    """A residual stream: "a" (its knob) and "c" add into one tensor, so one cut shrinks both, and "d", fed by the
    Add, gets a narrower input. The table must time all of them, whichever member the plan names (before, only
    the named layer and its graph consumer moved: random ResNet-18-style plans missed by a median 16%)."""
    base = Probe({"layers": {}, "model": {}}, None, None, [], 1.6, {"a": 0.4, "b": 0.4, "c": 0.4, "d": 0.4}, 0.0)
    half = Probe({"layers": {"a": {"sparsity": 0.5}, "b": {"sparsity": 0.5}}, "model": {}}, "sparsity", 0.5,
                 ["a", "b"], 0.6, {"a": 0.2, "b": 0.1, "c": 0.1, "d": 0.2}, 0.0)
    table = LatencyPredictor([base, half], producers={"b": "a", "c": "b"}, consumer_knobs={"sparsity"},
                             channel_owner={"a": "a", "c": "a", "b": "b"},
                             channel_producers={"b": "a", "c": "b", "d": "a"})
    # a: own half (0.2); b: input halved (0.2); c: own half through the group (0.2); d: input halved (0.2)
    assert table.table_sum({"layers": {named: {"sparsity": 0.5}}, "model": {}}) == pytest.approx(0.8)


def test_a_plan_with_another_int8_encoding_does_not_bend_the_correction():
    """The speed gate measures every INT8 encoding; the table was probed with one. A slow encoding's point
    (15 ms against a table sum of 1 ms) must not move the predictions of the plans the table describes."""
    table, _ = tables(baseline_ms=2.0)
    table.base_model = {"int8_scheme": "qop-u8s8-per-channel"}
    table.model_knobs = {"attention_size": None}
    described = {"layers": {"a": {"sparsity": 0.5}}, "model": {"int8_scheme": "qop-u8s8-per-channel"}}
    before = table.predict(described)
    table.observe({"layers": {"a": {"bits": 8}}, "model": {"int8_scheme": "qdq-s8s8-per-tensor"}}, 15.0)
    table.observe({"layers": {}, "model": {"int8_scheme": "qop-u8s8-per-channel", "attention_size": 32}}, 0.1)
    assert table.predict(described) == before


def test_removing_a_block_is_predicted_from_the_removal_probe():
    """Block removal sits on a block ("l1.1"), not on its layers: the table must still see that the block's
    layers are gone, or the integer program sees removal save nothing and never picks it."""
    base = Probe({"layers": {}, "model": {}}, None, None, [], 1.1, {"l1.0.conv": 0.4, "l1.1.conv": 0.4, "head": 0.2},
                 0.1)
    removed = Probe({"layers": {"l1.1": {"remove": True}}, "model": {}}, "remove", True, ["l1.1"], 0.68,
                    {"l1.0.conv": 0.4, "head": 0.2}, 0.08)
    table = LatencyPredictor([base, removed])
    assert table.table_sum({"layers": {"l1.1": {"remove": True}}, "model": {}}) == pytest.approx(0.68)


def test_a_probe_profiled_in_a_slow_moment_is_scaled_to_its_end_to_end_time():
    """The per-node profile is a run of its own: profiled at twice its end-to-end time (a busy moment), the
    probe's layers keep their shares of the end-to-end time, not the inflated sum."""
    base = Probe({"layers": {}, "model": {}}, None, None, [], 1.0, {"a": 0.5, "b": 0.5}, 0.0)
    half = Probe({"layers": {"a": {"bits": 8}, "b": {"bits": 8}}, "model": {}}, "bits", 8, ["a", "b"], 0.5,
                 {"a": 0.5, "b": 0.5}, 0.0)
    table = LatencyPredictor([base, half])
    assert table.table_sum({"layers": {"a": {"bits": 8}}, "model": {}}) == pytest.approx(0.75)


def tables(baseline_ms: float) -> tuple[LatencyPredictor, dict]:
    base = Probe({"layers": {}, "model": {}}, None, None, [], baseline_ms, {"a": baseline_ms / 2, "b": baseline_ms / 2},
                 0.0)
    half = Probe({"layers": {"a": {"sparsity": 0.5}, "b": {"sparsity": 0.5}}, "model": {}}, "sparsity", 0.5,
                 ["a", "b"], baseline_ms / 2, {"a": baseline_ms / 4, "b": baseline_ms / 4}, 0.0)
    return LatencyPredictor([base, half]), {"layers": {}, "model": {}}


def test_a_millisecond_models_table_skips_a_plan_it_predicts_far_over_the_budget():
    table, unchanged = tables(baseline_ms=3.0)
    assert (table.ranks_only, table.near_budget(unchanged, budget_ms=1.5)) == (False, False)


def test_a_sub_half_millisecond_models_table_only_ranks_and_skips_nothing():
    """At 0.3 ms per-node timings are mostly profiler noise: every candidate is measured, none skipped."""
    table, unchanged = tables(baseline_ms=0.3)
    assert (table.ranks_only, table.near_budget(unchanged, budget_ms=0.15)) == (True, True)


def int8_paired_table(second: Knob, times: dict[str | None, dict[str, float]],
                      rest: dict[str | None, float] | None = None) -> tuple[list[Any], LatencyPredictor]:
    """Two layers a -> b offering INT8 and ``second`` (on both): the probes the table wants, each timed per layer
    as ``times`` says (and ``rest`` outside them), and the table built from them."""
    from edgeslim.latency_table import wanted_probes
    knobs = [Knob("quantization", "bits", name, (32, 8)) for name in "ab"] + [
        dataclasses.replace(second, layer=name) for name in "ab"]
    wanted = wanted_probes({"layers": {}, "model": {}}, knobs)
    rest = rest or {}
    probes = [Probe(w.plan, w.knob, w.level, w.layers, sum(times[w.knob].values()) + rest.get(w.knob, 0.0),
                    times[w.knob], rest.get(w.knob, 0.0)) for w in wanted]
    return wanted, LatencyPredictor(probes, producers={"b": "a"}, consumer_knobs={"sparsity"})


def test_int8_with_a_channel_cut_is_predicted_from_their_combined_probe_not_the_product():
    """Each alone halves a layer; together they save less (the narrowed INT8 kernel keeps its quantize and
    dequantize work): the table predicts the pair from the probe that measured them together."""
    times = {None: {"a": 0.5, "b": 0.5}, "bits": {"a": 0.25, "b": 0.25}, "sparsity": {"a": 0.25, "b": 0.25},
             "sparsity+bits": {"a": 0.2, "b": 0.2}, "bits@alternate": {"a": 0.5, "b": 0.25}}
    wanted, table = int8_paired_table(Knob("pruning", "sparsity", "a", (0.0, 0.5), narrows_consumers=True), times)
    both = next(w.plan for w in wanted if w.knob == "sparsity+bits")
    assert ([w.knob for w in wanted], table.table_sum(both)) == (
        [None, "bits", "sparsity", "sparsity+bits", "bits@alternate"], pytest.approx(0.4))


def test_a_mixed_int8_plan_pays_per_float_int8_boundary_what_the_alternating_probe_ran_over_the_table():
    """A chain a -> b -> c -> d, each layer 1 ms in float and 0.5 ms in INT8. INT8 on b and d has three
    boundaries (a quantize or dequantize each) and ran 3.6 ms against the table's 3.0: 0.2 ms per boundary.
    INT8 on a and b has one (b feeds c), so 0.5 + 0.5 + 1 + 1 + 0.2 ms; 3.0 ms for a model that sums per-layer
    changes (the integer program's options)."""
    from edgeslim.latency_table import wanted_probes

    int8_knobs = [Knob("quantization", "bits", name, (32, 8)) for name in "abcd"]
    wanted = wanted_probes({"layers": {}, "model": {}}, int8_knobs)
    e2e = {None: 4.0, "bits": 2.0, "bits@alternate": 3.6}
    probes = [Probe(w.plan, w.knob, w.level, w.layers, e2e[w.knob],
                    {layer: 0.5 if layer in w.layers else 1.0 for layer in "abcd"}, 0.0) for w in wanted]
    table = LatencyPredictor(probes, producers={"b": "a", "c": "b", "d": "c"})
    first_two = {"layers": {"a": {"bits": 8}, "b": {"bits": 8}}, "model": {}}
    assert ([w.layers for w in wanted], table.predict(first_two), table.predict(first_two, boundaries=False)) == (
        [[], list("abcd"), ["b", "d"]], pytest.approx(3.2), pytest.approx(3.0))


def test_agents_on_one_device_never_time_at_once(tmp_path, resnet_onnx):
    job = {"runtime": "onnxruntime", "artifact": str(resnet_onnx), "options": {"threads": 1}, "input_shapes": {},
           "warmup": 2, "min_runs": 5, "min_seconds": 1.0, "device_lock_path": str(tmp_path / "device.lock")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    agents = [subprocess.Popen([sys.executable, str(agent_path()), "--job", str(tmp_path / "job.json")],
                               stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(a.communicate(timeout=120)[0].splitlines()[-1]) for a in agents]
    assert all(r["status"] in ("ok", "noisy") for r in results), results
    first, second = sorted(results, key=lambda r: r["timed_from"])
    assert first["timed_to"] <= second["timed_from"]  # the second waited for the first to finish
    assert max(r["lock_wait_ms"] for r in results) > 500


def test_two_devices_in_one_run_share_builds_and_metrics(tmp_path, resnet_onnx, fast_profile):
    second = tmp_path / "two-threads.toml"
    second.write_text(textwrap.dedent('''
        name = "local-cpu-2t"
        extends = "local-cpu"
        [target]
        name = "onnxruntime"
        threads = 2
    ''') + FAST_MEASUREMENT)
    out = tmp_path / "multi"
    proc = run_cli("search", resnet_onnx, "--profile", fast_profile, "--profile", second, "--budget-ms", "0.0001",
                   "--trials", "5", "--no-predictor", "--out", out, "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["multi_device"] and list(manifest["devices"]) == ["fast-local", "local-cpu-2t"]
    for name, device in manifest["devices"].items():
        sub = json.loads((out / device["run_dir"] / "manifest.json").read_text())
        assert sub["profile"] == name and device["best"]["plan"] == sub["best"]["plan"]
        own = sub["best"]["artifact"]
        assert device["best"]["artifact"] == (f"{device['run_dir']}/{own}" if own else None)
    # the same ONNX Runtime arithmetic on both: the second device rebuilt and rescored nothing it shared
    shared = manifest["shared_evaluations"]
    assert shared["metrics_reused"] > 0 and shared["builds_reused"] > 0
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 2 and "local-cpu-2t" in html
    report = run_cli("report", out)
    assert report.returncode == 0 and "fast-local" in report.stdout and "local-cpu-2t" in report.stdout
    assert "local-cpu-2t: device runs:" in " ".join(report.stdout.split())
    again = run_cli("search", resnet_onnx, "--profile", fast_profile, "--profile", fast_profile, "--out",
                    tmp_path / "dup")
    assert again.returncode == 1 and "--profile given twice" in again.stderr


@pytest.mark.parametrize("grace", [3])
def test_a_killed_workers_trial_is_retried_by_the_next_worker(tmp_path, resnet_onnx, fast_profile, grace):
    optuna = pytest.importorskip("optuna")
    import os
    import signal
    import time

    storage = f"sqlite:///{tmp_path / 'study.sqlite'}"
    cmd = [sys.executable, "-m", "edgeslim.cli", "search", str(resnet_onnx), "--profile", str(fast_profile),
           "--budget-ms", "0.0001", "--strategy", "tpe", "--storage", storage, "--trial-grace", str(grace),
           "--no-predictor"]
    first = subprocess.Popen([*cmd, "--trials", "8", "--out", str(tmp_path / "w1")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    killed = None
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and killed is None:
        time.sleep(0.3)
        try:
            study = optuna.load_study(study_name=optuna.get_all_study_summaries(storage)[0].study_name,
                                      storage=storage)
        except Exception:  # noqa: BLE001 (no study yet, or the database is busy)
            continue
        running = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
        # kill once the trial has all its parameters (its plan is stored after the last suggestion): mid-trial,
        # while it builds and measures
        if running and running[0].number >= 1 and "plan" in running[0].user_attrs:
            os.killpg(first.pid, signal.SIGKILL)
            killed = running[0]
    first.wait()
    assert killed is not None, "the first worker finished before it could be killed mid-trial"
    time.sleep(grace + 1)
    second = subprocess.run([*cmd, "--trials", "3", "--out", str(tmp_path / "w2")], capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 3, second.stderr
    study = optuna.load_study(study_name=optuna.get_all_study_summaries(storage)[0].study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert trials[killed.number].state == optuna.trial.TrialState.FAIL
    # both Optuna retry callbacks (4.x's RetryFailedTrialCallback, 4.9+'s heartbeat one) record the original here
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retries and retries[0].params == killed.params
    assert retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].user_attrs["worker"] == str(tmp_path / "w2")


def test_a_size_budget_from_the_profile_is_recorded_and_the_baseline_exceeds_it(tmp_path, resnet_onnx):
    size = Path(resnet_onnx).stat().st_size / 1e3
    limit = round(0.5 * size, 1)  # FP32 cannot meet it; INT8 weights (a quarter of the bytes) can
    profile = tmp_path / "small.toml"
    profile.write_text(f'name = "small"\nextends = "local-cpu"\n[budget]\nstored_kb = {limit}\n' + FAST_MEASUREMENT)
    out = tmp_path / "run"
    proc = run_cli("search", resnet_onnx, "--profile", profile, "--budget-ms", "0.0001", "--trials", "2",
                   "--no-predictor", "--out", out, "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    records = [json.loads(line) for line in (out / "candidates.jsonl").open()]
    baseline = next(r for r in records if r["key"] == manifest["baseline"]["key"])
    assert (manifest["budget"]["stored_kb"], baseline["details"]["artifact_bytes"] / 1e3 > limit) == (limit, True)


def test_a_negative_size_budget_is_refused_naming_the_field(tmp_path, resnet_onnx):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nextends = "local-cpu"\n[budget]\nratio = 0.5\nstored_kb = -3\n')
    proc = run_cli("search", resnet_onnx, "--profile", bad, "--out", tmp_path / "bad")
    assert proc.returncode == 1 and "stored_kb" in proc.stderr and "Traceback" not in proc.stderr


def test_a_qoperator_int8_layers_time_is_attributed_to_its_layer(tmp_path, resnet_onnx):
    """ONNX Runtime's QOperator quantizer renames each layer's node (X -> X_quant); a profile of such a model
    still attributes every layer's kernel time to that layer, not to the rest of the graph."""
    import onnx

    from edgeslim.host import load_registry
    from edgeslim.measure import LocalRunner, measure
    from edgeslim.model import load_onnx_source
    from edgeslim.profile import MeasurementSettings
    from edgeslim.profile_attribution import attribute_profile, graph_summary
    from edgeslim.technique import BuildContext
    from tests.conftest import random_feed

    source = load_onnx_source(resnet_onnx, tmp_path / "s", {}, None)
    layers = [layer.name for layer in source.layers]
    plan = {"layers": {name: {"bits": 8} for name in layers}, "model": {"int8_scheme": "qop-u8s8-per-tensor"}}
    ctx = BuildContext(source=source, calibration=[random_feed(seed=i) for i in range(8)], work_dir=tmp_path)
    quantized = load_registry().techniques["quantization"].apply_onnx(source.onnx_path, plan, ctx, tmp_path / "q.onnx")
    target = load_registry().targets["onnxruntime"].from_options({})
    settings = MeasurementSettings(warmup=2, min_runs=10, min_seconds=0.05, layer_profile_runs=20)
    stats = measure(LocalRunner(), target.benchmark_job(quantized, {}), settings, layer_profile=True)
    per_layer, _ = attribute_profile(stats.layer_profile, dict(source.layer_nodes),
                                     graph_summary(onnx.load(str(quantized))), set(layers))
    assert sorted(per_layer) == sorted(layers)


def test_int8_with_low_rank_is_predicted_from_their_combined_probe_not_the_product():
    """Low rank splits a layer into two convolutions, each quantized on its own under INT8: the table probes
    rank with INT8 on top (a ResNet-18-style rank 0.5 + INT8 ran 27-32% slower than the product of the two
    ratios) and predicts the pair from that probe: 0.35 ms, not the product's 0.25."""
    times = {None: {"a": 0.5, "b": 0.5}, "bits": {"a": 0.25, "b": 0.25}, "rank": {"a": 0.25, "b": 0.25},
             "rank+bits": {"a": 0.175, "b": 0.175}, "bits@alternate": {"a": 0.5, "b": 0.25}}
    wanted, table = int8_paired_table(Knob("lowrank", "rank", "a", (1.0, 0.5), splits_layer=True), times)
    both = {"layers": {name: {"bits": 8, "rank": 0.5} for name in "ab"}, "model": {}}
    assert ([w.knob for w in wanted], table.table_sum(both)) == (
        [None, "bits", "rank", "rank+bits", "bits@alternate"], pytest.approx(0.35))


def test_the_rest_of_a_combined_probe_is_its_own_not_the_sum_of_the_single_probes_rests():
    """Outside the plan's layers a 50% cut adds 0.05 ms per layer and INT8 0.1 ms, but together they add 0.025
    ms per layer (INT8 on a narrowed layer re-lays out less): the pair's plan is predicted at what its probe ran,
    0.55 ms, not 0.8."""
    times = {None: {"a": 0.5, "b": 0.5}, "bits": {"a": 0.25, "b": 0.25}, "sparsity": {"a": 0.25, "b": 0.25},
             "sparsity+bits": {"a": 0.2, "b": 0.2}, "bits@alternate": {"a": 0.5, "b": 0.25}}
    rest = {None: 0.1, "bits": 0.3, "sparsity": 0.2, "sparsity+bits": 0.15, "bits@alternate": 0.2}
    wanted, table = int8_paired_table(Knob("pruning", "sparsity", "a", (0.0, 0.5), narrows_consumers=True), times,
                                      rest)
    both = next(w.plan for w in wanted if w.knob == "sparsity+bits")
    assert table.table_sum(both) == pytest.approx(0.55)


def test_the_table_predicts_the_precision_each_layer_runs_at_not_the_one_planned():
    """ONNX Runtime fuses a float layer between INT8 ones into an INT8 kernel, and may leave a planned INT8 layer
    float; the build reads both back from the optimized graph. Each layer 1 ms in float, 0.5 in INT8: INT8 planned
    on a and c, run on all three, is predicted 1.5 ms (as planned: 2.0); INT8 planned on all three and run on a
    and b only, 2.0 ms."""
    from edgeslim.latency_table import wanted_probes

    wanted = wanted_probes({"layers": {}, "model": {}}, [Knob("quantization", "bits", name, (32, 8)) for name in "abc"])
    e2e = {None: 3.0, "bits": 1.5, "bits@alternate": 2.5}
    probes = [Probe(w.plan, w.knob, w.level, w.layers, e2e[w.knob],
                    {layer: 0.5 if layer in w.layers else 1.0 for layer in "abc"}, 0.0) for w in wanted]
    table = LatencyPredictor(probes, producers={"b": "a", "c": "b"})
    ends = {"layers": {"a": {"bits": 8}, "c": {"bits": 8}}, "model": {}}
    every = {"layers": {name: {"bits": 8} for name in "abc"}, "model": {}}
    fused = {"effective_precision": dict.fromkeys("abc", "int8")}
    left_float = {"effective_precision": {"a": "int8", "b": "int8", "c": "float"}}
    assert (table.predict(table.as_run(ends, fused)), table.predict(table.as_run(every, left_float))) == (
        pytest.approx(1.5), pytest.approx(2.0))


def test_removing_blocks_moves_the_layers_left_by_a_ratio_that_holds_under_int8_too():
    """With block l1.1 removed, the layers left ran 0.8x their baseline time (ResNet-18-style: 0.2 ms faster,
    predicted 0.99 ms where it ran 0.77). The removal probe is predicted at what it ran, 0.48 ms, and removal
    with INT8 (every layer half) at 0.8 x 0.3 = 0.24 ms: a ratio, not the 0.12 ms the float layers saved."""
    layers = {"l1.0.conv": 0.4, "l1.1.conv": 0.4, "head": 0.2}
    base = Probe({"layers": {}, "model": {}}, None, None, [], 1.0, layers, 0.0)
    removed = Probe({"layers": {"l1.1": {"remove": True}}, "model": {}}, "remove", True, ["l1.1"], 0.48,
                    {"l1.0.conv": 0.32, "head": 0.16}, 0.0)
    int8 = Probe({"layers": {name: {"bits": 8} for name in layers}, "model": {}}, "bits", 8, list(layers), 0.5,
                 {name: ms / 2 for name, ms in layers.items()}, 0.0)
    table = LatencyPredictor([base, removed, int8])
    both = {"layers": {"l1.1": {"remove": True}, "l1.0.conv": {"bits": 8}, "head": {"bits": 8}}, "model": {}}
    assert (table.table_sum(removed.plan), table.table_sum(both)) == (pytest.approx(0.48), pytest.approx(0.24))
