"""Distillation's kept weights: the last step's against their warmed-up moving average, short vs the answer's
final length.

    python benchmarks/recovery_average.py [--models mobilenetv2 resnet18]
        [--recipes "uniform channels 50% + KD" "every removable block removed + KD"] [--epochs 1 3] [--work DIR]

Why: the answer's final recovery (three epochs of distillation at a constant Adam step) ended where the last
batches left the weights, at or below the one-epoch candidate it started from on the ResNet-18-style answers of
2026-12-04; averaging the weights over the steps is the usual cure. The result decides where the average is the
default: distillation's ``final_defaults`` (the final recovery) and not the search's one-epoch recovery. Cells as in
recovery_compare.py. Writes benchmarks/results/recovery_average.{json,md}.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recovery_compare import EVERY_BLOCK, compare  # noqa: E402

if __name__ == "__main__":
    compare("average", ("none", "ema"), ("last step's weights", "moving average"), "recovery_average",
            "Test accuracy on all 10,000 Fashion-MNIST test images; distillation (T=4, alpha=0.7, Adam lr 1e-3 "
            "constant, batch 64, seed 0, 10,000 training images) from the original weights; moving average: "
            "decay min(0.98, (1+n)/(10+n)) after step n, BatchNorm statistics averaged with the weights; one "
            "build per cell.", ["mobilenetv2", "resnet18"], ["uniform channels 50% + KD", EVERY_BLOCK])
