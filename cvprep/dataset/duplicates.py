"""Exact and near-duplicate detection: content hashes, perceptual hashes and an index.

Near duplicates are found without comparing all pairs: multi-index hashing (Norouzi et al.).
A 64-bit hash is cut into ``m`` chunks; two hashes within Hamming distance ``t`` must agree on
some chunk to within ``t // m`` bits (pigeonhole), so only items whose chunk equals one of the
few variants of ours are candidates, checked with a popcount. Each chunk's items sit in a
bucket table (counting sort), so a probe is two array lookups for all items at once.

How many chunks: each probe costs a pass over the items and finds about n / 2^bits chance
candidates, so the best ``m`` grows with the dataset (measured in benchmarks/
near_duplicates.py): 4 chunks of 16 bits for small sets, 3 of ~21 bits for a million.
"""

from __future__ import annotations

import hashlib
from itertools import combinations
from math import comb

import cv2
import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix  # scipy: a declared dependency
from scipy.sparse.csgraph import connected_components

from cvprep.errors import ParameterError

HASH_BITS = 64
MAX_THRESHOLD = 11
MAX_CHUNK_BITS = 22  # bucket tables of 2^22 entries at most
PROBE_BATCH = 1 << 22  # candidate pairs checked at once (bounds memory)


def content_hash(data: bytes) -> str:
    """SHA-256 of the file bytes: identical files, whatever their names."""
    return hashlib.sha256(data).hexdigest()


def perceptual_hash(image: npt.ArrayLike) -> int:
    """64-bit pHash: the signs of the low-frequency 8×8 DCT block of a 32×32 grayscale copy
    (compared to its median). Robust to resizing, re-encoding and mild colour changes."""
    array = np.asarray(image)
    gray = cv2.cvtColor(array, cv2.COLOR_RGB2GRAY) if array.ndim == 3 else array
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = low > np.median(low[1:])  # the DC term would dominate the median
    return int(np.packbits(bits).view(">u8")[0])


def chunking(count: int, threshold: int) -> list[int]:
    """Chunk widths (bits, summing to 64) that minimise the estimated work for ``count``
    hashes: chunks × probes per chunk × (1 + chance candidates per probe)."""
    best: tuple[float, list[int]] | None = None
    for chunks in range(3, 9):
        widths = [HASH_BITS // chunks + (i < HASH_BITS % chunks) for i in range(chunks)]
        if max(widths) > MAX_CHUNK_BITS:
            continue
        radius = threshold // chunks
        cost = sum(sum(comb(w, k) for k in range(radius + 1)) * (1 + count / 2**w) for w in widths)
        if best is None or cost < best[0]:
            best = (cost, widths)
    assert best is not None
    return best[1]


def _flip_masks(radius: int, bits: int) -> np.ndarray:
    masks = [0]
    for count in range(1, radius + 1):
        masks += [sum(1 << b for b in chosen) for chosen in combinations(range(bits), count)]
    return np.array(masks, dtype=np.int64)


def near_duplicate_pairs(hashes: npt.ArrayLike, threshold: int) -> np.ndarray:
    """All index pairs ``(i, j)``, ``i < j``, whose hashes differ in at most ``threshold`` bits.

    Returns an ``N×2`` int64 array, sorted. ``threshold`` must be between 0 and 11.
    """
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ParameterError(
            f"`threshold` should be between 0 and {MAX_THRESHOLD}. Received: threshold={threshold}"
        )
    values = np.asarray(hashes, dtype=np.uint64)
    count = len(values)
    if count < 2:
        return np.empty((0, 2), np.int64)
    found = [np.empty(0, np.int64)]
    widths = chunking(count, threshold)
    shift = 0
    for width in widths:
        keys = ((values >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        shift += width
        sizes = np.bincount(keys, minlength=1 << width)
        starts = np.cumsum(sizes) - sizes
        order = np.argsort(keys, kind="stable")
        for mask in _flip_masks(threshold // len(widths), width):
            found.append(_probe(values, keys ^ mask, sizes, starts, order, threshold, count))
    pairs = np.unique(np.concatenate(found))  # a pair can agree on several chunks
    return np.stack([pairs // count, pairs % count], axis=1)


def _probe(
    values: np.ndarray,
    wanted: np.ndarray,
    sizes: np.ndarray,
    starts: np.ndarray,
    order: np.ndarray,
    threshold: int,
    count: int,
) -> np.ndarray:
    """Pairs (as ``i·count + j``) between each item and the items in bucket ``wanted[i]``."""
    found = sizes[wanted]
    items = np.flatnonzero(found)
    if not len(items):
        return np.empty(0, np.int64)
    per_item, first_slot = found[items], starts[wanted[items]]
    out = []
    ends = np.cumsum(per_item)
    begin = 0
    while begin < len(items):  # batches of about PROBE_BATCH candidates
        stop = int(np.searchsorted(ends, ends[begin] - per_item[begin] + PROBE_BATCH)) + 1
        sl = slice(begin, min(stop, len(items)))
        reps = per_item[sl]
        first = np.repeat(items[sl], reps)
        offsets = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
        second = order[np.repeat(first_slot[sl], reps) + offsets]
        keep = first < second
        first, second = first[keep], second[keep]
        close = np.bitwise_count(values[first] ^ values[second]) <= threshold
        out.append(first[close] * count + second[close])
        begin = sl.stop
    return np.concatenate(out)


def group_labels(count: int, pairs: npt.ArrayLike) -> np.ndarray:
    """Connected components of ``count`` items linked by ``pairs``: one label per item."""
    edges = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(count, count))
    return connected_components(graph, directed=False)[1]
