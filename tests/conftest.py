"""Shared fixtures: real models (exported from torch), real ONNX Runtime, a fast measurement profile.

No torch at import time: an ONNX-only install (`pip install -e .`) runs its share of the tests; the fixtures
that need torch skip with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `-n 2` on two cores: each worker (and every edgeslim process it starts) gets one OpenMP/BLAS thread. With
    # torch's default of one thread per core the two workers' threads oversubscribe the cores and every torch
    # step waits on a descheduled thread: two 2-thread trainings side by side took 10.3 s, two 1-thread 5.0 s.
    # Set before numpy and torch load, which read these once.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

import numpy as np  # noqa: E402 (after the thread settings above)
import pytest  # noqa: E402

FAST_MEASUREMENT = """
[measurement]
warmup = 3
min_runs = 15
min_seconds = 0.15
verify_rounds = 3
"""


@pytest.fixture(scope="session")
def resnet_onnx(tmp_path_factory) -> Path:
    """A ResNet-style classifier exported from torch, fixed input shape 1x3x32x32, never seen by edgeslim."""
    torch = pytest.importorskip("torch", reason="the test models are exported from torch: pip install torch")
    from tests.models import make_resnet

    path = tmp_path_factory.mktemp("models") / "tiny_resnet.onnx"
    torch.onnx.export(make_resnet(), (torch.randn(1, 3, 32, 32),), str(path), input_names=["images"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="session")
def symbolic_onnx(tmp_path_factory) -> Path:
    """The same network with symbolic batch, height and width."""
    torch = pytest.importorskip("torch", reason="the test models are exported from torch: pip install torch")
    from tests.models import make_resnet

    path = tmp_path_factory.mktemp("models") / "symbolic.onnx"
    torch.onnx.export(make_resnet(1, 16), (torch.randn(1, 3, 32, 32),), str(path), input_names=["images"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}})
    return path


def write_fast_profile(folder: Path) -> Path:
    """local-cpu with a short measurement protocol (the tests check behaviour, benchmarks check speed)."""
    path = folder / "fast.toml"
    path.write_text('name = "fast-local"\nextends = "local-cpu"\n' + FAST_MEASUREMENT)
    return path


@pytest.fixture
def fast_profile(tmp_path) -> Path:
    return write_fast_profile(tmp_path)


DIGITS_TASK = '''
"""A digits task small enough for tests: a 3-layer CNN trained for a few epochs."""
import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

import edgeslim


def make_task():
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )
    from edgeslim.finetune import finetune
    finetune(model, (x[:1200], y[:1200]), epochs=EPOCHS)
    return edgeslim.Task(model=model, example_input=x[:1], eval_data=(x[1200:], y[1200:]),
                         train_data=(x[:1200], y[:1200]), name="test-digits")
'''


@pytest.fixture
def digits_task_file(tmp_path) -> Path:
    pytest.importorskip("torch", reason="the digits task trains a torch model: pip install torch")
    pytest.importorskip("sklearn", reason="the digits task loads scikit-learn's digits: pip install scikit-learn")
    path = tmp_path / "digits_task.py"
    path.write_text(textwrap.dedent(DIGITS_TASK).replace("EPOCHS", "10"))
    return path


def strategy_registry(strategy: type) -> Iterator[Any]:
    """For a fixture to ``yield from``: the registry with a test strategy registered as a third-party plugin
    registers it, the plugin manager reset before and after."""
    import edgeslim
    from edgeslim.host import load_registry, reset_plugin_manager

    reset_plugin_manager()
    plugin = type("Plugin", (), {"edgeslim_register_strategies": staticmethod(
        edgeslim.hookimpl(lambda register: register(strategy)))})
    yield load_registry((plugin,))
    reset_plugin_manager()


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "edgeslim.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def random_feed(shape=(1, 3, 32, 32), seed=0) -> dict[str, np.ndarray]:
    return {"images": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


#: test files whose module fixture runs for minutes (the demo's whole search): collected first, so that under
#: `pytest -n 2 --dist loadfile --no-loadscope-reorder` a worker starts them at once and the rest of the suite
#: runs beside them, not after them (the demo's setup was the last 5.6 of CI's 23.6 minutes on an AVX2-only
#: machine). Without --no-loadscope-reorder, pytest-xdist hands out files by their test count, not this order.
LONGEST_FIRST = ("test_demo.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in LONGEST_FIRST)  # a stable sort: the rest keep their order
