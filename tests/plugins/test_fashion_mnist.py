"""The reference task: every technique alone and combined through `edgeslim apply` and `edgeslim search`."""

import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the reference tasks are torch models: pip install 'edgeslim[torch]'")

from edgeslim.errors import EdgeslimError
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
LENET = ROOT / "examples" / "fashion_mnist" / "lenet_task.py"

try:
    from edgeslim.datasets import fashion_mnist_dir

    fashion_mnist_dir()
    HAVE_DATA = True
except EdgeslimError as exc:
    HAVE_DATA, WHY = False, str(exc)

pytestmark = pytest.mark.skipif(not HAVE_DATA, reason="Fashion-MNIST absent" if HAVE_DATA else WHY)


def fast_profile(tmp_path: Path) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text('name = "fast"\nextends = "local-cpu"\n[measurement]\nwarmup = 3\nmin_runs = 15\n'
                    'min_seconds = 0.15\nverify_rounds = 3\n')
    return path


def test_missing_data_is_a_clear_error(monkeypatch, tmp_path):
    from edgeslim.datasets import load_fashion_mnist

    monkeypatch.setattr("edgeslim.datasets.FASHION_MNIST_DIRS", (str(tmp_path),))
    with pytest.raises(EdgeslimError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist()


def test_checkpoint_accuracy_is_as_documented():
    import sys

    sys.path.insert(0, str(ROOT / "examples" / "fashion_mnist"))
    from tasks import make

    from edgeslim.evaluate import TaskEvaluator
    from edgeslim.model import export_torch
    from edgeslim.target import OnnxRuntimeHostSession

    documented = json.loads((ROOT / "examples" / "fashion_mnist" / "checkpoints.json").read_text())
    task = make("lenet300100", eval_samples=10000)
    path = Path(__file__).parent / "_lenet.onnx"
    export_torch(task.model, task.example_input, path, "input")
    try:
        acc = TaskEvaluator(task).score(OnnxRuntimeHostSession(path))
    finally:
        path.unlink()
    assert abs(acc - documented["lenet300100"]["test_accuracy"]) < 0.005


#: a budget of a whole second: every plan here meets it, so apply's outcome (exit 0) is known
GENEROUS = ("--budget-ms", "1000")


def test_apply_combines_techniques(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers": {"net.1": {"sparsity": 0.5, "rank": 0.5, "bits": 8},
                                           "net.3": {"bits": 8, "weight_sparsity": 0.5}, "net.5": {"bits": 8}},
                                "model": {"int8_scheme": "u8s8-per-channel", "prune_importance": "taylor"}}))
    proc = run_cli("apply", LENET, "--plan", plan, "--profile", fast_profile(tmp_path), *GENEROUS,
                   "--out", tmp_path / "a",
                   "--finetune-epochs", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    best = manifest["best"]
    assert best["metric"]["value"] > 0.8
    assert best["packed_bytes"] < best["artifact_bytes"]
    assert best["effective_precision"]  # what ONNX Runtime runs, per layer
    # timings of a 20-microsecond MLP are noise here; speed is the benchmarks' business, not a test's
    assert best["latency"]["p50_ms"] > 0 and best["verification"]["reference_p50s"]


def test_search_on_the_reference_task(tmp_path):
    # the knapsack strategy scores its sensitivity one-shot: every technique's moves, without a recovery each
    proc = run_cli("search", LENET, "--profile", fast_profile(tmp_path), "--budget-ms", "0.0001", "--trials", "6",
                   "--strategy", "knapsack", "--finetune-epochs", "1", "--out", tmp_path / "s", "--json")
    assert proc.returncode == 3, proc.stderr
    manifest = json.loads(proc.stdout)
    records = [json.loads(line) for line in (tmp_path / "s" / "candidates.jsonl").open()]
    knobs = {k for r in records for d in r["plan"]["layers"].values() for k in d}
    assert {"bits", "sparsity", "rank"} <= knobs
    assert manifest["baseline"]["metric"]["value"] > 0.8


def test_unstructured_90_percent_retrains_with_masks_held(tmp_path):
    """One-shot 90% magnitude pruning after training leaves LeNet-300-100 near 56%; with the masks held during
    the recovery it keeps most of its accuracy, and the exported weights stay 90% zero."""
    import onnx
    from onnx import numpy_helper

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers": {}, "model": {"global_weight_sparsity": 0.9}}))
    proc = run_cli("apply", LENET, "--plan", plan, "--profile", fast_profile(tmp_path), *GENEROUS,
                   "--out", tmp_path / "a",
                   "--finetune-epochs", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    best = json.loads(proc.stdout)["best"]
    assert best["metric"]["value"] > 0.8
    model = onnx.load(str(tmp_path / "a" / "best" / "model.onnx"))
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer if i.dims and len(i.dims) == 2]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert 0.89 < zeros < 0.92
    assert best["packed_bytes"] < 0.2 * best["artifact_bytes"]


def test_apply_with_feature_distillation_from_the_cli(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers": {"net.1": {"sparsity": 0.5}}, "model": {}}))
    proc = run_cli("apply", LENET, "--plan", plan, "--profile", fast_profile(tmp_path), *GENEROUS,
                   "--out", tmp_path / "a",
                   "--finetune-epochs", "1", "--distill-feature", "net.3=net.3", "--recovery-option",
                   "temperature=2", "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["recovery"] == {"method": "distillation", "epochs": 1, "used": True,
                                    "options": {"temperature": 2, "features": [["net.3", "net.3"]],
                                                "feature_weight": 1.0}}
    assert manifest["best"]["metric"]["value"] > 0.8
    wrong = run_cli("apply", LENET, "--plan", plan, "--profile", fast_profile(tmp_path), *GENEROUS,
                    "--out", tmp_path / "b",
                    "--finetune-epochs", "1", "--distill-feature", "net.1=net.1")
    assert wrong.returncode == 1 and "shapes differ" in wrong.stderr and "Traceback" not in wrong.stderr


def test_qat_beats_post_training_quantization_at_two_bits(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"layers": {n: {"weight_bits": 2} for n in ("net.1", "net.3", "net.5")},
                                "model": {}}))
    scores = {}
    for flag in ((), ("--qat",)):
        proc = run_cli("apply", LENET, "--plan", plan, "--profile", fast_profile(tmp_path), *GENEROUS, "--out",
                       tmp_path / f"run{len(flag)}", "--finetune-epochs", "2", *flag, "--json")
        assert proc.returncode == 0, proc.stderr
        best = json.loads(proc.stdout)["best"]
        scores[bool(flag)] = best["metric"]["value"]
        assert best["deep_compression_bytes"] < 0.25 * best["artifact_bytes"]  # int8 containers -> 2-bit codes
    assert scores[True] > scores[False] + 0.01, scores


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_the_64px_benchmark_models_load_with_their_trained_weights(name):
    """The millisecond-scale benchmark models: committed float16 checkpoints, trained by train.py."""
    import sys

    import torch

    sys.path.insert(0, str(ROOT / "examples" / "fashion_mnist"))
    from tasks import make

    task = make(name, eval_samples=500)
    x, y = task.eval_data
    with torch.no_grad():
        predicted = task.model(torch.from_numpy(x)).argmax(1).numpy()
    assert (x.shape[1:], float((predicted == y).mean()) > 0.8) == ((1, 64, 64), True)
