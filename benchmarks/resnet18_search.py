"""A search on a ResNet-18-class bare ONNX model at 224 px, as a user would run it, then an independent check.

    python benchmarks/resnet18_search.py [--budget-ratio 0.5] [--time-budget 900]

The model is ResNet-18's architecture (seeded weights: nothing is downloaded) exported by torch's TorchScript
exporter at opset 17, which hands shared weights through Identity nodes (the case that once made edgeslim's
INT8 slower than FP32). `edgeslim search model.onnx --profile local-cpu --budget-ratio R` runs in its own
process; then this script re-measures the original and the answer in fresh agent processes, interleaved
(7 rounds), and computes the output cosine on 32 inputs the search never saw. Writes
benchmarks/results/resnet18_search.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def export_resnet18(path: Path) -> None:
    import torch

    from tests.models import ResNet18

    torch.manual_seed(0)
    model = ResNet18().eval()
    torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), input_names=["images"], opset_version=17,
                      dynamo=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget-ratio", type=float, default=0.5)
    parser.add_argument("--time-budget", type=float, default=900)
    args = parser.parse_args()
    import onnxruntime as ort

    from edgeslim.measure import LocalRunner, compare_interleaved
    from edgeslim.profile import load_profile

    work = Path(tempfile.mkdtemp(prefix="edgeslim-r18-"))
    model = work / "resnet18.onnx"
    export_resnet18(model)
    out = work / "run"
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "edgeslim.cli", "search", str(model), "--profile", "local-cpu",
                           "--budget-ratio", str(args.budget_ratio), "--time-budget", str(args.time_budget),
                           "--out", str(out), "--json"], capture_output=True, text=True)
    search_s = time.time() - started
    if proc.returncode not in (0, 3):
        raise SystemExit(proc.stderr[-3000:])
    manifest = json.loads(proc.stdout)
    best = out / manifest["best"]["artifact"]
    original = out / manifest["baseline"]["artifact"]

    def job(path: Path) -> dict:
        return {"runtime": "onnxruntime", "artifact": str(path), "options": {"threads": 1}, "input_shapes": {}}

    comparison = compare_interleaved(LocalRunner(), job(original), job(best), load_profile("local-cpu").measurement,
                                     rounds=7)
    rng = np.random.default_rng(12345)
    inputs = rng.standard_normal((32, 1, 3, 224, 224)).astype(np.float32)
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (original, best)]
    outs = [np.concatenate([s.run(None, {"images": x})[0] for x in inputs]) for s in sessions]
    cosines = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(*outs, strict=True)]
    result = {"command": "python benchmarks/resnet18_search.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "status": manifest["status"], "search_s": round(search_s),
              "device_runs": manifest["device_runs"], "best_plan_model": manifest["best"]["plan"]["model"],
              "best_layers_int8": sum(1 for d in manifest["best"]["plan"]["layers"].values() if d.get("bits") == 8),
              "layers": len(manifest["layers"]), "search_ratio": manifest["best"]["latency"]["p50_ms"]
              / manifest["baseline"]["latency"]["p50_ms"], "search_fidelity": manifest["best"]["metric"]["value"],
              "independent": comparison.to_dict(), "independent_cosine_min": min(cosines),
              "independent_cosine_mean": float(np.mean(cosines)), "speed_gate": manifest.get("speed_gate")}
    results = ROOT / "benchmarks" / "results"
    (results / "resnet18_search.json").write_text(json.dumps(result, indent=2))
    c = result["independent"]
    md = [f"ResNet-18 (224 px, TorchScript export, opset 17) on local-cpu, --budget-ratio {args.budget_ratio}: "
          f"status {result['status']} in {result['search_s']} s, {result['device_runs']['total']} device runs.",
          "",
          "| | search's own measurement | independent re-measurement (7 interleaved rounds) |",
          "|---|---|---|",
          f"| latency ratio answer/original | {result['search_ratio']:.3f} | {c['ratio']:.3f} |",
          f"| output cosine vs original | {result['search_fidelity']:.5f} (calibration inputs) | "
          f"min {result['independent_cosine_min']:.5f}, mean {result['independent_cosine_mean']:.5f} "
          "(32 unseen inputs) |",
          "", f"Answer: {result['best_layers_int8']} of {result['layers']} layers INT8, {result['best_plan_model']}.",
          "", "| gate probe | status | ratio vs FP32 | layers INT8 |", "|---|---|---|---|"]
    for probe in result["speed_gate"] or []:
        ratio = f"{probe['ratio']:.2f}" if probe["ratio"] else "-"
        md.append(f"| {probe['settings']} | {probe['status']} | {ratio} | {probe['layers_int8']} |")
    (results / "resnet18_search.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
