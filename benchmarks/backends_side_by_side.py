"""One model, several backends, measured side by side in one run: ORT FP32/INT8, OpenVINO FP32/INT8/BF16.

    python benchmarks/backends_side_by_side.py [--rounds 7] [--model demo|resnet18]

The model is the demo's digits CNN (trained once, cached) or the 64 px ResNet-18-style Fashion-MNIST network
(examples/fashion_mnist). INT8 is ONNX Runtime's quantizer's QDQ (u8s8, per-channel weights), run by both
runtimes, and NNCF's (``int8_scheme = "nncf"``, what the OpenVINO target uses) run by OpenVINO.
Each round times every artifact once, in its own agent process, in a rotated order; the table
gives the median of per-round p50s, the range over rounds, the ratio to ORT FP32 and test accuracy.
Writes benchmarks/results/backends_side_by_side[_resnet18].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeslim.demo import make_task  # noqa: E402
from edgeslim.evaluate import TaskEvaluator  # noqa: E402
from edgeslim.host import load_registry  # noqa: E402
from edgeslim.measure import LocalRunner, measure  # noqa: E402
from edgeslim.model import torch_source  # noqa: E402
from edgeslim.profile import load_profile  # noqa: E402
from edgeslim.technique import BuildContext  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model", choices=["demo", "resnet18"], default="demo")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgeslim-backends-"))
    if args.model == "demo":
        task = make_task()
    else:
        sys.path.insert(0, str(ROOT / "examples" / "fashion_mnist"))
        from tasks import make

        task = make(args.model)
    source = torch_source(task.model, task.example_input, work / "src", "input")
    registry = load_registry()
    calib = [{"input": task.calibration_inputs()[i : i + 1]} for i in range(128)]
    plan = {"layers": {layer.name: {"bits": 8} for layer in source.layers},
            "model": {"int8_scheme": "u8s8-per-channel"}}
    int8 = registry.techniques["quantization"].apply_onnx(
        source.onnx_path, plan, BuildContext(source=source, calibration=calib, work_dir=work), work / "int8.onnx")
    nncf_plan = {"layers": plan["layers"], "model": {"int8_scheme": "nncf"}}
    nncf_int8 = registry.techniques["quantization"].apply_onnx(
        source.onnx_path, nncf_plan, BuildContext(source=source, calibration=calib, work_dir=work), work / "nncf.onnx")
    ort_t = registry.targets["onnxruntime"].from_options(load_profile("local-cpu").target.options())
    ov_cls = registry.targets["openvino"]
    ov_t = ov_cls.from_options(load_profile("local-cpu-openvino").target.options())
    entries = {
        "ORT FP32": (ort_t, ort_t.compile(source.onnx_path, work / "ort_fp32", None)),
        "ORT INT8": (ort_t, ort_t.compile(int8, work / "ort_int8", None)),
        "OpenVINO FP32": (ov_t, ov_t.compile(source.onnx_path, work / "ov_fp32", None)),
        "OpenVINO INT8 (ONNX Runtime's QDQ)": (ov_t, ov_t.compile(int8, work / "ov_int8", None)),
        "OpenVINO INT8 (NNCF)": (ov_t, ov_t.compile(nncf_int8, work / "ov_nncf", None)),
    }
    if "bf16" in ov_t.supported_precisions():
        entries["OpenVINO BF16 (hint)"] = (ov_t, ov_t.compile(source.onnx_path, work / "ov_bf16",
                                                              {"model": {"ov_precision": "bf16"}}))
    settings = load_profile("local-cpu").measurement
    p50s: dict[str, list[float]] = {name: [] for name in entries}
    names = list(entries)
    runner = LocalRunner()
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate so no backend always goes first
        for name in order:
            target, artifact = entries[name]
            stats = measure(runner, target.benchmark_job(artifact, source.input_shapes()), settings)
            assert stats.usable, (name, stats.error)
            p50s[name].append(stats.p50_ms)
    evaluator = TaskEvaluator(task)
    base = statistics.median(p50s["ORT FP32"])
    rows = []
    for name, (target, artifact) in entries.items():
        med = statistics.median(p50s[name])
        rows.append({"backend": name, "p50_ms": med, "min_ms": min(p50s[name]), "max_ms": max(p50s[name]),
                     "ratio_vs_ort_fp32": med / base, "accuracy": evaluator.score(target.host_session(artifact))})
    described = {"demo": "demo digits CNN (128-256-256-256 channels, 8x8 input)",
                 "resnet18": "ResNet-18-style, 64 px Fashion-MNIST"}[args.model]
    result = {"command": "python benchmarks/backends_side_by_side.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "threads": 1, "model": described,
              "rows": rows, "per_round_p50_ms": p50s, "versions": {**ort_t.versions(), **ov_t.versions()}}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    name = "backends_side_by_side" + ("" if args.model == "demo" else f"_{args.model}")
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    md = ["| backend | p50 ms (median) | range over rounds | latency ratio vs ORT FP32 | accuracy |",
          "|---|---|---|---|---|"]
    md += [f"| {r['backend']} | {r['p50_ms']:.3f} | {r['min_ms']:.3f}-{r['max_ms']:.3f} | "
           f"{r['ratio_vs_ort_fp32']:.2f} | {r['accuracy']:.4f} |" for r in rows]
    md += ["", f"{args.rounds} rounds, each artifact in its own agent process per round, rotated order, 1 thread; "
           f"onnxruntime {result['versions']['onnxruntime']}, openvino {result['versions']['openvino'].split('-')[0]}"]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
