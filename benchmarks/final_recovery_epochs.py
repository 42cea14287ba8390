"""Does the final recovery's best epoch, chosen on the search's eval images, hold on images it never saw?

    python benchmarks/final_recovery_epochs.py [--models resnet resnet18] [--recipe "uniform channels 50% + KD"]
        [--epochs 5] [--work DIR]

Why: the answer's final recovery keeps its best epoch by the task's metric on the eval data (the 2,000 test
images every candidate is scored on) and stops after ``--final-patience`` epochs without a better one. Choosing
on those images can flatter them; this measures, per epoch of one watched recovery (the recipe built from the
original weights with the search's distillation settings, every epoch trained: patience = epochs), accuracy on
the 2,000 eval images and on the other 8,000 test images, which no choice reads, in torch. It then reads off
which epoch patience 1, 2 and "always the last" (the old behaviour) would have kept, and what each kept model
scores on the 8,000. Accuracy only (an epoch does not change the network's speed). Seeded: a rerun gives the same
numbers. Writes benchmarks/results/final_recovery_epochs.{json,md}.
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
from tasks import EVAL_SAMPLES, make  # noqa: E402

from edgeslim.config import SearchConfig  # noqa: E402
from edgeslim.evaluate import torch_metric  # noqa: E402
from edgeslim.recovery import BestEpoch, EpochSelection  # noqa: E402
from edgeslim.search import SearchSession  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


#: rule -> patience: None keeps the last epoch (before the final recovery watched its epochs), 0 the best of all
#: epochs (the default, never stopping early)
RULES = {"last epoch (before)": None, "best epoch, never early (default)": 0, "patience 1": 1, "patience 2": 2}


class _NoWeights:
    """What BestEpoch keeps a copy of, for replaying recorded scores without a model."""

    def state_dict(self) -> dict[str, Any]:
        return {}


def kept_epoch(scores: list[float], patience: int | None) -> tuple[int, int]:
    """(kept epoch, epochs trained) under the final recovery's own rule (:class:`BestEpoch`), replayed on
    recorded scores; patience None: the last epoch, as before the rule; 0: the best epoch, never early."""
    if patience is None:
        return len(scores), len(scores)
    replay = iter(scores)
    watch = BestEpoch(EpochSelection(lambda _module: next(replay), True, patience or None, "accuracy"), _NoWeights())
    for epoch in range(1, len(scores) + 1):
        if watch(epoch):
            break
    return watch.best_epoch, len(watch.scores)


def rules(scores: list[float], held_out: list[float]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, patience in RULES.items():
        epoch, trained = kept_epoch(scores, patience)
        out[name] = {"kept_epoch": epoch, "epochs_trained": trained, "held_out_accuracy": held_out[epoch - 1]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["resnet", "resnet18"])
    parser.add_argument("--recipe", default="uniform channels 50% + KD")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--work", type=Path, default=RESULTS / f"final-recovery-epochs-run-{time.strftime('%Y%m%d')}")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for model in args.models:
        full = make(model, eval_samples=10000)
        x, y = full.eval_data
        held_out = make(model)
        held_out.eval_data = (x[EVAL_SAMPLES:], y[EVAL_SAMPLES:])
        eval_score, held_out_score = torch_metric(make(model)), torch_metric(held_out)
        seen: list[float] = []

        def score(module: Any, eval_score: Any = eval_score, held_out_score: Any = held_out_score,
                  seen: list[float] = seen) -> float:
            seen.append(held_out_score(module))
            return eval_score(module)

        session = SearchSession(SearchConfig(model=str(task_path(model)), profile="local-cpu",
                                             finetune_epochs=args.epochs, out_dir=str(args.work / model)))
        watch = EpochSelection(score, True, args.epochs, "accuracy")
        session.builder.epoch_selection = watch
        session.builder.context += f"\nwatched, patience {args.epochs}"  # not the search's builds
        t0 = time.time()
        artifact = session.builder.build(recipe_plans(session)[args.recipe])
        watched = json.loads((artifact.parent / "recovery_epochs.json").read_text())
        wall = time.time() - t0
        scores = watched["scores"]
        if len(seen) != len(scores):
            raise SystemExit(f"{model}: the build was cached in {args.work}; use another --work to measure again")
        row: dict[str, Any] = {"model": model, "recipe": args.recipe, "eval_images": EVAL_SAMPLES,
                               "held_out_images": len(x) - EVAL_SAMPLES, "eval_accuracy": scores,
                               "held_out_accuracy": seen, "build_s": round(wall, 1), "rules": rules(scores, seen)}
        rows.append(row)
        print(f"[{model}] eval {scores} held out {seen} ({wall:.0f} s)", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "final_recovery_epochs.json").write_text(json.dumps(rows, indent=1))
    write_markdown(rows)


def write_markdown(rows: list[dict[str, Any]]) -> None:
    md = []
    for row in rows:
        md += [f"### {row['model']}: {row['recipe']}, {len(row['eval_accuracy'])} epochs of distillation "
               f"({row['build_s']:.0f} s)", "",
               "| epoch | " + " | ".join(str(i + 1) for i in range(len(row["eval_accuracy"]))) + " |",
               "|---|" + "---|" * len(row["eval_accuracy"]),
               f"| eval ({row['eval_images']:,} images, chooses) | "
               + " | ".join(f"{a:.4f}" for a in row["eval_accuracy"]) + " |",
               f"| held out ({row['held_out_images']:,} images) | "
               + " | ".join(f"{a:.4f}" for a in row["held_out_accuracy"]) + " |", "",
               "| rule | kept epoch | epochs trained | held-out accuracy |", "|---|---|---|---|"]
        md += [f"| {name} | {r['kept_epoch']} | {r['epochs_trained']} | {r['held_out_accuracy']:.4f} |"
               for name, r in row["rules"].items()]
        md.append("")
    md.append("Accuracy in torch (before export); distillation (T=4, alpha=0.7, Adam lr 1e-3 constant, batch 64, "
              "seed 0) from the original weights on 10,000 training images.")
    (RESULTS / "final_recovery_epochs.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
