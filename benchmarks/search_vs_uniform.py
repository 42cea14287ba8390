"""The searched model against uniform baselines at 0.5x and 0.3x the FP32 latency, on local-cpu, in one run.

    python benchmarks/search_vs_uniform.py [--budgets 0.5 0.3] [--rounds 5] [--epochs 1] [--trials 30]
        [--search-profiles local-cpu [local-cpu-openvino]] [--output-name search_vs_uniform]

Fashion-MNIST ResNet (the reference CNN of examples/fashion_mnist). Rows:
  * edgeslim search (greedy strategy with the latency table), one per budget;
  * uniform INT8 (every layer, ONNX Runtime's QDQ, min-max calibration): one plan for every budget;
  * uniform channel pruning + INT8: the same sparsity on every prunable layer, the smallest of 25/50/75%
    whose measured latency meets the budget (each level built with the same recovery as the search);
  * NNCF's default post-training quantization (``nncf.quantize``, 128 calibration images) run by OpenVINO
    on this CPU, one thread, and the FP32 model under OpenVINO for reference.
Every row's artifact is then timed side by side in rotating rounds (one agent process per measurement, one
thread); latency ratios are against FP32 under ONNX Runtime, the runtime the budgets are set on; accuracy on
all 10,000 test images. "device runs" counts every agent run a method needed to arrive at its model
(probes for the latency table, candidates, re-measurements of noisy runs, the search's verification rounds);
the final side-by-side timing is not counted for anyone. The latency table's error is the prediction made
before each measurement against that measurement, over both searches.
A search on another profile (``--search-profiles local-cpu-openvino``) sets its budget against FP32 on that
runtime, as a user's run would; its row's ratio is still against ONNX Runtime FP32, like every row.
Writes benchmarks/results/{output-name}.{json,md} (default search_vs_uniform).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import rotating_p50s, summary  # noqa: E402

from edgeslim.evaluate import TaskEvaluator  # noqa: E402
from edgeslim.plugins.pruning import SPARSITY_LEVELS  # noqa: E402
from edgeslim.predictor import error_summary  # noqa: E402
from edgeslim.search import SearchConfig, SearchSession  # noqa: E402

sys.path.insert(0, str(ROOT / "examples" / "fashion_mnist"))
from tasks import make  # noqa: E402

TASK = ROOT / "examples" / "fashion_mnist" / "resnet_task.py"
SCHEME = {"int8_scheme": "u8s8-per-channel"}


def session_for(work: Path, name: str, profile: str = "local-cpu", epochs: int = 0, **extra: Any) -> SearchSession:
    session = SearchSession(SearchConfig(model=str(TASK), profile=profile, out_dir=str(work / name),
                                         finetune_epochs=epochs, **extra))
    return session


def nncf_ptq(session: SearchSession, out_dir: Path) -> Path:
    """NNCF's defaults: nncf.quantize on the OpenVINO model, calibration images from the task."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(session.source.onnx_path))
    name = session.source.inputs[0].name
    dataset = nncf.Dataset([feed[name] for feed in session.calibration])
    quantized = nncf.quantize(model, dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / "model.xml"
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return xml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1, help="recovery epochs (search and uniform pruning)")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--search-profiles", nargs="+", default=["local-cpu"],
                        help="profiles to search on (each at every budget)")
    parser.add_argument("--output-name", default="search_vs_uniform")
    args = parser.parse_args()
    started = time.time()
    work = ROOT / "benchmarks" / "results" / f"search-vs-uniform-run-{time.strftime('%Y%m%d-%H%M%S')}"
    rows: dict[str, dict[str, Any]] = {}
    entries: dict[str, tuple[SearchSession, Path]] = {}

    # FP32 and uniform INT8 (no training): one device run to see whether INT8 meets a budget at all
    plain = session_for(work, "uniform")
    layers = [layer.name for layer in plain.source.layers]
    entries["FP32 (ONNX Runtime)"] = (plain, plain.builder.build({"layers": {}, "model": {}}))
    rows["FP32 (ONNX Runtime)"] = {"method": "uncompressed", "budget": None, "device_runs": 1, "wall_s": 0.0}
    t0 = time.time()
    int8 = plain.builder.build({"layers": {name: {"bits": 8} for name in layers}, "model": SCHEME})
    stats = plain.device.measure(int8)
    entries["uniform INT8"] = (plain, int8)
    rows["uniform INT8"] = {"method": "uniform", "budget": None, "device_runs": stats.attempts,
                            "wall_s": round(time.time() - t0, 1)}
    baseline_ms = plain.device.measure(entries["FP32 (ONNX Runtime)"][1]).p50_ms

    # uniform channel pruning + INT8: the smallest uniform sparsity whose measured latency meets each budget
    pruned = session_for(work, "uniform-pruned", epochs=args.epochs)
    prunable = [k.layer for k in pruned.techniques["pruning"].knobs(pruned.source)]
    for ratio in args.budgets:
        t0, runs, chosen = time.time(), 0, None
        for level in SPARSITY_LEVELS[1:]:
            plan = {"layers": {name: {"bits": 8, **({"sparsity": level} if name in prunable else {})}
                               for name in layers}, "model": SCHEME}
            artifact = pruned.builder.build(plan)
            stats = pruned.device.measure(artifact)
            runs += stats.attempts
            chosen = (level, artifact)
            if stats.usable and stats.p50_ms <= ratio * baseline_ms:
                break
        assert chosen is not None
        label = f"uniform channels {chosen[0]:.0%} + INT8 (budget {ratio}x)"
        entries[label] = (pruned, chosen[1])
        rows[label] = {"method": "uniform", "budget": ratio, "device_runs": runs, "wall_s": round(time.time() - t0, 1)}

    # NNCF default PTQ through OpenVINO, and OpenVINO FP32 for reference
    ov_session = session_for(work, "nncf", profile="local-cpu-openvino")
    t0 = time.time()
    nncf_xml = nncf_ptq(ov_session, work / "nncf" / "nncf-ptq")
    stats = ov_session.device.measure(nncf_xml)
    entries["NNCF default PTQ (OpenVINO)"] = (ov_session, nncf_xml)
    rows["NNCF default PTQ (OpenVINO)"] = {"method": "nncf", "budget": None, "device_runs": stats.attempts,
                                           "wall_s": round(time.time() - t0, 1)}
    entries["FP32 (OpenVINO)"] = (ov_session, ov_session.builder.build({"layers": {}, "model": {}}))
    rows["FP32 (OpenVINO)"] = {"method": "uncompressed", "budget": None, "device_runs": 1, "wall_s": 0.0}

    # the searches
    errors: dict[str, list[float]] = {}
    for profile, ratio in [(profile, ratio) for profile in args.search_profiles for ratio in args.budgets]:
        t0 = time.time()
        config = SearchConfig(model=str(TASK), profile=profile, out_dir=str(work / f"search-{profile}-{ratio}"),
                              budget_ratio=ratio, finetune_epochs=args.epochs, trials=args.trials)
        search = SearchSession(config)
        manifest = search.run()
        on = "" if profile == "local-cpu" else f" on {profile}"
        label = f"edgeslim search{on} (budget {ratio}x)"
        records = [json.loads(line) for line in (search.run_dir / "candidates.jsonl").read_text().splitlines()]
        errors[label] = [r["details"]["prediction_error"] for r in records
                         if (r.get("details") or {}).get("prediction_error") is not None]
        rows[label] = {"method": "search", "budget": ratio, "device_runs": manifest["device_runs"]["total"],
                       "device_runs_detail": manifest["device_runs"], "wall_s": round(time.time() - t0, 1),
                       "status": manifest["status"], "candidates_measured": manifest["candidates_evaluated"],
                       "skipped_by_predictor": manifest["candidates_skipped_by_predictor"],
                       "plan": manifest["best"]["plan"]}
        if manifest["best"]["artifact"]:
            entries[label] = (search, search.run_dir / manifest["best"]["artifact"])
        print(label, rows[label], flush=True)

    p50s = rotating_p50s(entries, args.rounds)
    evaluator = TaskEvaluator(make("resnet", eval_samples=10000))
    reference = p50s["FP32 (ONNX Runtime)"]
    for label, (session, artifact) in entries.items():
        rows[label].update(summary(p50s[label], reference),
                           test_accuracy=evaluator.score(session.target.host_session(artifact)))
        print(label, rows[label], flush=True)
    all_errors = [e for errs in errors.values() for e in errs]
    result = {
        "command": "python benchmarks/search_vs_uniform.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "rounds": args.rounds, "recovery_epochs": args.epochs,
        "trials": args.trials, "search_profiles": args.search_profiles, "rows": rows,
        "predictor_error": {"all": error_summary(all_errors), **{k: error_summary(v) for k, v in errors.items()},
                            "signed_errors": all_errors},
        "wall_time_s": round(time.time() - started, 1),
    }
    out = ROOT / "benchmarks" / "results"
    (out / f"{args.output_name}.json").write_text(json.dumps(result, indent=2))
    md = ["| budget | method | test accuracy | p50 ms (range) | latency vs FP32 | meets budget | device runs "
          "| wall s |",
          "|---|---|---|---|---|---|---|---|"]
    for ratio in [None, *args.budgets]:
        for label, row in rows.items():
            if "p50_ms" not in row:
                continue
            shown = row["budget"] == ratio or (ratio is not None and row["budget"] is None
                                               and row["method"] in ("uniform", "nncf"))
            if not shown or (ratio is None and row["method"] != "uncompressed"):
                continue
            meets = "-" if ratio is None else ("yes" if row["latency_ratio"] <= ratio else "no")
            md.append(f"| {'-' if ratio is None else f'{ratio}x'} | {label} | {row['test_accuracy']:.4f} | "
                      f"{row['p50_ms']:.3f} ({row['p50_range'][0]:.3f}-{row['p50_range'][1]:.3f}) | "
                      f"{row['latency_ratio']:.2f} | {meets} | {row['device_runs']} | {row['wall_s']:.0f} |")
    err = result["predictor_error"]["all"]
    if err.get("n"):
        md += ["", f"Latency table error over {err['n']} measured search candidates (prediction before the "
               f"measurement vs the measurement): median |error| {err['median_abs_pct']:.1f}%, p90 "
               f"{err['p90_abs_pct']:.1f}%, max {err['max_abs_pct']:.1f}%, "
               f"mean signed {err['mean_signed_pct']:+.1f}%."]
    md += ["", f"Fashion-MNIST ResNet on this machine's CPU, 1 thread; {args.rounds} rotating rounds, one agent "
           f"process per measurement; accuracy on all 10,000 test images; recovery {args.epochs} epoch(s) of "
           f"distillation on 10k training images for the search and uniform pruning; FP32 median "
           f"{statistics.median(reference):.3f} ms. Wall time of the whole benchmark: {result['wall_time_s']:.0f} s."]
    (out / f"{args.output_name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
