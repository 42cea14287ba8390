"""Recovery fine-tuning after structural changes (cross-entropy on the task's training data)."""

from __future__ import annotations

from typing import Any

import numpy as np


def finetune(module: Any, train_data: tuple[np.ndarray, np.ndarray], epochs: int = 2, lr: float = 1e-3,
             batch_size: int = 64, seed: int = 0) -> Any:
    """A short, seeded fine-tune so the same plan always gives the same model."""
    import torch

    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    inputs = torch.from_numpy(np.asarray(train_data[0], dtype=np.float32))
    labels = torch.from_numpy(np.asarray(train_data[1]).astype(np.int64))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    module.train()
    for _ in range(epochs):
        order = generator.permutation(len(inputs))
        for start in range(0, len(order), batch_size):
            batch = torch.from_numpy(order[start : start + batch_size])
            optimizer.zero_grad()
            loss = loss_fn(module(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
    module.eval()
    return module
