"""One distillation setting, two values, on the benchmark recipes: what recovery_schedule.py and
recovery_average.py share. Per model and recipe (labels as in search_vs_uniform.py; "every removable block
removed + KD" names that model's own count), each value x epochs is built from the original weights with the
search's other distillation settings and scored on all 10,000 test images. Accuracy only: the network is the
same whatever the setting. Seeded: a rerun gives the same numbers."""

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
EVERY_BLOCK = "every removable block removed + KD"


def recipe_label(plans: dict[str, Any], label: str) -> str:
    """The label in ``recipe_plans``: "every removable block removed" is "all N removable blocks removed"."""
    if label != EVERY_BLOCK:
        return label
    return next(name for name in plans if name.startswith("all ") and name.endswith("removable blocks removed + KD"))


def compare(option: str, values: tuple[str, str], headers: tuple[str, str], name: str, footnote: str,
            default_models: list[str], default_recipes: list[str]) -> None:
    """Parse the command line, build and score every cell, write benchmarks/results/{name}.{json,md}."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=default_models)
    parser.add_argument("--recipes", nargs="+", default=default_recipes)
    parser.add_argument("--epochs", nargs="+", type=int, default=[1, 3])
    run_dir = f"{name.replace('_', '-')}-run-{time.strftime('%Y%m%d')}"
    parser.add_argument("--work", type=Path, default=RESULTS / run_dir)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for model in args.models:
        evaluator = TaskEvaluator(make(model, eval_samples=10000))
        for epochs in args.epochs:
            for value in values:
                session = SearchSession(SearchConfig(
                    model=str(task_path(model)), profile="local-cpu", finetune_epochs=epochs,
                    recovery_options={option: value}, out_dir=str(args.work / model / f"{value}-{epochs}")))
                plans = recipe_plans(session)
                for label in args.recipes:
                    t0 = time.time()
                    artifact = session.builder.build(plans[recipe_label(plans, label)])
                    wall = time.time() - t0
                    accuracy = evaluator.score(session.target.host_session(artifact))
                    rows.append({"model": model, "recipe": label, option: value, "epochs": epochs,
                                 "test_accuracy": accuracy, "build_s": round(wall, 1)})
                    print(f"[{model}] {label}, {value}, {epochs} epoch(s): {accuracy:.4f} ({wall:.0f} s)",
                          flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1))
    first, second = values
    md = [f"| model | recipe | epochs | {headers[0]} | {headers[1]} | {second} - {first} (points) |",
          "|---|---|---|---|---|---|"]
    for model in args.models:
        for label in args.recipes:
            for epochs in args.epochs:
                acc = {r[option]: r["test_accuracy"] for r in rows
                       if (r["model"], r["recipe"], r["epochs"]) == (model, label, epochs)}
                md.append(f"| {model} | {label} | {epochs} | {acc[first]:.4f} | {acc[second]:.4f} "
                          f"| {100 * (acc[second] - acc[first]):+.2f} |")
    md += ["", footnote]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
