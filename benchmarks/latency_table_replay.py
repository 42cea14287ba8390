"""Replay the latency table of finished searches on what they measured: no device run, only stored numbers.

    python benchmarks/latency_table_replay.py RUN_DIR [RUN_DIR ...]

For each search folder (``manifest.json``, ``store.sqlite`` with its ``latency_probes``): the table is rebuilt
from the stored probes by the current code, and every measured candidate that recorded a prediction is predicted
again, in the search's order, each corrected by the ones before it as the search corrects. Prints the recorded
errors (the code that ran the search) beside the replayed ones (the code checked out now), per run and per model:
how a change to :mod:`edgeslim.predictor` would have done on the same measurements. Reads the run folders only
(a copy of each is opened, so nothing in them changes); writes nothing else.

Not the search's own errors: the recipes' walk also corrected the search's table with latency-only probes, which
the run keeps by key without their plans, so the replay corrects by the candidates alone (block-removal recipes
replay 30-45% off where the search, corrected by the walk's removal stops, was within 5%). Compare a replay with
a replay: run it at two commits (``git stash``) on the same folders.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples" / "fashion_mnist"))

from edgeslim.config import SearchConfig  # noqa: E402
from edgeslim.predictor import error_summary  # noqa: E402
from edgeslim.search import SearchSession  # noqa: E402


def refuse_to_measure(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a replay runs nothing on the device: the run's stored probes do not cover this table")


def replay(run: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("candidates", "oneshot", "torch_stage"))
        config = SearchConfig.load(copy / "run.json")
        config.out_dir = str(copy)
        session = SearchSession(config)
        session.measure_baseline()  # from the store: no device run
        with sqlite3.connect(copy / "store.sqlite") as db:
            probes = json.loads(dict(db.execute("select * from meta").fetchall())["latency_probes"])
        base = next(p["plan"] for p in probes.values() if p["knob"] is None)
        knobs = [k for _, k, _ in session.offered_knobs() if k.layer is not None]
        if not any(p["knob"] == "rank+bits" for p in probes.values()):  # a search from before low rank was paired
            knobs = [dataclasses.replace(k, splits_layer=False) for k in knobs]
        session.device.measure = refuse_to_measure  # type: ignore[method-assign]
        predictor = session.build_predictor(base, knobs)
        assert predictor is not None, f"{run}: no latency table"
        predictor.candidate_points = []
        predictor._refit()
        recorded, replayed, rows = [], [], []
        for line in (run / "candidates.jsonl").open():
            record = json.loads(line)
            details, latency = record.get("details") or {}, record.get("latency") or {}
            measured = latency.get("p50_ms")
            if measured is None or record["key"] == session.baseline.key:
                continue
            if details.get("prediction_error") is not None and predictor.covers(record["plan"]):
                error = predictor.predict(record["plan"]) / measured - 1
                recorded.append(details["prediction_error"])
                replayed.append(error)
                rows.append((record["purpose"][:60], measured, details["prediction_error"], error))
            predictor.observe(record["plan"], measured)
    return {"run": str(run), "recorded": recorded, "replayed": replayed, "rows": rows}


def within(errors: list[float]) -> str:
    summary = error_summary(errors)
    inside = sum(abs(e) <= 0.10 for e in errors)
    return f"median {summary.get('median_abs_pct', 0):.1f}%, within ±10% {inside} of {len(errors)}"


def main() -> None:
    results = [replay(Path(arg)) for arg in sys.argv[1:]]
    for result in results:
        print(f"{result['run']}: recorded {within(result['recorded'])}; replayed {within(result['replayed'])}")
        for purpose, measured, before, now in result["rows"]:
            print(f"    {purpose:60s} {measured:7.3f} ms  recorded {before:+6.1%}  replayed {now:+6.1%}")
    models: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        models.setdefault(Path(result["run"]).parent.name, []).append(result)
    for model, runs in models.items():
        recorded = [e for r in runs for e in r["recorded"]]
        replayed = [e for r in runs for e in r["replayed"]]
        print(f"{model}: recorded {within(recorded)}; replayed {within(replayed)}")


if __name__ == "__main__":
    main()
