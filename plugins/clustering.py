"""Deep Compression (Han et al. 2016): weight sharing by k-means, entropy-coded indices, one packed file.

- ``cluster_bits`` (per layer; ONNX stage, and in the torch stage when training data exist): the layer's
  non-zero weights are replaced by the nearest of ``2**bits`` shared values found by k-means with linear
  initialisation (the paper's choice: it keeps the rare large weights, which matter most). Pruned zeros stay
  zero and are not a cluster. With training data the shared values are fine-tuned during the recovery (each
  centroid's gradient is the sum of its members' gradients, the paper's step), so the model keeps its accuracy
  at low bit-widths. The ONNX model still holds float weights, so it runs on every target unchanged; its
  size benefit is made real by :func:`pack_model`.
- :func:`pack_model` stores a model as one file: per weight tensor a bitmask of its non-zeros, a codebook of
  its distinct values and the index of each non-zero, each stream entropy-coded with canonical Huffman
  codes (the paper) or zstd (a modern coder), whichever is smaller per stream; everything else zstd.
  :func:`unpack_model` restores the exact ONNX model (the bytes are identical).
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgeslim import hookimpl
from edgeslim.errors import EdgeslimError
from edgeslim.huffman import huffman_decode, huffman_encode
from edgeslim.model import ModelSource
from edgeslim.plan import Plan, layer_decisions
from edgeslim.settings import module_available
from edgeslim.technique import BuildContext, Knob, Technique

CLUSTER_LEVELS = (0, 8, 6, 5, 4, 3, 2)  # 0: off
PACK_FORMAT = "edgeslim-deep-compression/1"
#: a tensor with at most this many distinct values is stored as codebook + indices
MAX_CODEBOOK = 256


# --- k-means weight sharing -------------------------------------------------------------------------------

def kmeans_1d(values: np.ndarray, clusters: int, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, labels) of 1-D k-means with linear initialisation over [min, max]."""
    values = np.asarray(values, dtype=np.float64)
    distinct = np.unique(values)
    if len(distinct) <= clusters:  # already shared (e.g. clustered and retrained): keep the values exactly
        return distinct, np.searchsorted(distinct, values)
    centroids = np.linspace(values.min(), values.max(), clusters)
    for _ in range(iterations):
        # sorted centroids: nearest = compare against the midpoints between neighbours
        edges = (centroids[1:] + centroids[:-1]) / 2
        labels = np.searchsorted(edges, values)
        sums = np.bincount(labels, weights=values, minlength=clusters)
        counts = np.bincount(labels, minlength=clusters)
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids, rtol=0, atol=1e-12):
            break
        centroids = np.sort(updated)
    edges = (centroids[1:] + centroids[:-1]) / 2
    return centroids, np.searchsorted(edges, values)


def share_weights(weights: np.ndarray, bits: int) -> np.ndarray:
    """``weights`` with every non-zero replaced by its cluster's shared value (zeros stay zero)."""
    out = weights.copy()
    nonzero = weights != 0
    if nonzero.sum() == 0:
        return out
    centroids, labels = kmeans_1d(weights[nonzero], 2**bits)
    shared = centroids[labels].astype(weights.dtype)
    shared[shared == 0] = np.finfo(weights.dtype).tiny  # a centroid of exactly 0 would merge with the mask
    out[nonzero] = shared
    return out


class WeightClustering(Technique):
    name = "clustering"
    description = "Deep Compression weight sharing: k-means per layer (cluster_bits), packed with entropy coding"
    stage = "onnx"
    # after unstructured pruning (cluster the survivors, once they have retrained, as the paper does), before
    # quantization; the "sharing" recovery round fine-tunes the shared values
    phase = "sharing"
    reduces_latency = False  # shared float weights run exactly as fast as any others
    retrains_in_torch = True  # shared values fine-tuned during the recovery

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("zstandard", "pip install zstandard")

    def decision_names(self) -> frozenset[str]:
        return frozenset({"cluster_bits"})

    def is_active(self, plan: Plan) -> bool:
        return any(int(bits) > 0 for bits in layer_decisions(plan, "cluster_bits").values())

    def knobs(self, source: ModelSource) -> list[Knob]:
        return [Knob(self.name, "cluster_bits", layer.name, CLUSTER_LEVELS) for layer in source.layers
                if layer.params >= 256]

    def apply_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        import torch
        from torch.nn.utils import parametrize, prune

        bits = layer_decisions(plan, "cluster_bits")
        for (layer, _part), holder in ctx.torch_weight_layers(module).items():
            level = int(bits.get(layer, 0))
            if level <= 0:
                continue
            if prune.is_pruned(holder):
                # masked by weight pruning: make the zeros permanent; index -1 keeps them zero from here on
                prune.remove(holder, "weight")
            weight = holder.weight.detach().cpu().numpy()
            nonzero = weight != 0
            centroids, labels = kmeans_1d(weight[nonzero], 2**level)
            index = np.full(weight.shape, -1, dtype=np.int64)
            index[nonzero] = labels
            parametrize.register_parametrization(holder, "weight", SharedWeights(
                torch.from_numpy(centroids.astype(np.float32)), torch.from_numpy(index)), unsafe=True)
        return module

    def finalize_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        from torch.nn.utils import parametrize

        for holder in ctx.torch_weight_layers(module).values():
            if parametrize.is_parametrized(holder, "weight"):
                parametrize.remove_parametrizations(holder, "weight", leave_parametrized=True)
        return module

    def apply_onnx(self, onnx_path: Path, plan: Plan, ctx: BuildContext, out_path: Path) -> Path:
        model = onnx.load(str(onnx_path))
        bits = layer_decisions(plan, "cluster_bits")
        for (layer, _node), init in ctx.weight_initializers(model).items():
            level = int(bits.get(layer, 0))
            if level > 0:
                array = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array(share_weights(array, level), init.name))
        onnx.save(model, str(out_path))
        return out_path

    def stored_sizes(self, artifact: Path, plan: Plan, shrinks_storage: bool) -> dict[str, int]:
        """The Deep Compression file (mask + codebook + entropy-coded indices; :func:`unpack_model` restores the
        ONNX model) for any plan whose weights hold zeros, shared or low-bit values: there it is the real size."""
        if not shrinks_storage or artifact.suffix != ".onnx":
            return {}
        return {"deep_compression_bytes": pack_model(artifact, artifact.parent / "model.dc")["packed_bytes"]}


def _shared_weights_module() -> Any:
    import torch

    class _SharedWeights(torch.nn.Module):
        """weight = centroids[index] (0 where index is -1): gradients flow to the shared values only."""

        def __init__(self, centroids: Any, index: Any) -> None:
            super().__init__()
            self.centroids = torch.nn.Parameter(centroids)
            self.register_buffer("index", index)

        def forward(self, _original: Any) -> Any:
            padded = torch.cat([self.centroids, self.centroids.new_zeros(1)])
            return padded[self.index]  # index -1 picks the appended zero

    return _SharedWeights


def SharedWeights(centroids: Any, index: Any) -> Any:  # noqa: N802 (a class made lazily: torch is optional)
    return _shared_weights_module()(centroids, index)


# --- entropy coding (Huffman in edgeslim.huffman; zstd here) -------------------------------------------------

def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        raise EdgeslimError("Deep Compression packing needs zstandard: pip install zstandard") from None
    return zstandard


CODERS = ("huffman", "zstd")


def _best_coding(symbols: np.ndarray, raw: bytes, coders: tuple[str, ...] = CODERS) -> tuple[str, bytes]:
    """Huffman of the symbols or zstd of their raw bytes, whichever is smaller (of those allowed)."""
    options = []
    if "huffman" in coders:
        options.append(("huffman", huffman_encode(symbols)))
    if "zstd" in coders:
        options.append(("zstd", _zstd().ZstdCompressor(level=19).compress(raw)))
    if not options:
        raise EdgeslimError(f"pack: coders must include some of {CODERS}, got {coders}")
    return min(options, key=lambda item: len(item[1]))


def _decode(coding: str, blob: bytes, dtype: np.dtype, count: int) -> np.ndarray:
    if coding == "huffman":
        return huffman_decode(blob).astype(dtype)
    return np.frombuffer(_zstd().ZstdDecompressor().decompress(blob, max_output_size=count * dtype.itemsize),
                         dtype=dtype)


# --- the packed file -------------------------------------------------------------------------------------

def _pack_tensor(name: str, array: np.ndarray, nonzero: np.ndarray, distinct: np.ndarray, add: Any,
                 stats: dict[str, Any], coders: tuple[str, ...]) -> dict[str, Any]:
    """One tensor's entry: its zero mask as entropy-coded run lengths, then a codebook with entropy-coded
    indices (shared weights) or zstd of the non-zero values. ``add`` stores a blob and returns its chunk number."""
    entry: dict[str, Any] = {"dtype": str(array.dtype), "shape": list(array.shape),
                             "nonzero": int(nonzero.sum()), "distinct": int(len(distinct))}
    mask_bits = nonzero.ravel().astype(np.uint8)
    # the mask as run lengths between non-zeros (the paper's relative indices), entropy-coded
    positions = np.flatnonzero(mask_bits)
    gaps = np.diff(np.concatenate([[-1], positions])) - 1
    capped = np.minimum(gaps, 65535)
    if (gaps > 65535).any():
        raise EdgeslimError(f"pack: {name} has a run of over 65535 zeros; not supported")
    coding, blob = _best_coding(capped, np.packbits(mask_bits).tobytes(), coders)
    entry["mask"] = [coding, add(blob), int(array.size)]
    stats["mask_bytes"] += len(blob)
    stats["codings"][f"mask:{coding}"] += 1
    values = array[nonzero]
    if len(distinct) <= MAX_CODEBOOK:
        index = np.searchsorted(distinct, values)
        codebook = distinct.astype(array.dtype).tobytes()
        entry["codebook"] = add(codebook)
        coding, blob = _best_coding(index, index.astype(np.uint8).tobytes(), coders)
        entry["index"] = [coding, add(blob), int(values.size)]
        stats["codebook_bytes"] += len(codebook)
        stats["index_bytes"] += len(blob)
        stats["codings"][f"index:{coding}"] += 1
    else:
        blob = _zstd().ZstdCompressor(level=19).compress(values.tobytes())
        entry["values"] = add(blob)
        stats["index_bytes"] += len(blob)
    return entry


def pack_model(onnx_path: Path, out_path: Path, coders: tuple[str, ...] = CODERS) -> dict[str, Any]:
    """Write ``onnx_path`` as one Deep Compression file; return sizes per stream kind and the codings used.
    ``coders`` limits the entropy coders tried for masks and indices (the benchmark compares them alone)."""
    model = onnx.load(str(onnx_path))
    chunks: list[bytes] = []
    tensors: dict[str, Any] = {}
    stats = {"mask_bytes": 0, "codebook_bytes": 0, "index_bytes": 0, "other_bytes": 0, "codings": Counter()}

    def add(blob: bytes) -> int:
        chunks.append(blob)
        return len(chunks) - 1

    codable = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8,
               onnx.TensorProto.UINT8}  # numpy round-trips these exactly (INT4 would come back as INT8)
    for init in model.graph.initializer:
        if init.data_type not in codable or init.data_location == onnx.TensorProto.EXTERNAL:
            continue
        array = numpy_helper.to_array(init)
        if array.size < 64:
            continue
        nonzero = array != 0
        distinct = np.unique(array[nonzero])
        if len(distinct) > MAX_CODEBOOK and nonzero.mean() > 0.7:
            continue  # dense and not shared: zstd of the whole model below is all that helps
        entry = _pack_tensor(init.name, array, nonzero, distinct, add, stats, coders)
        tensors[init.name] = entry
        init.ClearField("raw_data")
        for fld in ("float_data", "int32_data", "int64_data", "double_data"):
            init.ClearField(fld)
    rest = _zstd().ZstdCompressor(level=19).compress(model.SerializeToString())
    stats["other_bytes"] = len(rest)
    header = json.dumps({"format": PACK_FORMAT, "tensors": tensors, "chunks": [len(c) for c in chunks]}).encode()
    with open(out_path, "wb") as f:
        f.write(struct.pack("<I", len(header)))
        f.write(header)
        for chunk in chunks:
            f.write(chunk)
        f.write(rest)
    stats["codings"] = dict(stats["codings"])
    stats["header_bytes"] = len(header) + 4
    stats["packed_bytes"] = out_path.stat().st_size
    stats["tensors"] = {name: {k: entry[k] for k in ("shape", "nonzero", "distinct")}
                        for name, entry in tensors.items()}
    return stats


def unpack_model(packed: Path) -> onnx.ModelProto:
    """Restore the exact model :func:`pack_model` stored."""
    data = Path(packed).read_bytes()
    try:
        (size,) = struct.unpack_from("<I", data, 0)
        header = json.loads(data[4 : 4 + size])
    except (struct.error, ValueError):
        raise EdgeslimError(f"{packed}: not an edgeslim Deep Compression file") from None
    if header.get("format") != PACK_FORMAT:
        raise EdgeslimError(f"{packed}: format {header.get('format')!r}, expected {PACK_FORMAT!r}")
    offset = 4 + size
    chunks = []
    for length in header["chunks"]:
        chunks.append(data[offset : offset + length])
        offset += length
    model = onnx.load_model_from_string(_zstd().ZstdDecompressor().decompress(data[offset:]))
    for init in model.graph.initializer:
        entry = header["tensors"].get(init.name)
        if entry is None:
            continue
        dtype, shape = np.dtype(entry["dtype"]), entry["shape"]
        count = int(np.prod(shape))
        coding, chunk, _ = entry["mask"]
        if coding == "huffman":
            gaps = huffman_decode(chunks[chunk])
            positions = np.cumsum(gaps + 1) - 1
            mask = np.zeros(count, dtype=bool)
            mask[positions] = True
        else:
            raw = _zstd().ZstdDecompressor().decompress(chunks[chunk], max_output_size=count)
            mask = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:count].astype(bool)
        dense = np.zeros(count, dtype=dtype)
        if "codebook" in entry:
            codebook = np.frombuffer(chunks[entry["codebook"]], dtype=dtype)
            coding, chunk, n = entry["index"]
            dense[mask] = codebook[_decode(coding, chunks[chunk], np.dtype(np.uint8), n).astype(np.int64)]
        else:
            dense[mask] = np.frombuffer(_zstd().ZstdDecompressor().decompress(
                chunks[entry["values"]], max_output_size=int(mask.sum()) * dtype.itemsize), dtype=dtype)
        init.CopyFrom(numpy_helper.from_array(dense.reshape(shape), init.name))
    return model


@hookimpl
def edgeslim_register_techniques(register):
    register(WeightClustering())
