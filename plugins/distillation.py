"""Knowledge distillation: the original model teaches the compressed one.

Used as the recovery after structural changes inside the search (short, ``--finetune-epochs``) and for a
final model (longer: ``edgeslim apply --finetune-epochs 10``). Loss: ``alpha * T^2 * KL(student/T ||
teacher/T) + (1 - alpha) * CE(student, labels)``, plus optionally an MSE between intermediate features of
paired modules (``features = [["student.module", "teacher.module"], ...]``; shapes must match, e.g. the
outputs of residual stages that pruning kept at full width).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeslim import hookimpl
from edgeslim.errors import EdgeslimError
from edgeslim.recovery import Recovery, RecoveryData
from edgeslim.settings import module_available


class DistillationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1, description="weight of the distillation term vs the labels")
    feature_weight: float = Field(default=0.0, ge=0)
    features: list[tuple[str, str]] = Field(default_factory=list, description="(student module, teacher module)")
    lr: float = Field(default=1e-3, gt=0)
    # constant by default: on the ResNet-18-style benchmark model cosine decay ended 0.50 points lower after one
    # epoch and 0.05 after three (benchmarks/results/recovery_schedule.md)
    schedule: Literal["constant", "cosine"] = Field(
        default="constant", description="learning rate over the recovery: constant, or cosine decay from lr to zero")
    batch_size: int = Field(default=64, ge=1)
    seed: int = 0
    # an exponential moving average of the weights (BatchNorm statistics included) is what is scored after each
    # epoch and kept at the end: the constant Adam step leaves the raw weights wherever the last batches put them
    average: Literal["none", "ema"] = Field(
        default="none", description="weights kept: the last step's (none) or their moving average (ema)")
    ema_decay: float = Field(default=0.98, gt=0, lt=1, description="the moving average's decay per step")


def distill(student: Any, teacher: Any, train_data: tuple[np.ndarray, np.ndarray | None], epochs: int,
            settings: DistillationSettings, after_epoch: Callable[[int], bool] | None = None) -> Any:
    """Distil ``teacher`` into ``student`` (in place) for ``epochs``, seeded; ``after_epoch(epochs done)``
    returning True stops early."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    inputs = torch.from_numpy(np.asarray(train_data[0], dtype=np.float32))
    labels = None if train_data[1] is None else torch.from_numpy(np.asarray(train_data[1]).astype(np.int64))
    teacher = teacher.eval()
    captured: dict[tuple[str, str], Any] = {}
    hooks = _feature_hooks(student, teacher, settings.features, captured)
    optimizer = torch.optim.Adam(student.parameters(), lr=settings.lr)
    steps = epochs * -(-len(inputs) // settings.batch_size)
    # cosine: decayed to zero over the recovery, the weights settle instead of ending wherever Adam's constant
    # step leaves them
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
                 if settings.schedule == "cosine" else None)
    average = WeightAverage(student, settings.ema_decay) if settings.average == "ema" else None
    try:
        student.train()
        for epoch in range(1, epochs + 1):
            order = rng.permutation(len(inputs))
            for start in range(0, len(order), settings.batch_size):
                batch = torch.from_numpy(order[start : start + settings.batch_size])
                x = inputs[batch]
                with torch.no_grad():
                    teacher_logits = teacher(x)
                student_logits = student(x)
                loss = _logit_loss(student_logits, teacher_logits, None if labels is None else labels[batch],
                                   settings)
                for s_name, t_name in settings.features:
                    s_out, t_out = captured[("s", s_name)], captured[("t", t_name)]
                    if s_out.shape != t_out.shape:
                        raise EdgeslimError(f"distillation features {s_name} {tuple(s_out.shape)} vs {t_name} "
                                            f"{tuple(t_out.shape)}: shapes differ")
                    loss = loss + settings.feature_weight * F.mse_loss(s_out, t_out.detach())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                if average is not None:
                    average.update(student)
            if average is not None:
                average.swap(student)  # the average is what gets scored (and, if best, kept) after this epoch
            stop = after_epoch is not None and after_epoch(epoch)
            if average is not None and not (stop or epoch == epochs):
                average.swap(student)  # training goes on from its own weights, not the average's
            if stop:
                break
    finally:
        for h in hooks:
            h.remove()
        student.eval()
    return student


def _feature_hooks(student: Any, teacher: Any, features: list[tuple[str, str]],
                   captured: dict[tuple[str, str], Any]) -> list[Any]:
    """Forward hooks that put each paired module's output into ``captured`` under ("s"/"t", its name)."""
    hooks = []
    for s_name, t_name in features:
        try:
            hooks.append(student.get_submodule(s_name).register_forward_hook(
                lambda m, i, o, k=("s", s_name): captured.__setitem__(k, o)))
            hooks.append(teacher.get_submodule(t_name).register_forward_hook(
                lambda m, i, o, k=("t", t_name): captured.__setitem__(k, o)))
        except AttributeError:
            raise EdgeslimError(f"distillation features: no module {s_name!r} / {t_name!r}") from None
    return hooks


class WeightAverage:
    """An exponential moving average of a module's floating-point parameters and buffers (BatchNorm's running
    statistics among them, so the averaged network needs no re-estimation pass); integer buffers follow the
    module."""

    def __init__(self, module: Any, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def update(self, module: Any) -> None:
        import torch

        self.updates += 1
        # warmed up (as TensorFlow's ExponentialMovingAverage with num_updates): a freshly pruned network moves
        # fast in its first steps, and a full-length average would still hold much of where it started
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for k, v in module.state_dict().items():
                if v.is_floating_point():
                    self.state[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    self.state[k].copy_(v)

    def swap(self, module: Any) -> None:
        """Exchange the module's weights with the average's (twice restores both)."""
        current = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.state)
        self.state = current


def _logit_loss(student_logits: Any, teacher_logits: Any, labels: Any, settings: DistillationSettings) -> Any:
    """Hinton's loss: T^2-scaled KL to the teacher's softened logits, plus cross-entropy when labels exist."""
    import torch.nn.functional as F

    T = settings.temperature
    loss = settings.alpha * T * T * F.kl_div(F.log_softmax(student_logits / T, dim=1),
                                             F.softmax(teacher_logits / T, dim=1), reduction="batchmean")
    if labels is not None and settings.alpha < 1:
        loss = loss + (1 - settings.alpha) * F.cross_entropy(student_logits, labels)
    return loss


class KnowledgeDistillation(Recovery):
    name = "distillation"
    description = "recovery by knowledge distillation from the original model (logits, optional features)"
    Settings = DistillationSettings
    # measured (benchmarks/results/recovery_average.md): over three epochs the average scored +0.06 to +1.55
    # points above the last step's weights on four recipes; over one it ranged from -0.37 to +1.09, so the
    # search's short recovery keeps the last step's
    final_defaults = {"average": "ema"}

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("torch", "pip install 'edgeslim[torch]'")

    def recover(self, student: Any, teacher: Any, data: RecoveryData, epochs: int, settings: Any) -> list[str]:
        if data.train is None:
            raise EdgeslimError("--recovery distillation needs the task's training inputs (train_data)")
        distill(student, teacher, data.train, epochs, settings, after_epoch=data.epoch_done)
        return []


@hookimpl
def edgeslim_register_recoveries(register):
    register(KnowledgeDistillation)
