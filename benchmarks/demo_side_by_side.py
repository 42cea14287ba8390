"""Side by side: the demo's original FP32 model vs the model `edgeslim demo` found, measured in one run.

    python benchmarks/demo_side_by_side.py [--run DIR] [--rounds 11]

Runs the demo search (unless --run points at a finished demo run directory), then times both models in
alternating agent processes (one process per model per round, order flipped every round) with the
local-cpu protocol, scores both on the digits test split, and writes benchmarks/results/demo_side_by_side.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edgeslim.demo import make_task
from edgeslim.evaluate import TaskEvaluator
from edgeslim.host import load_registry
from edgeslim.measure import LocalRunner, compare_interleaved
from edgeslim.profile import load_profile

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, help="a finished `edgeslim demo --out DIR` directory")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    run_dir = args.run
    search_s = None
    if run_dir is None:
        run_dir = HERE / "results" / f"demo-run-{time.strftime('%Y%m%d-%H%M%S')}"
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "edgeslim.cli", "demo", "--out", str(run_dir)], check=False)
        search_s = time.time() - t0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    profile = load_profile("local-cpu")
    target = load_registry().targets["onnxruntime"].from_options(profile.target.options())
    base_art, best_art = run_dir / manifest["baseline"]["artifact"], run_dir / manifest["best"]["artifact"]
    comparison = compare_interleaved(LocalRunner(), target.benchmark_job(base_art, {}),
                                     target.benchmark_job(best_art, {}), profile.measurement, rounds=args.rounds)
    evaluator = TaskEvaluator(make_task())
    base_acc = evaluator.score(target.host_session(base_art))
    best_acc = evaluator.score(target.host_session(best_art))
    result = {
        "command": "python benchmarks/demo_side_by_side.py" + (f" --run {args.run}" if args.run else ""),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rounds": args.rounds,
        "protocol": profile.measurement.model_dump(),
        "threads": profile.target.options().get("threads"),
        "baseline_p50_ms": comparison.reference_ms, "found_p50_ms": comparison.candidate_ms,
        "latency_ratio_found_over_baseline": comparison.ratio, "speedup": 1 / comparison.ratio,
        "per_round_ratio": [c / r for r, c in zip(comparison.reference_p50s, comparison.candidate_p50s, strict=True)],
        "baseline_accuracy": base_acc, "found_accuracy": best_acc,
        "baseline_size_bytes": base_art.stat().st_size, "found_size_bytes": best_art.stat().st_size,
        "found_plan": manifest["best"]["plan"], "effective_precision": manifest["best"].get("effective_precision"),
        "search_wall_s": search_s, "search_manifest_speedup": manifest["best"].get("speedup"),
        **comparison.spread(),
    }
    ratios = result["per_round_ratio"]
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "demo_side_by_side.json").write_text(json.dumps(result, indent=2))
    table = "\n".join([
        "| model | p50 ms (median of rounds) | range over rounds | accuracy | size |",
        "|---|---|---|---|---|",
        f"| original FP32 | {comparison.reference_ms:.3f} | {result['reference_min_ms']:.3f}-"
        f"{result['reference_max_ms']:.3f} | {base_acc:.4f} | {result['baseline_size_bytes'] / 1e6:.2f} MB |",
        f"| found by edgeslim | {comparison.candidate_ms:.3f} | {result['candidate_min_ms']:.3f}-"
        f"{result['candidate_max_ms']:.3f} | {best_acc:.4f} | {result['found_size_bytes'] / 1e6:.2f} MB |",
        "",
        f"latency ratio found/original {comparison.ratio:.3f} (speed-up {1 / comparison.ratio:.2f}x); per-round ratios "
        f"median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}; {args.rounds} "
        "interleaved rounds, one agent process per model per round, 1 thread",
    ])
    (out / "demo_side_by_side.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
