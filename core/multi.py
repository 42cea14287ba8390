"""Several devices in one run: ``edgeslim search MODEL --profile A --profile B``.

Each device gets a search of its own in ``DIR/<profile name>/`` (its own budget, measurements, Pareto front
and best model, each a complete run directory), run one after the other so two devices never time at once on
this host. What does not depend on the device is done once: devices whose targets agree on the built model
and its arithmetic (``Target.scoring_settings``: e.g. ONNX Runtime on this CPU and on a Raspberry Pi) share
built candidates, recovery training included, and their metrics through ``DIR/shared.sqlite``. ``DIR`` gets a
manifest naming every device's best model, ``report.md`` and ``report.html`` with one front per device.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import edgeslim
from edgeslim.charts import fmt, plan_text, svg_scatter
from edgeslim.config import SearchConfig
from edgeslim.errors import EdgeslimError
from edgeslim.profile import load_profile
from edgeslim.progress import Reporter
from edgeslim.report import load_records
from edgeslim.search import SearchSession
from edgeslim.store import SharedEvaluations


def device_dirs(profiles: list[str]) -> list[str]:
    """One directory name per profile (its name, made unique and safe for a path)."""
    names: list[str] = []
    for ref in profiles:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", load_profile(ref).name) or "device"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def save_multi_config(config: SearchConfig, profiles: list[str], path: Path) -> None:
    config.model_copy(update={"profiles": profiles}).save(path)


def run_multi(config: SearchConfig, profiles: list[str], reporter: Reporter | None = None) -> dict[str, Any]:
    if len(profiles) < 2:
        raise EdgeslimError("a multi-device run needs at least two --profile values")
    root = Path(config.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    save_multi_config(config, profiles, root / "run.json")
    shared = SharedEvaluations(root / "shared.sqlite")
    devices: dict[str, dict[str, Any]] = {}
    for ref, name in zip(profiles, device_dirs(profiles), strict=True):
        if reporter is not None:
            reporter.log(f"device {name} ({ref})")
        # each device's own run directory resumes on its own, as a single-device run
        device_config = config.model_copy(update={"profile": ref, "out_dir": str(root / name), "profiles": []})
        session = SearchSession(device_config, reporter, shared=shared)
        manifest = session.run()
        devices[name] = {
            "profile": manifest["profile"], "run_dir": name, "status": manifest["status"],
            "target": manifest["target"], "budget": manifest["budget"], "baseline": manifest["baseline"],
            "best": {**manifest["best"], "artifact": (f"{name}/{manifest['best']['artifact']}"
                                                      if manifest["best"].get("artifact") else None)},
            "candidates_evaluated": manifest["candidates_evaluated"], "device_runs": manifest["device_runs"],
            "predictor": manifest.get("predictor"), "wall_time_s": manifest["wall_time_s"],
        }
    metric = json.loads((root / next(iter(devices)) / "manifest.json").read_text())["metric"]
    combined = {
        "edgeslim": edgeslim.__version__,
        "status": "ok" if all(d["status"] == "ok" for d in devices.values()) else "budget_not_met",
        "multi_device": True, "model": config.model, "profiles": profiles, "metric": metric,
        "devices": devices,
        "shared_evaluations": {"builds_reused": shared.builds_reused, "metrics_reused": shared.metrics_reused,
                               "how": "devices whose targets build the same model with the same arithmetic share "
                                      "built candidates and their metrics; latency is always each device's own"},
    }
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(combined, indent=2))
    os.replace(tmp, root / "manifest.json")
    write_multi_reports(root, combined)
    return combined


def write_multi_reports(root: Path, manifest: dict[str, Any]) -> Path:
    """``report.md`` and ``report.html`` of a multi-device run: per device its best model and its front."""
    from html import escape as h

    metric = manifest["metric"]["name"]
    lines = [f"# edgeslim report: {manifest['model']} on {len(manifest['devices'])} devices", "",
             f"- status: **{manifest['status']}**",
             f"- shared across devices: {manifest['shared_evaluations']['builds_reused']} built models, "
             f"{manifest['shared_evaluations']['metrics_reused']} metrics", "",
             f"| device | budget ms | baseline p50 ms | best p50 ms | {metric} | meets budget | device runs | plan |",
             "|---|---|---|---|---|---|---|---|"]
    sections = []
    for name, d in manifest["devices"].items():
        best, base = d["best"], d["baseline"]
        lines.append(f"| {name} | {fmt(d['budget']['latency_ms'])} | {fmt(base['latency']['p50_ms'])} | "
                     f"{fmt(best['latency'].get('p50_ms'))} | {fmt(best['metric'].get('value'), 4)} | "
                     f"{best['meets_budget']} | {d['device_runs']['total']} | {plan_text(best.get('plan'))[:100]} |")
        records = load_records(root / d["run_dir"])
        points = [{"x": r["latency"]["p50_ms"], "y": r["metric"],
                   "role": "best" if r["key"] == best.get("key") else "baseline" if r["key"] == base.get("key")
                   else "", "label": f"{r['key'][:10]}: p50 {r['latency']['p50_ms']:.4g} ms, {metric} "
                                     f"{r['metric']:.4f}; {plan_text(r['plan'])}"}
                  for r in records if (r.get("latency") or {}).get("p50_ms") and r.get("metric") is not None]
        sections.append(
            f"<h2>{h(name)} ({h(d['profile'])}, {h(d['target']['name'])})</h2>"
            f"<p>Status <b>{h(d['status'])}</b>. Budget {fmt(d['budget']['latency_ms'])} ms. Baseline p50 "
            f"{fmt(base['latency']['p50_ms'])} ms, {h(metric)} {fmt(base['metric']['value'], 4)}. Chosen p50 "
            f"{fmt(best['latency'].get('p50_ms'))} ms, {h(metric)} {fmt(best['metric'].get('value'), 4)}: "
            f"{h(plan_text(best.get('plan')))}. <a href=\"{h(d['run_dir'])}/report.html\">This device's full "
            f"report</a> (per-layer plan, how each number was measured, all candidates).</p>"
            + svg_scatter(points, "p50 latency (ms), measured on this device", metric, d["budget"]["latency_ms"]))
    (root / "report.md").write_text("\n".join(lines) + "\n")
    page = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>edgeslim: {h(str(manifest['model']))}"
            "</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
            ".plot text{font-size:11px}</style></head><body>"
            f"<h1>edgeslim: {h(str(manifest['model']))} on {len(manifest['devices'])} devices</h1>"
            f"<p>One accuracy-latency Pareto front and one chosen model per device. Shared across devices: "
            f"{manifest['shared_evaluations']['builds_reused']} built models and "
            f"{manifest['shared_evaluations']['metrics_reused']} metrics "
            f"({h(manifest['shared_evaluations']['how'])}).</p>" + "".join(sections) + "</body></html>\n")
    path = root / "report.html"
    path.write_text(page)
    return path
