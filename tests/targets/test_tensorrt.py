"""TensorRT cannot run here (no NVIDIA GPU): command construction, output parsing and failures are tested;
the engine run itself is skipped with that reason."""

import json
import os
import stat
import sys

import pytest

from edgeslim.host import load_registry
from edgeslim.measure import LocalRunner, measure
from edgeslim.profile import MeasurementSettings
from edgeslim.targets import agent
from edgeslim.targets.tensorrt import gpu_available

FAST = MeasurementSettings(warmup=1, min_runs=10, min_seconds=1.0, retries=0)


def trt_target(**options):
    return load_registry().targets["tensorrt"].from_options(options)


def test_command_line_for_explicit_int8_fp16_layer_precisions_and_sparsity(tmp_path, resnet_onnx):
    target = trt_target(precision="fp16", sparsity="enable", trtexec="/usr/src/tensorrt/bin/trtexec")
    out = tmp_path / "build"
    out.mkdir()
    (out / "layer_nodes.json").write_text(json.dumps({"stem.0": "/stem/stem.0/Conv", "head.2": "/head/head.2/Gemm"}))
    plan = {"layers": {"stem.0": {"bits": 8}, "head.2": {"bits": 32}}, "model": {}}
    artifact = target.compile(resnet_onnx, out, plan)
    job = target.benchmark_job(artifact, {"images": [1, 3, 32, 32]})
    job.update(min_runs=50, min_seconds=2.0)
    cmd = agent.trtexec_command(job, "/w/times.json", "/w/profile.json")
    assert cmd[0] == "/usr/src/tensorrt/bin/trtexec"
    assert f"--onnx={artifact.resolve()}" in cmd
    assert "--fp16" in cmd and "--int8" in cmd
    assert "--layerPrecisions=/head/head.2/Gemm:fp32" in cmd and "--precisionConstraints=obey" in cmd
    assert "--sparsity=enable" in cmd
    assert "--shapes=images:1x3x32x32" in cmd
    assert "--exportTimes=/w/times.json" in cmd and "--exportProfile=/w/profile.json" in cmd
    assert "--iterations=50" in cmd and "--duration=2" in cmd and "--useCudaGraph" in cmd


def test_plain_fp16_has_no_constraints(tmp_path, resnet_onnx):
    target = trt_target(precision="fp16")
    artifact = target.compile(resnet_onnx, tmp_path / "b", None)
    cmd = agent.trtexec_command(target.benchmark_job(artifact, {}), "t", "p")
    assert not [c for c in cmd if c.startswith(("--layerPrecisions", "--precisionConstraints", "--sparsity"))]


def test_parse_times_and_profile():
    times = [{"startEnqMs": 0.0, "endEnqMs": 0.1, "latencyMs": 1.25, "computeMs": 1.0},
             {"startEnqMs": 1.3, "endEnqMs": 1.4, "latencyMs": 1.5, "computeMs": 1.1}]
    assert agent.parse_trtexec_times(times) == [1.25, 1.5]
    profile = [{"count": 100}, {"name": "conv1 + relu", "timeMs": 10.0, "averageMs": 0.1, "percentage": 40.0},
               {"name": "fc", "timeMs": 5.0, "averageMs": 0.05, "percentage": 20.0}]
    layers = agent.parse_trtexec_profile(profile)
    assert layers[0] == {"name": "conv1 + relu", "average_ms": 0.1, "percentage": 40.0} and len(layers) == 2
    with pytest.raises(agent.AgentFailure) as info:
        agent.parse_trtexec_times([{"count": 3}])
    assert info.value.status == "crash"


def test_failures_are_classified():
    unsupported = agent.classify_trtexec_failure(
        1, "[E] [TRT] ModelImporter.cpp:771: No importer registered for op: NonMaxSuppression\n"
        "[E] Engine set up failed")
    assert unsupported.status == "unsupported" and "NonMaxSuppression" in str(unsupported)
    crash = agent.classify_trtexec_failure(134, "&&&& RUNNING\n[E] [TRT] CUDA initialization failure with error 35")
    assert crash.status == "crash" and "CUDA initialization failure" in str(crash)


def fake_trtexec(tmp_path, body: str):
    """A stand-in executable that behaves like trtexec's output contract (files + exit status)."""
    exe = tmp_path / "trtexec"
    exe.write_text(f"#!{sys.executable}\n{body}")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_agent_runs_trtexec_and_reads_its_exports(tmp_path, resnet_onnx):
    exe = fake_trtexec(tmp_path, """
import json, sys
args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if '=' in a)
json.dump([{"latencyMs": 2.0 + i * 0.01, "computeMs": 1.9} for i in range(60)], open(args['exportTimes'], 'w'))
json.dump([{"count": 60}, {"name": "conv", "timeMs": 1, "averageMs": 0.5, "percentage": 50}],
          open(args['exportProfile'], 'w'))
print("[I] TensorRT version: 10.3.0")
""")
    target = trt_target(trtexec=str(exe))
    artifact = target.compile(resnet_onnx, tmp_path / "b", None)
    stats = measure(LocalRunner(), target.benchmark_job(artifact, {}), FAST)
    assert stats.usable and stats.runtime == "tensorrt" and stats.runtime_version == "10.3.0"
    assert stats.n == 60 and 2.0 <= stats.p50_ms <= 2.6
    assert not [p for p in os.listdir(tmp_path) if p.startswith("trt_times")]


def test_agent_reports_missing_trtexec_and_build_failures(tmp_path, resnet_onnx):
    target = trt_target(trtexec=str(tmp_path / "nowhere" / "trtexec"))
    artifact = target.compile(resnet_onnx, tmp_path / "b", None)
    assert measure(LocalRunner(), target.benchmark_job(artifact, {}), FAST).status == "unsupported"
    exe = fake_trtexec(tmp_path, "import sys\nprint('[E] [TRT] No importer registered for op: Foo')\nsys.exit(1)\n")
    failing = trt_target(trtexec=str(exe))
    stats = measure(LocalRunner(), failing.benchmark_job(artifact, {}), FAST)
    assert stats.status == "unsupported" and "Foo" in stats.error and stats.p50_ms is None


def test_python_api_path_reports_what_is_missing(tmp_path, resnet_onnx):
    target = trt_target(api="python")
    artifact = target.compile(resnet_onnx, tmp_path / "b", None)
    job = target.benchmark_job(artifact, {})
    assert job["runtime"] == "tensorrt-python"
    stats = measure(LocalRunner(), job, FAST)
    if not gpu_available()[0]:
        assert stats.status == "unsupported" and "tensorrt" in stats.error and stats.p50_ms is None


@pytest.mark.skipif(not gpu_available()[0], reason=f"TensorRT engine run needs an NVIDIA GPU: {gpu_available()[1]}")
def test_engine_runs_on_a_real_gpu(tmp_path, resnet_onnx):
    target = trt_target(trtexec="trtexec")
    artifact = target.compile(resnet_onnx, tmp_path / "b", None)
    assert measure(LocalRunner(), target.benchmark_job(artifact, {}), FAST).usable
