"""Shared by the benchmarks: time many artifacts side by side in rotating rounds (this machine is noisy)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: the Fashion-MNIST benchmark models, by the name the scripts' --models take: their task files
TASKS = {"resnet": "resnet_task.py", "resnet18": "resnet18_task.py", "mobilenetv2": "mobilenetv2_task.py"}


def task_path(model: str) -> Path:
    return ROOT / "examples" / "fashion_mnist" / TASKS[model]


def rotating_p50s(entries: dict[str, tuple[Any, Path]], rounds: int) -> dict[str, list[float]]:
    """{label: p50 per round}; ``entries`` maps a label to (session, artifact). Each round starts one artifact
    later, so no artifact always runs first or after the same neighbour; one agent process per measurement."""
    labels = list(entries)
    p50s: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[: r % len(labels)]:
            session, artifact = entries[label]
            stats = session.device.measure(artifact)
            if not stats.usable:
                raise SystemExit(f"{label}: {stats.error}")
            p50s[label].append(stats.p50_ms)
    return p50s


def summary(samples: list[float], reference: list[float]) -> dict[str, Any]:
    """Median, range and the ratio of medians against the reference's samples."""
    return {"p50_ms": statistics.median(samples), "p50_range": [min(samples), max(samples)],
            "latency_ratio": statistics.median(samples) / statistics.median(reference)}
