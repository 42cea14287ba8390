"""Selective attention: find the Fashion-MNIST item in a 112 x 112 photograph, classify its crop.

    edgeslim search examples/fashion_mnist/scenes_task.py

The model is a cascade (the tiny attention model of scenes.py, then the reference ResNet on the crop);
the search sets the attention model's input size and the crop size, and may prune/quantize both stages.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenes import cascade, scene_split  # noqa: E402
from tasks import EVAL_SAMPLES, TRAIN_SAMPLES  # noqa: E402

import edgeslim  # noqa: E402


def make_task(eval_samples: int = EVAL_SAMPLES):
    train_scenes, train_labels, _ = scene_split("train", TRAIN_SAMPLES)
    test_scenes, test_labels, _ = scene_split("test", eval_samples)
    model = cascade()
    return edgeslim.Task(model=model, example_input=test_scenes[:1], eval_data=(test_scenes, test_labels),
                         train_data=(train_scenes, train_labels), calibration_data=train_scenes[:128],
                         name="fashion-mnist-scenes-cascade")
