"""The embedded default task: a small CNN trained on scikit-learn's handwritten digits (no download).

The network is deliberately wider than digits need (it reaches ~98% either
way) so that its FP32 latency on one core is about a millisecond: large
enough that compression has something measurable to buy. Training is seeded
and takes about half a minute on two cores; the result is cached.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from edgeslim.errors import EdgeslimError
from edgeslim.task import Task

CHANNELS = (128, 256, 256, 256)
EPOCHS = 12
SEED = 0


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise EdgeslimError(
            "the demo needs scikit-learn (its digits data set): pip install 'edgeslim[torch]'"
        ) from None
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.7 * len(x))
    return x[:split], y[:split], x[split:], y[split:]


def build_model():
    import torch.nn as nn

    c1, c2, c3, c4 = CHANNELS
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
        nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c3, c4, 3, padding=1), nn.BatchNorm2d(c4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(c4, 10),
    )


def _cache_path() -> Path:
    tag = hashlib.sha256(repr((CHANNELS, EPOCHS, SEED)).encode()).hexdigest()[:12]
    root = Path(os.environ.get("EDGESLIM_CACHE", Path.home() / ".cache" / "edgeslim"))
    return root / f"demo-digits-cnn-{tag}.pt"


def trained_model():
    try:
        import torch
    except ImportError:
        raise EdgeslimError("the demo needs torch: pip install torch==2.13.0 'edgeslim[torch]'") from None
    from edgeslim.finetune import finetune

    model = build_model()
    cache = _cache_path()
    if cache.exists():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval()
    x_train, y_train, _, _ = digits_split()
    torch.manual_seed(SEED)
    model = build_model()
    finetune(model, (x_train, y_train), epochs=EPOCHS, lr=1e-3, seed=SEED)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, cache)
    return model.eval()


def make_task() -> Task:
    x_train, y_train, x_test, y_test = digits_split()
    return Task(
        model=trained_model(),
        example_input=x_test[:1],
        eval_data=(x_test, y_test),
        train_data=(x_train, y_train),
        calibration_data=x_train[:128],
        metric_name="accuracy",
        name="demo-digits-cnn",
    )
