"""ONNX Runtime on ARM: a real aarch64 CPython + onnxruntime under qemu-user runs edgeslim's INT8 models and
its agent; outputs match x86 within the stated tolerance (benchmarks/aarch64_check.py does the work)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the check builds its model with torch: pip install 'edgeslim[torch]'")

ROOT = Path(__file__).resolve().parents[2]


def arm64_ready() -> tuple[bool, str]:
    if shutil.which("qemu-aarch64") is None:
        return False, "qemu-user not installed (apt-get install qemu-user; .ci/run does it)"
    archs = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout.split()
    if "arm64" not in archs:
        return False, "dpkg has no arm64 architecture (dpkg --add-architecture arm64 && apt-get update)"
    return True, ""


@pytest.mark.slow
@pytest.mark.skipif(not arm64_ready()[0], reason=arm64_ready()[1])
def test_int8_models_match_x86_on_aarch64_onnxruntime(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "aarch64_check.py"), "--results", str(tmp_path)],
                          capture_output=True, text=True, timeout=1200)
    if proc.returncode == 4:  # benchmarks/aarch64_check.py OFFLINE_EXIT: the registries are out of reach
        pytest.skip(f"aarch64 packages cannot be fetched here: {proc.stdout.strip()[-300:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "aarch64_check.json").read_text())
    assert result["aarch64"]["machine"] == "aarch64"
    assert result["all_within"] and result["agent_on_aarch64"]["status"] in ("ok", "noisy")
    models = {r["model"] for r in result["rows"]}
    assert models >= {"fp32", "u8s8-per-channel", "s8s8-per-channel", "qop-u8s8-per-channel", "qop-s8s8-per-channel"}
