import copy

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("torch", reason="needs the torch extra: pip install 'edgeslim[torch]'")
import torch

from edgeslim.host import load_registry
from edgeslim.model import export_torch, torch_source
from edgeslim.technique import BuildContext
from tests.models import make_resnet


def test_layers_whose_channels_shrink_together_are_one_knob_naming_its_partners_and_the_inputs_it_narrows(tmp_path):
    """The stem and the residual block's second convolution add into one tensor: one knob, on the stem, which
    names its partner and the layers that tensor feeds (the block's first convolution and the downsampling)."""
    model = make_resnet()
    example = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    source = torch_source(model, example, tmp_path / "src", "images")
    knobs = {k.layer: (k.shares_channels_with, k.narrows) for k in load_registry().techniques["pruning"].knobs(source)}
    assert knobs == {"stem.0": (("layer1.conv2",), ("layer1.conv1", "down.0")),
                     "layer1.conv1": ((), ("layer1.conv2",)),
                     "down.0": (("layer2.conv2",), ("layer2.conv1", "head.2")),
                     "layer2.conv1": ((), ("layer2.conv2",))}


def test_channels_are_physically_removed_including_residual_partners(tmp_path):
    model = make_resnet()
    example = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    source = torch_source(model, example, tmp_path / "src", "images")
    tech = load_registry().techniques["pruning"]
    prunable = [k.layer for k in tech.knobs(source)]
    assert "head.2" not in prunable  # the classifier's outputs are the model's outputs
    plan = {"layers": {"stem.0": {"sparsity": 0.5}, "layer1.conv1": {"sparsity": 0.5}}, "model": {}}
    ctx = BuildContext(source=source, calibration=[], work_dir=tmp_path)
    pruned = tech.apply_torch(copy.deepcopy(model), plan, ctx)
    assert pruned.layer1.conv1.out_channels == 16
    # stem feeds a residual add: its partners (layer1.conv2, down's input) shrink with it
    assert pruned.stem[0].out_channels == 16 and pruned.layer1.conv2.out_channels == 16
    assert pruned.down[0].in_channels == 16
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in pruned.parameters())
    assert after < 0.8 * before
    path = tmp_path / "pruned.onnx"
    export_torch(pruned, example, path, "images")
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": example})[0]
    assert out.shape == (1, 10)
    with torch.no_grad():
        assert np.allclose(out, pruned(torch.from_numpy(example)).numpy(), atol=1e-4)
