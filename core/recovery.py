"""The contract of a recovery method: how a compressed network is brought back towards the original.

Recoveries are plugins of their own kind (``edgeslim_register_recoveries``), each with pydantic settings
(``--recovery-option KEY=VALUE``). After a torch-stage change the build runs ``--recovery NAME`` when the task
has training data, and otherwise the first installed recovery that needs none (least-squares reconstruction
from calibration inputs, for bare ONNX models).
"""

from __future__ import annotations

import abc
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from edgeslim.errors import EdgeslimError
from edgeslim.settings import describe_validation_error


@dataclass
class RecoveryData:
    """What a recovery may learn from."""

    #: the task's (inputs, labels); labels may be None (distillation needs none). None for a bare ONNX model.
    train: tuple[np.ndarray, np.ndarray | None] | None
    #: the calibration inputs of the model's first input, stacked along the batch axis
    calibration_inputs: np.ndarray | None
    #: a recovery that trains in epochs calls this after each one with the number done; True asks it to stop
    #: there. The build passes it when it keeps the best epoch's weights (the answer's final recovery,
    #: :class:`BestEpoch`); a recovery that never calls it trains all its epochs and its last one is kept.
    after_epoch: Callable[[int], bool] | None = None

    def epoch_done(self, epoch: int) -> bool:
        """Whether the recovery should stop after ``epoch`` (1-based) epochs."""
        return self.after_epoch is not None and bool(self.after_epoch(epoch))


@dataclass
class EpochSelection:
    """How a long recovery is watched: ``score`` (a torch module -> the task's metric on its eval data) after
    every epoch, the best epoch's weights kept, and training stopped after ``patience`` epochs in a row without
    a better score (None: never early), or before an epoch that would end past ``time_cap_s`` seconds of it
    (judged on the epochs' average length so far; the first epoch always runs)."""

    score: Callable[[Any], float]
    higher_is_better: bool
    patience: int | None
    metric_name: str
    time_cap_s: float | None = None


@dataclass
class BestEpoch:
    """One recovery watched by an :class:`EpochSelection`: the ``after_epoch`` callback of its
    :class:`RecoveryData`, then :meth:`restore` to put the best epoch's weights back into ``module``."""

    selection: EpochSelection
    module: Any
    scores: list[float] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    started: float = field(default_factory=lambda: time.monotonic())
    #: the watch stopped the recovery before an epoch that would have run past the selection's time cap
    stopped_by_time: bool = False

    def __call__(self, epoch: int) -> bool:
        if self.selection.time_cap_s is not None:
            spent = time.monotonic() - self.started  # the scoring below is part of the next epoch's cost
            self.stopped_by_time = spent * (epoch + 1) / epoch > self.selection.time_cap_s
        score = float(self.selection.score(self.module))
        self.scores.append(score)
        best = self.scores[self.best_epoch - 1] if self.best_epoch else None
        better = best is None or (score > best if self.selection.higher_is_better else score < best)
        if better:
            self.best_epoch = epoch
            # a copy, not a reference: the optimizer keeps changing the module's tensors in place
            self.best_state = copy.deepcopy(self.module.state_dict())
        patience_spent = self.selection.patience is not None and epoch - self.best_epoch >= self.selection.patience
        return patience_spent or self.stopped_by_time

    def restore(self) -> list[str]:
        """Load the best epoch's weights (when a later one was worse); a note of what was seen and kept."""
        if not self.scores or self.best_state is None:
            return []
        if self.best_epoch != len(self.scores):
            self.module.load_state_dict(self.best_state)
        seen = ", ".join(f"{s:.4f}" for s in self.scores)
        return [f"recovery watched per epoch ({self.selection.metric_name} on the eval data: {seen}); kept epoch "
                f"{self.best_epoch} of {len(self.scores)} trained"]

    def summary(self) -> dict[str, Any]:
        return {"metric": self.selection.metric_name, "scores": [round(s, 6) for s in self.scores],
                "kept_epoch": self.best_epoch, "epochs_trained": len(self.scores),
                "patience": self.selection.patience, "stopped_by_time_cap": self.stopped_by_time}


class Recovery(abc.ABC):
    """Subclasses set ``name``, ``description``, a ``Settings`` model and implement :meth:`recover`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: False for methods that work from calibration inputs alone (usable on a bare ONNX model)
    needs_training_data: ClassVar[bool] = True
    #: settings the answer's final, longer recovery uses unless ``--recovery-option`` names them: what helps over
    #: several epochs need not help over the search's one (distillation's weight average, for instance)
    final_defaults: ClassVar[dict[str, Any]] = {}

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return True, ""

    @classmethod
    def settings_from(cls, options: dict[str, Any], where: str = "--recovery-option") -> BaseModel:
        """The options checked against ``Settings``; a bad one is an error naming the field."""
        try:
            return cls.Settings.model_validate(options)
        except ValidationError as exc:
            hint = f"`edgeslim plugins` lists recoveries; {cls.name} takes {', '.join(cls.Settings.model_fields)}"
            raise EdgeslimError(f"{cls.name}: {describe_validation_error(exc, where, unknown_hint=hint)}") from None

    @abc.abstractmethod
    def recover(self, student: Any, teacher: Any, data: RecoveryData, epochs: int, settings: Any) -> list[str]:
        """Train or rebuild ``student`` (the compressed torch module, in place) towards ``teacher`` (the
        original). Returns notes worth recording with the candidate (may be empty)."""


def resolved_options(recoveries: dict[str, type[Recovery]], requested: str, options: dict[str, Any]
                     ) -> dict[str, Any]:
    """``options`` of the ``requested`` recovery with its defaults filled in (as given when it is not installed):
    what a cached build stands for, so options spelled differently that mean the same share builds, and a
    build cached under other defaults is not reused as if trained anew."""
    chosen = recoveries.get(requested)
    if chosen is None:
        return options
    return chosen.settings_from(options, "recovery_options").model_dump(mode="json")


def choose_recovery(recoveries: dict[str, type[Recovery]], requested: str, has_training_data: bool
                    ) -> type[Recovery] | None:
    """The recovery a build uses: ``requested`` where it can run, else (no training data) the first installed
    data-free one; None when nothing can run (the candidate is then built without recovery)."""
    chosen = recoveries.get(requested)
    if chosen is not None and (has_training_data or not chosen.needs_training_data) and chosen.available()[0]:
        return chosen
    if has_training_data:
        usable = sorted(n for n, r in recoveries.items() if r.available()[0])
        raise EdgeslimError(f"--recovery {requested}: not an installed recovery (usable here: {', '.join(usable)})")
    free = [r for _, r in sorted(recoveries.items()) if not r.needs_training_data and r.available()[0]]
    return free[0] if free else None


def parse_recovery_options(recoveries: dict[str, type[Recovery]], recovery: str, pairs: tuple[str, ...],
                           features: tuple[str, ...]) -> dict[str, Any]:
    """``--recovery-option KEY=VALUE`` (values read as JSON where they parse) and ``--distill-feature S=T`` into
    options, checked against the recovery's ``Settings`` now, before any work: a wrong option names the field."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise EdgeslimError(f"--recovery-option {pair!r}: expected KEY=VALUE, e.g. temperature=2")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    for pair in features:
        student, sep, teacher = pair.partition("=")
        if not sep or not student or not teacher:
            raise EdgeslimError(f"--distill-feature {pair!r}: expected STUDENT_MODULE=TEACHER_MODULE, "
                                "e.g. layer2=layer2")
        options.setdefault("features", []).append([student, teacher])
    if features:
        options.setdefault("feature_weight", 1.0)
    method = recoveries.get(recovery)
    if method is None:
        raise EdgeslimError(f"--recovery {recovery}: not an installed recovery ({', '.join(sorted(recoveries))})")
    method.settings_from(options)
    return options
