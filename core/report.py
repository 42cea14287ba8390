"""The human side of a run directory: ``report.md`` and the terminal summary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeslim.errors import EdgeslimError


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _plan_text(plan: dict[str, Any] | None) -> str:
    if not plan:
        return "(uncompressed)"
    parts = [f"{layer}: " + ",".join(f"{k}={v}" for k, v in sorted(d.items()))
             for layer, d in sorted(plan.get("layers", {}).items())]
    parts += [f"{k}={v}" for k, v in sorted(plan.get("model", {}).items())]
    return "; ".join(parts) or "(uncompressed)"


def write_report(run_dir: Path, manifest: dict[str, Any], records: list[dict[str, Any]]) -> None:
    best, base = manifest["best"], manifest["baseline"]
    metric = manifest["metric"]["name"]
    lines = [
        f"# edgeslim report: {manifest['model']} on {manifest['profile']}",
        "",
        f"- status: **{manifest['status']}**",
        f"- budget: {_fmt(manifest['budget']['latency_ms'])} ms ({manifest['budget']['statistic']})"
        + (f", {manifest['budget']['ratio']} x baseline" if manifest['budget']['ratio'] else ""),
        f"- baseline: p50 {_fmt(base['latency']['p50_ms'])} ms, {metric} {_fmt(base['metric']['value'], 4)}",
        f"- best: p50 {_fmt(best['latency'].get('p50_ms'))} ms, {metric} {_fmt(best['metric'].get('value'), 4)}, "
        f"meets budget: {best['meets_budget']}",
    ]
    if best.get("verification"):
        v = best["verification"]
        lines.append(f"- verification: {v['method']}: baseline {_fmt(v['reference_p50_ms'])} ms "
                     f"[{_fmt(v['reference_min_ms'])}-{_fmt(v['reference_max_ms'])}], best "
                     f"{_fmt(v['candidate_p50_ms'])} ms [{_fmt(v['candidate_min_ms'])}-{_fmt(v['candidate_max_ms'])}]"
                     f", speed-up {1 / v['ratio']:.2f}x")
    lines += [f"- best plan: {_plan_text(best.get('plan'))}", f"- metric: {manifest['metric']['description']}", ""]
    if manifest["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in manifest["notes"]] + [""]
    lines += ["## Candidates", "", f"| key | purpose | p50 ms | p90 ms | cv | {metric} | status | plan |",
              "|---|---|---|---|---|---|---|---|"]
    for r in records:
        lat = r.get("latency") or {}
        lines.append(f"| {r['key'][:10]} | {r['purpose']} | {_fmt(lat.get('p50_ms'))} | {_fmt(lat.get('p90_ms'))} | "
                     f"{_fmt(lat.get('cv'), 2)} | {_fmt(r.get('metric'), 4)} | {r['status']} | "
                     f"{_plan_text(r['plan'])[:120]} |")
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")


def summary_table(manifest: dict[str, Any]) -> Table:
    metric = manifest["metric"]["name"]
    table = Table(title=f"edgeslim: {manifest['model']} on {manifest['profile']} ({manifest['status']})")
    for col in ("model", "p50 ms", "p90 ms", "speed-up", metric, "meets budget"):
        table.add_column(col, justify="right" if col != "model" else "left")
    base, best = manifest["baseline"], manifest["best"]
    budget = manifest["budget"]["latency_ms"]
    table.add_row("baseline (FP32)", _fmt(base["latency"]["p50_ms"]), _fmt(base["latency"]["p90_ms"]), "1.00x",
                  _fmt(base["metric"]["value"], 4), "-")
    base_ms = base["latency"]["p50_ms"]
    label = "best (verified)" if best["meets_budget"] else "fastest (budget missed)"
    best_ms = best["latency"].get("p50_ms")
    speedup = best.get("speedup") or (base_ms / best_ms if best_ms else None)
    table.add_row(label, _fmt(best_ms), _fmt(best["latency"].get("p90_ms")),
                  f"{speedup:.2f}x" if speedup else "-", _fmt(best["metric"].get("value"), 4),
                  f"{best['meets_budget']} (budget {_fmt(budget)} ms)")
    return table


def load_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise EdgeslimError(f"{run_dir} holds no manifest.json: not a finished edgeslim run directory")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise EdgeslimError(f"{path} is damaged: {exc}") from None


def print_report(run_dir: Path, console: Console) -> dict[str, Any]:
    manifest = load_manifest(run_dir)
    console.print(summary_table(manifest))
    best = manifest["best"]
    console.print(f"best plan: {escape(_plan_text(best.get('plan')))}", highlight=False)
    for note in manifest.get("notes", []):
        console.print(f"note: {escape(note)}", highlight=False)
    console.print(f"report: {run_dir / 'report.md'}")
    return manifest
