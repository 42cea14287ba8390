"""Every INT8 encoding edgeslim can write, on ONNX Runtime, side by side in one run: QDQ and QOperator;
U8S8, S8S8 and U8U8; per-channel and per-tensor weights.

    python benchmarks/ort_int8_encodings.py [--rounds 5] [--models resnet resnet18 mobilenetv2]

Models: the Fashion-MNIST ResNet (28 px) and the 64 px ResNet-18-style and MobileNetV2-style benchmark models
(examples/fashion_mnist; checkpoints committed, trained by its train.py). Every layer INT8, min-max calibration on
128 training images. Each artifact is timed in rotating rounds (one agent process per measurement, 1 thread,
the local-cpu profile), accuracy on 2,000 test images, and the read-back of ONNX Runtime's optimized graph says
how many weighted layers really run INT8. Writes benchmarks/results/ort_int8_encodings.{json,md}.
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

from common import TASKS, rotating_p50s, summary, task_path  # noqa: E402

from edgeslim.evaluate import TaskEvaluator  # noqa: E402
from edgeslim.plugins.quantization import INT8_SCHEMES  # noqa: E402
from edgeslim.search import SearchConfig, SearchSession  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    started = time.time()
    work = ROOT / "benchmarks" / "results" / f"encodings-run-{time.strftime('%Y%m%d-%H%M%S')}"
    entries, sessions, built = {}, {}, {}
    for model in args.models:
        task_file = task_path(model)
        session = SearchSession(SearchConfig(model=str(task_file), profile="local-cpu", out_dir=str(work / model)))
        sessions[model] = session
        layers = [layer.name for layer in session.source.layers]
        plans = {"FP32": {"layers": {}, "model": {}}}
        plans |= {scheme: {"layers": {name: {"bits": 8} for name in layers}, "model": {"int8_scheme": scheme}}
                  for scheme, encoding in INT8_SCHEMES.items() if encoding.quantizer == "onnxruntime"}
        for label, plan in plans.items():
            t0 = time.time()
            artifact = session.builder.build(plan)
            entries[(model, label)] = (session, artifact)
            built[(model, label)] = (plan, round(time.time() - t0, 1))
            print(f"built {model} {label} in {time.time() - t0:.1f}s", flush=True)
    p50s = rotating_p50s(entries, args.rounds)
    rows = []
    for model, session in sessions.items():
        evaluator = TaskEvaluator(session.task)
        for (m, label), (_, artifact) in entries.items():
            if m != model:
                continue
            precision = list(session.target.effective_precision(artifact).values())
            row = {"model": model, "encoding": label, "build_s": built[(m, label)][1],
                   **summary(p50s[(m, label)], p50s[(m, "FP32")]),
                   "test_accuracy": evaluator.score(session.target.host_session(artifact)),
                   "layers_int8": precision.count("int8"), "layers": len(precision)}
            rows.append(row)
            print(row, flush=True)
    write(rows, args, started)


def write(rows: list[dict], args: argparse.Namespace, started: float) -> None:
    out = ROOT / "benchmarks" / "results"
    (out / "ort_int8_encodings.json").write_text(json.dumps({
        "command": "python benchmarks/ort_int8_encodings.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "rows": rows,
        "wall_time_s": round(time.time() - started, 1)}, indent=2))
    md = ["| model | encoding | layers run INT8 | p50 ms (range over rounds) | latency vs FP32 | test accuracy |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['model']} | {r['encoding']} | {r['layers_int8']} of {r['layers']} | {r['p50_ms']:.3f} "
                  f"({r['p50_range'][0]:.3f}-{r['p50_range'][1]:.3f}) | {r['latency_ratio']:.2f} | "
                  f"{r['test_accuracy']:.4f} |")
    md += ["", f"ONNX Runtime, 1 thread, {args.rounds} rotating rounds (one agent process per measurement); every "
           "layer INT8, min-max calibration; accuracy on 2,000 Fashion-MNIST test images; `qop-` = QOperator "
           "format (QLinearConv, QLinearAdd), otherwise QDQ. \"Layers run INT8\" is read back from ONNX Runtime's "
           "optimized graph (FP32 rows: 0 of N)."]
    (out / "ort_int8_encodings.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
