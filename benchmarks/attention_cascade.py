"""Selective attention on Fashion-MNIST scenes: the cascade vs the main model alone, measured in one run.

    python benchmarks/attention_cascade.py [--rounds 5] [--epochs 2] [--test 10000]

The task (examples/fashion_mnist/scenes.py): a Fashion-MNIST item somewhere in a 112 x 112 grey window of
a real photograph; classify the item. Compared, each built as edgeslim builds it, timed in rotating rounds
(1 thread, one agent process per measurement, ONNX Runtime), accuracy on --test test scenes:

- main alone, full scene: the reference ResNet trained on whole 112 x 112 scenes (--epochs, from the clean
  checkpoint); the best the main model can do without attention, at 16x the pixels;
- main alone, scene resized to 28 x 28: the same training at the cascade's main-model cost;
- the cascade (attention model + the crop-tuned ResNet on a 28 x 28 crop) at each attention input size, with
  each crop size, and at one size with INT8 everywhere.

Latency and accuracy of every cascade row are the whole cascade's (one ONNX graph, end to end).
Writes benchmarks/results/attention_cascade.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples" / "fashion_mnist"))

from common import rotating_p50s, summary  # noqa: E402
from models import FashionResNet  # noqa: E402
from scenes import ATTENTION_SIZES, CROP_SIZES, scene_split  # noqa: E402
from tasks import load_checkpoint  # noqa: E402

import edgeslim  # noqa: E402
from edgeslim.evaluate import TaskEvaluator  # noqa: E402
from edgeslim.finetune import finetune  # noqa: E402
from edgeslim.model import export_torch  # noqa: E402
from edgeslim.search import SearchConfig, SearchSession  # noqa: E402


class Downscaled(torch.nn.Module):
    def __init__(self, main: torch.nn.Module, size: int) -> None:
        super().__init__()
        self.main, self.size = main, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.main(small)


def session_for(model_ref: Path, out: Path, calib: Path | None = None) -> SearchSession:
    session = SearchSession(SearchConfig(model=str(model_ref), profile="local-cpu", out_dir=str(out),
                                         finetune_epochs=0, calib=str(calib) if calib else None))
    session.prepare()
    return session


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="training of the main-alone baselines on scenes")
    parser.add_argument("--test", type=int, default=10000, help="test scenes scored")
    args = parser.parse_args()
    started = time.time()
    work = ROOT / "benchmarks" / "results" / f"attention-run-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    train_x, train_y, _ = scene_split("train", 10000)
    test_x, test_y, _ = scene_split("test", args.test)
    np.savez(work / "calib.npz", input=train_x[:128])
    evaluator = TaskEvaluator(edgeslim.Task(model=None, example_input=test_x[:1], eval_data=(test_x, test_y)))

    entries, notes = {}, {}
    for label, module in (("main alone, full 112 x 112 scene", FashionResNet()),
                          ("main alone, scene resized to 28 x 28", Downscaled(FashionResNet(), 28))):
        target = module.main if isinstance(module, Downscaled) else module
        load_checkpoint(target, "resnet")
        t0 = time.time()
        finetune(module, (train_x, train_y), epochs=args.epochs)
        notes[label] = f"trained {args.epochs} epochs on 10k scenes in {time.time() - t0:.0f}s"
        print(label, notes[label], flush=True)
        onnx_path = work / f"{len(entries)}.onnx"
        export_torch(module.eval(), test_x[:1], onnx_path, "input")
        session = session_for(onnx_path, work / f"s{len(entries)}", work / "calib.npz")
        entries[label] = (session, session.build({"layers": {}, "model": {}}))

    cascade = session_for(ROOT / "examples" / "fashion_mnist" / "scenes_task.py", work / "cascade")
    for size in ATTENTION_SIZES:
        for crop in CROP_SIZES:
            plan = {"layers": {}, "model": {"attention_size": size, "crop_size": crop}}
            entries[f"cascade, attention input {size}, crop {crop}"] = (cascade, cascade.build(plan))
    int8 = {layer.name: {"bits": 8} for layer in cascade.source.layers}
    plan = {"layers": int8, "model": {"attention_size": 42, "crop_size": 32, "int8_scheme": "u8s8-per-channel"}}
    entries["cascade, attention input 42, crop 32, INT8 both stages"] = (cascade, cascade.build(plan))

    # crops of one attention size cost the same; time one per size to keep the run short
    timed = {label: entry for label, entry in entries.items() if "cascade" not in label or "crop 32" in label}
    p50s = rotating_p50s(timed, args.rounds)
    reference = p50s["main alone, full 112 x 112 scene"]
    rows = []
    for label, (session, artifact) in entries.items():
        same_cost = label if label in p50s else label.rsplit(", crop", 1)[0] + ", crop 32"
        row = {"plan": label, **summary(p50s[same_cost], reference), "timed_as": same_cost,
               "test_accuracy": evaluator.score(session.target.host_session(artifact)),
               "onnx_bytes": artifact.stat().st_size, "note": notes.get(label, "")}
        rows.append(row)
        print(row, flush=True)
    out = ROOT / "benchmarks" / "results"
    (out / "attention_cascade.json").write_text(json.dumps({
        "command": "python benchmarks/attention_cascade.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "test_scenes": args.test,
        "rows": rows, "wall_time_s": round(time.time() - started, 1)}, indent=2))
    md = ["| model | p50 ms (range) | latency vs main alone (full scene) | test accuracy | ONNX size |",
          "|---|---|---|---|---|"]
    for r in rows:
        timed_note = "" if r["timed_as"] == r["plan"] else " (timed as crop 32)"
        md.append(f"| {r['plan']} | {r['p50_ms']:.3f} ({r['p50_range'][0]:.3f}-{r['p50_range'][1]:.3f}){timed_note} | "
                  f"{r['latency_ratio']:.3f} | {r['test_accuracy']:.4f} | {r['onnx_bytes'] / 1e3:.0f} kB |")
    md += ["", f"{args.test} test scenes; {args.rounds} rotating rounds, ONNX Runtime, 1 thread; baselines trained "
           f"{args.epochs} epochs on 10k scenes; the cascade's main model is the reference ResNet tuned 3 epochs on "
           "jittered crops (examples/fashion_mnist/scenes.py)."]
    (out / "attention_cascade.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
