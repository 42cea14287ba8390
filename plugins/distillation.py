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
    captured: dict[str, Any] = {}
    hooks = []
    for s_name, t_name in settings.features:
        try:
            hooks.append(student.get_submodule(s_name).register_forward_hook(
                lambda m, i, o, k=("s", s_name): captured.__setitem__(k, o)))
            hooks.append(teacher.get_submodule(t_name).register_forward_hook(
                lambda m, i, o, k=("t", t_name): captured.__setitem__(k, o)))
        except AttributeError:
            raise EdgeslimError(f"distillation features: no module {s_name!r} / {t_name!r}") from None
    optimizer = torch.optim.Adam(student.parameters(), lr=settings.lr)
    steps = epochs * -(-len(inputs) // settings.batch_size)
    # cosine: decayed to zero over the recovery, the weights settle instead of ending wherever Adam's constant
    # step leaves them
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
                 if settings.schedule == "cosine" else None)
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
            if after_epoch is not None and after_epoch(epoch):
                break
    finally:
        for h in hooks:
            h.remove()
        student.eval()
    return student


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
