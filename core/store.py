"""The search store: every candidate's result in SQLite inside the run directory.

Results are keyed by a content hash of (model, target, plan), committed as
soon as they exist, so a killed search resumes without re-measuring.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from edgeslim.records import CandidateRecord

#: the run's meta key holding every side-by-side rotation (:meth:`SearchSession.retime`): why, which records, their
#: rounds and medians
ROTATIONS_META = "retimings"

SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    key TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    purpose TEXT NOT NULL,
    metric REAL,
    latency TEXT,
    artifact TEXT,
    status TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    details TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Store:
    """One run's candidates (:class:`~edgeslim.records.CandidateRecord`) and its metadata (context, probes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None)  # autocommit: a kill loses nothing stored
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def get(self, key: str) -> CandidateRecord | None:
        row = self._db.execute(
            "SELECT key, plan, purpose, metric, latency, artifact, status, note, details FROM candidates WHERE key=?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        return CandidateRecord(key=row[0], plan=json.loads(row[1]), purpose=row[2], metric=row[3],
                               latency=json.loads(row[4]) if row[4] else None, artifact=row[5], status=row[6],
                               note=row[7], details=json.loads(row[8]) if row[8] else {})

    def put(self, record: CandidateRecord) -> None:
        now = time.time()
        self._db.execute(
            "INSERT INTO candidates (key, plan, purpose, metric, latency, artifact, status, note, details, created, "
            "updated) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET purpose=excluded.purpose, "
            "metric=excluded.metric, latency=excluded.latency, artifact=excluded.artifact, status=excluded.status, "
            "note=excluded.note, details=excluded.details, updated=excluded.updated",
            (record.key, json.dumps(record.plan, sort_keys=True), record.purpose, record.metric,
             json.dumps(record.latency) if record.latency else None, record.artifact,
             record.status, record.note, json.dumps(record.details), now, now),
        )

    def all(self) -> list[CandidateRecord]:
        keys = [r[0] for r in self._db.execute("SELECT key FROM candidates ORDER BY created")]
        return [rec for k in keys if (rec := self.get(k)) is not None]

    def count_measured(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM candidates WHERE latency IS NOT NULL").fetchone()[0]

    def get_meta(self, name: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, name: str, value: Any) -> None:
        self._db.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                         "value=excluded.value", (name, json.dumps(value)))


class SharedEvaluations:
    """Host-side results shared by the searches of one multi-device run (``--profile A --profile B``).

    Keyed by a plan's *scoring* key: the model, the plan, the recovery and the target's arithmetic, but not
    how the device runs it (threads, boards). Two devices on the same runtime get the same built model and the
    same metric, so the second one neither retrains nor rescores it; its latency is still its own.
    """

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS shared (key TEXT PRIMARY KEY, metric REAL, artifact_dir TEXT)")
        self.metrics_reused = 0
        self.builds_reused = 0

    def get(self, key: str) -> tuple[float | None, str | None]:
        row = self._db.execute("SELECT metric, artifact_dir FROM shared WHERE key=?", (key,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def put(self, key: str, metric: float | None = None, artifact_dir: str | None = None) -> None:
        self._db.execute("INSERT INTO shared (key, metric, artifact_dir) VALUES (?,?,?) ON CONFLICT(key) DO UPDATE "
                         "SET metric=COALESCE(excluded.metric, metric), "
                         "artifact_dir=COALESCE(excluded.artifact_dir, artifact_dir)", (key, metric, artifact_dir))
