"""Optuna strategies: TPE and NSGA-II propose plans the session measures; the study lives in --storage."""

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

optuna = pytest.importorskip("optuna")


@pytest.mark.parametrize("strategy", ["tpe", "nsga2"])
def test_optuna_strategies_search_with_a_stored_study(tmp_path, resnet_onnx, fast_profile, strategy):
    storage = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    out = tmp_path / "run"
    # an impossible budget and no latency table: every trial is measured and the outcome (exit 3) is known
    proc = run_cli("search", resnet_onnx, "--profile", fast_profile, "--budget-ms", "0.0001", "--strategy",
                   strategy, "--storage", storage, "--trials", "5", "--no-predictor", "--out", out, "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["strategy"] == strategy
    records = [json.loads(line) for line in (out / "candidates.jsonl").open()]
    proposed = [r for r in records if r["purpose"].startswith(f"{strategy}:")]
    assert proposed, "the strategy measured nothing"
    studies = optuna.get_all_study_summaries(storage)
    assert len(studies) == 1 and studies[0].n_trials >= len(proposed)
    trials = optuna.load_study(study_name=studies[0].study_name, storage=storage).trials
    keys = {t.user_attrs.get("key") for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert keys <= {r["key"] for r in records}  # every finished trial is a stored, measured candidate
    assert {r["key"] for r in proposed} <= keys  # and every plan the strategy measured came from a trial
    assert len(trials) <= 5 + 1  # --trials bounds the measurements (one trial may be stopped by the bound)


def test_bad_storage_url_is_a_clear_error(tmp_path, resnet_onnx, fast_profile):
    proc = run_cli("search", resnet_onnx, "--profile", fast_profile, "--strategy", "tpe", "--storage",
                   "nosuchdb://x", "--trials", "2", "--out", tmp_path / "run")
    assert proc.returncode == 1
    assert "--storage nosuchdb://x: cannot open it (NoSuchModuleError" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr


@pytest.fixture
def postgresql_url():
    """A throwaway real PostgreSQL server's URL (an empty database), stopped after the test."""
    from tests.pgserver import PostgresServer, find_bin

    if not find_bin("initdb"):
        pytest.skip("PostgreSQL binaries missing (apt-get install postgresql)")
    pytest.importorskip("psycopg2")
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


def test_two_workers_share_one_study_through_postgresql(tmp_path, resnet_onnx, fast_profile, postgresql_url):
    """A real PostgreSQL server; two search processes (two "hosts", each measuring on its own CPU) run TPE
    against one study at the same time. Both contribute trials; a plan one finished is not measured again."""
    import subprocess
    import sys

    url = postgresql_url
    cmd = [sys.executable, "-m", "edgeslim.cli", "search", str(resnet_onnx), "--profile", str(fast_profile),
           "--budget-ms", "0.0001", "--strategy", "tpe", "--storage", url, "--trials", "4", "--no-predictor",
           "--json"]
    workers = [subprocess.Popen([*cmd, "--out", str(tmp_path / f"w{i}")], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [w.communicate(timeout=900) for w in workers]
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 3, err
    studies = optuna.get_all_study_summaries(url)
    assert len(studies) == 1  # same model, target and settings: one study
    trials = optuna.load_study(study_name=studies[0].study_name, storage=url).trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {t.user_attrs["worker"] for t in done} == {str(tmp_path / "w0"), str(tmp_path / "w1")}
    for t in done:
        if "reused_from" in t.user_attrs:  # taken from the study, not measured by this worker
            continue
        records = [json.loads(line) for line in (Path(t.user_attrs["worker"]) / "candidates.jsonl").open()]
        assert t.user_attrs["key"] in {r["key"] for r in records}


def test_workers_starting_at_once_on_an_empty_postgresql_database_all_open_it(postgresql_url):
    """Six processes open the same fresh PostgreSQL storage at the same instant. Optuna creates its tables on
    first open, and the losers of that race get a unique violation from PostgreSQL's catalog (what failed a CI
    run of the two-worker test); each must retry and open the storage the winner made."""
    import subprocess
    import sys
    import time

    url = postgresql_url
    start_at = time.time() + 8  # every process imported and waiting before the first one opens
    script = ("import sys, time\n"
              "from edgeslim.errors import EdgeslimError\n"
              "from edgeslim.plugins.optuna_search import OptunaStrategy\n"
              f"time.sleep(max(0.0, {start_at} - time.time()))\n"
              "try:\n"
              f"    OptunaStrategy._storage({url!r}, 120.0)\n"
              "except EdgeslimError as exc:\n"
              "    sys.exit(str(exc))\n")
    workers = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
               for _ in range(6)]
    errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0] * 6, errors
