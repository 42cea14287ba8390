"""P-Net attention cascade: is there a face in the photograph?  `edgeslim search examples/faces/faces_task.py`

Needs `pip install --no-deps facenet-pytorch` (P-Net's weights) and Pillow; see faces.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faces import cascade, make_scenes  # noqa: E402

import edgeslim  # noqa: E402


def make_task(eval_samples: int = 1000):
    train, train_labels, _ = make_scenes(2000, seed=0)
    test, test_labels, _ = make_scenes(eval_samples, seed=1)
    return edgeslim.Task(model=cascade(), example_input=test[:1], eval_data=(test, test_labels),
                         train_data=(train, train_labels), calibration_data=train[:128],
                         name="faces-pnet-cascade")
