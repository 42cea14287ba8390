"""Optuna strategies: TPE and NSGA-II propose plans the session measures; the study lives in --storage."""

import json

import pytest

from tests.conftest import run_cli

optuna = pytest.importorskip("optuna")


@pytest.mark.parametrize("strategy", ["tpe", "nsga2"])
def test_optuna_strategies_search_with_a_stored_study(tmp_path, resnet_onnx, fast_profile, strategy):
    storage = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    out = tmp_path / "run"
    proc = run_cli("search", resnet_onnx, "--profile", fast_profile, "--budget-ratio", "0.7", "--strategy",
                   strategy, "--storage", storage, "--trials", "5", "--out", out, "--json")
    assert proc.returncode in (0, 3), proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["strategy"] == strategy
    records = [json.loads(line) for line in (out / "candidates.jsonl").open()]
    proposed = [r for r in records if r["purpose"].startswith(f"{strategy}:")]
    assert 1 <= len(proposed) <= 5
    studies = optuna.get_all_study_summaries(storage)
    assert len(studies) == 1 and studies[0].n_trials >= len(proposed)
    trials = optuna.load_study(study_name=studies[0].study_name, storage=storage).trials
    keys = {t.user_attrs.get("key") for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert keys <= {r["key"] for r in records}  # every finished trial is a stored, measured candidate


def test_bad_storage_url_is_a_clear_error(tmp_path, resnet_onnx, fast_profile):
    proc = run_cli("search", resnet_onnx, "--profile", fast_profile, "--strategy", "tpe", "--storage",
                   "nosuchdb://x", "--trials", "2", "--out", tmp_path / "run")
    assert proc.returncode == 1 and "--storage nosuchdb://x: cannot open the study" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
