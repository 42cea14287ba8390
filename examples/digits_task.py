"""A complete task file: `edgeslim search examples/digits_task.py --profile local-cpu`.

A task file defines make_task() returning an edgeslim.Task. Everything here
is real data that ships with scikit-learn; nothing is downloaded.
"""

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

import edgeslim
from edgeslim.finetune import finetune


def make_task() -> edgeslim.Task:
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8), float32
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    x_train, y_train, x_test, y_test = x[:1200], y[:1200], x[1200:], y[1200:]

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    )
    finetune(model, (x_train, y_train), epochs=8)  # or: model.load_state_dict(torch.load("weights.pt"))

    return edgeslim.Task(
        model=model,                          # torch.nn.Module, or a path to an .onnx file
        example_input=x_test[:1],             # one batch of 1: fixes the exported input shape
        eval_data=(x_test, y_test),           # scored by `metric` after every change
        train_data=(x_train, y_train),        # optional: short recovery fine-tune after pruning
        calibration_data=x_train[:128],       # optional: INT8 calibration (default: first train inputs)
        metric=edgeslim.task.top1_accuracy,   # optional: metric(outputs, labels) -> float
        metric_name="accuracy",
        higher_is_better=True,
        name="digits-cnn",
    )
