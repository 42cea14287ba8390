"""An ONNX model's torch twin (onnx2torch), so structured techniques (channel pruning, low rank, block removal)
work on bare ONNX models too. The twin is used only when it computes the same outputs as the ONNX model and
calls its Conv/Linear layers in the graph's order; otherwise the run says why it is not offered.

Two gaps of onnx2torch 1.5 are filled here: it imports torchvision (which does not install beside the CPU
torch build) for NMS/RoIAlign only, and it has no converters for the opset-18 forms of the Reduce* operators
(axes became an input), which today's torch exporter writes for every global average pool.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from edgeslim.errors import EdgeslimError
from edgeslim.model import ModelSource, first_line, torch_layer_trace

#: Reduce* operators whose axes moved from an attribute to an input in opset 18 (Max/Min again in 20)
REDUCE_OPS_18 = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
                 "ReduceProd", "ReduceSumSquare")


def _import_onnx2torch() -> Any:
    """onnx2torch imports torchvision for its NMS/RoIAlign converters only. torchvision is either absent
    (onnx2torch installed with --no-deps) or present but unloadable (pip's torchvision next to the CPU torch
    build fails with "operator torchvision::nms does not exist"); either way a stand-in that refuses those two
    ops is enough for everything else."""
    import sys
    import types

    try:
        import torchvision  # noqa: F401
    except Exception:  # ImportError when absent, RuntimeError when built for another torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # half-imported submodules of the broken package must not be reused
        stand_in = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise EdgeslimError("this graph uses NonMaxSuppression/RoIAlign, which need torchvision")

        ops.nms = ops.batched_nms = ops.roi_align = unavailable
        stand_in.ops = ops
        sys.modules["torchvision"] = stand_in
        sys.modules["torchvision.ops"] = ops
    import onnx2torch

    _register_opset18_reduce(onnx2torch)
    return onnx2torch


def attach_torch_twin(source: ModelSource) -> None:
    """Give an ONNX model a torch twin (onnx2torch) so structured techniques can work on it; the twin must
    compute the same outputs and call its Conv/Linear layers in the graph's order, or it is not used."""
    if len(source.inputs) != 1 or not source.inputs[0].dtype.startswith("float"):
        source.notes.append("structured pruning of ONNX models needs a single float input")
        return
    try:
        import torch

        onnx2torch = _import_onnx2torch()
    except ImportError:
        source.notes.append("channel pruning, low rank and block removal of this ONNX model are not offered: they "
                            "need torch and onnx2torch: pip install torch==2.13.0 && pip install "
                            "'edgeslim[onnx-pruning]' (torch first: a bare torch requirement pulls a CUDA build)")
        return
    example = np.random.default_rng(0).standard_normal(source.inputs[0].shape).astype(np.float32)
    try:
        aliased = _alias_newer_opsets(source.onnx_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = onnx2torch.convert(str(source.onnx_path)).eval()
            with torch.no_grad():
                twin_out = module(torch.from_numpy(example))
        import onnxruntime as ort

        reference = ort.InferenceSession(str(source.onnx_path), providers=["CPUExecutionProvider"]).run(
            None, {source.inputs[0].name: example})[0]
        twin = (twin_out[0] if isinstance(twin_out, (list, tuple)) else twin_out).numpy()
        if twin.shape != reference.shape or not np.allclose(twin, reference, rtol=1e-3, atol=1e-4):
            raise ValueError("the converted model computes different outputs"
                             + (f" (older converters stood in for {', '.join(aliased)})" if aliased else ""))
        trace = torch_layer_trace(module, example)
    except Exception as exc:
        source.notes.append(f"channel pruning, low rank and block removal are not offered for this graph: onnx2torch "
                            f"cannot convert it faithfully ({type(exc).__name__}: {first_line(exc, 160)}); "
                            "INT8 and the other ONNX-stage techniques still apply")
        return
    if len(trace) != len(source.layers):
        source.notes.append(f"structured pruning unavailable: the converted model has {len(trace)} Conv/Linear "
                            f"layers, the graph {len(source.layers)} weighted nodes")
        return
    for index, (layer, (name, _module, out_shape, macs)) in enumerate(zip(source.layers, trace, strict=True)):
        layer.module = name
        layer.macs = macs
        layer.out_channels = out_shape[1] if len(out_shape) > 1 else None
        layer.prunable = index < len(trace) - 1
    source.torch_model = module
    source.example_input = example


def _alias_newer_opsets(onnx_path: Any) -> list[str]:
    """Operators of a newer opset than onnx2torch knows (today's exporter writes opset 18-20: Reshape-19,
    Pad-19...) converted by the same operator's newest known converter. Most such versions only add types or
    edge cases; the twin's outputs are compared with ONNX Runtime's afterwards, so a stand-in that computes
    something else is caught and the twin refused. Returns the operators aliased, for that message."""
    import onnx
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter

    model = onnx.load(str(onnx_path), load_external_data=False)
    opsets = {o.domain or "": o.version for o in model.opset_import}
    aliased = []
    for op in sorted({n.op_type for n in model.graph.node if (n.domain or "") == ""}):
        try:
            since = onnx.defs.get_schema(op, max_inclusive_version=opsets.get("", 1)).since_version
        except Exception:  # noqa: BLE001 (an unknown operator: onnx2torch will say so itself)
            continue
        if OperationDescription(domain="", operation_type=op, version=since) in _CONVERTER_REGISTRY:
            continue
        older = [d.version for d in _CONVERTER_REGISTRY if d.domain == "" and d.operation_type == op
                 and d.version < since]
        if older:
            known = _CONVERTER_REGISTRY[OperationDescription(domain="", operation_type=op, version=max(older))]
            add_converter(operation_type=op, version=since)(known)
            aliased.append(f"{op}-{since} (as {op}-{max(older)})")
    return aliased


def _rows_module() -> Any:
    import torch

    class ReshapeToRows(torch.nn.Module):
        """Reshape to (rows, -1): a flatten whose width follows the channels pruning leaves. The exporter's
        rows of 1 are the batch of the example it traced: the batch axis is kept (least squares runs batches)."""

        def __init__(self, rows: int) -> None:
            super().__init__()
            self.rows = rows

        def forward(self, x: Any) -> Any:
            return x.reshape(x.shape[0] if self.rows == 1 else self.rows, -1)

    return ReshapeToRows


def _ReshapeToRows(rows: int) -> Any:  # noqa: N802 (a class made lazily: torch is optional)
    return _rows_module()(rows)


def _register_opset18_reduce(onnx2torch: Any) -> None:
    """Converters for the opset-18 Reduce* forms with constant axes: the same module as the older opsets."""
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    def convert(node: Any, graph: Any) -> Any:
        axes = None
        if len(node.input_values) > 1 and node.input_values[1]:
            axes = [int(a) for a in np.asarray(get_const_value(node.input_values[1], graph)).ravel()]
        if node.attributes.get("noop_with_empty_axes", 0) and not axes:
            raise NotImplementedError(f"{node.operation_type} with noop_with_empty_axes and no axes")
        return OperationConverterResult(
            torch_module=OnnxReduceStaticAxes(operation_type=node.operation_type, axes=axes,
                                              keepdims=node.attributes.get("keepdims", 1)),
            onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values))

    for op in REDUCE_OPS_18:
        for version in (18, 20) if op in ("ReduceMax", "ReduceMin") else (18,):
            if OperationDescription(domain="", operation_type=op, version=version) not in _CONVERTER_REGISTRY:
                add_converter(operation_type=op, version=version)(convert)

    from onnx2torch.node_converters.reshape import OnnxReshape
    from onnx2torch.utils.common import onnx_mapping_from_node

    def reshape(node: Any, graph: Any) -> Any:
        try:
            shape = np.asarray(get_const_value(node.input_values[1], graph)).astype(int).tolist()
        except KeyError:
            shape = None
        # allowzero=1 (torch's exporter sets it) differs from the default only where the target shape holds a 0
        if node.attributes.get("allowzero", 0) == 1 and (shape is None or 0 in shape):
            raise NotImplementedError("Reshape with allowzero=1 and a 0 in (or a computed) target shape")
        if shape is not None and len(shape) == 2 and shape[1] != -1:
            # the exporter writes a flatten before a classifier as Reshape to a constant [batch, features]: as
            # [batch, -1] it computes the same and still fits once channel pruning narrows the features
            return OperationConverterResult(torch_module=_ReshapeToRows(shape[0]),
                                            onnx_mapping=OnnxMapping(inputs=(node.input_values[0],),
                                                                     outputs=node.output_values))
        return OperationConverterResult(torch_module=OnnxReshape(), onnx_mapping=onnx_mapping_from_node(node=node))

    for version in (19, 21):
        if OperationDescription(domain="", operation_type="Reshape", version=version) not in _CONVERTER_REGISTRY:
            add_converter(operation_type="Reshape", version=version)(reshape)
