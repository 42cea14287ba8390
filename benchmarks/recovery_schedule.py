"""Distillation's learning rate over the recovery: constant vs cosine decay, short vs the answer's final length.

    python benchmarks/recovery_schedule.py [--models resnet18] [--recipes "uniform channels 50% + KD"]
        [--epochs 1 3] [--work DIR]

Why: on the ResNet-18-style model the search's final recovery (3 epochs, constant Adam step) ended below the
1-epoch candidate it started from on every answer (benchmarks/README.md, 2026-12-03); the question was whether
a decaying learning rate lets the longer recovery end better (it did not there: the constant step stays the
distillation's default). Cells as in recovery_compare.py. Writes benchmarks/results/recovery_schedule.{json,md}.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recovery_compare import compare  # noqa: E402

if __name__ == "__main__":
    compare("schedule", ("constant", "cosine"), ("constant lr", "cosine decay"), "recovery_schedule",
            "Test accuracy on all 10,000 Fashion-MNIST test images; distillation (T=4, alpha=0.7, Adam lr 1e-3, "
            "batch 64, seed 0) from the original weights; one build per cell.", ["resnet18"],
            ["uniform channels 50% + KD"])
