"""Compression during training: gradual pruning and a plan's decisions held inside the user's loop."""

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("torch", reason="needs the torch extra: pip install 'edgeslim[torch]'")
import torch

from edgeslim.errors import EdgeslimError
from edgeslim.model import export_torch
from edgeslim.training import GradualPruning, compress_for_training, cubic_sparsity
from tests.models import make_resnet


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy((data.images.astype(np.float32) / 16.0).reshape(-1, 64))
    return x, torch.from_numpy(data.target.astype(np.int64))


def test_cubic_schedule():
    values = [cubic_sparsity(s, 0.9, 10, 110) for s in range(0, 130, 10)]
    assert values[0] == 0 and values[1] == 0 and values[-1] == values[-2] == 0.9 > values[-3]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))
    assert values[2] > 0.9 * 0.2  # fast at first: over a quarter of the way after a tenth of the steps


def test_gradual_pruning_reaches_the_target_inside_a_training_loop():
    x, y = digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.ReLU(), torch.nn.Linear(300, 100),
                                torch.nn.ReLU(), torch.nn.Linear(100, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps_per_epoch = 1200 // 50
    pruner = GradualPruning(model, 0.9, start_step=steps_per_epoch, end_step=8 * steps_per_epoch, frequency=8)
    seen = []
    for _epoch in range(12):
        for start in range(0, 1200, 50):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[start:start + 50]), y[start:start + 50]).backward()
            optimizer.step()
            pruner.step()
        seen.append(round(pruner.current, 3))
        if pruner.current > 0:  # between updates the masked weights stay exactly zero
            assert float((model[0].weight == 0).float().mean()) > 0
    model = pruner.finish()
    weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert seen[0] == 0 and seen[-1] == 0.9 and seen == sorted(seen)
    assert abs(zeros - 0.9) < 0.005 and not hasattr(model[0], "weight_orig")
    accuracy = float((model(x[1200:]).argmax(1) == y[1200:]).float().mean())
    assert accuracy > 0.9, accuracy


def test_gradual_pruning_rejects_bad_settings():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(EdgeslimError, match="start_step < end_step"):
        GradualPruning(model, 0.5, start_step=10, end_step=10)
    with pytest.raises(EdgeslimError, match="sparsity must be in"):
        GradualPruning(model, 1.5, 0, 10)
    with pytest.raises(EdgeslimError, match="fc are not Conv2d/Linear modules"):
        GradualPruning(model, {"fc": 0.5}, 0, 10)


def test_plan_decisions_held_during_the_users_training(tmp_path):
    model = make_resnet()
    example = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    plan = {"layers": {"layer1.conv1": {"sparsity": 0.5}, "layer2.conv1": {"rank": 0.5},
                       "head.2": {"weight_sparsity": 0.75}}, "model": {}}
    compressed = compress_for_training(model, plan, example, "images")
    module = compressed.module
    assert module.layer1.conv1.out_channels == 16 and isinstance(module.layer2.conv1, torch.nn.Sequential)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
    batch = torch.from_numpy(np.random.default_rng(1).standard_normal((8, 3, 32, 32)).astype(np.float32))
    module.train()
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(batch), torch.arange(8) % 10).backward()
        optimizer.step()
    trained = compressed.finish()
    assert abs(float((trained.head[2].weight == 0).float().mean()) - 0.75) < 0.02
    export_torch(trained, example, tmp_path / "trained.onnx", "images")
    out = ort.InferenceSession(str(tmp_path / "trained.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": example})[0]
    assert out.shape == (1, 10)
    with pytest.raises(EdgeslimError, match="plan names layers the model does not have: nope"):
        compress_for_training(model, {"layers": {"nope": {"sparsity": 0.5}}}, example, "images")


def test_weight_sharing_is_a_later_step_of_the_users_training():
    model = make_resnet()
    example = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    plan = {"layers": {"layer1.conv1": {"weight_sparsity": 0.5, "cluster_bits": 3}}, "model": {}}
    compressed = compress_for_training(model, plan, example, "images")
    conv = compressed.module.layer1.conv1
    assert hasattr(conv, "weight_mask") and len(torch.unique(conv.weight)) > 8  # pruned, not yet shared
    assert compressed.next_step() and not compressed.next_step()
    trained = compressed.finish()
    weight = trained.layer1.conv1.weight
    assert len(torch.unique(weight[weight != 0])) <= 8 and abs(float((weight == 0).float().mean()) - 0.5) < 0.01
