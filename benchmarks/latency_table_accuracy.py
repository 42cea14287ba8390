"""How far the latency table's predictions are from the device, on random per-layer plans, as a search uses it.

    python benchmarks/latency_table_accuracy.py [--models resnet18 mobilenetv2 resnet] [--plans 30]
        [--profiles local-cpu local-cpu-openvino] [--seed 0] [--knobs bits sparsity rank remove]

Per model and profile: the speed gate's INT8 encoding is found as the search finds it (the fastest uniform INT8
probe), the table is measured (uniform probes, profiled per node on the device), then ``--plans`` random
per-layer plans (each layer INT8 or not, and a channel sparsity of 0/25/50/75%; with ``--knobs ... rank`` a
low-rank level too, where the layer offers one; with ``remove`` some removable blocks removed) are each built,
predicted at the precision each layer runs at (read back from the build, as the search does) *before* they are
measured, and then fed back as the search feeds its candidates (online correction). The error of every
prediction against the measurement is reported, all of them and after the first five corrections, with the share
within ±10%. Then every plan is measured once more: how far the device's own second measurement is from its
first (the floor for predicting a single measurement here), and the error against the mean of both.
Builds are one-shot (no recovery): latency does not depend on the weights' values.
Writes benchmarks/results/latency_table_accuracy.{json,md} (other ``--knobs``: ..._<knobs>.{json,md}).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples" / "fashion_mnist"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import TASKS, task_path  # noqa: E402

from edgeslim.plan import Plan  # noqa: E402
from edgeslim.plugins.pruning import SPARSITY_LEVELS  # noqa: E402
from edgeslim.predictor import error_summary  # noqa: E402
from edgeslim.search import SearchConfig, SearchSession  # noqa: E402
from edgeslim.strategy_view import SessionView  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: corrections after which the table is judged (the search's first measurements are its uniform recipes)
WARMUP = 5


def random_plan(rng: random.Random, layers: list[str], prunable: set[str], model: dict[str, Any],
                rank_levels: dict[str, tuple[Any, ...]] | None = None, removable: list[str] | None = None) -> Plan:
    decisions: dict[str, dict[str, Any]] = {}
    int8_share, prune_share, rank_share = rng.random(), rng.random(), rng.random()
    # drawn only with ``--knobs ... remove``, so the default knobs' plans stay those of earlier runs
    remove_share = rng.random() if removable else 0.0
    for block in removable or []:
        if rng.random() < remove_share:
            decisions[block] = {"remove": True}
    for name in layers:
        chosen: dict[str, Any] = {}
        if rng.random() < int8_share:
            chosen["bits"] = 8
        if name in prunable and rng.random() < prune_share:
            chosen["sparsity"] = rng.choice(SPARSITY_LEVELS[1:])
        if name in (rank_levels or {}) and rng.random() < rank_share:
            chosen["rank"] = rng.choice(rank_levels[name][1:])
        if chosen:
            decisions[name] = chosen
    return {"layers": decisions, "model": dict(model)}


def run(model: str, profile: str, plans: int, seed: int, work: Path, knob_names: tuple[str, ...] = ("bits", "sparsity")
        ) -> dict[str, Any]:
    started = time.time()
    session = SearchSession(SearchConfig(model=str(task_path(model)),
                                         profile=profile, out_dir=str(work / f"{model}-{profile}")))
    session.measure_baseline()
    view = SessionView(session)
    from edgeslim.speed_gate import speed_gate

    base = speed_gate(view, set())
    knobs = [k for owner, k, fast in session.offered_knobs()
             if fast and k.layer is not None and k.name in knob_names]
    predictor = session.build_predictor(base, knobs)
    assert predictor is not None, "the target gave no per-node profile"
    # the same table without the float-INT8 boundary price, corrected by the same measurements (the speed gate's
    # uniform INT8 candidates, already fed to the table, included: they have no boundaries): what the price adds
    unpriced = dataclasses.replace(predictor, price_boundaries=False, points=[],
                                   candidate_points=list(predictor.candidate_points))
    # and without the low-rank + INT8 probes (before they were probed, rank and INT8 multiplied)
    unpaired = dataclasses.replace(predictor, probes=[p for p in predictor.probes if p.knob != "rank+bits"],
                                   points=[], candidate_points=list(predictor.candidate_points))
    # and with a combined probe's rest summed from the single probes' (before 54bf150)
    summed_rest = dataclasses.replace(predictor, combined_rest=False, points=[],
                                      candidate_points=list(predictor.candidate_points))
    # and with a probe's untouched layers kept at their baseline time (before the untouched ratios)
    untouched_fixed = dataclasses.replace(predictor, untouched_rest=False, points=[],
                                          candidate_points=list(predictor.candidate_points))
    # and predicting the plan as planned, not at the precision each layer runs at (before as_run)
    as_planned = dataclasses.replace(predictor, points=[], candidate_points=list(predictor.candidate_points))
    layers = [layer.name for layer in session.source.layers]
    prunable = {k.layer for k in knobs if k.name == "sparsity"}
    rank_levels = {k.layer: k.levels for k in knobs if k.name == "rank"}
    removable = [k.layer for k in knobs if k.name == "remove"]
    rng = random.Random(seed)
    points = []
    for i in range(plans):
        plan = random_plan(rng, layers, prunable, base["model"], rank_levels, removable)
        artifact = session.builder.build(plan, "one_shot")
        run = predictor.as_run(plan, session.builder.precision_details(plan, artifact))  # as the search predicts
        predicted, predicted_unpriced, predicted_unpaired, predicted_summed, predicted_planned, predicted_fixed = (
            predictor.predict(run), unpriced.predict(run), unpaired.predict(run), summed_rest.predict(run),
            as_planned.predict(plan), untouched_fixed.predict(run))
        stats = session.device.measure(artifact)
        if not stats.usable:
            continue
        for table in (predictor, unpriced, unpaired, summed_rest, untouched_fixed):
            table.observe(run, stats.p50_ms)
        as_planned.observe(plan, stats.p50_ms)
        points.append({"plan": plan, "predicted_ms": predicted, "measured_ms": stats.p50_ms,
                       "error": predicted / stats.p50_ms - 1, "index": i, "boundaries": predictor.boundaries(plan),
                       "error_without_boundary_price": predicted_unpriced / stats.p50_ms - 1,
                       "error_without_rank_int8_probe": predicted_unpaired / stats.p50_ms - 1,
                       "error_with_summed_rest": predicted_summed / stats.p50_ms - 1,
                       "error_as_planned": predicted_planned / stats.p50_ms - 1,
                       "error_untouched_fixed": predicted_fixed / stats.p50_ms - 1})
        print(f"{model} {profile} {i}: predicted {predicted:.3f} ms, measured {stats.p50_ms:.3f} ms "
              f"({predicted / stats.p50_ms - 1:+.1%})", flush=True)
    # the device's own repeatability: every plan measured once more, after all of them (minutes apart). No
    # table can predict a measurement closer than the measurement repeats itself.
    for point in points:
        again = session.device.measure(session.builder.build(point["plan"], "one_shot"))
        if again.usable:
            point["remeasured_ms"] = again.p50_ms
            point["repeat_error"] = again.p50_ms / point["measured_ms"] - 1
            point["error_vs_both"] = point["predicted_ms"] / ((point["measured_ms"] + again.p50_ms) / 2) - 1
    errors = [p["error"] for p in points]
    repeats = [p["repeat_error"] for p in points if "repeat_error" in p]
    against_both = [p["error_vs_both"] for p in points if "error_vs_both" in p]
    late = [p["error"] for p in points if p["index"] >= WARMUP]
    unpriced_errors = [p["error_without_boundary_price"] for p in points]
    unpaired_errors = [p["error_without_rank_int8_probe"] for p in points]
    summed_errors = [p["error_with_summed_rest"] for p in points]
    planned_errors = [p["error_as_planned"] for p in points]
    fixed_errors = [p["error_untouched_fixed"] for p in points]
    return {"model": model, "profile": profile, "knobs": list(knob_names), "baseline_ms": view.baseline_ms,
            "gate": base["model"],
            "without_rank_int8_probe": error_summary(unpaired_errors),
            "without_rank_int8_probe_within_10pct": sum(abs(e) <= 0.10 for e in unpaired_errors) / max(1, len(errors)),
            "with_summed_rest": error_summary(summed_errors),
            "with_summed_rest_within_10pct": sum(abs(e) <= 0.10 for e in summed_errors) / max(1, len(errors)),
            "as_planned": error_summary(planned_errors),
            "as_planned_within_10pct": sum(abs(e) <= 0.10 for e in planned_errors) / max(1, len(errors)),
            "untouched_fixed": error_summary(fixed_errors),
            "untouched_fixed_within_10pct": sum(abs(e) <= 0.10 for e in fixed_errors) / max(1, len(errors)),
            "probes": len(predictor.probes), "all": error_summary(errors), "after_warmup": error_summary(late),
            "ms_per_int8_boundary": predictor.boundary_ms, "without_boundary_price": error_summary(unpriced_errors),
            "without_boundary_price_within_10pct": sum(abs(e) <= 0.10 for e in unpriced_errors) / max(1, len(errors)),
            "within_10pct_all": sum(abs(e) <= 0.10 for e in errors) / max(1, len(errors)),
            "within_10pct_after_warmup": sum(abs(e) <= 0.10 for e in late) / max(1, len(late)),
            "repeatability": error_summary(repeats),
            "repeat_within_10pct": sum(abs(e) <= 0.10 for e in repeats) / max(1, len(repeats)),
            "against_both": error_summary(against_both),
            "against_both_within_10pct": sum(abs(e) <= 0.10 for e in against_both) / max(1, len(against_both)),
            "points": points, "wall_s": round(time.time() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenetv2", "resnet"], choices=list(TASKS))
    parser.add_argument("--profiles", nargs="+", default=["local-cpu", "local-cpu-openvino"])
    parser.add_argument("--plans", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--knobs", nargs="+", default=["bits", "sparsity"],
                        choices=["bits", "sparsity", "rank", "remove"])
    args = parser.parse_args()
    work = RESULTS / f"latency-table-run-{time.strftime('%Y%m%d-%H%M%S')}"
    results = []
    for model in args.models:
        for profile in args.profiles:
            results.append(run(model, profile, args.plans, args.seed, work, tuple(args.knobs)))
            write(results, args.knobs)  # after each: a later model's failure keeps the finished ones


def write(results: list[dict[str, Any]], knobs: list[str]) -> None:
    # the default knobs keep the file the README quotes; other knobs write beside it
    stem = "latency_table_accuracy" + ("" if knobs == ["bits", "sparsity"] else "_" + "_".join(knobs))
    out = {"command": "python benchmarks/latency_table_accuracy.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M"), "results": results}
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=2))
    md = ["| model | profile | FP32 ms | INT8 encoding | plans | median abs error | p90 | within ±10% (all) | "
          f"within ±10% (after {WARMUP} corrections) | device repeats itself: median, within ±10% | "
          "error against both measurements' mean: median, within ±10% | ms per float-INT8 boundary | "
          "without the boundary price: median, within ±10% | without the low-rank + INT8 probe: median, within "
          "±10% | a combined probe's rest summed from the singles': median, within ±10% | as planned, not as run: "
          "median, within ±10% | untouched layers at their baseline time: median, within ±10% |", "|---" * 17 + "|"]
    for r in results:
        errors, repeat, both = r["all"], r["repeatability"], r["against_both"]
        md.append(f"| {r['model']} | {r['profile']} | {r['baseline_ms']:.3f} | {r['gate'].get('int8_scheme', '-')} | "
                  f"{errors['n']} | {errors.get('median_abs_pct', 0):.1f}% | {errors.get('p90_abs_pct', 0):.1f}% | "
                  f"{r['within_10pct_all']:.0%} | {r['within_10pct_after_warmup']:.0%} | "
                  f"{repeat.get('median_abs_pct', 0):.1f}%, {r['repeat_within_10pct']:.0%} | "
                  f"{both.get('median_abs_pct', 0):.1f}%, {r['against_both_within_10pct']:.0%} | "
                  f"{r.get('ms_per_int8_boundary', 0):.4f} | "
                  + (f"{r['without_boundary_price'].get('median_abs_pct', 0):.1f}%, "
                     f"{r['without_boundary_price_within_10pct']:.0%} |" if "without_boundary_price" in r else "- |")
                  + (f" {r['without_rank_int8_probe'].get('median_abs_pct', 0):.1f}%, "
                     f"{r['without_rank_int8_probe_within_10pct']:.0%} |" if "rank" in r.get("knobs", []) else " - |")
                  + (f" {r['with_summed_rest'].get('median_abs_pct', 0):.1f}%, "
                     f"{r['with_summed_rest_within_10pct']:.0%} |" if "with_summed_rest" in r else " - |")
                  + (f" {r['as_planned'].get('median_abs_pct', 0):.1f}%, {r['as_planned_within_10pct']:.0%} |"
                     if "as_planned" in r else " - |")
                  + (f" {r['untouched_fixed'].get('median_abs_pct', 0):.1f}%, {r['untouched_fixed_within_10pct']:.0%} |"
                     if "untouched_fixed" in r else " - |"))
    md += ["", f"`{out['command']}` ({out['date']}): random per-layer plans (INT8 or not, channel sparsity 0-75% per "
           f"layer{', a low-rank level where the layer offers one' if 'rank' in knobs else ''}"
           f"{', some removable blocks removed' if 'remove' in knobs else ''}), each predicted "
           "before it was measured, then fed back as a search's candidate is. \"device repeats "
           "itself\": every plan measured once more after all of them, against its first measurement: the floor no "
           "prediction of a single measurement can beat on this machine."]
    (RESULTS / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
