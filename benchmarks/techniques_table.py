"""Every technique alone and combined, on the Fashion-MNIST reference models, measured in one run.

    python benchmarks/techniques_table.py [--models lenet300100 resnet] [--rounds 5] [--epochs 2]

For each plan: build it exactly as `edgeslim apply` does (torch-stage techniques, recovery by distillation
from the original for --epochs on 10k training images, export, ONNX-stage techniques), then time all
artifacts of a model in rotating rounds (each in its own agent process; local-cpu protocol, 1 thread) and
score each on all 10,000 test images. Size: the ONNX file; for unstructured sparsity also packed
(bitmask + non-zero values, deflated) next to the dense file deflated the same way.
Writes benchmarks/results/techniques_table.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeslim.evaluate import TaskEvaluator  # noqa: E402
from edgeslim.measure import measure  # noqa: E402
from edgeslim.plugins.pruning import removable_blocks  # noqa: E402
from edgeslim.search import SearchConfig, SearchSession  # noqa: E402

sys.path.insert(0, str(ROOT / "examples" / "fashion_mnist"))
from tasks import make  # noqa: E402


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
        "unstructured 90% (global magnitude)": {"layers": {}, "model": {"global_weight_sparsity": 0.9}},
        "2:4 pattern (all layers)": {"layers": {lay.name: {"nm_sparsity": "2:4"} for lay in layers}, "model": {}},
        "channels/neurons 50% (magnitude) + KD": {"layers": channels, "model": {}},
        "channels/neurons 50% (Taylor) + KD": {"layers": channels, "model": {"prune_importance": "taylor"}},
        "low-rank 0.5 + KD": {"layers": ranks, "model": {}},
        "channels 50% + INT8": {"layers": merge(channels, int8), "model": scheme},
        "low-rank 0.5 + INT8": {"layers": merge(ranks, int8), "model": scheme},
        "unstructured 90% + INT8": {"layers": int8, "model": {**scheme, "global_weight_sparsity": 0.9}},
    }
    if blocks:
        plans["layer pruning (second block of each stage) + KD"] = {
            "layers": {b: {"remove": True} for b in blocks}, "model": {}}
    if not ranks:
        del plans["low-rank 0.5 + KD"], plans["low-rank 0.5 + INT8"]
    return plans


def run_model(name: str, rounds: int, epochs: int, work: Path) -> list[dict]:
    task_file = ROOT / "examples" / "fashion_mnist" / ("resnet_task.py" if name == "resnet" else "lenet_task.py")
    config = SearchConfig(model=str(task_file), profile="local-cpu", out_dir=str(work / name), finetune_epochs=epochs)
    session = SearchSession(config)
    session.prepare()
    plans = plans_for(session)
    artifacts = {}
    for label, plan in plans.items():
        t0 = time.time()
        artifacts[label] = session.build(plan)
        print(f"{name}: built {label} in {time.time() - t0:.0f}s", flush=True)
    labels = list(artifacts)
    p50s: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[: r % len(labels)]:
            stats = measure(session.runner, session._job(artifacts[label]), session.profile.measurement)
            assert stats.usable, (label, stats.error)
            p50s[label].append(stats.p50_ms)
    evaluator = TaskEvaluator(make(name, eval_samples=10000))
    base = statistics.median(p50s[labels[0]])
    rows = []
    for label in labels:
        artifact = artifacts[label]
        size = session.size_details(plans[label], artifact)
        rows.append({
            "model": name, "plan": label, "onnx_bytes": artifact.stat().st_size,
            "packed_bytes": size.get("packed_bytes"), "zipped_dense_bytes": size.get("zipped_dense_bytes"),
            "p50_ms": statistics.median(p50s[label]), "p50_range": [min(p50s[label]), max(p50s[label])],
            "latency_ratio": statistics.median(p50s[label]) / base,
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
