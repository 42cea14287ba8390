"""Recovery fine-tuning after structural changes (cross-entropy on the task's training data)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def finetune(module: Any, train_data: tuple[np.ndarray, np.ndarray], epochs: int = 2, lr: float = 1e-3,
             batch_size: int = 64, seed: int = 0, after_epoch: Callable[[int], bool] | None = None) -> Any:
    """A short, seeded fine-tune so the same plan always gives the same model. ``after_epoch(epochs done)``
    returning True stops it early (:class:`edgeslim.recovery.RecoveryData`)."""
    import torch

    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    inputs = torch.from_numpy(np.asarray(train_data[0], dtype=np.float32))
    labels = torch.from_numpy(np.asarray(train_data[1]).astype(np.int64))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    module.train()
    for epoch in range(1, epochs + 1):
        order = generator.permutation(len(inputs))
        for start in range(0, len(order), batch_size):
            batch = torch.from_numpy(order[start : start + batch_size])
            optimizer.zero_grad()
            loss = loss_fn(module(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
        if after_epoch is not None and after_epoch(epoch):
            break
    module.eval()
    return module
