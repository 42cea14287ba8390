"""Selective attention: the cascade vs the main model alone, measured in one run.

    python benchmarks/attention_cascade.py [--rounds 5] [--epochs 2] [--test 10000]
    python benchmarks/attention_cascade.py --example faces [--test 1000]

--example faces: MTCNN's pretrained P-Net as the attention stage in front of a small face check, on
160 x 160 photographs of which half hold a real face (examples/faces/faces.py); the baselines are the face
check alone, trained on whole scenes (full resolution, and resized to its 24 x 24 input).

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
    return session


def fashion_example(test: int) -> dict:
    from models import FashionResNet
    from scenes import ATTENTION_SIZES, CROP_SIZES, ITEM, SCENE, scene_split
    from tasks import load_checkpoint

    train_x, train_y, _ = scene_split("train", 10000)
    test_x, test_y, _ = scene_split("test", test)
    return {"train": (train_x, train_y), "test": (test_x, test_y), "scene": SCENE, "main_size": ITEM,
            "main": lambda: load_checkpoint(FashionResNet(), "resnet"), "attention_sizes": ATTENTION_SIZES,
            "crop_sizes": CROP_SIZES, "int8_at": (42, 32),
            "task": ROOT / "examples" / "fashion_mnist" / "scenes_task.py",
            "about": "Fashion-MNIST items in photographs; the cascade's main model is the reference ResNet tuned 3 "
                     "epochs on jittered crops (examples/fashion_mnist/scenes.py)"}


def faces_example(test: int) -> dict:
    sys.path.insert(0, str(ROOT / "examples" / "faces"))
    from faces import ATTENTION_SIZES, CROP_SIZES, MAIN_SIZE, SCENE, FaceCheck, make_scenes

    return {"train": make_scenes(2000, seed=0)[:2], "test": make_scenes(test, seed=1)[:2], "scene": SCENE,
            "main_size": MAIN_SIZE, "main": FaceCheck, "attention_sizes": ATTENTION_SIZES,
            "crop_sizes": CROP_SIZES, "int8_at": (64, 48), "task": ROOT / "examples" / "faces" / "faces_task.py",
            "about": "face / no face in 160 x 160 photographs (half hold the astronaut's face); attention = MTCNN's "
                     "pretrained P-Net, main = a 24 x 24 face check trained on P-Net's crops (examples/faces)"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--example", choices=["fashion", "faces"], default="fashion")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None,
                        help="training of the main-alone baselines on scenes (2 from the ResNet checkpoint / 6 fresh)")
    parser.add_argument("--test", type=int, default=None, help="test scenes scored (10000 / 1000)")
    args = parser.parse_args()
    started = time.time()
    work = ROOT / "benchmarks" / "results" / f"attention-{args.example}-run-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    example = (fashion_example if args.example == "fashion" else faces_example)(
        args.test or (10000 if args.example == "fashion" else 1000))
    (train_x, train_y), (test_x, test_y) = example["train"], example["test"]
    args.epochs = args.epochs or (2 if args.example == "fashion" else 6)
    np.savez(work / "calib.npz", input=train_x[:128])
    evaluator = TaskEvaluator(edgeslim.Task(model=None, example_input=test_x[:1], eval_data=(test_x, test_y)))

    entries, notes = {}, {}
    scene, small = example["scene"], example["main_size"]
    full_label = f"main alone, full {scene} x {scene} scene"
    for label, module in ((full_label, example["main"]()),
                          (f"main alone, scene resized to {small} x {small}", Downscaled(example["main"](), small))):
        t0 = time.time()
        finetune(module, (train_x, train_y), epochs=args.epochs)
        notes[label] = f"trained {args.epochs} epochs on 10k scenes in {time.time() - t0:.0f}s"
        print(label, notes[label], flush=True)
        onnx_path = work / f"{len(entries)}.onnx"
        export_torch(module.eval(), test_x[:1], onnx_path, "input")
        session = session_for(onnx_path, work / f"s{len(entries)}", work / "calib.npz")
        entries[label] = (session, session.builder.build({"layers": {}, "model": {}}))

    cascade = session_for(example["task"], work / "cascade")
    timed_crop = example["int8_at"][1]
    for size in example["attention_sizes"]:
        for crop in example["crop_sizes"]:
            plan = {"layers": {}, "model": {"attention_size": size, "crop_size": crop}}
            entries[f"cascade, attention input {size}, crop {crop}"] = (cascade, cascade.builder.build(plan))
    int8 = {layer.name: {"bits": 8} for layer in cascade.source.layers}
    size, crop = example["int8_at"]
    plan = {"layers": int8, "model": {"attention_size": size, "crop_size": crop, "int8_scheme": "u8s8-per-channel"}}
    entries[f"cascade, attention input {size}, crop {crop}, INT8 both stages"] = (cascade, cascade.builder.build(plan))

    # crops of one attention size cost the same; time one per size to keep the run short
    timed = {label: entry for label, entry in entries.items()
             if "cascade" not in label or f"crop {timed_crop}" in label}
    p50s = rotating_p50s(timed, args.rounds)
    reference = p50s[full_label]
    rows = []
    for label, (session, artifact) in entries.items():
        same_cost = label if label in p50s else label.rsplit(", crop", 1)[0] + f", crop {timed_crop}"
        row = {"plan": label, **summary(p50s[same_cost], reference), "timed_as": same_cost,
               "test_accuracy": evaluator.score(session.target.host_session(artifact)),
               "onnx_bytes": artifact.stat().st_size, "note": notes.get(label, "")}
        rows.append(row)
        print(row, flush=True)
    out = ROOT / "benchmarks" / "results"
    name = "attention_cascade" if args.example == "fashion" else "attention_faces"
    (out / f"{name}.json").write_text(json.dumps({
        "command": "python benchmarks/attention_cascade.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "test_scenes": len(test_x),
        "rows": rows, "wall_time_s": round(time.time() - started, 1)}, indent=2))
    md = ["| model | p50 ms (range) | latency vs main alone (full scene) | test accuracy | ONNX size |",
          "|---|---|---|---|---|"]
    for r in rows:
        timed_note = "" if r["timed_as"] == r["plan"] else f" (timed as crop {timed_crop})"
        md.append(f"| {r['plan']} | {r['p50_ms']:.3f} ({r['p50_range'][0]:.3f}-{r['p50_range'][1]:.3f}){timed_note} | "
                  f"{r['latency_ratio']:.3f} | {r['test_accuracy']:.4f} | {r['onnx_bytes'] / 1e3:.0f} kB |")
    md += ["", f"{len(test_x)} test scenes; {args.rounds} rotating rounds, ONNX Runtime, 1 thread; baselines trained "
           f"{args.epochs} epochs on {len(train_x)} scenes. {example['about']}."]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
