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

import heapq
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
from edgeslim.model import ModelSource
from edgeslim.plan import Plan, layer_decisions
from edgeslim.plugins.pruning import _weight_initializers
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
    order = 42  # after unstructured pruning (cluster the survivors), before quantization
    reduces_latency = False  # shared float weights run exactly as fast as any others
    retrains_in_torch = True  # shared values fine-tuned during the recovery
    pipeline_step = 1  # cluster the weights pruning left after they retrained, as the paper does

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return module_available("zstandard", "pip install zstandard")

    def knob_names(self) -> list[Knob]:
        return [Knob(self.name, "cluster_bits", None, CLUSTER_LEVELS)]

    def is_active(self, plan: Plan) -> bool:
        return any(int(bits) > 0 for bits in layer_decisions(plan, "cluster_bits").values())

    def knobs(self, source: ModelSource) -> list[Knob]:
        return [Knob(self.name, "cluster_bits", layer.name, CLUSTER_LEVELS) for layer in source.layers
                if layer.params >= 256]

    def apply_torch(self, module: Any, plan: Plan, ctx: BuildContext) -> Any:
        import torch
        from torch.nn.utils import parametrize, prune

        from edgeslim.plugins.pruning import UnstructuredPruning

        bits = layer_decisions(plan, "cluster_bits")
        for (layer, _part), holder in UnstructuredPruning._torch_weights(module, ctx).items():
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

        from edgeslim.plugins.pruning import UnstructuredPruning

        for holder in UnstructuredPruning._torch_weights(module, ctx).values():
            if parametrize.is_parametrized(holder, "weight"):
                parametrize.remove_parametrizations(holder, "weight", leave_parametrized=True)
        return module

    def apply_onnx(self, onnx_path: Path, plan: Plan, ctx: BuildContext, out_path: Path) -> Path:
        model = onnx.load(str(onnx_path))
        bits = layer_decisions(plan, "cluster_bits")
        for (layer, _node), init in _weight_initializers(model, ctx).items():
            level = int(bits.get(layer, 0))
            if level > 0:
                array = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array(share_weights(array, level), init.name))
        onnx.save(model, str(out_path))
        return out_path


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


# --- entropy coding ------------------------------------------------------------------------------------------

def huffman_lengths(symbols: np.ndarray) -> dict[int, int]:
    """Code length per symbol of a Huffman code for ``symbols``' frequencies."""
    counts = Counter(symbols.tolist())
    if len(counts) == 1:
        return {next(iter(counts)): 1}
    heap = [(count, i, [symbol]) for i, (symbol, count) in enumerate(sorted(counts.items()))]
    heapq.heapify(heap)
    lengths = dict.fromkeys(counts, 0)
    tie = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for symbol in s1 + s2:
            lengths[symbol] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def _canonical_codes(lengths: dict[int, int]) -> dict[int, tuple[int, int]]:
    codes, code, previous = {}, 0, 0
    for symbol, length in sorted(lengths.items(), key=lambda item: (item[1], item[0])):
        code <<= length - previous
        codes[symbol] = (code, length)
        code += 1
        previous = length
    return codes


def huffman_encode(symbols: np.ndarray) -> bytes:
    """Canonical Huffman: header (symbol count, [symbol u16, length u8]...), bit count, packed bits."""
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    if symbols.size == 0:
        return struct.pack("<HQ", 0, 0)
    lengths = huffman_lengths(symbols)
    codes = _canonical_codes(lengths)
    header = struct.pack("<H", len(lengths)) + b"".join(struct.pack("<HB", s, n) for s, n in sorted(lengths.items()))
    # vectorised bit packing: each symbol's code as its bits, concatenated
    table_bits = {symbol: np.array([(code >> (n - 1 - i)) & 1 for i in range(n)], dtype=np.uint8)
                  for symbol, (code, n) in codes.items()}
    bits = np.concatenate([table_bits[s] for s in symbols.tolist()]) if len(codes) > 1 else np.zeros(
        symbols.size, dtype=np.uint8)
    return header + struct.pack("<Q", bits.size) + np.packbits(bits).tobytes()


def huffman_decode(data: bytes) -> np.ndarray:
    (count,) = struct.unpack_from("<H", data, 0)
    offset = 2
    lengths = {}
    for _ in range(count):
        symbol, length = struct.unpack_from("<HB", data, offset)
        lengths[symbol] = length
        offset += 3
    (nbits,) = struct.unpack_from("<Q", data, offset)
    offset += 8
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=offset))[:nbits]
    if count == 1:
        return np.full(nbits, next(iter(lengths)), dtype=np.int64)
    decode = {(c, n): s for s, (c, n) in _canonical_codes(lengths).items()}
    out, code, length = [], 0, 0
    for bit in bits.tolist():
        code, length = (code << 1) | bit, length + 1
        symbol = decode.get((code, length))
        if symbol is not None:
            out.append(symbol)
            code, length = 0, 0
    return np.array(out, dtype=np.int64)


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
        entry: dict[str, Any] = {"dtype": str(array.dtype), "shape": list(array.shape),
                                 "nonzero": int(nonzero.sum()), "distinct": int(len(distinct))}
        mask_bits = nonzero.ravel().astype(np.uint8)
        # the mask as run lengths between non-zeros (the paper's relative indices), entropy-coded
        positions = np.flatnonzero(mask_bits)
        gaps = np.diff(np.concatenate([[-1], positions])) - 1
        capped = np.minimum(gaps, 65535)
        if (gaps > 65535).any():
            raise EdgeslimError(f"pack: {init.name} has a run of over 65535 zeros; not supported")
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
