"""The searched model against every uniform recipe and NNCF's PTQ at the same measured latency, side by side.

    python benchmarks/search_vs_uniform.py [--models resnet resnet18 mobilenetv2] [--budgets 0.5 0.3 0.2]
        [--search-profiles local-cpu local-cpu-openvino] [--strategy knapsack] [--rounds 5] [--epochs 1]
        [--trials 30] [--time-budget SECONDS [MODEL=SECONDS ...]] [--final-epochs N] [--work DIR] [--tag TAG]
        [--render-only]

Models (examples/fashion_mnist): FashionResNet (28 px, ~0.3 ms), the ResNet-18-style and MobileNetV2-style
networks (64 px, milliseconds). The 0.2x budget is only run on the two larger models. Per model, rows:
  * FP32 under ONNX Runtime and under OpenVINO (its default configuration: no precision hint);
  * uniform INT8 on ONNX Runtime: its quantizer's U8S8 QDQ (per channel) and QOperator U8S8 per tensor;
  * uniform channel pruning at 25/50/75% with distillation (the search's recovery), alone and with INT8;
  * every removable block removed, with distillation, alone and with INT8;
  * each of those float recipes run by OpenVINO, as is and after NNCF's default PTQ;
  * NNCF's default post-training quantization (``nncf.quantize`` on the OpenVINO model, the task's 128
    calibration images), run by OpenVINO: what an OpenVINO user does by hand;
  * the edgeslim search on each profile at each budget (its verified answer), with its wall time and device runs.
Every artifact is then timed side by side in rotating rounds (one agent process per measurement, 1 thread); each
row's latency ratio is against FP32 on its own runtime, and a row "meets" a search's budget when its median is
within that budget in milliseconds (budget x FP32 on the search's runtime). A search is judged against the rows on
its own runtime that meet its budget, and, in columns of their own, against those on any runtime.
Accuracy is on all 10,000 test images. "device runs" counts every agent run a method needed to arrive at its
model; the final side-by-side timing is not counted for anyone. The latency table's error is each measured
search candidate's prediction against its measurement.
Writes benchmarks/results/search_vs_uniform_{model}.{json,md}; the combined benchmarks/results/search_vs_uniform.md
is rebuilt from every model's JSON present.
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

from common import TASKS, rotating_p50s, task_path  # noqa: E402

from edgeslim.evaluate import TaskEvaluator  # noqa: E402
from edgeslim.plan import Plan, set_knob  # noqa: E402
from edgeslim.plugins.pruning import SPARSITY_LEVELS  # noqa: E402
from edgeslim.predictor import error_summary  # noqa: E402
from edgeslim.search import SearchConfig, SearchSession  # noqa: E402

sys.path.insert(0, str(ROOT / "examples" / "fashion_mnist"))
from tasks import make  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TITLES = {"resnet": "FashionResNet (28 px)", "resnet18": "ResNet-18-style (64 px)",
          "mobilenetv2": "MobileNetV2-style (64 px)"}
#: the budget below 0.3x is only asked of the millisecond-scale models
SMALL_MODEL_BUDGETS = (0.5, 0.3)
DEFAULT_SCHEME = "u8s8-per-channel"  # ONNX Runtime quantizer's U8S8 QDQ, what a user writes first
FAST_SCHEME = "qop-u8s8-per-tensor"  # the fastest ONNX Runtime encoding on the models measured here
NNCF_LABEL = "NNCF default PTQ (OpenVINO)"


def session_for(model: str, work: Path, name: str, profile: str = "local-cpu", epochs: int = 0) -> SearchSession:
    return SearchSession(SearchConfig(model=str(task_path(model)), profile=profile, out_dir=str(work / name),
                                      finetune_epochs=epochs))


def int8(plan: Plan, layers: list[str], scheme: str) -> Plan:
    """``plan`` with every layer INT8 in ``scheme``."""
    merged = {name: dict(decisions) for name, decisions in plan["layers"].items()}
    for name in layers:
        merged.setdefault(name, {})["bits"] = 8
    return {"layers": merged, "model": {**plan["model"], "int8_scheme": scheme}}


def recipe_plans(session: SearchSession) -> dict[str, Plan]:
    """label -> plan of every uniform recipe: INT8 alone (two encodings), each channel sparsity and the removal of
    every removable block, alone and with INT8 (the fastest encoding)."""
    layers = [layer.name for layer in session.source.layers]
    empty: Plan = {"layers": {}, "model": {}}
    plans = {"uniform INT8 (U8S8 QDQ)": int8(empty, layers, DEFAULT_SCHEME),
             "uniform INT8 (QOperator U8S8 per tensor)": int8(empty, layers, FAST_SCHEME)}
    knobs: dict[tuple[str, str], list] = {}
    for owner, knob, _ in session.offered_knobs():
        knobs.setdefault((owner, knob.name), []).append(knob)
    pruned: dict[str, Plan] = {}
    for level in SPARSITY_LEVELS[1:]:
        plan = empty
        for knob in knobs.get(("pruning", "sparsity"), []):
            plan = set_knob(plan, knob.layer, knob.name, level, knob.levels[0])
        pruned[f"uniform channels {level:.0%} + KD"] = plan
    blocks = knobs.get(("layer_pruning", "remove"), [])
    if blocks:
        plan = empty
        for knob in blocks:
            plan = set_knob(plan, knob.layer, knob.name, True, False)
        pruned[f"all {len(blocks)} removable blocks removed + KD"] = plan
    for label, plan in pruned.items():
        plans[label] = plan
        plans[f"{label} + INT8"] = int8(plan, layers, FAST_SCHEME)
    return plans


def nncf_ptq(session: SearchSession, out_dir: Path, onnx_path: Path | None = None) -> Path:
    """NNCF's defaults: nncf.quantize on the OpenVINO model (the original, or ``onnx_path``: a recipe's float
    model), calibration images from the task."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path or session.source.onnx_path))
    name = session.source.inputs[0].name
    quantized = nncf.quantize(model, nncf.Dataset([feed[name] for feed in session.calibration]))
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / "model.xml"
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return xml


def time_budgets(specs: list[str]) -> dict[str, float | None]:
    """Each model's search time budget from ``--time-budget``'s SECONDS / MODEL=SECONDS entries, the model's own
    entry first: one run can give the 0.3 ms FashionResNet less time than the millisecond models. Read once,
    before anything is built, so a misspelt model stops the run at once."""
    entries = dict(spec.partition("=")[::2] if "=" in spec else ("", spec) for spec in specs)
    unknown = set(entries) - set(TASKS) - {""}
    if unknown:
        raise SystemExit(f"--time-budget: unknown model(s) {sorted(unknown)}; models are {sorted(TASKS)}")
    chosen = {model: entries.get(model, entries.get("")) for model in TASKS}
    return {model: float(seconds) if seconds else None for model, seconds in chosen.items()}


def run_model(model: str, args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    budgets = [b for b in args.budgets if model != "resnet" or b in SMALL_MODEL_BUDGETS]
    # a rerun with --work reuses the recipes' builds (cached per plan); the searches start afresh
    work = (Path(args.work) / model) if args.work else \
        RESULTS / f"search-vs-uniform-{model}-run-{time.strftime('%Y%m%d-%H%M%S')}"
    rows: dict[str, dict[str, Any]] = {}
    entries: dict[str, tuple[SearchSession, Path]] = {}

    def add(label: str, session: SearchSession, artifact: Path, method: str, runtime: str, device_runs: int,
            wall_s: float, **extra: Any) -> None:
        entries[label] = (session, artifact)
        rows[label] = {"method": method, "runtime": runtime, "device_runs": device_runs,
                       "wall_s": round(wall_s, 1), **extra}
        print(f"[{model}] {label}: built ({wall_s:.0f} s)", flush=True)

    ort_plain = session_for(model, work, "ort")
    add("FP32 (ONNX Runtime)", ort_plain, ort_plain.builder.build({"layers": {}, "model": {}}), "uncompressed",
        "onnxruntime", 0, 0.0)
    ov_plain = session_for(model, work, "openvino", profile="local-cpu-openvino")
    add("FP32 (OpenVINO default)", ov_plain, ov_plain.builder.build({"layers": {}, "model": {}}), "uncompressed",
        "openvino", 0, 0.0)
    t0 = time.time()
    add(NNCF_LABEL, ov_plain, nncf_ptq(ov_plain, work / "nncf"), "nncf", "openvino", 0,
        time.time() - t0)

    recovering = session_for(model, work, "recipes", epochs=args.epochs)
    # a rerun with --work finds the recipes built: their wall time is the one of the run that built them
    walls_file = work / "recipes" / f"build_wall_s_{args.epochs}_epochs.json"
    walls = json.loads(walls_file.read_text()) if walls_file.exists() else {}
    for label, plan in recipe_plans(recovering).items():
        t0 = time.time()
        try:
            artifact = recovering.builder.build(plan)
        except Exception as exc:  # noqa: BLE001 (a recipe that cannot be built is reported, not fatal)
            rows[label] = {"method": "uniform", "runtime": "onnxruntime", "error": str(exc)[:200]}
            print(f"[{model}] {label}: {exc}", flush=True)
            continue
        walls.setdefault(label, time.time() - t0)
        walls_file.write_text(json.dumps(walls, indent=1))
        add(label, recovering, artifact, "uniform", "onnxruntime", 0, walls[label])
        if "INT8" not in label:  # the same float recipe as an OpenVINO user runs it: as is, and through NNCF's PTQ
            slug = label.replace(" ", "_").replace("%", "pct").replace("+", "")
            t0 = time.time()
            add(f"{label} (OpenVINO default)", ov_plain, ov_plain.target.compile(artifact, work / "ov-recipes" / slug),
                "uniform", "openvino", 0, walls[label] + time.time() - t0)
            t0 = time.time()
            add(f"{label} + NNCF PTQ (OpenVINO)", ov_plain, nncf_ptq(ov_plain, work / "ov-recipes" / f"{slug}-nncf",
                                                                     artifact),
                "uniform", "openvino", 0, walls[label] + time.time() - t0)

    errors: dict[str, list[float]] = {}
    repeats: dict[str, list[float]] = {}
    for spec in args.search_profiles:
        profile, _, only = spec.partition(":")
        for ratio in [float(b) for b in only.split(",")] if only else budgets:
            t0 = time.time()
            out_dir = work / f"search-{profile}-{ratio}"
            label = f"edgeslim search on {profile} (budget {ratio}x)"
            config = SearchConfig(model=str(task_path(model)), profile=profile, budget_ratio=ratio,
                                  out_dir=str(out_dir), finetune_epochs=args.epochs, trials=args.trials,
                                  strategy=args.strategy, time_budget_s=args.time_budget[model],
                                  final_epochs=args.final_epochs)
            if (out_dir / "manifest.json").exists():  # a finished search of an interrupted benchmark: reused
                search = SearchSession(config)
                manifest = json.loads((out_dir / "manifest.json").read_text())
                wall = manifest["wall_time_s"]
            else:
                search = SearchSession(config)
                manifest = search.run()
                wall = time.time() - t0
            records = [json.loads(line) for line in (search.run_dir / "candidates.jsonl").read_text().splitlines()]
            errors[label] = [r["details"]["prediction_error"] for r in records
                             if (r.get("details") or {}).get("prediction_error") is not None]
            # the device's own repeatability: an architecture timed by a recipe walk, then measured as a candidate
            repeats[label] = [r["latency"]["p50_ms"] / r["details"]["architecture_timed_before_ms"] - 1
                              for r in records if (r.get("details") or {}).get("architecture_timed_before_ms")
                              and (r.get("latency") or {}).get("p50_ms")]
            info = {"profile": profile, "budget": ratio, "status": manifest["status"],
                    "device_runs_detail": manifest["device_runs"], "phases_s": manifest.get("phases_s"),
                    "plan": manifest["best"]["plan"], "latency_table_error": error_summary(errors[label]),
                    # the baseline the budget was made of: the median of its timings since bfc923a
                    "baseline_ms_in_search": manifest["budget"].get("baseline_ms")
                    or manifest["baseline"]["latency"]["p50_ms"], "notes": manifest["notes"]}
            runtime = search.target.name
            if manifest["best"]["artifact"]:
                add(label, search, search.run_dir / manifest["best"]["artifact"], "search", runtime,
                    manifest["device_runs"]["total"], wall, **info)
            else:
                rows[label] = {"method": "search", "runtime": runtime, "device_runs": manifest["device_runs"]["total"],
                               "wall_s": round(wall, 1), **info}
                print(f"[{model}] {label}: no answer ({manifest['status']})", flush=True)

    p50s = rotating_p50s(entries, args.rounds)
    evaluator = TaskEvaluator(make(model, eval_samples=10000))
    fp32 = {"onnxruntime": p50s["FP32 (ONNX Runtime)"], "openvino": p50s["FP32 (OpenVINO default)"]}
    for label, (session, artifact) in entries.items():
        samples, reference = p50s[label], fp32[rows[label]["runtime"]]
        rows[label].update(p50_ms=statistics.median(samples), p50_range=[min(samples), max(samples)],
                           latency_ratio=statistics.median(samples) / statistics.median(reference),
                           test_accuracy=evaluator.score(session.target.host_session(artifact)))
        print(f"[{model}] {label}: {rows[label]['latency_ratio']:.3f}x, {rows[label]['test_accuracy']:.4f}", flush=True)
    fp32_ms = {runtime: statistics.median(samples) for runtime, samples in fp32.items()}
    verdicts = judge(rows, fp32_ms)
    all_errors = [e for errs in errors.values() for e in errs]
    all_repeats = [e for errs in repeats.values() for e in errs]
    return {"model": model, "title": TITLES[model], "budgets": budgets, "fp32_ms": fp32_ms, "rows": rows,
            "verdicts": verdicts, "latency_table_error": error_summary(all_errors), "signed_errors": all_errors,
            "repeatability": error_summary(all_repeats), "signed_repeats": all_repeats,
            "wall_time_s": round(time.time() - started, 1), "rounds": args.rounds, "recovery_epochs": args.epochs,
            "strategy": args.strategy, "trials": args.trials, "time_budget_s": args.time_budget[model],
            "final_epochs": args.final_epochs,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def judge(rows: dict[str, dict[str, Any]], fp32_ms: dict[str, float]) -> list[dict[str, Any]]:
    """Per search row: the most accurate other row (recipe or NNCF) whose median meets the same budget in ms,
    judged twice on a machine whose speed drifts: at budget x the side-by-side FP32 (everyone timed together),
    and at budget x the FP32 the search itself measured (the milliseconds it aimed at). The rivals are those on the
    search's own runtime (a user who deploys with ONNX Runtime cannot ship an OpenVINO IR), and, apart, those on any
    runtime: where one runtime runs the original model faster than the other's budget, that second view says so."""
    verdicts = []
    for label, row in rows.items():
        if row["method"] != "search":
            continue
        # a search without a verified answer has none to judge: its fastest candidate is timed, not credited
        answered = row.get("status", "ok") == "ok"
        verdict: dict[str, Any] = {"search": label, "answered": answered,
                                   "search_accuracy": row.get("test_accuracy") if answered else None}
        references = {"": fp32_ms[row["runtime"]], "own_": row.get("baseline_ms_in_search")}
        for prefix, reference in references.items():
            if reference is None:
                continue
            budget_ms = row["budget"] * reference
            meets = answered and "p50_ms" in row and row["p50_ms"] <= budget_ms
            verdict.update({f"{prefix}budget_ms": budget_ms, f"{prefix}search_meets_budget": meets})
            for scope, same_runtime_only in (("", True), ("_any_runtime", False)):
                rivals = [(r["test_accuracy"], other) for other, r in rows.items()
                          if r["method"] in ("uniform", "nncf") and "p50_ms" in r and r["p50_ms"] <= budget_ms
                          and (r["runtime"] == row["runtime"] or not same_runtime_only)]
                best_rival = max(rivals, default=(None, None))
                accuracy = verdict["search_accuracy"]
                verdict.update({f"{prefix}best_rival{scope}": best_rival[1],
                                f"{prefix}best_rival{scope}_accuracy": best_rival[0],
                                f"{prefix}margin_points{scope}": None if accuracy is None or best_rival[0] is None
                                else round(100 * (accuracy - best_rival[0]), 2)})
        nncf = rows.get(NNCF_LABEL)
        if row["runtime"] == "openvino" and answered and nncf and "p50_ms" in nncf and "p50_ms" in row:
            # the OpenVINO check: the answer at least as fast as NNCF's default PTQ at no worse accuracy
            verdict["against_nncf"] = {
                "nncf_p50_ms": nncf["p50_ms"], "nncf_accuracy": nncf["test_accuracy"],
                "nncf_meets_budget": nncf["p50_ms"] <= verdict["budget_ms"],
                "search_p50_ms": row["p50_ms"], "search_at_least_as_fast": row["p50_ms"] <= nncf["p50_ms"],
                "search_at_least_as_accurate": row["test_accuracy"] >= nncf["test_accuracy"]}
        verdicts.append(verdict)
    return verdicts


def against_nncf(verdicts: list[dict[str, Any]]) -> list[str]:
    """The OpenVINO answers beside NNCF's default PTQ of the original model, timed in the same rounds."""
    checked = [v for v in verdicts if "against_nncf" in v]
    if not checked:
        return []
    md = ["", "OpenVINO answers against NNCF's default PTQ of the original model (same rounds):", "",
          "| search | answer ms | answer accuracy | NNCF PTQ ms | NNCF PTQ accuracy | NNCF within the budget | "
          "answer at least as fast | answer at least as accurate |", "|---|---|---|---|---|---|---|---|"]
    for v in checked:
        n = v["against_nncf"]
        md.append(f"| {v['search']} | {n['search_p50_ms']:.3f} | {v['search_accuracy']:.4f} | {n['nncf_p50_ms']:.3f} | "
                  f"{n['nncf_accuracy']:.4f} | {'yes' if n['nncf_meets_budget'] else 'no'} | "
                  f"{'yes' if n['search_at_least_as_fast'] else 'no'} | "
                  f"{'yes' if n['search_at_least_as_accurate'] else 'no'} |")
    return md


def markdown(result: dict[str, Any]) -> list[str]:
    rows = result["rows"]
    md = [f"### {result['title']}", "",
          "| method | runtime | test accuracy | p50 ms (range) | vs FP32, same runtime | device runs | wall s |",
          "|---|---|---|---|---|---|---|"]
    for label, row in rows.items():
        if "p50_ms" not in row:
            md.append(f"| {label} | {row['runtime']} | - | {row.get('error') or row.get('status')} | - | "
                      f"{row.get('device_runs', '-')} | {row.get('wall_s', 0):.0f} |")
            continue
        if row.get("status", "ok") != "ok":  # the row is the search's fastest candidate, not an answer
            label = f"{label}: no answer ({row['status']}); its fastest candidate"
        md.append(f"| {label} | {row['runtime']} | {row['test_accuracy']:.4f} | {row['p50_ms']:.3f} "
                  f"({row['p50_range'][0]:.3f}-{row['p50_range'][1]:.3f}) | {row['latency_ratio']:.2f} | "
                  f"{row['device_runs'] or '-'} | {row['wall_s']:.0f} |")
    for prefix, title in (("", "budget x the side-by-side FP32"), ("own_", "budget x the FP32 the search measured")):
        md += ["", f"Judged at {title}:", "",
               "| search | budget ms | search accuracy | meets budget (side by side) | best recipe/peer within the "
               "budget, same runtime | its accuracy | margin (points) | best on any runtime | its accuracy | margin |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for v in result["verdicts"]:
            if f"{prefix}budget_ms" not in v:
                continue
            acc = "no answer" if not v.get("answered", True) else \
                "-" if v["search_accuracy"] is None else f"{v['search_accuracy']:.4f}"
            cells = []
            for scope in ("", "_any_runtime"):
                rival_acc = v.get(f"{prefix}best_rival{scope}_accuracy")
                margin = v.get(f"{prefix}margin_points{scope}")
                cells += [v.get(f"{prefix}best_rival{scope}") or "none meets it",
                          "-" if rival_acc is None else f"{rival_acc:.4f}", "-" if margin is None else f"{margin:+.2f}"]
            md.append(f"| {v['search']} | {v[f'{prefix}budget_ms']:.3f} | {acc} | "
                      f"{'yes' if v[f'{prefix}search_meets_budget'] else 'no'} | " + " | ".join(cells) + " |")
    md += against_nncf(result["verdicts"])
    err = result["latency_table_error"]
    if err.get("n"):
        md += ["", f"Latency table error over {err['n']} measured search candidates: median |error| "
               f"{err['median_abs_pct']:.1f}%, p90 {err['p90_abs_pct']:.1f}%, max {err['max_abs_pct']:.1f}%; "
               f"within ±10%: {sum(abs(e) <= 0.10 for e in result['signed_errors'])} of {err['n']}."]
    rep = result.get("repeatability") or {}
    if rep.get("n"):
        md += ["", f"The device against itself: {rep['n']} architectures timed by a recipe walk and measured again "
               f"as candidates in the same search differed by a median {rep['median_abs_pct']:.1f}% (p90 "
               f"{rep['p90_abs_pct']:.1f}%, max {rep['max_abs_pct']:.1f}%); within ±10%: "
               f"{sum(abs(e) <= 0.10 for e in result['signed_repeats'])} of {rep['n']}. No table can be nearer to a "
               "single measurement than the measurement is to itself."]
    md += ["", f"{result['rounds']} rotating rounds, one agent process per measurement, 1 thread; FP32 median "
           f"{result['fp32_ms']['onnxruntime']:.3f} ms (ONNX Runtime), {result['fp32_ms']['openvino']:.3f} ms "
           f"(OpenVINO); strategy {result['strategy']}, recovery {result['recovery_epochs']} epoch(s) of distillation "
           f"on 10k training images; "
           + (f"--time-budget {result['time_budget_s']:g} s per search; " if result.get("time_budget_s") else "")
           + f"run {result['date']}, {result['wall_time_s']:.0f} s wall.", ""]
    return md


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.3, 0.2])
    parser.add_argument("--search-profiles", nargs="+", default=["local-cpu", "local-cpu-openvino"],
                        help="PROFILE or PROFILE:B1,B2 (that profile at those budgets only)")
    parser.add_argument("--strategy", default="knapsack")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1, help="recovery epochs (search and uniform pruning)")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--final-epochs", type=int, default=None,
                        help="the answer's final recovery epochs (default: the search's, 3 x --epochs); on the 64 px "
                             "models each epoch is about 2 minutes here, most of a search's time past --time-budget")
    parser.add_argument("--time-budget", nargs="+", default=[],
                        help="each search's --time-budget in seconds: SECONDS for every model, MODEL=SECONDS for "
                             "one (e.g. 600 resnet=300); default: none, --trials bounds it")
    parser.add_argument("--render-only", action="store_true",
                        help="judge and write the tables again from the JSON files present; measure nothing")
    parser.add_argument("--work", help="work folder (default: a new one under benchmarks/results)")
    parser.add_argument("--tag", help="write search_vs_uniform_MODEL_TAG.{json,md} and leave the combined table and "
                                      "the full runs' files alone (a re-run of a few budgets)")
    args = parser.parse_args()
    args.time_budget = time_budgets(args.time_budget)
    for model in [] if args.render_only else args.models:
        result = run_model(model, args)
        result["command"] = "python benchmarks/search_vs_uniform.py " + " ".join(sys.argv[1:])
        name = f"search_vs_uniform_{model}" + (f"_{args.tag}" if args.tag else "")
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
        (RESULTS / f"{name}.md").write_text("\n".join(markdown(result)))
        print("\n".join(markdown(result)), flush=True)
    if args.tag:
        return
    combined = ["# Search vs uniform recipes and NNCF, side by side", ""]
    # the models this run measured (or --render-only was given with --models): a run of two models does not
    # re-judge a third model's older file under newer rules, nor put that file's machine beside this one's
    for model in args.models:
        path = RESULTS / f"search_vs_uniform_{model}.json"
        if path.exists():
            result = json.loads(path.read_text())
            result["verdicts"] = judge(result["rows"], result["fp32_ms"])
            if args.render_only:
                path.write_text(json.dumps(result, indent=2))
                (RESULTS / f"search_vs_uniform_{model}.md").write_text("\n".join(markdown(result)))
            combined += [f"`{result['command']}`", "", *markdown(result)]
    (RESULTS / "search_vs_uniform.md").write_text("\n".join(combined))


if __name__ == "__main__":
    main()
