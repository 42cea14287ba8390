"""Quantization-aware training: BN folding, fake-quant with STE, weights exported on the ONNX stage's grid."""

import copy

import numpy as np
import onnx
import pytest

pytest.importorskip("torch", reason="needs the torch extra: pip install 'edgeslim[torch]'")
import torch
from onnx import numpy_helper

from edgeslim.host import load_registry
from edgeslim.model import export_torch, torch_source
from edgeslim.plugins.qat import fold_batchnorms
from edgeslim.plugins.weight_quantization import quantize_weight_only
from edgeslim.technique import BuildContext
from tests.models import make_resnet

EXAMPLE = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)


def test_fold_batchnorms_keeps_the_function():
    model = make_resnet()
    with torch.no_grad():  # non-trivial statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32))
    before = model.eval()(x).detach()
    folded = fold_batchnorms(model, EXAMPLE)
    assert len(folded) == sum(isinstance(m, torch.nn.Identity) for m in model.modules()) >= 4
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(model(x), before, atol=1e-4)


def test_qat_trains_weights_onto_the_grid(tmp_path):
    model = make_resnet()
    src = torch_source(model, EXAMPLE, tmp_path / "src", "images")
    tech = load_registry().techniques["qat"]
    plan = {"layers": {"layer1.conv1": {"bits": 8}, "layer2.conv1": {"weight_bits": 4},
                       "head.2": {"weight_bits": 1}}, "model": {"qat": True}}
    assert tech.is_active(plan) and not tech.is_active({**plan, "model": {}})
    ctx = BuildContext(src, [], tmp_path)
    module = tech.apply_torch(copy.deepcopy(model), plan, ctx)
    assert any("folded" in note for note in ctx.notes)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    batch = torch.from_numpy(np.random.default_rng(2).standard_normal((8, 3, 32, 32)).astype(np.float32))
    module.train()
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(batch), torch.arange(8) % 10)
        loss.backward()  # gradients pass the fake quantizers (straight-through)
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    module = tech.finalize_torch(module, plan, ctx).eval()
    assert not hasattr(module.layer1.conv1, "_edgeslim_act_hook")
    int8 = module.layer1.conv1.weight.detach().reshape(module.layer1.conv1.weight.shape[0], -1)
    scale = int8.abs().amax(dim=1, keepdim=True) / 127
    assert torch.allclose(int8 / scale, torch.round(int8 / scale), atol=1e-3)  # on the int8 grid
    four = module.layer2.conv1.weight.detach().numpy()
    q, s, _ = quantize_weight_only(four, 4)  # the ONNX stage reproduces the trained weights exactly
    restored = q.reshape(q.shape[0], -1).astype(np.float32) * s[:, None]
    assert np.allclose(restored.reshape(four.shape), four, atol=1e-6)
    assert len(np.unique(np.abs(module.head[2].weight.detach().numpy()), axis=None)) <= 10  # one |w| per row
    export_torch(module, EXAMPLE, tmp_path / "qat.onnx", "images")
    inits = [numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "qat.onnx")).graph.initializer]
    assert any(a.shape == four.shape and np.allclose(a, four) for a in inits)  # BN folded before: unchanged
