"""Shared by the Fashion-MNIST task files: data, checkpoints, and the Task they make."""

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from models import FashionResNet, LeNet300100, MobileNetV2Style, ResNet18Style  # noqa: E402

import edgeslim  # noqa: E402
from edgeslim.datasets import load_fashion_mnist  # noqa: E402
from edgeslim.errors import EdgeslimError  # noqa: E402

#: The search scores every candidate on these many test images (the benchmark uses all 10,000).
EVAL_SAMPLES = 2000
#: Recovery fine-tunes / distillation after pruning use this slice of the training set.
TRAIN_SAMPLES = 10000


#: The 64 px benchmark models (resnet18, mobilenetv2) train on this many upscaled training images.
LARGE_TRAIN_SAMPLES = 20000
MODELS = {"resnet": FashionResNet, "lenet300100": LeNet300100, "resnet18": ResNet18Style,
          "mobilenetv2": MobileNetV2Style}
#: the models that take Fashion-MNIST upscaled to 64 px (millisecond latencies on a CPU)
UPSCALED = ("resnet18", "mobilenetv2")


def upscale(images, size: int = 64):
    """28 px Fashion-MNIST images (N, 1, 28, 28) to ``size`` px, bilinear, in chunks (float32 numpy)."""
    import numpy as np

    chunks = [torch.nn.functional.interpolate(torch.from_numpy(images[i : i + 2000]), size=(size, size),
                                              mode="bilinear", align_corners=False).numpy()
              for i in range(0, len(images), 2000)]
    return np.concatenate(chunks).astype(np.float32)


def load_checkpoint(model: torch.nn.Module, name: str) -> torch.nn.Module:
    path = HERE / f"{name}.pt"
    if not path.exists():
        raise EdgeslimError(f"{path} missing: run python examples/fashion_mnist/train.py")
    state = torch.load(path, weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


def make(name: str, eval_samples: int = EVAL_SAMPLES) -> edgeslim.Task:
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    if name not in MODELS:
        raise EdgeslimError(f"unknown Fashion-MNIST model {name!r} (known: {', '.join(MODELS)})")
    model = load_checkpoint(MODELS[name](), name)
    x_train, y_train = x_train[:TRAIN_SAMPLES], y_train[:TRAIN_SAMPLES]
    x_test, y_test = x_test[:eval_samples], y_test[:eval_samples]
    if name in UPSCALED:
        x_train, x_test = upscale(x_train), upscale(x_test)
    return edgeslim.Task(model=model, example_input=x_test[:1], eval_data=(x_test, y_test),
                         train_data=(x_train, y_train), calibration_data=x_train[:128], name=f"fashion-mnist-{name}")
