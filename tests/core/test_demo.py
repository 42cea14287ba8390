"""The embedded default: meets half its FP32 latency, loses at most one point, and the speed-up reproduces."""

import json

import pytest

pytest.importorskip("torch", reason="the demo trains a torch model: pip install 'edgeslim[torch]'")
pytest.importorskip("sklearn", reason="the demo uses scikit-learn's digits: pip install 'edgeslim[torch]'")

from edgeslim.measure import LocalRunner, compare_interleaved
from edgeslim.profile import load_profile
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    return run_cli("demo", "--out", out, "--json", timeout=900), out


@pytest.mark.slow
def test_demo_meets_its_budget_without_losing_accuracy(demo_run):
    proc, out = demo_run
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["status"] == "ok" and manifest["best"]["meets_budget"] is True
    baseline_acc = manifest["baseline"]["metric"]["value"]
    best_acc = manifest["best"]["metric"]["value"]
    assert manifest["best"]["metric"]["name"] == "accuracy"
    assert baseline_acc > 0.95
    assert best_acc >= baseline_acc - 0.01
    assert manifest["baseline"]["latency"]["p50_ms"] > 0.5  # big enough for compression to buy something


@pytest.mark.slow
@pytest.mark.timing
def test_demos_speed_up_reproduces_in_an_independent_measurement(demo_run):
    proc, out = demo_run
    manifest = json.loads(proc.stdout)
    # independent re-measurement by the test: fresh agent processes, interleaved, default protocol
    settings = load_profile("local-cpu").measurement

    def job(rel):
        return {"runtime": "onnxruntime", "artifact": str(out / rel), "options": {"threads": 1}, "input_shapes": {}}

    comparison = compare_interleaved(LocalRunner(), job(manifest["baseline"]["artifact"]),
                                     job(manifest["best"]["artifact"]), settings, rounds=5)
    assert comparison.ratio <= 0.5, comparison.to_dict()
