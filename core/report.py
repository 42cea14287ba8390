"""The human side of a run directory: ``report.md`` and the terminal summary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeslim.charts import fmt, model_decisions, plan_text, svg_scatter, target_text
from edgeslim.errors import EdgeslimError


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def _predictor_text(manifest: dict[str, Any]) -> str:
    """One sentence on the latency table, or why there was none."""
    predictor = manifest.get("predictor")
    if not predictor:
        return "No latency table: every candidate the strategy proposed was measured."
    err = predictor["error"]
    quality = (f"its prediction before each of {err['n']} measurements was off by a median "
               f"{err['median_abs_pct']:.1f}% (p90 {err['p90_abs_pct']:.1f}%, max {err['max_abs_pct']:.1f}%)"
               if err.get("n") else "no candidate was measured after it was built")
    return (f"Ranking by a latency table of {predictor['entries']} per-layer entries from {predictor['probes']} "
            f"probes profiled on the device, corrected online (scale {predictor['correction']['scale']:.2f}, "
            f"offset {predictor['correction']['offset_ms']:.3f} ms); {quality}; "
            + ("the model is too fast for per-node timings to be trusted, so the table only ranked and every "
               "candidate proposed was measured." if predictor.get("ranks_only") else
               f"{manifest.get('candidates_skipped_by_predictor', 0)} candidate(s) predicted over the budget "
               f"+{100 * predictor['near_budget']:.0f}% were not measured.")
            + " The budget was judged on measurements only.")


def _device_runs_text(manifest: dict[str, Any]) -> str:
    """What the answer cost on the device, and how far the latency table was off (the terminal's one line)."""
    runs = manifest.get("device_runs")
    if not runs:  # manifests written before the latency table existed
        return ""
    text = (f"device runs: {runs['total']} ({runs['candidates']} candidates, {runs['latency_table']} latency-table "
            f"probes, {runs['verification']} verification, {runs.get('baseline', 0)} baseline re-timings)")
    err = (manifest.get("predictor") or {}).get("error") or {}
    if err.get("n"):
        text += (f"; latency table off by a median {err['median_abs_pct']:.1f}% (max {err['max_abs_pct']:.1f}%) "
                 f"over {err['n']} measured candidates, {manifest.get('candidates_skipped_by_predictor', 0)} "
                 f"not measured")
    return text


def _phases_text(manifest: dict[str, Any]) -> str:
    """Where the wall time went, phase by phase (the manifest's ``phases_s``), or "" for older manifests."""
    phases = manifest.get("phases_s") or {}
    if not phases:
        return ""
    parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in phases.items())
    return f"wall time {manifest.get('wall_time_s', sum(phases.values())):.0f} s: {parts}"


def write_report(run_dir: Path, manifest: dict[str, Any], records: list[dict[str, Any]]) -> None:
    best, base = manifest["best"], manifest["baseline"]
    metric = manifest["metric"]["name"]
    lines = [
        f"# edgeslim report: {manifest['model']} on {manifest['profile']}",
        "",
        f"- status: **{manifest['status']}**",
        f"- budget: {fmt(manifest['budget']['latency_ms'])} ms ({manifest['budget']['statistic']})"
        + (f", {manifest['budget']['ratio']} x baseline" if manifest['budget']['ratio'] else ""),
        f"- baseline: p50 {fmt(base['latency']['p50_ms'])} ms, {metric} {fmt(base['metric']['value'], 4)}",
        f"- best: p50 {fmt(best['latency'].get('p50_ms'))} ms, {metric} {fmt(best['metric'].get('value'), 4)}, "
        f"meets budget: {best['meets_budget']}",
    ]
    if best.get("verification"):
        v = best["verification"]
        lines.append(f"- verification: {v['method']}: baseline {fmt(v['reference_p50_ms'])} ms "
                     f"[{fmt(v['reference_min_ms'])}-{fmt(v['reference_max_ms'])}], best "
                     f"{fmt(v['candidate_p50_ms'])} ms [{fmt(v['candidate_min_ms'])}-{fmt(v['candidate_max_ms'])}]"
                     f", speed-up {1 / v['ratio']:.2f}x")
    lines += [f"- {plan_label(best)}: {plan_text(best.get('plan'))}", f"- metric: {manifest['metric']['description']}",
              f"- {_predictor_text(manifest)}"] + ([f"- {phases}"] if (phases := _phases_text(manifest)) else []) + [""]
    if manifest["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in manifest["notes"]] + [""]
    lines += ["## Candidates", "",
              f"| key | purpose | p50 ms | predicted ms | p90 ms | cv | {metric} | status | plan |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lat = r.get("latency") or {}
        lines.append(f"| {r['key'][:10]} | {r['purpose']} | {fmt(lat.get('p50_ms'))} | "
                     f"{fmt((r.get('details') or {}).get('predicted_ms'))} | {fmt(lat.get('p90_ms'))} | "
                     f"{fmt(lat.get('cv'), 2)} | {fmt(r.get('metric'), 4)} | {r['status']} | "
                     f"{plan_text(r['plan'])[:120]} |")
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")


def summary_table(manifest: dict[str, Any]) -> Table:
    metric = manifest["metric"]["name"]
    table = Table(title=f"edgeslim: {manifest['model']} on {manifest['profile']} ({manifest['status']})")
    for col in ("model", "p50 ms", "p90 ms", "speed-up", metric, "meets budget"):
        table.add_column(col, justify="right" if col != "model" else "left")
    base, best = manifest["baseline"], manifest["best"]
    budget = manifest["budget"]["latency_ms"]
    table.add_row("baseline (FP32)", fmt(base["latency"]["p50_ms"]), fmt(base["latency"]["p90_ms"]), "1.00x",
                  fmt(base["metric"]["value"], 4), "-")
    base_ms = base["latency"]["p50_ms"]
    label = "best (verified)" if best["meets_budget"] else "fastest (budget missed)"
    best_ms = best["latency"].get("p50_ms")
    speedup = best.get("speedup") or (base_ms / best_ms if best_ms else None)
    table.add_row(label, fmt(best_ms), fmt(best["latency"].get("p90_ms")),
                  f"{speedup:.2f}x" if speedup else "-", fmt(best["metric"].get("value"), 4),
                  f"{best['meets_budget']} (budget {fmt(budget)} ms)")
    return table


def plan_label(best: dict[str, Any]) -> str:
    """What the plan shown is: the answer, or only the fastest candidate when nothing met the budget."""
    return "best plan" if best.get("meets_budget") else "fastest candidate's plan (budget missed, not an answer)"


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
    if manifest.get("multi_device"):
        return _print_multi(run_dir, manifest, console)
    console.print(summary_table(manifest))
    best = manifest["best"]
    console.print(f"{plan_label(best)}: {escape(plan_text(best.get('plan')))}", highlight=False)
    if runs := _device_runs_text(manifest):
        console.print(runs, highlight=False)
    if phases := _phases_text(manifest):
        console.print(phases, highlight=False)
    for note in manifest.get("notes", []):
        console.print(f"note: {escape(note)}", highlight=False)
    html = write_html_report(run_dir, manifest, load_records(run_dir))
    console.print(f"report: {run_dir / 'report.md'}, {html}")
    return manifest


def _print_multi(run_dir: Path, manifest: dict[str, Any], console: Console) -> dict[str, Any]:
    for name, device in manifest["devices"].items():
        sub = load_manifest(run_dir / device["run_dir"])
        console.print(summary_table(sub))
        console.print(f"{escape(name)}: {plan_label(sub['best'])}: {escape(plan_text(sub['best'].get('plan')))}",
                      highlight=False)
        if runs := _device_runs_text(sub):
            console.print(f"{escape(name)}: {runs}", highlight=False)
        write_html_report(run_dir / device["run_dir"], sub, load_records(run_dir / device["run_dir"]))
    shared = manifest["shared_evaluations"]
    console.print(f"shared across devices: {shared['builds_reused']} built models, {shared['metrics_reused']} metrics")
    console.print(f"report: {run_dir / 'report.md'}, {run_dir / 'report.html'}")
    return manifest


# --- HTML report ------------------------------------------------------------------------------------------

def _plot_points(manifest: dict[str, Any], records: list[dict[str, Any]]
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(accuracy-latency points, accuracy-size points) of every measured and scored candidate."""
    metric = manifest["metric"]["name"]
    best, base = manifest["best"], manifest["baseline"]
    measured = [r for r in records if (r.get("latency") or {}).get("p50_ms") and r.get("metric") is not None]

    def role(r: dict[str, Any]) -> str:
        return "best" if r["key"] == best.get("key") else "baseline" if r["key"] == base.get("key") else ""

    latency_points = [{"x": r["latency"]["p50_ms"], "y": r["metric"], "role": role(r),
                       "label": f"{r['key'][:10]} {r['purpose']}: p50 {r['latency']['p50_ms']:.4g} ms, {metric} "
                                f"{r['metric']:.4f} ({r['status']}); {plan_text(r['plan'])}"} for r in measured]
    sizes = {}
    for r in measured:
        d = r.get("details") or {}
        if d.get("artifact_bytes"):
            sizes[r["key"]] = min(v for v in (d["artifact_bytes"], d.get("packed_bytes"),
                                              d.get("deep_compression_bytes")) if v)
    scale, unit = (1e6, "MB") if max(sizes.values(), default=0) >= 1e7 else (1e3, "kB")
    size_points = [{"x": sizes[r["key"]] / scale, "y": r["metric"], "role": role(r), "unit": unit,
                    "label": f"{r['key'][:10]}: {sizes[r['key']] / scale:.1f} {unit}, {metric} {r['metric']:.4f}; "
                             f"{plan_text(r['plan'])}"} for r in measured if r["key"] in sizes]
    return latency_points, size_points


def _layer_rows(manifest: dict[str, Any]) -> str:
    """The chosen model's per-layer decisions and what each layer really runs as, as HTML table rows."""
    from html import escape as h

    best = manifest["best"]
    plan = best.get("plan") or {"layers": {}, "model": {}}
    precision = best.get("effective_precision") or {}
    return "".join(
        f"<tr><td>{h(layer['name'])}</td><td>{h(layer['op'])}</td><td>{layer['params']:,}</td>"
        f"<td>{h(', '.join(f'{k}={v}' for k, v in sorted(plan['layers'].get(layer['name'], {}).items())) or '-')}"
        f"</td><td>{h(str(precision.get(layer['name'], '-')))}</td></tr>" for layer in manifest.get("layers", []))


def _candidate_rows(records: list[dict[str, Any]]) -> str:
    from html import escape as h

    return "".join(
        f"<tr><td>{r['key'][:10]}</td><td>{h(r['purpose'])}</td><td>{fmt((r.get('latency') or {}).get('p50_ms'))}"
        f"</td><td>{fmt((r.get('details') or {}).get('predicted_ms'))}</td>"
        f"<td>{_pct((r.get('details') or {}).get('prediction_error'))}</td>"
        f"<td>{fmt((r.get('latency') or {}).get('cv'), 2)}</td><td>{fmt(r.get('metric'), 4)}</td>"
        f"<td>{h(r['status'])}</td><td>{h(plan_text(r['plan']))}</td></tr>" for r in records)


def _measurement_items(manifest: dict[str, Any]) -> str:
    """How every number was measured, as HTML list items."""
    from html import escape as h

    measurement = manifest.get("measurement", {})
    verification = manifest["best"].get("verification") or {}
    return f"""<li>Latency: {h(str(measurement.get('how', '')))}; where: {h(str(measurement.get('where', '')))};
warm-up {measurement.get('warmup')}, at least {measurement.get('min_runs')} runs and {measurement.get('min_seconds')}
s per measurement, re-measured when cv &gt; {measurement.get('max_cv')}.</li>
<li>The chosen model was verified against the baseline: {h(str(verification.get('method', 'not verified')))}
(baseline {fmt(verification.get('reference_p50_ms'))} ms, chosen {fmt(verification.get('candidate_p50_ms'))} ms).</li>
<li>{_predictor_text(manifest)}</li>
<li>Agent runs on the device for this run: {h(json.dumps(manifest.get('device_runs', {})))}.</li>
<li>{h(_phases_text(manifest) or 'wall time per phase: not recorded')}.</li>
<li>{h(manifest['metric']['name'])}: {h(manifest['metric']['description'])}.</li>
<li>Recovery: {h(json.dumps(manifest.get('recovery', {})))}.</li>
<li>Versions: {h(json.dumps(manifest.get('versions', {})))}.</li>"""


def write_html_report(run_dir: Path, manifest: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    """``report.html``: one page, no scripts, no downloads: the accuracy-latency Pareto plot (and accuracy-size
    where sizes differ), the chosen model's per-layer plan, how every number was measured, all candidates."""
    from html import escape as h

    metric = manifest["metric"]["name"]
    best, base = manifest["best"], manifest["baseline"]
    plan = best.get("plan") or {"layers": {}, "model": {}}
    latency_points, size_points = _plot_points(manifest, records)
    distinct_sizes = len({p["x"] for p in size_points}) > 1
    best_ms = best["latency"].get("p50_ms")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgeslim: {h(str(manifest['model']))} on {h(manifest['profile'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}
.plot text{{font-size:11px}} code{{background:#f4f4f4}}</style></head><body>
<h1>edgeslim: {h(str(manifest['model']))} on {h(manifest['profile'])}</h1>
<p>Status <b>{h(manifest['status'])}</b>. Target {h(target_text(manifest['target']))}. Budget
{fmt(manifest['budget']['latency_ms'])} ms ({h(manifest['budget']['statistic'])}).
Baseline p50 {fmt(base['latency']['p50_ms'])} ms, {h(metric)} {fmt(base['metric']['value'], 4)}.
Chosen model p50 {fmt(best_ms)} ms, {h(metric)} {fmt(best['metric'].get('value'), 4)},
meets budget: {best['meets_budget']}{f", speed-up {best['speedup']:.2f}x" if best.get('speedup') else ''}.</p>
<h2>Accuracy vs measured latency</h2>
<p>Every candidate measured on the device (p50 of its timed runs). Green: the Pareto front; orange: the chosen
model; blue: the baseline; red: the budget. Hover a point for its plan.</p>
{svg_scatter(latency_points, 'p50 latency (ms), measured', metric, manifest['budget']['latency_ms'])}
{('<h2>Accuracy vs size</h2><p>Smallest stored form of each candidate (the artifact, or its packed file).</p>'
  + svg_scatter(size_points, f"size ({size_points[0]['unit']})", metric)) if distinct_sizes else ''}
<h2>The chosen model, layer by layer</h2>
<p>Model-wide: {h(', '.join(f'{k}={v}' for k, v in sorted(model_decisions(plan).items())) or '-')}.
"Runs as" is what the runtime really executes (read back from its optimized graph).</p>
<table><tr><th>layer</th><th>op</th><th>parameters</th><th>decisions</th><th>runs as</th></tr>
{_layer_rows(manifest)}</table>
<h2>How the numbers were measured</h2>
<ul>{_measurement_items(manifest)}</ul>
{'<h2>Notes</h2><ul>' + ''.join(f'<li>{h(n)}</li>' for n in manifest.get('notes', [])) + '</ul>'
 if manifest.get('notes') else ''}
<h2>All candidates ({len(records)})</h2>
<table><tr><th>key</th><th>purpose</th><th>p50 ms</th><th>predicted ms</th><th>prediction error</th><th>cv</th>
<th>{h(metric)}</th><th>status</th><th>plan</th></tr>
{_candidate_rows(records)}</table></body></html>
"""
    path = run_dir / "report.html"
    path.write_text(page)
    return path


def load_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "candidates.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
