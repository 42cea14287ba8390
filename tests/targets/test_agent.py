import json
import subprocess
import sys

import pytest

from edgeslim.measure import LocalRunner, agent_path, compare_interleaved, measure
from edgeslim.profile import MeasurementSettings

FAST = MeasurementSettings(warmup=2, min_runs=10, min_seconds=0.05, verify_rounds=2)


def job(path, **extra):
    return {"runtime": "onnxruntime", "artifact": str(path), "options": {"threads": 1}, "input_shapes": {}, **extra}


def test_agent_reports_full_statistics(resnet_onnx):
    stats = measure(LocalRunner(), job(resnet_onnx), FAST)
    assert stats.status in ("ok", "noisy") and stats.usable
    assert stats.n >= 10 and len(stats.samples_ms) == stats.n
    assert 0 < stats.min_ms <= stats.p50_ms <= stats.p90_ms
    assert stats.load_ms > 0 and stats.peak_rss_mb > 10 and stats.runtime_version
    assert "load_avg" in stats.board["before"]


def test_agent_runs_until_both_minimums(resnet_onnx):
    stats = measure(LocalRunner(), job(resnet_onnx), MeasurementSettings(warmup=0, min_runs=5, min_seconds=0.5))
    assert sum(stats.samples_ms) >= 0.5 * 1000 * 0.9 and stats.n > 5


def test_failures_are_typed_never_zero(tmp_path, symbolic_onnx):
    runner = LocalRunner()
    missing = measure(runner, job(tmp_path / "nope.onnx"), FAST)
    assert missing.status == "bad_job" and missing.p50_ms is None and not missing.usable
    unknown = measure(runner, {**job(symbolic_onnx), "runtime": "tflite"}, FAST)
    assert unknown.status == "unsupported"
    symbolic = measure(runner, job(symbolic_onnx), FAST)
    assert symbolic.status == "bad_job" and "symbolic" in symbolic.error
    ok = measure(runner, job(symbolic_onnx, input_shapes={"images": [1, 3, 40, 40]}), FAST)
    assert ok.usable
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00garbage" * 10)
    crashed = measure(runner, job(garbage), FAST)
    assert crashed.status == "crash" and crashed.p50_ms is None


def test_timeout_is_typed(resnet_onnx):
    settings = MeasurementSettings(warmup=0, min_runs=10**9, min_seconds=100, max_seconds=100, timeout_s=2)
    stats = measure(LocalRunner(), job(resnet_onnx), settings)
    assert stats.status == "timeout" and stats.p50_ms is None


def test_agent_is_self_contained(tmp_path, resnet_onnx):
    """Stdlib + runtime only: it must run from a folder with nothing of edgeslim in it."""
    source = agent_path().read_text()
    assert "edgeslim." not in source.replace("edgeslim.targets", "") and "import torch" not in source
    copy = tmp_path / "agent.py"
    copy.write_text(source)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job(resnet_onnx, min_runs=5, min_seconds=0)))
    proc = subprocess.run([sys.executable, "-S", str(copy), "--job", str(job_file)], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": ":".join(p for p in sys.path if "site-packages" in p)})
    result = json.loads(proc.stdout)
    assert result["status"] in ("ok", "noisy"), result


def test_interleaved_comparison_alternates_processes(resnet_onnx, symbolic_onnx):
    comparison = compare_interleaved(LocalRunner(), job(resnet_onnx),
                                     job(symbolic_onnx, input_shapes={"images": [1, 3, 32, 32]}), FAST, rounds=3)
    assert len(comparison.reference_p50s) == len(comparison.candidate_p50s) == 3


@pytest.mark.timing
def test_a_half_as_wide_model_measures_faster(resnet_onnx, symbolic_onnx):
    comparison = compare_interleaved(LocalRunner(), job(resnet_onnx),
                                     job(symbolic_onnx, input_shapes={"images": [1, 3, 32, 32]}), FAST, rounds=3)
    assert comparison.ratio < 1.0
