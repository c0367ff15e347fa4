"""Exact and near-duplicate detection: content hashes, perceptual hashes and an index.

Near duplicates are found without comparing all pairs: multi-index hashing. A 64-bit hash is
cut into 4 chunks of 16 bits; two hashes within Hamming distance ``t`` must agree on some chunk
to within ``t // 4`` bits (pigeonhole), so only items whose chunk equals one of the few
variants of ours are candidates. Candidate pairs are found with sorted arrays (vectorised
``searchsorted``) and checked with a popcount; connected components give the groups.
"""

from __future__ import annotations

import hashlib
from itertools import combinations

import cv2
import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix  # scipy: a declared dependency
from scipy.sparse.csgraph import connected_components

CHUNKS = 4
CHUNK_BITS = 64 // CHUNKS
MAX_THRESHOLD = 11  # probes per chunk grow quickly past a radius of 2 bits


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


def _flip_masks(radius: int) -> np.ndarray:
    masks = [0]
    for count in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(CHUNK_BITS), count)]
    return np.array(masks, dtype=np.uint64)


def near_duplicate_pairs(hashes: npt.ArrayLike, threshold: int) -> np.ndarray:
    """All index pairs ``(i, j)``, ``i < j``, whose hashes differ in at most ``threshold`` bits.

    Returns an ``N×2`` int64 array. ``threshold`` must be between 0 and 11.
    """
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ValueError(
            f"`threshold` should be between 0 and {MAX_THRESHOLD}. Received: threshold={threshold}"
        )
    values = np.asarray(hashes, dtype=np.uint64)
    found = [np.empty((0, 2), np.int64)]
    masks = _flip_masks(threshold // CHUNKS)
    for chunk in range(CHUNKS):
        keys = (values >> np.uint64(chunk * CHUNK_BITS)) & np.uint64((1 << CHUNK_BITS) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        for mask in masks:
            wanted = keys ^ mask
            left = np.searchsorted(sorted_keys, wanted, side="left")
            right = np.searchsorted(sorted_keys, wanted, side="right")
            counts = right - left
            if not counts.any():
                continue
            first = np.repeat(np.arange(len(values)), counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            second = order[np.repeat(left, counts) + offsets]
            keep = first < second
            first, second = first[keep], second[keep]
            distance = np.bitwise_count(values[first] ^ values[second])
            close = distance <= threshold
            found.append(np.stack([first[close], second[close]], axis=1))
    pairs = np.concatenate(found)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def group_labels(count: int, pairs: npt.ArrayLike) -> np.ndarray:
    """Connected components of ``count`` items linked by ``pairs``: one label per item."""
    edges = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(count, count))
    return connected_components(graph, directed=False)[1]
