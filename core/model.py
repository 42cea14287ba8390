"""Models as edgeslim sees them: an ONNX file or a torch module, its inputs and its inventory of layers."""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeslim.errors import EdgeslimError

ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 3: "int8", 2: "uint8", 9: "bool"}


@dataclass
class Layer:
    """A layer with weights. ``onnx_index`` is its position among the ONNX graph's weighted nodes."""

    name: str
    op: str
    onnx_index: int
    params: int
    macs: int | None = None
    out_channels: int | None = None
    prunable: bool = False
    #: the torch module holding this layer (torch sources: the same name; ONNX: onnx2torch's module)
    module: str | None = None


@dataclass
class InputSpec:
    name: str
    shape: list[int]
    dtype: str


@dataclass
class ModelSource:
    kind: str  # "torch" or "onnx"
    onnx_path: Path  # the uncompressed model as ONNX (exported, or the user's file with node names filled in)
    inputs: list[InputSpec]
    layers: list[Layer]
    fingerprint: str
    torch_model: Any = None
    example_input: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @functools.cached_property
    def layer_nodes(self) -> dict[str, str]:
        """{layer: node name} in the uncompressed graph (layers map to its weighted nodes in order); read once."""
        nodes = weighted_nodes(onnx.load(str(self.onnx_path), load_external_data=False))
        return {layer.name: nodes[layer.onnx_index].name for layer in self.layers if layer.onnx_index < len(nodes)}

    def input_shapes(self) -> dict[str, list[int]]:
        return {spec.name: spec.shape for spec in self.inputs}

    def module_name(self, layer: str) -> str:
        """The torch module of a layer (plans use layer names; techniques edit modules)."""
        for item in self.layers:
            if item.name == layer:
                return item.module or layer
        return layer  # not a Conv/Linear layer (e.g. a residual block): already a module name

    def layer_of_module(self, module: str) -> str:
        """Inverse of :meth:`module_name`; a factorized module's parts keep their suffix ("L.0" for "M.0")."""
        by_module = {item.module or item.name: item.name for item in self.layers}
        head, tail = module, ""
        while head:
            if head in by_module:
                return by_module[head] + tail
            head, _, last = head.rpartition(".")
            tail = f".{last}{tail}"
        return module

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def describe_layers(self) -> list[dict[str, Any]]:
        return [asdict(layer) for layer in self.layers]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_input_shapes(items: tuple[str, ...] | list[str]) -> dict[str, list[int]]:
    """``NAME=1,3,320,320`` -> {"NAME": [1, 3, 320, 320]}."""
    shapes: dict[str, list[int]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shape = [int(d) for d in dims.split(",")]
            if any(d <= 0 for d in shape):
                raise ValueError
        except ValueError:
            raise EdgeslimError(f"--input-shape {item!r}: expected NAME=DIM,DIM,... with positive integers, "
                                "e.g. images=1,3,320,320") from None
        shapes[name] = shape
    return shapes


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first line, shortened at a word boundary (never mid-word)."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + " ..."


def _missing_external_data(model: onnx.ModelProto, path: Path) -> list[str]:
    wanted = {entry.value for init in model.graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL
              for entry in init.external_data if entry.key == "location"}
    return sorted(name for name in wanted if not (path.parent / name).is_file())


def read_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file; every way it can be broken becomes a one-line reason."""
    if not path.exists():
        raise EdgeslimError(f"model not found: {path}")
    if path.is_dir():
        raise EdgeslimError(f"model path is a directory, not an ONNX file: {path}")
    if path.stat().st_size == 0:
        raise EdgeslimError(f"{path} is empty, not an ONNX model")
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin", ".safetensors"):
        raise EdgeslimError(f"{path} is a {path.suffix} file, not ONNX: for a torch model write a task file "
                            "(TASK.py with make_task() returning edgeslim.Task(model=..., example_input=..., "
                            "eval_data=...); see the README's 'Task files'), or export it to ONNX first")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise EdgeslimError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {first_line(exc)}); "
            "the file may be truncated or in another format (a torch checkpoint belongs in a task file)"
        ) from None
    missing = _missing_external_data(model, path)
    if missing:
        raise EdgeslimError(f"{path} keeps its weights in external data file(s) that are not beside it: "
                            f"{', '.join(missing)}; copy them next to the .onnx file (same folder, same names)")
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise EdgeslimError(f"{path}: its external data cannot be read ({type(exc).__name__}: "
                            f"{first_line(exc)})") from None
    if model.ir_version <= 0 or len(model.graph.node) == 0 or not model.opset_import:
        raise EdgeslimError(f"{path} is not an ONNX model (no graph nodes or opset after parsing; is it truncated "
                            "or another format?)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise EdgeslimError(f"{path} fails the ONNX checker: {first_line(exc)}") from None
    return model


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in initializers]


def resolve_input_specs(
    model: onnx.ModelProto, path: Path, overrides: dict[str, list[int]], calib: dict[str, np.ndarray] | None,
) -> list[InputSpec]:
    specs = []
    inputs = graph_inputs(model)
    known = {vi.name for vi in inputs}
    for name in list(overrides) + list(calib or {}):
        if name not in known:
            raise EdgeslimError(f"{path}: has no input named {name!r} (inputs: {', '.join(sorted(known))})")
    for vi in inputs:
        tensor_type = vi.type.tensor_type
        dtype = ONNX_DTYPES.get(tensor_type.elem_type)
        if dtype is None:
            raise EdgeslimError(f"{path}: input {vi.name!r} has element type {tensor_type.elem_type}, "
                                "which edgeslim cannot generate data for")
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]
        if vi.name in overrides:
            shape = overrides[vi.name]
            if len(shape) != len(dims):
                raise EdgeslimError(f"--input-shape {vi.name}: model input has rank {len(dims)} ({dims}), "
                                    f"got {len(shape)} dims")
        elif calib is not None and vi.name in calib:
            shape = [1, *calib[vi.name].shape[1:]]
            fixed = [d if isinstance(d, int) and d > 0 else None for d in dims]
            if len(shape) != len(dims) or any(f is not None and f != d for f, d in zip(fixed[1:], shape[1:],
                                                                                         strict=False)):
                raise EdgeslimError(
                    f"--calib: array {vi.name!r} has shape {list(calib[vi.name].shape)}, so one sample is {shape}; "
                    f"model input {vi.name!r} takes {dims} (first axis: samples, fed one at a time; the other "
                    "axes as the model's input, e.g. NCHW)")
        elif all(isinstance(d, int) and d > 0 for d in dims):
            shape = [int(d) for d in dims]
        else:
            raise EdgeslimError(
                f"{path}: input {vi.name!r} has symbolic dimensions {dims}; give its shape with "
                f"--input-shape {vi.name}=" + ",".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in dims)
                + " or pass --calib FILE.npz"
            )
        specs.append(InputSpec(vi.name, shape, dtype))
    return specs


def ensure_node_names(model: onnx.ModelProto) -> None:
    """Per-layer decisions refer to node names, so every node needs a unique one."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


def fold_weight_identities(model: onnx.ModelProto) -> int:
    """Turn Constant nodes into initializers and remove Identity nodes that only pass an initializer on (the
    TorchScript exporter writes one per shared weight), wiring their consumers to the initializer itself.
    Until then such a layer looks weightless: no parameter count, no per-layer weight technique, a quantizer
    leaves it float (QDQ) or fails on its bias (QOperator). Returns how many Identity nodes went."""
    outputs = {o.name for o in model.graph.output}
    for node in [n for n in model.graph.node if n.op_type == "Constant" and n.output[0] not in outputs
                 and len(n.attribute) == 1 and n.attribute[0].name == "value"]:
        tensor = onnx.TensorProto()  # a Constant node's tensor becomes an initializer of the same name
        tensor.CopyFrom(node.attribute[0].t)
        tensor.name = node.output[0]
        model.graph.initializer.append(tensor)
        model.graph.node.remove(node)
    inits = {init.name for init in model.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in model.graph.node
             if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    if not alias:
        return 0
    kept = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return len(alias)


def weighted_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Conv/Gemm nodes and MatMuls with a constant operand, in graph (execution) order."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    found = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
            found.append(node)
        elif node.op_type == "MatMul" and any(i in constants for i in node.input):
            found.append(node)
    return found


def _initializer_sizes(model: onnx.ModelProto) -> dict[str, int]:
    return {init.name: int(np.prod(init.dims)) if init.dims else 1 for init in model.graph.initializer}


def onnx_layers(model: onnx.ModelProto) -> list[Layer]:
    sizes = _initializer_sizes(model)
    layers = []
    for index, node in enumerate(weighted_nodes(model)):
        params = sum(sizes.get(i, 0) for i in node.input[1:])
        layers.append(Layer(name=node.name, op=node.op_type, onnx_index=index, params=params))
    return layers


def load_onnx_source(
    path: Path, run_dir: Path, overrides: dict[str, list[int]], calib: dict[str, np.ndarray] | None,
) -> ModelSource:
    model = read_onnx(path)
    specs = resolve_input_specs(model, path, overrides, calib)
    ensure_node_names(model)
    fold_weight_identities(model)  # what every runtime does at load anyway: latency is unchanged
    run_dir.mkdir(parents=True, exist_ok=True)
    normalized = run_dir / "source.onnx"
    onnx.save(model, str(normalized))
    try:
        import onnxruntime as ort

        ort.InferenceSession(str(normalized), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EdgeslimError(f"{path}: ONNX Runtime cannot load it: {str(exc).splitlines()[0][:200]}") from None
    source = ModelSource(kind="onnx", onnx_path=normalized, inputs=specs, layers=onnx_layers(model),
                         fingerprint=file_sha256(path))
    return source


# --- torch models -----------------------------------------------------------------------------------------


def torch_layer_trace(module: Any, example: np.ndarray) -> list[tuple[str, Any, list[int], int]]:
    """(name, module, output shape, MACs) of every Conv2d/Linear in the order a forward pass calls them."""
    import torch

    records: list[tuple[str, Any, list[int], int]] = []
    names = {m: n for n, m in module.named_modules()}
    hooks = []

    def hook(mod: Any, inputs: Any, output: Any) -> None:
        out_shape = list(output.shape)
        if isinstance(mod, torch.nn.Conv2d):
            macs = int(np.prod(out_shape)) * (mod.in_channels // mod.groups) * int(np.prod(mod.kernel_size))
        else:
            macs = int(np.prod(out_shape)) * mod.in_features
        records.append((names[mod], mod, out_shape, macs))

    for sub in module.modules():
        if isinstance(sub, (torch.nn.Conv2d, torch.nn.Linear)):
            hooks.append(sub.register_forward_hook(hook))
    try:
        was_training = module.training
        module.eval()
        with torch.no_grad():
            module(torch.from_numpy(np.asarray(example, dtype=np.float32)))
        module.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return records


def export_torch(module: Any, example: np.ndarray, path: Path, input_name: str = "input") -> None:
    """Export with the TorchScript exporter: 20x faster than the dynamo one, and node order follows forward()."""
    import torch

    module = module.eval()
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module, (torch.from_numpy(np.asarray(example, dtype=np.float32)),), str(path),
                input_names=[input_name], output_names=["output"], opset_version=17, dynamo=False,
                do_constant_folding=True,
            )
        except Exception as exc:
            raise EdgeslimError(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def torch_source(module: Any, example: np.ndarray, run_dir: Path, input_name: str) -> ModelSource:
    run_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = run_dir / "source.onnx"
    export_torch(module, example, onnx_path, input_name)
    model = onnx.load(str(onnx_path))
    ensure_node_names(model)
    onnx.save(model, str(onnx_path))
    trace = torch_layer_trace(module, example)
    nodes = weighted_nodes(model)
    if len(nodes) != len(trace) or len({id(m) for _, m, _, _ in trace}) != len(trace):
        raise EdgeslimError(
            f"cannot map the model's {len(trace)} Conv2d/Linear calls onto the {len(nodes)} weighted ONNX nodes "
            "(a layer used twice, or functional convolutions); export it to ONNX and search the ONNX file instead"
        )
    layers = []
    for index, (name, mod, out_shape, macs) in enumerate(trace):
        out_channels = out_shape[1] if len(out_shape) > 1 else None
        layers.append(Layer(name=name, op=type(mod).__name__, onnx_index=index,
                            params=sum(p.numel() for p in mod.parameters()), macs=macs,
                            out_channels=out_channels, prunable=index < len(trace) - 1))
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    dtype = ONNX_DTYPES.get(graph_inputs(model)[0].type.tensor_type.elem_type, "float32")
    return ModelSource(kind="torch", onnx_path=onnx_path, inputs=[InputSpec(input_name, list(example.shape), dtype)],
                       layers=layers, fingerprint=digest, torch_model=module, example_input=np.asarray(example))
