"""Every technique alone and combined, on the Fashion-MNIST reference models, measured in one run.

    python benchmarks/techniques_table.py [--models lenet300100 resnet] [--rounds 5] [--epochs 2]

For each plan: build it exactly as `edgeslim apply` does (torch-stage techniques, recovery by distillation
from the original for --epochs on 10k training images, export, ONNX-stage techniques), then time all
artifacts of a model in rotating rounds (each in its own agent process; local-cpu protocol, 1 thread) and
score each on all 10,000 test images. Size: the ONNX file; for unstructured sparsity also packed
(bitmask + non-zero values, deflated) next to the dense file deflated the same way.

Unstructured and 2:4 rows appear twice: one-shot after training (no retraining) and with the masks held
during the distillation. "ONNX-only" rows treat the model as a user's bare .onnx file: no torch model, no
labels, 256 unlabelled training images as --calib; structured pruning goes through the onnx2torch twin
and least-squares reconstruction.
Writes benchmarks/results/techniques_table.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import rotating_p50s, summary  # noqa: E402

from edgeslim.evaluate import TaskEvaluator  # noqa: E402
from edgeslim.plugins.pruning import removable_blocks  # noqa: E402
from edgeslim.search import SearchConfig, SearchSession  # noqa: E402

sys.path.insert(0, str(ROOT / "examples" / "fashion_mnist"))
from tasks import make  # noqa: E402

ONE_SHOT = " (one-shot, no retraining)"


def plans_for(session: SearchSession) -> dict[str, dict]:
    layers = session.source.layers
    prunable = [k.layer for k in session.techniques["pruning"].knobs(session.source)]
    lowrank = {k.layer: k.levels for k in session.techniques["lowrank"].knobs(session.source)}
    blocks = [b for b in removable_blocks(session.source) if b.endswith(".1")]
    int8 = {layer.name: {"bits": 8} for layer in layers}
    scheme = {"int8_scheme": "u8s8-per-channel"}

    def merge(*parts: dict) -> dict:
        out: dict = {}
        for part in parts:
            for layer, d in part.items():
                out.setdefault(layer, {}).update(d)
        return out

    channels = {name: {"sparsity": 0.5} for name in prunable}
    ranks = {name: {"rank": 0.5} for name, levels in lowrank.items() if 0.5 in levels}
    plans = {
        "FP32 (original)": {"layers": {}, "model": {}},
        "INT8 PTQ (per-channel QDQ)": {"layers": int8, "model": scheme},
        "unstructured 90% (global magnitude)" + ONE_SHOT: {"layers": {}, "model": {"global_weight_sparsity": 0.9}},
        "unstructured 90% (global magnitude), masks held + KD": {
            "layers": {}, "model": {"global_weight_sparsity": 0.9}},
        "2:4 pattern (all layers)" + ONE_SHOT: {
            "layers": {lay.name: {"nm_sparsity": "2:4"} for lay in layers}, "model": {}},
        "2:4 pattern (all layers), masks held + KD": {
            "layers": {lay.name: {"nm_sparsity": "2:4"} for lay in layers}, "model": {}},
        "channels/neurons 50% (magnitude) + KD": {"layers": channels, "model": {}},
        "channels/neurons 50% (Taylor) + KD": {"layers": channels, "model": {"prune_importance": "taylor"}},
        "low-rank 0.5 + KD": {"layers": ranks, "model": {}},
        "channels 50% + INT8": {"layers": merge(channels, int8), "model": scheme},
        "low-rank 0.5 + INT8": {"layers": merge(ranks, int8), "model": scheme},
        "unstructured 90%, masks held + KD, + INT8": {
            "layers": int8, "model": {**scheme, "global_weight_sparsity": 0.9}},
    }
    if blocks:
        plans["layer pruning (second block of each stage) + KD"] = {
            "layers": {b: {"remove": True} for b in blocks}, "model": {}}
    if not ranks:
        del plans["low-rank 0.5 + KD"], plans["low-rank 0.5 + INT8"]
    return plans


def onnx_only_plans(session: SearchSession) -> dict[str, dict]:
    """The same model as a bare ONNX file: layer names are the graph's node names."""
    prunable = [k.layer for k in session.techniques["pruning"].knobs(session.source)]
    int8 = {layer.name: {"bits": 8} for layer in session.source.layers}
    channels = {name: {"sparsity": 0.5} for name in prunable}
    scheme = {"int8_scheme": "u8s8-per-channel"}
    both = {name: {**int8.get(name, {}), **channels.get(name, {})} for name in {*int8, *channels}}
    return {
        "ONNX-only: INT8 PTQ": {"layers": int8, "model": scheme},
        "ONNX-only: channels 50%, least squares from 256 unlabelled images": {"layers": channels, "model": {}},
        "ONNX-only: channels 50% + least squares + INT8": {"layers": both, "model": scheme},
    }


def onnx_only_session(name: str, task_session: SearchSession, work: Path) -> SearchSession:
    import numpy as np

    from edgeslim.datasets import load_fashion_mnist

    work.mkdir(parents=True, exist_ok=True)
    calib = work / "calib.npz"
    np.savez(calib, **{task_session.source.inputs[0].name: load_fashion_mnist()[0][:256]})
    config = SearchConfig(model=str(task_session.source.onnx_path), profile="local-cpu",
                          out_dir=str(work / f"{name}-onnx"), calib=str(calib))
    session = SearchSession(config)
    return session


def run_model(name: str, rounds: int, epochs: int, work: Path) -> list[dict]:
    task_file = ROOT / "examples" / "fashion_mnist" / ("resnet_task.py" if name == "resnet" else "lenet_task.py")
    config = SearchConfig(model=str(task_file), profile="local-cpu", out_dir=str(work / name), finetune_epochs=epochs)
    session = SearchSession(config)
    # one-shot rows: the same plans built without any recovery (masks applied after training); a session of
    # their own, because the recovery setting is part of every artifact's cache key
    one_shot = SearchSession(SearchConfig(model=str(task_file), profile="local-cpu",
                                          out_dir=str(work / f"{name}-1shot"), finetune_epochs=0))
    entries = {label: (one_shot if label.endswith(ONE_SHOT) else session, plan)
               for label, plan in plans_for(session).items()}
    onnx_session = onnx_only_session(name, session, work)
    if onnx_session.source.torch_model is not None:
        entries.update({label: (onnx_session, plan) for label, plan in onnx_only_plans(onnx_session).items()})
    artifacts = {}
    for label, (owner, plan) in entries.items():
        t0 = time.time()
        artifacts[label] = owner.build(plan)
        print(f"{name}: built {label} in {time.time() - t0:.0f}s", flush=True)
    labels = list(artifacts)
    p50s = rotating_p50s({label: (session, artifacts[label]) for label in labels}, rounds)
    evaluator = TaskEvaluator(make(name, eval_samples=10000))
    rows = []
    for label in labels:
        artifact = artifacts[label]
        owner, plan = entries[label]
        size = owner.size_details(plan, artifact)
        rows.append({
            "model": name, "plan": label, "onnx_bytes": artifact.stat().st_size,
            "packed_bytes": size.get("packed_bytes"), "zipped_dense_bytes": size.get("zipped_dense_bytes"),
            **summary(p50s[label], p50s[labels[0]]),
            "test_accuracy": evaluator.score(session.target.host_session(artifact)),
        })
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["lenet300100", "resnet"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="distillation epochs on 10k images after changes")
    args = parser.parse_args()
    work = ROOT / "benchmarks" / "results" / f"techniques-run-{time.strftime('%Y%m%d-%H%M%S')}"
    rows = []
    for name in args.models:
        rows += run_model(name, args.rounds, args.epochs, work)
    out = ROOT / "benchmarks" / "results"
    (out / "techniques_table.json").write_text(json.dumps({
        "command": "python benchmarks/techniques_table.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "recovery_epochs": args.epochs,
        "rows": rows}, indent=2))
    md = ["| model | plan | ONNX size | packed (sparse) | p50 ms | latency vs FP32 | test accuracy |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        packed = (f"{r['packed_bytes'] / 1e3:.0f} kB (dense deflated {r['zipped_dense_bytes'] / 1e3:.0f} kB)"
                  if r["packed_bytes"] else "-")
        md.append(f"| {r['model']} | {r['plan']} | {r['onnx_bytes'] / 1e3:.0f} kB | {packed} | {r['p50_ms']:.3f} "
                  f"({r['p50_range'][0]:.3f}-{r['p50_range'][1]:.3f}) | {r['latency_ratio']:.2f} | "
                  f"{r['test_accuracy']:.4f} |")
    md += ["", f"{args.rounds} rotating rounds per model, one agent process per artifact per round, 1 thread; accuracy "
           f"on all 10,000 test images; recovery = distillation from the original, {args.epochs} epochs on 10k images"]
    (out / "techniques_table.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
