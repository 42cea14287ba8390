"""Quantization in depth on the Fashion-MNIST ResNet, measured in one run: PTQ vs QAT per bit-width,
calibration methods, mixed precision, through ONNX Runtime and OpenVINO.

    python benchmarks/quantization_table.py [--rounds 5] [--epochs 2] [--model resnet]

Rows: FP32; INT8 post-training (min-max, entropy, percentile calibration); INT8 quantization-aware
(fake-quant + STE during --epochs of distillation); mixed precision (first and last layer FP32, the rest
INT8); weight-only fp16, int4, 2-bit and binary weights, each post-training and quantization-aware.
PTQ rows get no training at all; QAT rows get --epochs of training on 10k images. Every artifact is timed
in rotating rounds (one agent process per measurement, 1 thread), accuracy on all 10,000 test images, size
as the ONNX file and the Deep Compression packed file (where low-bit codes only become small).
Writes benchmarks/results/quantization_table.{json,md}.
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
from edgeslim.plugins.clustering import pack_model  # noqa: E402
from edgeslim.search import SearchConfig, SearchSession  # noqa: E402

sys.path.insert(0, str(ROOT / "examples" / "fashion_mnist"))
from tasks import make  # noqa: E402


def plans(layers: list[str]) -> dict[str, dict]:
    scheme = {"int8_scheme": "u8s8-per-channel"}
    int8 = {name: {"bits": 8} for name in layers}

    def weights(bits: int) -> dict:
        return {name: {"weight_bits": bits} for name in layers}

    out = {
        "FP32": ({"layers": {}, "model": {}}, False),
        "INT8 PTQ, min-max calibration": ({"layers": int8, "model": scheme}, False),
        "INT8 PTQ, entropy calibration": ({"layers": int8, "model": {**scheme, "int8_calibration": "entropy"}},
                                          False),
        "INT8 PTQ, percentile calibration": ({"layers": int8, "model": {**scheme, "int8_calibration": "percentile"}},
                                             False),
        "INT8 QAT": ({"layers": int8, "model": {**scheme, "qat": True}}, True),
        "mixed: first+last FP32, rest INT8 PTQ": (
            {"layers": {name: {"bits": 8} for name in layers[1:-1]}, "model": scheme}, False),
        "fp16 weights": ({"layers": weights(16), "model": {}}, False),
    }
    for bits in (4, 2, 1):
        label = {4: "int4", 2: "2-bit", 1: "binary"}[bits]
        out[f"{label} weights PTQ"] = ({"layers": weights(bits), "model": {}}, False)
        out[f"{label} weights QAT"] = ({"layers": weights(bits), "model": {"qat": True}}, True)
    return out


OPENVINO_ROWS = ("FP32", "INT8 PTQ, min-max calibration", "INT8 QAT", "mixed: first+last FP32, rest INT8 PTQ",
                 "int4 weights PTQ")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet", choices=["resnet", "lenet300100"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="QAT epochs (distillation) on 10k images")
    args = parser.parse_args()
    started = time.time()
    work = ROOT / "benchmarks" / "results" / f"quantization-run-{time.strftime('%Y%m%d-%H%M%S')}"
    task_file = ROOT / "examples" / "fashion_mnist" / ("resnet_task.py" if args.model == "resnet" else "lenet_task.py")
    sessions = {}
    for target, profile in (("onnxruntime", "local-cpu"), ("openvino", "local-cpu-openvino")):
        for training in (False, True):
            session = SearchSession(SearchConfig(model=str(task_file), profile=profile,
                                                 out_dir=str(work / f"{target}-{'qat' if training else 'ptq'}"),
                                                 finetune_epochs=args.epochs if training else 0))
            sessions[(target, training)] = session
    layers = [layer.name for layer in sessions[("onnxruntime", False)].source.layers]
    table = plans(layers)
    entries, built = {}, {}
    for target in ("onnxruntime", "openvino"):
        for label, (plan, training) in table.items():
            if target == "openvino" and label not in OPENVINO_ROWS:
                continue
            t0 = time.time()
            session = sessions[(target, training)]
            key = f"{target}: {label}"
            entries[key] = (session, session.builder.build(plan))
            built[key] = (plan, round(time.time() - t0, 1))
            print(f"built {key} in {time.time() - t0:.0f}s", flush=True)
    p50s = rotating_p50s(entries, args.rounds)
    evaluator = TaskEvaluator(make(args.model, eval_samples=10000))
    rows = []
    for key, (session, artifact) in entries.items():
        target, _, label = key.partition(": ")
        onnx_file = artifact if artifact.suffix == ".onnx" else artifact.parent / "model.onnx"
        row = {"target": target, "plan": label, "build_s": built[key][1],
               **summary(p50s[key], p50s[f"{target}: FP32"]),
               "test_accuracy": evaluator.score(session.target.host_session(artifact)),
               "artifact_bytes": sum(p.stat().st_size for p in artifact.parent.glob("model.*")
                                     if p.suffix not in (".dc", ".zip"))}
        if target == "onnxruntime":
            row["packed_bytes"] = pack_model(onnx_file, artifact.parent / "model.dc")["packed_bytes"]
        rows.append(row)
        print(row, flush=True)
    out = ROOT / "benchmarks" / "results"
    (out / "quantization_table.json").write_text(json.dumps({
        "command": "python benchmarks/quantization_table.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "rounds": args.rounds,
        "qat_epochs": args.epochs, "rows": rows, "wall_time_s": round(time.time() - started, 1)}, indent=2))
    md = ["| target | plan | size | packed | p50 ms (range) | latency vs FP32 | test accuracy |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        packed = f"{r['packed_bytes'] / 1e3:.0f} kB" if r.get("packed_bytes") else "-"
        md.append(f"| {r['target']} | {r['plan']} | {r['artifact_bytes'] / 1e3:.0f} kB | {packed} | "
                  f"{r['p50_ms']:.3f} ({r['p50_range'][0]:.3f}-{r['p50_range'][1]:.3f}) | {r['latency_ratio']:.2f} | "
                  f"{r['test_accuracy']:.4f} |")
    md += ["", f"Fashion-MNIST {args.model}; {args.rounds} rotating rounds, 1 thread, one agent process per "
           f"measurement; accuracy on all 10,000 test images; PTQ rows untrained, QAT rows {args.epochs} epochs of "
           "distillation with the quantization simulated. OpenVINO runs the same ONNX graphs (IR, f32 hint)."]
    (out / "quantization_table.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
