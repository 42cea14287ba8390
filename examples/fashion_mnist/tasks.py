"""Shared by the Fashion-MNIST task files: data, checkpoints, and the Task they make."""

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from models import FashionResNet, LeNet300100  # noqa: E402

import edgeslim  # noqa: E402
from edgeslim.datasets import load_fashion_mnist  # noqa: E402
from edgeslim.errors import EdgeslimError  # noqa: E402

#: The search scores every candidate on these many test images (the benchmark uses all 10,000).
EVAL_SAMPLES = 2000
#: Recovery fine-tunes / distillation after pruning use this slice of the training set.
TRAIN_SAMPLES = 10000


def load_checkpoint(model: torch.nn.Module, name: str) -> torch.nn.Module:
    path = HERE / f"{name}.pt"
    if not path.exists():
        raise EdgeslimError(f"{path} missing: run python examples/fashion_mnist/train.py")
    state = torch.load(path, weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


def make(name: str, eval_samples: int = EVAL_SAMPLES) -> edgeslim.Task:
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    model = load_checkpoint(FashionResNet() if name == "resnet" else LeNet300100(), name)
    return edgeslim.Task(model=model, example_input=x_test[:1],
                         eval_data=(x_test[:eval_samples], y_test[:eval_samples]),
                         train_data=(x_train[:TRAIN_SAMPLES], y_train[:TRAIN_SAMPLES]),
                         calibration_data=x_train[:128], name=f"fashion-mnist-{name}")
