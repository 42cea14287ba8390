"""A search stopped with SIGTERM (``kill``, ``docker stop``, systemd) unwinds like Ctrl-C: it says how to
resume, exits with the shell's code for SIGTERM and leaves no agent job folder behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_fast_profile


@pytest.fixture(scope="module")
def terminated_search(tmp_path_factory, resnet_onnx) -> tuple[subprocess.CompletedProcess, Path]:
    """A search sent SIGTERM while its agent measures a model (a job folder exists): its result and the
    temporary directory it ran with."""
    work = tmp_path_factory.mktemp("terminated")
    temp = work / "tmp"
    temp.mkdir()
    cmd = [sys.executable, "-m", "edgeslim.cli", "search", str(resnet_onnx), "--profile",
           str(write_fast_profile(work)), "--budget-ms", "0.0001", "--trials", "8", "--out", str(work / "run")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(temp)})
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(temp.glob("edgeslim-job-*")):
        time.sleep(0.02)
    assert proc.poll() is None, "the search ended before an agent job started"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), temp


def test_a_terminated_search_exits_143_and_says_how_to_resume(terminated_search):
    result, _ = terminated_search
    assert (result.returncode, "terminated; a search resumes with --resume DIR" in result.stderr) == (143, True), \
        result.stderr[-2000:]


def test_a_terminated_search_leaves_no_agent_job_folder(terminated_search):
    _, temp = terminated_search
    assert list(temp.glob("edgeslim-job-*")) == []
