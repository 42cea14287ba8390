"""End-to-end searches through the real command line, on models edgeslim has never seen."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import edgeslim
from edgeslim import baseline_timing
from edgeslim.measure import LocalRunner, compare_interleaved
from edgeslim.profile import load_profile
from edgeslim.store import ROTATIONS_META
from tests.conftest import run_cli, write_fast_profile

MANIFEST_FIELDS = [
    ("profile",), ("target",), ("budget", "latency_ms"), ("baseline", "latency", "p50_ms"),
    ("baseline", "metric", "value"), ("baseline", "artifact"), ("best", "latency", "p50_ms"),
    ("best", "latency", "p90_ms"), ("best", "metric", "name"), ("best", "metric", "value"),
    ("best", "meets_budget"), ("best", "plan"), ("best", "artifact"), ("candidates_evaluated",), ("versions",),
]


def dig(data, path):
    for key in path:
        data = data[key]
    return data


def ort_job(path: Path, shapes=None) -> dict:
    return {"runtime": "onnxruntime", "artifact": str(path), "options": {"threads": 1}, "input_shapes": shapes or {}}


def test_onnx_search_writes_the_manifest_and_reports(tmp_path, resnet_onnx, fast_profile):
    out = tmp_path / "run"
    proc = run_cli("search", resnet_onnx, "--profile", fast_profile, "--budget-ms", "0.0001", "--trials", "8",
                   "--out", out, "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    for path in MANIFEST_FIELDS:
        dig(manifest, path)
    assert manifest["metric"]["name"] == "fidelity_cosine"
    assert "cosine similarity" in manifest["metric"]["description"]
    assert (out / "report.md").is_file() and (out / "candidates.jsonl").is_file()
    html = (out / "report.html").read_text()
    records = [json.loads(line) for line in (out / "candidates.jsonl").open()]
    measured = [r for r in records if (r.get("latency") or {}).get("p50_ms") and r.get("metric") is not None]
    # one point per measured candidate, the baseline and the fastest among them, the layer table filled
    assert html.count("<circle") >= len(measured) >= 2 and "Pareto" in html and "budget" in html
    assert all(layer["name"] in html for layer in manifest["layers"])


@pytest.mark.timing
def test_onnx_search_reports_only_what_an_independent_measurement_reproduces(tmp_path, resnet_onnx, fast_profile):
    out = tmp_path / "run"
    proc = run_cli("search", resnet_onnx, "--profile", fast_profile, "--budget-ratio", "0.9", "--trials", "8",
                   "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    best = out / manifest["best"]["artifact"]
    baseline = out / manifest["baseline"]["artifact"]
    assert 0.9 < manifest["best"]["metric"]["value"] <= 1.0 + 1e-9
    # independent re-measurement: fresh processes, interleaved, by the test itself
    settings = load_profile(str(fast_profile)).measurement
    comparison = compare_interleaved(LocalRunner(), ort_job(baseline), ort_job(best), settings, rounds=5)
    assert comparison.ratio <= 0.9 * 1.15, (comparison.to_dict(), manifest["best"]["verification"]["ratio"])


def test_symbolic_detector_style_model_with_calib(tmp_path, symbolic_onnx, fast_profile):
    calib = tmp_path / "calib.npz"
    np.savez(calib, images=np.random.default_rng(0).standard_normal((8, 3, 48, 64)).astype(np.float32))
    proc = run_cli("search", symbolic_onnx, "--profile", fast_profile, "--calib", calib, "--budget-ms", "0.0001",
                   "--trials", "5", "--out", tmp_path / "run", "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["layers"] and manifest["baseline"]["latency"]["p50_ms"] > 0
    assert "--calib" in manifest["metric"]["description"]


def test_a_search_whose_every_candidate_loses_more_than_the_metric_limit_exits_3_saying_so(
        tmp_path, resnet_onnx, fast_profile):
    # every compressed model changes the outputs a little: with no loss allowed, none is an answer
    proc = run_cli("search", resnet_onnx, "--profile", fast_profile, "--budget-ratio", "0.95", "--trials", "2",
                   "--no-predictor", "--max-metric-drop", "0", "--out", tmp_path / "run")
    assert proc.returncode == 3 and "within --max-metric-drop 0" in proc.stderr, proc.stderr


def test_an_answer_that_lost_over_a_tenth_of_the_metric_is_flagged_in_the_notes(tmp_path, resnet_onnx, fast_profile):
    from edgeslim.config import SearchConfig
    from edgeslim.outputs import metric_loss_notes
    from edgeslim.search import SearchSession

    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ratio=0.5,
                                         out_dir=str(tmp_path / "run")))
    baseline = session.measure_baseline()
    # the baseline's own measurement with a fifth of its fidelity gone: what a budget at the runtime's floor gives
    answer = dataclasses.replace(baseline, key="lossy", metric=(baseline.metric or 0.0) - 0.2)
    assert "--max-metric-drop" in " ".join(metric_loss_notes(session, answer, [answer]))


def test_impossible_budget_exits_3_naming_the_fastest(tmp_path, resnet_onnx, fast_profile):
    out = tmp_path / "run"
    proc = run_cli("search", resnet_onnx, "--profile", fast_profile, "--budget-ms", "0.0001", "--trials", "4",
                   "--no-predictor", "--out", out)
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "budget_not_met" and manifest["best"]["meets_budget"] is False
    fastest = manifest["fastest"]
    assert fastest["key"] in proc.stderr and "fastest" in proc.stderr
    assert "Traceback" not in proc.stderr


def _measured_keys(db: Path) -> dict[str, str]:
    with sqlite3.connect(str(db)) as conn:
        return dict(conn.execute("SELECT key, latency FROM candidates WHERE latency IS NOT NULL").fetchall())


def test_sigkilled_search_resumes_without_remeasuring(tmp_path, resnet_onnx, fast_profile):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgeslim.cli", "search", str(resnet_onnx), "--profile", str(fast_profile),
           "--budget-ms", "0.0001", "--trials", "8", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    db = out / "store.sqlite"
    deadline = time.time() + 300
    before: dict[str, str] = {}
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                before = _measured_keys(db)
            except sqlite3.OperationalError:
                before = {}
            if len(before) >= 3:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the search finished before it could be killed; make it longer"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _measured_keys(db)
    assert len(before) >= 3 and not (out / "manifest.json").exists()

    resumed = run_cli("search", "--resume", out, "--json")
    assert resumed.returncode == 3, resumed.stderr
    manifest = json.loads(resumed.stdout)
    after = _measured_keys(db)
    # every measurement taken before the kill is still the stored one (not repeated) ...
    assert {k: after[k] for k in before} == before
    # ... and this run measured only the new candidates (verification re-measures are not stored candidates)
    assert manifest["measured_this_run"] == len(after) - len(before)


def test_apply_replays_a_plan(tmp_path, resnet_onnx, fast_profile):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers": {"/stem/stem.0/Conv": {"bits": 8}}, "model": {}}))
    # a budget of a whole second: the replayed model meets it whatever this machine's noise
    proc = run_cli("apply", resnet_onnx, "--plan", plan, "--profile", fast_profile, "--budget-ms", "1000",
                   "--out", tmp_path / "a", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["best"]["plan"]["layers"] == {"/stem/stem.0/Conv": {"bits": 8}}
    assert (tmp_path / "a" / manifest["best"]["artifact"]).is_file()


def test_apply_refuses_a_plan_naming_a_layer_the_model_lacks(tmp_path, resnet_onnx, fast_profile):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layers": {"conv99": {"bits": 8}}}))
    proc = run_cli("apply", resnet_onnx, "--plan", bad, "--profile", fast_profile, "--out", tmp_path / "b")
    assert proc.returncode == 1 and "plan.layers.conv99: the model has no such layer" in " ".join(proc.stderr.split())


@pytest.fixture(scope="module")
def over_budget_apply(tmp_path_factory, resnet_onnx):
    """``edgeslim apply`` of a plan whose model cannot meet a 1 microsecond budget."""
    work = tmp_path_factory.mktemp("over-budget")
    profile = write_fast_profile(work)
    plan = work / "plan.json"
    plan.write_text(json.dumps({"layers": {"/stem/stem.0/Conv": {"bits": 8}}, "model": {}}))
    proc = run_cli("apply", resnet_onnx, "--plan", plan, "--profile", profile, "--budget-ms", "0.001",
                   "--out", work / "a", "--json")
    return proc, work / "a"


def test_apply_over_budget_exits_3(over_budget_apply):
    proc, _ = over_budget_apply
    assert proc.returncode == 3, proc.stderr


def test_apply_over_budget_manifest_says_it_missed(over_budget_apply):
    _, out = over_budget_apply
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["status"], manifest["best"]["meets_budget"]) == ("budget_not_met", False)


def test_apply_over_budget_reports_say_it_missed(over_budget_apply):
    _, out = over_budget_apply
    text = (out / "report.md").read_text() + (out / "report.html").read_text()
    assert "meets budget: True" not in text and "budget_not_met" in text


def test_apply_over_budget_tells_plugins_it_missed(tmp_path, resnet_onnx, fast_profile):
    import edgeslim
    from edgeslim.commands import apply_plan
    from edgeslim.config import SearchConfig
    from edgeslim.host import get_plugin_manager, reset_plugin_manager

    finished: list[dict] = []
    plugin = type("Listener", (), {"edgeslim_search_finished": staticmethod(
        edgeslim.hookimpl(lambda manifest: finished.append(manifest)))})
    reset_plugin_manager()
    try:
        get_plugin_manager((plugin,))
        config = SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), out_dir=str(tmp_path / "a"),
                              budget_ms=0.001)
        apply_plan(config, {"layers": {"/stem/stem.0/Conv": {"bits": 8}}, "model": {}})
    finally:
        reset_plugin_manager()
    assert [m["status"] for m in finished] == ["budget_not_met"]


def test_task_file_search_prunes_and_quantizes(tmp_path, digits_task_file, fast_profile):
    out = tmp_path / "run"
    proc = run_cli("search", digits_task_file, "--profile", fast_profile, "--budget-ms", "0.0001", "--trials", "6",
                   "--finetune-epochs", "1", "--out", out, "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["metric"]["name"] == "accuracy"
    assert manifest["baseline"]["metric"]["value"] > 0.8
    records = [json.loads(line) for line in (out / "candidates.jsonl").open()]
    knobs = {k for r in records for d in r["plan"]["layers"].values() for k in d}
    assert {"bits", "sparsity"} <= knobs


def test_when_uniform_int8_meets_the_budget_and_loses_nothing_no_per_layer_move_is_scored(tmp_path, resnet_onnx,
                                                                                           fast_profile):
    """A task whose metric no compression can move (the number of outputs per sample): uniform INT8, faster
    than FP32 on this model, meets a generous budget at no loss, so the greedy search ends there."""
    task = tmp_path / "shape_task.py"
    task.write_text(textwrap.dedent(f"""
        import numpy as np
        import edgeslim

        def make_task():
            inputs = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
            return edgeslim.Task(model={str(resnet_onnx)!r}, example_input=inputs[:1], eval_data=(inputs, np.zeros(16)),
                                 metric=lambda outputs, labels: float(outputs.shape[-1]), metric_name="outputs")
        """))
    out = tmp_path / "run"
    proc = run_cli("search", task, "--profile", fast_profile, "--budget-ms", "100", "--out", out)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "candidates.jsonl").open()]
    after_the_gate = [r["purpose"] for r in records
                      if not r["purpose"].startswith(("baseline", "gate:", "quantization: setting"))]
    assert after_the_gate == ["greedy:uniform quantization"]


def test_pareto_front():
    from edgeslim.charts import pareto_front

    points = [(1.0, 0.9), (0.5, 0.8), (0.6, 0.7), (2.0, 0.95), (0.5, 0.85), (3.0, 0.95)]
    assert pareto_front(points) == [4, 0, 3]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, resnet_onnx):
    work = tmp_path_factory.mktemp("finished")
    profile = write_fast_profile(work)
    out = work / "run"
    proc = run_cli("search", resnet_onnx, "--profile", profile, "--budget-ms", "0.0001", "--trials", "3",
                   "--no-predictor", "--out", out)
    assert proc.returncode == 3, proc.stderr
    return out


def test_resume_refuses_options_that_would_change_the_answer(finished_run):
    proc = run_cli("search", "--resume", finished_run, "--budget-ms", "5")
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 1 and "--resume repeats the stored run exactly, so it takes no --budget-ms" in message


def test_resuming_a_finished_run_reports_it_without_measuring_again(finished_run):
    before = (finished_run / "manifest.json").stat().st_mtime_ns
    proc = run_cli("search", "--resume", finished_run)
    assert (proc.returncode, (finished_run / "manifest.json").stat().st_mtime_ns) == (3, before), proc.stderr


def test_progress_to_a_pipe_is_timestamped_lines_per_phase(over_budget_apply):
    proc, _ = over_budget_apply
    phases = [line for line in proc.stderr.splitlines() if "] == " in line]
    assert any(line.endswith("== measuring the uncompressed model") for line in phases), proc.stderr


def test_a_missed_budgets_report_does_not_call_the_fastest_plan_the_best(finished_run):
    text = " ".join(run_cli("report", finished_run).stdout.split())
    assert "best plan:" not in text and "fastest candidate's plan (budget missed, not an answer)" in text


def test_the_fastest_named_when_the_budget_is_missed_was_faster_than_the_original(finished_run):
    manifest = json.loads((finished_run / "manifest.json").read_text())
    records = {r["key"]: r for r in map(json.loads, (finished_run / "candidates.jsonl").open())}
    assert records[manifest["fastest"]["key"]]["status"] == "measured"


def test_a_task_whose_onnx_model_has_symbolic_dimensions_takes_the_example_inputs_shape(tmp_path, symbolic_onnx,
                                                                                          fast_profile):
    task = tmp_path / "onnx_task.py"
    task.write_text(f"""
import numpy as np
import edgeslim


def make_task():
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    return edgeslim.Task(model={str(symbolic_onnx)!r}, example_input=x[:1], eval_data=(x, np.arange(16) % 10))
""")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers": {}, "model": {}}))
    proc = run_cli("apply", task, "--plan", plan, "--profile", fast_profile, "--budget-ms", "1000",
                   "--out", tmp_path / "run", "--json")
    assert proc.returncode == 0, proc.stderr


def test_the_manifest_lists_every_int8_encoding_the_gate_probed(finished_run):
    """Each format and type pair per-channel, then the refinements (per-tensor, 7-bit) of the first round's
    winner (the fastest about as accurate as the most accurate) and of every faster probe, judged on the first
    round's times (side by side where the gate timed them again); each with what ran and what it scored."""
    from edgeslim.host import load_registry
    from edgeslim.speed_gate import FIRST_ROUND_WHY, GateProbe, variants_to_refine

    probes = json.loads((finished_run / "manifest.json").read_text())["speed_gate"]
    first = [GateProbe(p["settings"], next((t["ms"] for t in p["side_by_side"] if t["why"].endswith(FIRST_ROUND_WHY)),
                                           p["latency_ms"]), p["metric_drop"]) for p in probes[:6]]
    refined: list[dict] = []
    for variant in variants_to_refine([p for p in first if p.ms is not None]):
        refined += [r for r in load_registry().techniques["quantization"].refinements(variant) if r not in refined]
    assert ([p["settings"] for p in probes[6:]], all(p["layers_int8"] for p in probes)) == (refined, True)


def session_on_a_copy(finished_run: Path, tmp_path: Path, budget_ratio: float):
    """A session on a copy of the finished run (so a test may rewrite its store) with a new ratio budget."""
    import shutil

    from edgeslim.config import SearchConfig
    from edgeslim.search import SearchSession

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    config = SearchConfig.load(run / "run.json")
    config.out_dir, config.budget_ms, config.budget_ratio = str(run), None, budget_ratio
    return SearchSession(config)


def test_verification_looks_past_candidates_the_search_measured_too_optimistically(finished_run, tmp_path):
    """Three slow candidates looked in budget and most accurate during the search (simulated: copies of a slow
    gate probe with rewritten stored latencies); re-measured they miss, and verification goes on to the most
    accurate real candidate that meets the budget."""
    from edgeslim.outputs import select_and_verify

    session = session_on_a_copy(finished_run, tmp_path, budget_ratio=0.95)
    session.measure_baseline()
    base_ms = session.latency_of(session.baseline)
    measured = [r for r in session.store.all() if r.key != session.baseline.key and session.latency_of(r)]
    slowest = max(measured, key=session.latency_of)  # S8S8 QOperator: several times slower than FP32
    for i in range(3):
        session.store.put(dataclasses.replace(slowest, key=f"optimistic{i}", status="measured", metric=1.0,
                                              latency={**slowest.latency, "p50_ms": 0.5 * base_ms}))
    answer, verification = select_and_verify(session)
    assert (answer.key.startswith("optimistic"), verification["passed"]) == (False, True)


def store_baseline_timed_at(session, real, ms: float) -> None:
    """The search's baseline as if every timing of it had given ``ms`` (a quiet or busy moment), measured again
    from the store."""
    session.store.put(dataclasses.replace(real, latency={**real.latency, "p50_ms": ms, "p90_ms": ms}))
    session.store.set_meta(baseline_timing.TIMINGS_META, [ms] * baseline_timing.FIRST_TIMINGS)
    session.measure_baseline()


def test_when_the_most_accurate_candidates_miss_at_the_budgets_edge_verification_falls_back_on_one_with_headroom(
        finished_run, tmp_path):
    """Six slow candidates looked most accurate and just inside the budget during the search (simulated: copies
    of a slow gate probe, stored at 95% of the budget); the first three miss when re-measured, and the second
    pass skips the other three at the edge for the most accurate candidate with FALLBACK_HEADROOM to spare.
    Only the run's three fastest INT8 probes (about 0.36x here) stay candidates, stored at 0.4x, the rest set
    aside as not faster: the fixture's own timings are noisy under a parallel suite (a U8U8 probe at 0.87x can
    miss 0.95x on a loaded machine; probes timed at a busy moment once all crossed the half-baseline line this
    test used to set aside by, and CI's run had no answer), and the fast probes are what the fallback must find.
    The search's baseline is stored `busy_baseline` times its real timing: had verification's re-measured baseline
    run more than 5.5% slower than the search's (the two-worker suite at a busier moment than the fixture), the
    edge candidates would have had FALLBACK_HEADROOM against it and been tried before the fast ones (CI's run at
    b49f89b had no answer); now the re-measurement may run from 0.7x to 1.58x of the fixture's baseline."""
    from edgeslim.outputs import select_and_verify

    busy_baseline = 1.5
    session = session_on_a_copy(finished_run, tmp_path, budget_ratio=0.95)
    real = session.measure_baseline()
    store_baseline_timed_at(session, real, busy_baseline * session.latency_of(real))
    at_the_edge = 0.95 * session.budget.latency_ms
    measured = [r for r in session.store.all() if r.key != session.baseline.key and session.latency_of(r)]
    slowest = max(measured, key=session.latency_of)  # S8S8 QOperator: several times slower than FP32
    fastest = {r.key for r in sorted(measured, key=session.latency_of)[:3]}
    for record in measured:
        if record.key in fastest:
            session.store.put(dataclasses.replace(record, status="measured", latency={
                **record.latency, "p50_ms": 0.4 * session.budget.baseline_ms}))
        else:
            session.store.put(dataclasses.replace(record, status="not_faster"))
    for i in range(6):
        session.store.put(dataclasses.replace(slowest, key=f"edge{i}", status="measured", metric=1.0 - i * 1e-6,
                                              latency={**slowest.latency, "p50_ms": at_the_edge}))
    answer, verification = select_and_verify(session)
    assert (answer.key.startswith("edge"), verification["passed"]) == (False, True)


def test_a_more_accurate_candidate_the_search_timed_just_over_a_ratio_budget_is_verified_and_replaces_the_answer(
        finished_run, tmp_path):
    """Two of the run's fastest INT8 probes (about 0.36x here, for real); the search's single measurements and
    scores are rewritten (a busy moment and a better recovery cannot be had on demand): one less accurate at half
    the 0.8x budget, one more accurate measured 4% over it, within NEAR_MISS_AT_LEAST. Verification re-measures
    the near miss side by side, and it replaces the answer."""
    from edgeslim.outputs import select_and_verify

    session = session_on_a_copy(finished_run, tmp_path, budget_ratio=0.8)
    session.measure_baseline()
    limit = session.budget.latency_ms
    measured = sorted((r for r in session.store.all() if r.key != session.baseline.key and session.latency_of(r)),
                      key=session.latency_of)
    first, near = measured[0], measured[1]
    for record in measured[2:]:
        session.store.put(dataclasses.replace(record, status="not_faster"))
    for record, metric, times_the_limit in ((first, 0.9, 0.5), (near, 0.999, 1.04)):
        session.store.put(dataclasses.replace(record, status="measured", metric=metric, latency={
            **record.latency, "p50_ms": times_the_limit * limit, "p90_ms": times_the_limit * limit}))
    answer, verification = select_and_verify(session)
    assert (answer.key, verification["instead_of"]["key"]) == (near.key, first.key)


def test_verification_against_a_baseline_that_ran_slower_than_in_the_search_takes_a_more_accurate_answer(
        finished_run, tmp_path):
    """The search timed the baseline at a quiet moment (simulated: its stored latency rewritten to just under
    what makes the fastest INT8 candidate miss 0.8x), so only the pruned, less accurate candidate met the budget
    there (its stored time is halved too, so a busy machine cannot put it above the INT8 ones); verification
    re-times the baseline, and the INT8 candidates (about 0.35x of the real baseline) are verified against it,
    and one replaces the answer."""
    from edgeslim.outputs import select_and_verify

    session = session_on_a_copy(finished_run, tmp_path, budget_ratio=0.8)
    real = session.measure_baseline()
    measured = [r for r in session.store.all()
                if r.key != real.key and r.status == "measured" and session.latency_of(r)]
    pruned = min(measured, key=lambda r: r.metric)
    fastest_int8 = min(session.latency_of(r) for r in measured if r.key != pruned.key)
    quiet_ms = 0.95 * fastest_int8 / 0.8
    session.store.put(dataclasses.replace(pruned, latency={**pruned.latency, "p50_ms": fastest_int8 / 2,
                                                           "p90_ms": fastest_int8 / 2}))
    store_baseline_timed_at(session, real, quiet_ms)
    answer, verification = select_and_verify(session)
    assert (answer.purpose, verification["instead_of"]["reference_p50_ms"] > quiet_ms) == ("gate:quantization", True)


def test_one_shot_sensitivity_reads_a_subset_of_the_eval_data_paired_with_the_baseline(tmp_path, digits_task_file,
                                                                                         fast_profile):
    """A one-shot score ranks single moves: it reads RANKING_SAMPLES eval samples, and a build that changes
    nothing scores exactly the baseline's metric (the difference is taken on the same samples)."""
    from edgeslim.config import SearchConfig
    from edgeslim.evaluate import RANKING_SAMPLES
    from edgeslim.search import SearchSession

    session = SearchSession(SearchConfig(model=str(digits_task_file), profile=str(fast_profile),
                                         out_dir=str(tmp_path / "run")))
    session.measure_baseline()
    seen: list[int] = []
    metric = session.evaluator.task.metric
    session.evaluator.task.metric = lambda outputs, labels: seen.append(len(labels)) or metric(outputs, labels)
    unchanged = session.score({"layers": {}, "model": {}}, one_shot=True)
    assert (unchanged.metric, set(seen)) == (session.baseline.metric, {RANKING_SAMPLES})


def test_a_plan_that_only_adds_int8_to_a_pruned_plan_is_not_trained_again(tmp_path, digits_task_file, fast_profile):
    """The torch stage's export is kept per torch-stage decisions: INT8 on top of the same pruning reuses the
    pruned, recovered model instead of paying its recovery a second time."""
    from edgeslim.config import SearchConfig
    from edgeslim.plan import set_knob
    from edgeslim.search import SearchSession

    session = SearchSession(SearchConfig(model=str(digits_task_file), profile=str(fast_profile),
                                         out_dir=str(tmp_path / "run"), finetune_epochs=1))
    sparsity = next(knob for owner, knob, _ in session.offered_knobs() if knob.name == "sparsity")
    pruned = set_knob({"layers": {}, "model": {}}, sparsity.layer, "sparsity", 0.5, 0.0)
    with_int8 = {"layers": {name: {"bits": 8} for name in (lay.name for lay in session.source.layers)},
                 "model": {}}
    for layer, decisions in pruned["layers"].items():
        with_int8["layers"][layer].update(decisions)
    recoveries: list[int] = []
    recover = session.builder._recover
    session.builder._recover = lambda *args, **kwargs: recoveries.append(1) or recover(*args, **kwargs)
    session.builder.build(pruned)
    session.builder.build(with_int8)
    assert len(recoveries) == 1


def test_single_moves_scored_for_sensitivity_recover_for_half_a_candidates_epochs(tmp_path, digits_task_file,
                                                                                   fast_profile):
    """Ranking single moves needs their order, not their last point: with --finetune-epochs 2 a sensitivity
    score trains the pruned model for one epoch, a measured candidate of the same plan for two."""
    from edgeslim.config import SearchConfig
    from edgeslim.plan import set_knob
    from edgeslim.search import SearchSession

    session = SearchSession(SearchConfig(model=str(digits_task_file), profile=str(fast_profile),
                                         out_dir=str(tmp_path / "run"), finetune_epochs=2))
    sparsity = next(knob for owner, knob, _ in session.offered_knobs() if knob.name == "sparsity")
    pruned = set_knob({"layers": {}, "model": {}}, sparsity.layer, "sparsity", 0.5, 0.0)
    epochs: list[int] = []
    recover = session.builder._recover
    session.builder._recover = lambda module, n, **kwargs: epochs.append(n) or recover(module, n, **kwargs)
    session.measure_baseline()
    session.score(pruned, short_recovery=True)
    session.builder.build(pruned)
    assert epochs == [1, 2]


def test_a_build_is_kept_for_what_its_recovery_settings_mean_not_how_they_were_spelled(tmp_path, digits_task_file,
                                                                                      fast_profile):
    """Recovery options are part of what a cached build stands for, with their defaults filled in: leaving the
    distillation's schedule out or naming its default is one build; the cosine schedule is another."""
    from edgeslim.config import SearchConfig
    from edgeslim.search import SearchSession

    def context(options: dict, name: str) -> str:
        return SearchSession(SearchConfig(model=str(digits_task_file), profile=str(fast_profile),
                                          out_dir=str(tmp_path / name), recovery_options=options)).context

    contexts = [context({}, "unset"), context({"schedule": "constant"}, "constant"),
                context({"schedule": "cosine"}, "cosine")]
    assert (contexts[0] == contexts[1], contexts[0] == contexts[2]) == (True, False)


def test_the_gate_times_its_close_accurate_probes_again_side_by_side_and_keeps_the_fastest(tmp_path, resnet_onnx,
                                                                                          fast_profile):
    """Single measurements minutes apart cannot tell INT8 encodings 10-40% apart on a busy machine: the accurate
    probes within CLOSE_TO_WINNER of the fastest are timed again in rotating rounds, and the gate keeps the
    fastest by those medians. Which encodings a machine's single readings put within CLOSE_TO_WINNER is the
    machine's (VNNI or not), so the probes are measured for real and then read as equally fast and accurate."""
    from edgeslim.config import SearchConfig
    from edgeslim.plan import empty_plan, uniform
    from edgeslim.search import SearchSession
    from edgeslim.speed_gate import RETIME_AT_MOST, _probe, retime_close_contenders
    from edgeslim.strategy_view import SessionView

    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ratio=0.5,
                                         out_dir=str(tmp_path / "run")))
    session.measure_baseline()
    view = SessionView(session)
    gate = next(g for g in view.speed_gates() if g.technique == "quantization")
    probes = _probe(view, gate, uniform(empty_plan(), gate.knobs), gate.variants)
    alike = [dataclasses.replace(p, ms=probes[0].ms, drop=0.0) for p in probes]
    chosen = retime_close_contenders(view, "quantization", alike)
    close = session.store.get_meta(ROTATIONS_META)[-1]
    fastest_again = min(close["ms"], key=lambda key: close["ms"][key])
    assert (len(close["keys"]), chosen.record.key) == (min(len(probes), RETIME_AT_MOST), fastest_again)


def test_a_first_round_gate_probe_a_noisy_measurement_put_out_of_reach_is_timed_again_before_refining(
        tmp_path, resnet_onnx, fast_profile):
    """An accurate first-round probe whose single measurement came out well over the fastest one's (a busy
    moment: beyond CLOSE_TO_WINNER, so not refined on it) is timed again beside it, and which probes get refined
    rests on that median."""
    from edgeslim.config import SearchConfig
    from edgeslim.plan import empty_plan, uniform
    from edgeslim.search import SearchSession
    from edgeslim.speed_gate import (
        CLOSE_TO_WINNER,
        GATE_ACCURACY_SLACK,
        RETIME_BEFORE_REFINING,
        _probe,
        choose_gate_variant,
        retimed_first_round,
    )
    from edgeslim.strategy_view import SessionView

    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ratio=0.5,
                                         out_dir=str(tmp_path / "run")))
    session.measure_baseline()
    view = SessionView(session)
    gate = next(g for g in view.speed_gates() if g.technique == "quantization")
    probes = _probe(view, gate, uniform(empty_plan(), gate.knobs), gate.variants)
    winner, least = choose_gate_variant(probes), min(p.drop for p in probes)
    doubted = next(p for p in probes if p is not winner and p.drop <= least + GATE_ACCURACY_SLACK)
    noisy = dataclasses.replace(doubted, ms=winner.ms * (CLOSE_TO_WINNER + RETIME_BEFORE_REFINING) / 2)
    again = retimed_first_round(view, [winner, noisy])
    assert again[1].ms == session.store.get_meta(ROTATIONS_META)[-1]["ms"][doubted.record.key]


def _finetune_whose_last_epoch_is_ruined() -> type:
    """A third-party recovery: plain fine-tuning, one epoch at a time, whose last epoch ends with every weight
    set to zero (a constant output: chance accuracy). Which epoch is best must not hang on the CPU's float
    kernels: a large learning rate made a seeded run's last epoch worse on one CPU and best on another."""
    import torch

    from edgeslim.finetune import finetune
    from edgeslim.plugins.recovery import FineTune

    class FineTuneRuinedAtTheEnd(FineTune):
        name = "finetune-ruined-at-the-end"
        description = "test recovery: fine-tuning whose last epoch zeroes every weight"

        def recover(self, student, teacher, data, epochs, settings):
            for epoch in range(1, epochs + 1):
                finetune(student, (data.train[0], data.train[1]), epochs=1, lr=settings.lr,
                         batch_size=settings.batch_size, seed=settings.seed + epoch)
                if epoch == epochs:
                    with torch.no_grad():
                        for parameter in student.parameters():
                            parameter.zero_()
                if data.epoch_done(epoch):
                    break
            return []

    return FineTuneRuinedAtTheEnd


def test_the_answers_final_recovery_keeps_its_best_epoch_and_exports_that_one(tmp_path, digits_task_file,
                                                                              fast_profile):
    """The final recovery is scored on the eval data after every epoch and its best epoch is what gets built:
    with a last epoch that scores chance, the exported model scores what the kept epoch scored in torch (to one
    eval sample: ONNX Runtime's floats are not torch's), not what the last one did."""
    pytest.importorskip("torch")
    from edgeslim.config import SearchConfig
    from edgeslim.final_recovery import final_recovery
    from edgeslim.host import load_registry, reset_plugin_manager
    from edgeslim.plan import set_knob
    from edgeslim.search import SearchSession

    recovery = _finetune_whose_last_epoch_is_ruined()
    reset_plugin_manager()
    plugin = type("Plugin", (), {"edgeslim_register_recoveries": staticmethod(
        edgeslim.hookimpl(lambda register: register(recovery)))})
    try:
        session = SearchSession(SearchConfig(model=str(digits_task_file), profile=str(fast_profile),
                                             budget_ms=1000.0, out_dir=str(tmp_path / "run"), finetune_epochs=1,
                                             final_epochs=4, final_patience=4, recovery=recovery.name),
                                registry=load_registry((plugin,)))
        session.measure_baseline()
        sparsity = [knob for owner, knob, _ in session.offered_knobs() if knob.name == "sparsity"]
        plan: dict = {"layers": {}, "model": {}}
        for knob in sparsity:
            plan = set_knob(plan, knob.layer, "sparsity", 0.5, 0.0)
        session.evaluate(plan)
        record = final_recovery(session)
    finally:
        reset_plugin_manager()
    watched = record.details["final_recovery"]["epochs_watched"]
    best = max(watched["scores"])
    one_sample = 1.0 / len(session.task.eval_data[0])
    assert (watched["epochs_trained"], watched["scores"][watched["kept_epoch"] - 1],
            watched["kept_epoch"] < watched["epochs_trained"], abs(record.metric - best) <= one_sample
            ) == (4, best, True, True)


def test_the_final_recovery_distils_with_the_weight_average_unless_the_user_set_it(tmp_path, digits_task_file,
                                                                                   fast_profile):
    """Distillation's ``final_defaults`` (average=ema) apply to the answer's final recovery only, under the
    user's own ``--recovery-option average=...``; a recovery without final defaults gets the user's options."""
    from edgeslim.config import SearchConfig
    from edgeslim.final_recovery import final_options
    from edgeslim.search import SearchSession

    def options(name: str, **config) -> dict:
        return final_options(SearchSession(SearchConfig(model=str(digits_task_file), profile=str(fast_profile),
                                                        out_dir=str(tmp_path / name), **config)))

    assert (options("default"), options("user", recovery_options={"average": "none"}),
            options("finetune", recovery="finetune")) == ({"average": "ema"}, {"average": "none"}, {})


def test_a_watched_recovery_stops_after_its_patience_and_restores_the_best_epochs_weights():
    """BestEpoch with patience 2: scores 0.5, 0.7, 0.6, 0.65 ask to stop after the fourth epoch (two without
    beating the second) and put the second epoch's weights back."""
    torch = pytest.importorskip("torch")
    from edgeslim.recovery import BestEpoch, EpochSelection

    module = torch.nn.Linear(1, 1, bias=False)
    scores = {0.1: 0.5, 0.2: 0.7, 0.3: 0.6, 0.4: 0.65}
    selection = EpochSelection(score=lambda m: scores[round(float(m.weight.detach()), 6)], higher_is_better=True,
                               patience=2, metric_name="accuracy")
    watched = BestEpoch(selection, module)
    stops = []
    for epoch, weight in enumerate(scores, start=1):
        with torch.no_grad():
            module.weight.fill_(weight)  # what an epoch of training left
        stops.append(watched(epoch))
    watched.restore()
    assert (stops, round(float(module.weight.detach()), 6)) == ([False, False, False, True], 0.2)


def test_a_watched_recovery_stops_before_an_epoch_that_would_run_past_its_time_cap(monkeypatch):
    """Epochs of 20 s under a 50 s cap: the second ends at 40 s, a third would end at 60 s, so the watch asks to
    stop after the second (the --time-budget share the final recovery gets). The watch's clock is a counter."""
    torch = pytest.importorskip("torch")
    from edgeslim import recovery
    from edgeslim.recovery import BestEpoch, EpochSelection

    clock = {"now": 0.0}
    monkeypatch.setattr(recovery, "time", type("Clock", (), {"monotonic": staticmethod(lambda: clock["now"])}))
    selection = EpochSelection(score=lambda m: 0.5, higher_is_better=True, patience=None, metric_name="accuracy",
                               time_cap_s=50.0)
    watched = BestEpoch(selection, torch.nn.Linear(1, 1, bias=False))
    stops = []
    for epoch in (1, 2, 3):
        clock["now"] += 20.0  # an epoch of training
        stops.append(watched(epoch))
    assert stops == [False, True, True]


def session_with_a_table_timing(tmp_path: Path, resnet_onnx: Path, fast_profile: Path, times_the_limit: float):
    """A session whose latency table (as if measured) timed the uncompressed architecture at ``times_the_limit``
    of the search's limit; returns the session, that plan and the table's timing."""
    from edgeslim.config import SearchConfig
    from edgeslim.plan import empty_plan
    from edgeslim.search import SearchSession

    session = SearchSession(SearchConfig(model=str(resnet_onnx), profile=str(fast_profile), budget_ratio=0.5,
                                         out_dir=str(tmp_path / "run")))
    session.measure_baseline()
    plan, table_ms = empty_plan(), times_the_limit * session.budget.search_limit_ms
    probe = {"plan": plan, "knob": None, "level": None, "layers": [], "e2e_ms": table_ms, "layer_ms": {},
             "rest_ms": 0.0}
    session.store.set_meta("latency_probes", {session.builder.key(plan, "probe"): probe})
    return session, plan, table_ms


@pytest.mark.parametrize("times_the_limit", [0.5, 3.0])
def test_a_recipe_walk_reuses_the_latency_tables_timing_of_an_architecture_clear_of_the_budget(
        tmp_path, resnet_onnx, fast_profile, times_the_limit):
    """The table timed the architecture well under the limit, or more than REUSE_OVER times over it: the walk's
    step takes that timing, no device run."""
    session, plan, table_ms = session_with_a_table_timing(tmp_path, resnet_onnx, fast_profile, times_the_limit)
    runs_before = sum(session.device.runs.values())
    assert (session.probe_latency(plan), sum(session.device.runs.values())) == (table_ms, runs_before)


def test_an_architecture_the_table_timed_over_the_budget_is_timed_again_and_the_quicker_reading_kept(
        tmp_path, resnet_onnx, fast_profile):
    """The table's timing lies over the limit but within REUSE_OVER of it, as a busy moment puts one (written in
    at 1.5x the limit; the uncompressed model really runs at about 2x it, a 0.5x budget): the architecture is
    timed again, and the quicker of the two readings, the table's here, decides."""
    session, plan, table_ms = session_with_a_table_timing(tmp_path, resnet_onnx, fast_profile, 1.5)
    runs_before = session.device.runs["latency_table"]
    assert (session.probe_latency(plan), session.device.runs["latency_table"] > runs_before) == (table_ms, True)


def test_before_the_gate_drops_a_technique_its_fastest_probe_is_timed_again_beside_the_original(finished_run,
                                                                                              tmp_path):
    """The run's fastest INT8 probe (about 0.36x of the original here) as if one busy minute had timed it at 1.2x
    the baseline: timed again side by side with the original, it is judged faster again, by GATE_MARGIN."""
    from edgeslim.speed_gate import GATE_MARGIN, GateProbe, beside_the_original
    from edgeslim.strategy_view import SessionView

    session = session_on_a_copy(finished_run, tmp_path, budget_ratio=0.5)
    session.measure_baseline()
    gate_probes = [r for r in session.store.all() if r.purpose.startswith("gate:") and session.latency_of(r)]
    fastest = min(gate_probes, key=session.latency_of)
    busy = GateProbe(fastest.plan["model"], 1.2 * session.budget.baseline_ms, 0.0, fastest)
    again = beside_the_original(SessionView(session), "quantization", busy)
    assert again.ms < GATE_MARGIN * session.budget.baseline_ms


def test_records_timed_again_apart_are_timed_again_together_when_compared(finished_run, tmp_path):
    """Medians from two rotations minutes apart are not side by side: a probe timed again alone, then asked for
    beside another, is timed again in one rotation with it."""
    session = session_on_a_copy(finished_run, tmp_path, budget_ratio=0.5)
    session.measure_baseline()
    first, second = [r for r in session.store.all() if r.purpose.startswith("gate:") and r.artifact][:2]
    session.retime([first], rounds=1)
    session.retime([first, second], rounds=1)
    assert session.store.get_meta(ROTATIONS_META)[-1]["keys"] == sorted([first.key, second.key])


def gate_on_probes_timed_at(finished_run: Path, tmp_path: Path, ratio: float) -> tuple[set[str], set[str]]:
    """The speed gate over the finished run's INT8 probes (its stored timings and side-by-side rotations, so
    nothing runs again) with the search's baseline stored at half the fastest of them, and each probe's rotation
    beside the original (simulated: stored) at ``ratio`` of it: (dropped, close calls)."""
    from edgeslim.speed_gate import speed_gate
    from edgeslim.strategy_view import SessionView

    session = session_on_a_copy(finished_run, tmp_path, budget_ratio=0.5)
    real = session.measure_baseline()
    probes = [r for r in session.store.all() if r.purpose.startswith("gate:") and session.latency_of(r)]
    rotations = session.store.get_meta(ROTATIONS_META) or []
    timings = [session.latency_of(r) for r in probes] + [ms for rot in rotations for ms in rot["ms"].values() if ms]
    store_baseline_timed_at(session, real, min(timings) / 2)
    original = session.baseline.key
    session.store.set_meta(ROTATIONS_META, rotations + [
        {"why": "simulated", "keys": sorted([original, r.key]), "rounds": {}, "ms": {original: 1.0, r.key: ratio}}
        for r in probes])
    dropped: set[str] = set()
    close_calls: set[str] = set()
    speed_gate(SessionView(session), dropped, close_calls)
    return dropped, close_calls


def test_int8_dropped_within_the_machines_noise_of_the_original_is_a_close_call(finished_run, tmp_path):
    """Not faster by the gate's margin but within CLOSE_CALL of the original: dropped from the per-layer moves,
    still paired with the other knobs by the recipes (it may pay on a narrower architecture)."""
    assert gate_on_probes_timed_at(finished_run, tmp_path, 1.05) == ({"quantization"}, {"quantization"})


def test_int8_well_slower_than_the_original_is_dropped_outright(finished_run, tmp_path):
    assert gate_on_probes_timed_at(finished_run, tmp_path, 1.4) == ({"quantization"}, set())
