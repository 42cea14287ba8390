"""Scoring on the host: a task's metric, or fidelity to the original model's outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeslim.target import HostSession
from edgeslim.task import Task

#: a one-shot sensitivity score (a ranking of single moves, not an answer's accuracy) reads at most this many
#: eval samples, paired with the baseline on the same ones: a quarter of the Fashion-MNIST tasks' 2,000
RANKING_SAMPLES = 500


@dataclass
class MetricInfo:
    name: str
    higher_is_better: bool
    description: str


class TaskEvaluator:
    """Runs the task's eval inputs one at a time (batch of 1, as exported) and applies its metric."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.info = MetricInfo(task.metric_name, task.higher_is_better,
                               f"task metric {task.metric_name} on {len(task.eval_data[0])} eval samples")

    def score(self, session: HostSession, limit: int | None = None) -> float:
        """The task's metric over its eval data (the first ``limit`` samples when given)."""
        inputs, labels = self.task.eval_data
        inputs, labels = inputs[:limit], labels[:limit]
        name = session.input_names[0]
        outputs = [session.run({name: np.asarray(inputs[i : i + 1], dtype=np.float32)})[0] for i in range(len(inputs))]
        return float(self.task.metric(np.concatenate(outputs, axis=0), np.asarray(labels)))


def torch_metric(task: Task, batch_size: int = 256) -> Callable[[Any], float]:
    """The task's metric over its eval data, computed by a torch module (what a recovery trains) rather than a
    built artifact: to watch a recovery epoch by epoch without exporting each epoch. Batched; a module that
    only takes the exported batch size is run one sample at a time."""
    inputs, labels = task.eval_data

    def score(module: Any) -> float:
        import torch

        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                try:
                    outputs = _torch_outputs(module, inputs, batch_size)
                except RuntimeError:  # e.g. a reshape written for one sample
                    outputs = _torch_outputs(module, inputs, 1)
        finally:
            module.train(was_training)
        return float(task.metric(outputs, np.asarray(labels)))

    return score


def _torch_outputs(module: Any, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    import torch

    chunks = []
    for start in range(0, len(inputs), batch_size):
        out = module(torch.from_numpy(np.asarray(inputs[start : start + batch_size], dtype=np.float32)))
        if isinstance(out, (tuple, list)):  # the first output is what the task's metric reads, as exported
            out = out[0]
        chunks.append(out.detach().numpy())
    return np.concatenate(chunks, axis=0)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    if denom == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.dot(a, b) / denom)


class FidelityEvaluator:
    """For a bare ONNX model: mean cosine similarity of all outputs to the original's, per input."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], reference: Callable[[dict[str, np.ndarray]], list],
                 inputs_origin: str) -> None:
        self.feeds = feeds
        self.reference_outputs = [reference(f) for f in feeds]
        self.info = MetricInfo(
            "fidelity_cosine", True,
            f"mean cosine similarity between the candidate's and the original model's outputs (all outputs, "
            f"flattened) over {len(feeds)} {inputs_origin} inputs; 1.0 = identical",
        )

    def score(self, session: HostSession, limit: int | None = None) -> float:
        sims = []
        for feed, ref in zip(self.feeds[:limit], self.reference_outputs[:limit], strict=True):
            outs = session.run(feed)
            sims.append(np.mean([_cosine(o, r) for o, r in zip(outs, ref, strict=True)]))
        return float(np.mean(sims))
