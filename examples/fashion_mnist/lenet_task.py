"""Fashion-MNIST with LeNet-300-100: `edgeslim search examples/fashion_mnist/lenet_task.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import make  # noqa: E402


def make_task():
    return make("lenet300100")
