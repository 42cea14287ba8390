"""Bare ONNX models from today's default torch exporter (opset 18+) get a torch twin, so channel pruning works
on them; where a graph cannot be converted faithfully, the run says why in its notes."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra: pip install 'edgeslim[torch]'")
if importlib.util.find_spec("onnx2torch") is None:  # importing it needs edgeslim's torchvision stand-in
    pytest.skip("needs onnx2torch: pip install 'edgeslim[onnx-pruning]'", allow_module_level=True)

from edgeslim.model import load_onnx_source
from edgeslim.torch_twin import attach_torch_twin
from tests.conftest import run_cli
from tests.models import make_resnet


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    """TinyResNet through torch.onnx.export's defaults (the dynamo exporter: opset 18+, ReduceMean-18,
    Reshape with allowzero=1)."""
    path = tmp_path_factory.mktemp("default-export") / "resnet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(make_resnet(), (torch.randn(1, 3, 32, 32),), str(path), input_names=["images"])
    return path


def test_onnx2torch_imports_whether_torchvision_is_absent_or_unloadable():
    """pip's torchvision beside the CPU torch raises RuntimeError on import; the stand-in takes its place."""
    import sys

    from edgeslim.errors import EdgeslimError
    from edgeslim.torch_twin import _import_onnx2torch

    _import_onnx2torch()
    with pytest.raises(EdgeslimError, match="NonMaxSuppression"):
        sys.modules["torchvision"].ops.nms(None, None, 0.5)


def test_the_default_exporters_model_gets_a_twin(default_export, tmp_path):
    source = load_onnx_source(default_export, tmp_path / "s", {}, None)
    attach_torch_twin(source)
    assert source.torch_model is not None, source.notes


def test_a_search_on_it_prunes_channels(default_export, tmp_path, fast_profile):
    out = tmp_path / "run"
    run_cli("search", default_export, "--profile", fast_profile, "--budget-ms", "0.0001", "--trials", "2",
            "--no-predictor", "--out", out)
    records = [json.loads(line) for line in (out / "candidates.jsonl").open()]
    assert any("sparsity" in d for r in records for d in r["plan"]["layers"].values())


def matmul_then(node, opset: int, path):
    """A two-node model, x[1,8] -> MatMul -> h -> ``node`` -> y[1,8], saved at ``path``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((8, 8), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8), str(path))
    return path


def test_a_graph_that_cannot_be_converted_says_why(tmp_path):
    from onnx import helper

    # Shrink has no onnx2torch converter: the model gets the ONNX-stage techniques and a note saying so
    model = matmul_then(helper.make_node("Shrink", ["h"], ["y"], name="s"), opset=17, path=tmp_path / "e.onnx")
    source = load_onnx_source(model, tmp_path / "s", {}, None)
    attach_torch_twin(source)
    assert any("are not offered for this graph: onnx2torch cannot convert it" in n for n in source.notes), \
        source.notes


def test_an_opset_18_reduction_the_twin_cannot_express_is_named_in_the_note(tmp_path):
    """ReduceMean-18 with noop_with_empty_axes and no axes is an identity the converter does not build: the run
    falls back to the ONNX-stage techniques and names the node form, rather than failing or pruning wrongly."""
    from onnx import helper

    model = matmul_then(helper.make_node("ReduceMean", ["h"], ["y"], name="r", noop_with_empty_axes=1), opset=18,
                        path=tmp_path / "r.onnx")
    source = load_onnx_source(model, tmp_path / "s", {}, None)
    attach_torch_twin(source)
    assert any("ReduceMean with noop_with_empty_axes and no axes" in n for n in source.notes), source.notes
