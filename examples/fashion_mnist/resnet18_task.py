"""Fashion-MNIST at 64 px with the ResNet-18-style CNN: `edgeslim search examples/fashion_mnist/resnet18_task.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import make  # noqa: E402


def make_task():
    return make("resnet18")
