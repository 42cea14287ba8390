"""Canonical Huffman coding of small-integer streams (Deep Compression's index and run-length streams).

Shared by packers: the stored form of a model is a technique's business, the coder is not.
"""

from __future__ import annotations

import heapq
import struct
from collections import Counter

import numpy as np


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
