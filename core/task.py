"""Tasks: a model, its data and a metric, given as a Python file (``edgeslim search TASK.py``).

A task file defines ``make_task()`` returning an :class:`edgeslim.Task`
(see the README for a complete example). Data are numpy arrays whose first
axis is the sample axis; the model has one input.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeslim.errors import EdgeslimError


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose arg-max output equals the label."""
    return float((np.asarray(outputs).reshape(len(labels), -1).argmax(axis=1) == np.asarray(labels)).mean())


@dataclass
class Task:
    """What edgeslim needs to compress a model and score the result.

    model:            a ``torch.nn.Module`` (all techniques) or a path to an ONNX file (ONNX-stage techniques).
    example_input:    one batch-of-1 input array, e.g. shape (1, 1, 8, 8), float32.
    eval_data:        (inputs, labels) scored by ``metric`` on the compressed model.
    metric:           ``metric(outputs, labels) -> float`` over all of eval_data at once; higher is better
                      unless ``higher_is_better`` is false. Default: top-1 accuracy.
    calibration_data: inputs for INT8 calibration (default: the first 128 training or eval inputs).
    train_data:       (inputs, labels) for the short fine-tune after pruning; omit to skip fine-tuning.
    """

    model: Any
    example_input: np.ndarray
    eval_data: tuple[np.ndarray, np.ndarray]
    metric: Callable[[np.ndarray, np.ndarray], float] = top1_accuracy
    metric_name: str = "accuracy"
    higher_is_better: bool = True
    calibration_data: np.ndarray | None = None
    train_data: tuple[np.ndarray, np.ndarray] | None = None
    input_name: str = "input"
    name: str = "task"

    def calibration_inputs(self, limit: int = 128) -> np.ndarray:
        if self.calibration_data is not None:
            return np.asarray(self.calibration_data)[:limit]
        source = self.train_data[0] if self.train_data is not None else self.eval_data[0]
        return np.asarray(source)[:limit]

    def check(self, origin: str) -> None:
        problems = []
        example = np.asarray(self.example_input)
        if example.ndim == 0 or example.shape[0] != 1:
            problems.append(f"example_input must be a batch of 1, got shape {example.shape}")
        inputs, labels = self.eval_data
        if len(inputs) != len(labels) or len(inputs) == 0:
            problems.append(f"eval_data must be two arrays of equal non-zero length, got {len(inputs)} and "
                            f"{len(labels)}")
        elif tuple(np.asarray(inputs).shape[1:]) != tuple(example.shape[1:]):
            problems.append(f"eval_data inputs have sample shape {np.asarray(inputs).shape[1:]}, "
                            f"example_input has {example.shape[1:]}")
        if self.train_data is not None and len(self.train_data[0]) != len(self.train_data[1]):
            problems.append("train_data inputs and labels differ in length")
        if not isinstance(self.model, (str, Path)):
            try:
                import torch
            except ImportError:
                problems.append("model is not an ONNX path and torch is not installed")
            else:
                if not isinstance(self.model, torch.nn.Module):
                    problems.append(f"model must be a torch.nn.Module or an ONNX path, got {type(self.model).__name__}")
        if problems:
            raise EdgeslimError(f"task {origin}: " + "; ".join(problems))


def load_task(path: str | Path) -> Task:
    """Execute a task file and return its Task; any exception becomes a one-line error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise EdgeslimError(f"task file not found: {path}")
    module_name = f"edgeslim_task_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        factory = getattr(module, "make_task", None)
        if factory is None:
            raise EdgeslimError(f"task file {path} defines no make_task() function")
        task = factory()
    except EdgeslimError:
        raise
    except BaseException as exc:  # a task file may raise anything, SystemExit included
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path.resolve()
                  or Path(f.filename) == path]
        where = f" (line {frames[-1].lineno})" if frames else ""
        raise EdgeslimError(f"task file {path} raised {type(exc).__name__}: {exc}{where}") from None
    if not isinstance(task, Task):
        raise EdgeslimError(f"task file {path}: make_task() returned {type(task).__name__}, not edgeslim.Task")
    task.check(str(path))
    if task.name == "task":
        task.name = path.stem
    return task
