"""What a run was started with: saved as ``run.json`` and validated again on ``--resume DIR``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeslim.errors import EdgeslimError
from edgeslim.settings import describe_validation_error


class SearchConfig(BaseModel):
    """Everything a run was started with; ``--resume DIR`` repeats it exactly (a damaged or hand-edited
    ``run.json`` is refused with the field that is wrong, like a profile)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str
    profile: str
    out_dir: str
    budget_ms: float | None = Field(default=None, gt=0)
    budget_ratio: float | None = Field(default=None, gt=0, le=1)
    calib: str | None = None
    input_shapes: dict[str, list[int]] = Field(default_factory=dict)
    strategy: str = "greedy"
    trials: int = Field(default=30, ge=1)
    finetune_epochs: int = Field(default=2, ge=0)
    #: recovery epochs of each single move the sensitivity phase scores with training (``--sensitivity-epochs``);
    #: None: half of ``finetune_epochs``, at least one. The phase needs the moves' order, not their last point,
    #: and it trains one model per move (most of the demo's time)
    sensitivity_epochs: int | None = Field(default=None, ge=0)
    #: the recovery plugin used after structural changes when the task has training data
    recovery: str = "distillation"
    recovery_options: dict[str, Any] = Field(default_factory=dict)
    #: Optuna storage URL for the tpe/nsga2 strategies (default: SQLite in the run directory)
    storage: str | None = None
    #: Optuna: seconds without a heartbeat after which a worker's running trial is failed and retried
    trial_grace_s: float = Field(default=120.0, ge=3)
    #: rank candidates with a per-layer latency table measured on the device; measure only those near the budget
    predictor: bool = True
    #: wall-clock seconds for the strategy (``--time-budget``); measuring stops when they are spent
    time_budget_s: float | None = Field(default=None, gt=0)
    #: ``--max-metric-drop``: overrides the profile's ``budget.max_metric_drop``
    max_metric_drop: float | None = Field(default=None, ge=0)
    #: recovery epochs for the chosen answer before verification (``--final-epochs``); None: 3 x finetune_epochs
    final_epochs: int | None = Field(default=None, ge=0)
    #: the final recovery is scored on the eval data after every epoch and its best epoch kept; it stops after
    #: this many epochs in a row without a better score (``--final-patience``). None: never early. On the
    #: ResNet-18-style model the eval score dipped for three epochs before its best, the fifth
    #: (benchmarks/results/final_recovery_epochs.md): a patience of 2 would have stopped it at the third
    final_patience: int | None = Field(default=None, ge=1)
    #: every ``--profile`` of a multi-device run (``profile`` is then the one this sub-run measures on)
    profiles: list[str] = Field(default_factory=list)

    @property
    def ranking_epochs(self) -> int:
        """The sensitivity phase's recovery epochs per move (``sensitivity_epochs`` resolved)."""
        if self.sensitivity_epochs is not None:
            return self.sensitivity_epochs
        return min(self.finetune_epochs, max(1, self.finetune_epochs // 2))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.model_dump(), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> SearchConfig:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EdgeslimError(f"cannot resume: {path} is missing or damaged ({exc})") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> SearchConfig:
        if not isinstance(data, dict):
            raise EdgeslimError(f"cannot resume: {path} is not a run description (expected a JSON object)")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            detail = describe_validation_error(exc, unknown_hint="was run.json written by this edgeslim?")
            raise EdgeslimError(f"cannot resume: {path}: {detail}") from None
