"""Deep Compression: k-means weight sharing, Huffman/zstd coding, and a packed file that restores exactly."""

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest

pytest.importorskip("torch", reason="needs the torch extra: pip install 'edgeslim[torch]'")
import torch

from edgeslim.errors import EdgeslimError
from edgeslim.host import load_registry
from edgeslim.huffman import huffman_decode, huffman_encode
from edgeslim.model import load_onnx_source, torch_source
from edgeslim.plugins.clustering import (
    kmeans_1d,
    pack_model,
    share_weights,
    unpack_model,
)
from edgeslim.technique import BuildContext
from tests.models import make_resnet

EXAMPLE = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)


def test_kmeans_shares_values_and_keeps_zeros():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    w[rng.random(w.shape) < 0.6] = 0
    shared = share_weights(w, 4)
    assert ((shared == 0) == (w == 0)).all()
    assert len(np.unique(shared[shared != 0])) <= 16
    assert np.abs(shared - w).max() < 0.5 * np.abs(w).max()
    centroids, labels = kmeans_1d(np.array([1.0, 1.1, 5.0, 5.2, 9.0]), 3)
    assert np.allclose(centroids, [1.05, 5.1, 9.0]) and labels.tolist() == [0, 0, 1, 1, 2]
    already, _ = kmeans_1d(np.array([0.5, 0.25, 0.5]), 4)  # fewer distinct values than clusters: unchanged
    assert already.tolist() == [0.25, 0.5]


@pytest.mark.parametrize("symbols", [
    np.random.default_rng(1).geometric(0.3, 5000) - 1,  # skewed: Huffman beats fixed width
    np.full(100, 7), np.zeros(0, dtype=np.int64), np.array([3, 200, 3, 3, 65535]),
])
def test_huffman_round_trip(symbols):
    blob = huffman_encode(symbols)
    assert huffman_decode(blob).tolist() == symbols.tolist()
    if symbols.size == 5000:
        bits = int(np.ceil(np.log2(symbols.max() + 1)))
        assert len(blob) < 0.7 * symbols.size * bits / 8


def test_pack_restores_the_model_exactly(resnet_onnx, tmp_path):
    src = load_onnx_source(resnet_onnx, tmp_path / "s", {}, None)
    registry = load_registry()
    ctx = BuildContext(src, [], tmp_path)
    plan = {"layers": {layer.name: {"weight_sparsity": 0.75, "cluster_bits": 4} for layer in src.layers
                       if layer.params >= 256}, "model": {}}
    sparse = registry.techniques["weight_pruning"].apply_onnx(src.onnx_path, plan, ctx, tmp_path / "p.onnx")
    clustered = registry.techniques["clustering"].apply_onnx(sparse, plan, ctx, tmp_path / "c.onnx")
    stats = pack_model(clustered, tmp_path / "m.dc")
    assert stats["packed_bytes"] < clustered.stat().st_size / 8
    restored = unpack_model(tmp_path / "m.dc")
    assert restored.SerializeToString() == onnx.load(str(clustered)).SerializeToString()
    onnx.save(restored, str(tmp_path / "restored.onnx"))
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"images": EXAMPLE})[0]
           for p in (clustered, tmp_path / "restored.onnx")]
    assert np.array_equal(run[0], run[1])
    (tmp_path / "bad.dc").write_bytes(b"PK\x03\x04" + bytes(64))
    with pytest.raises(EdgeslimError, match="not an edgeslim Deep Compression file"):
        unpack_model(tmp_path / "bad.dc")


def test_shared_values_are_fine_tuned_and_masks_held(tmp_path):
    """Torch stage: pruning masks then clustering; training moves the centroids but keeps at most 2**bits
    shared values per layer and every pruned weight at zero."""
    model = make_resnet()
    src = torch_source(model, EXAMPLE, tmp_path / "src", "images")
    registry = load_registry()
    ctx = BuildContext(src, [], tmp_path)
    plan = {"layers": {"layer1.conv1": {"weight_sparsity": 0.5, "cluster_bits": 3},
                       "head.2": {"cluster_bits": 2}}, "model": {}}
    techniques = [registry.techniques["weight_pruning"], registry.techniques["clustering"]]
    module = copy.deepcopy(model)
    for tech in techniques:
        module = tech.apply_torch(module, plan, ctx)
    before = module.layer1.conv1.weight.detach().clone()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
    module.train()
    batch = torch.from_numpy(np.random.default_rng(2).standard_normal((8, 3, 32, 32)).astype(np.float32))
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(batch), torch.arange(8) % 10).backward()
        optimizer.step()
    for tech in techniques:
        module = tech.finalize_torch(module, plan, ctx)
    conv = module.layer1.conv1.weight.detach()
    assert not torch.equal(conv, before)  # the shared values moved
    assert len(torch.unique(conv[conv != 0])) <= 8 and abs(float((conv == 0).float().mean()) - 0.5) < 0.01
    assert ((before == 0) == (conv == 0)).all()
    assert len(torch.unique(module.head[2].weight)) <= 4
