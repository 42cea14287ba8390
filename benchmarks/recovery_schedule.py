"""Distillation's learning rate over the recovery: constant vs cosine decay, short vs the answer's final length.

    python benchmarks/recovery_schedule.py [--models resnet18] [--recipes "uniform channels 50% + KD"]
        [--epochs 1 3] [--work DIR]

Why: on the ResNet-18-style model the search's final recovery (3 epochs, constant Adam step) ended below the
1-epoch candidate it started from on every answer (benchmarks/README.md, 2026-12-03); the question was whether
a decaying learning rate lets the longer recovery end better (it did not there: the constant step stays the
distillation's default). Per model and recipe
(labels as in search_vs_uniform.py), each schedule x epochs is built from the original weights with the
search's distillation settings and scored on all 10,000 test images. Accuracy only; the build is the same
network whatever the schedule, so its latency does not change. Seeded: a rerun gives the same numbers.
Writes benchmarks/results/recovery_schedule.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import task_path  # noqa: E402
from search_vs_uniform import recipe_plans  # noqa: E402
from tasks import make  # noqa: E402

from edgeslim.config import SearchConfig  # noqa: E402
from edgeslim.evaluate import TaskEvaluator  # noqa: E402
from edgeslim.search import SearchSession  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SCHEDULES = ("constant", "cosine")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["resnet18"])
    parser.add_argument("--recipes", nargs="+", default=["uniform channels 50% + KD"])
    parser.add_argument("--epochs", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--work", type=Path, default=RESULTS / f"recovery-schedule-run-{time.strftime('%Y%m%d')}")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for model in args.models:
        evaluator = TaskEvaluator(make(model, eval_samples=10000))
        for epochs in args.epochs:
            for schedule in SCHEDULES:
                session = SearchSession(SearchConfig(
                    model=str(task_path(model)), profile="local-cpu", finetune_epochs=epochs,
                    recovery_options={"schedule": schedule}, out_dir=str(args.work / model / f"{schedule}-{epochs}")))
                plans = recipe_plans(session)
                for label in args.recipes:
                    t0 = time.time()
                    artifact = session.builder.build(plans[label])
                    wall = time.time() - t0
                    accuracy = evaluator.score(session.target.host_session(artifact))
                    rows.append({"model": model, "recipe": label, "schedule": schedule, "epochs": epochs,
                                 "test_accuracy": accuracy, "build_s": round(wall, 1)})
                    print(f"[{model}] {label}, {schedule}, {epochs} epoch(s): {accuracy:.4f} ({wall:.0f} s)",
                          flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recovery_schedule.json").write_text(json.dumps(rows, indent=1))
    md = ["| model | recipe | epochs | constant lr | cosine decay | cosine - constant (points) |",
          "|---|---|---|---|---|---|"]
    for model in args.models:
        for label in args.recipes:
            for epochs in args.epochs:
                acc = {r["schedule"]: r["test_accuracy"] for r in rows
                       if (r["model"], r["recipe"], r["epochs"]) == (model, label, epochs)}
                md.append(f"| {model} | {label} | {epochs} | {acc['constant']:.4f} | {acc['cosine']:.4f} "
                          f"| {100 * (acc['cosine'] - acc['constant']):+.2f} |")
    md.append("")
    md.append("Test accuracy on all 10,000 Fashion-MNIST test images; distillation (T=4, alpha=0.7, Adam lr 1e-3, "
              "batch 64, seed 0) from the original weights; one build per cell.")
    (RESULTS / "recovery_schedule.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
