"""Fashion-MNIST at 64 px, MobileNetV2-style CNN: `edgeslim search examples/fashion_mnist/mobilenetv2_task.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import make  # noqa: E402


def make_task():
    return make("mobilenetv2")
