"""Near-duplicate grouping at scale: the multi-index hash against all-pairs comparison.

    python benchmarks/near_duplicates.py [--count 100000] [--threshold 6]

Hashes are random 64-bit values with 1 % near-duplicates (a few bits flipped) mixed in. The
all-pairs baseline is a vectorised NumPy popcount over every pair, timed on a 3,000-hash
subset in the same run and extrapolated (n² / 2 pairs) to the full count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from cvprep.dataset.duplicates import group_labels, near_duplicate_pairs


def make_hashes(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, np.iinfo(np.int64).max, count, dtype=np.int64).astype(np.uint64)
    hashes |= rng.integers(0, 2, count).astype(np.uint64) << np.uint64(63)
    copies = rng.choice(count, count // 100, replace=False)
    targets = rng.choice(count, len(copies), replace=False)
    near = hashes[copies].copy()
    for _ in range(2):  # two flipped bits (at most: the same bit may be drawn twice)
        near ^= np.uint64(1) << rng.integers(0, 64, len(copies)).astype(np.uint64)
    hashes[targets] = near
    return hashes


def all_pairs_seconds(hashes: np.ndarray, threshold: int) -> float:
    start = time.perf_counter()
    for i in range(len(hashes) - 1):
        distance = np.bitwise_count(hashes[i] ^ hashes[i + 1 :])
        np.nonzero(distance <= threshold)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--threshold", type=int, default=6)
    args = parser.parse_args()
    hashes = make_hashes(args.count)
    start = time.perf_counter()
    pairs = near_duplicate_pairs(hashes, args.threshold)
    labels = group_labels(len(hashes), pairs)
    indexed = time.perf_counter() - start
    sample = 3000
    measured = all_pairs_seconds(hashes[:sample], args.threshold)
    extrapolated = measured * (args.count / sample) ** 2
    print(f"{args.count:,} hashes, threshold {args.threshold} bits")
    print(
        f"  multi-index hashing + grouping: {indexed:8.2f} s  ({len(pairs):,} pairs, "
        f"{len(hashes) - len(np.unique(labels)):,} files joined to a group)"
    )
    print(f"  all pairs (extrapolated from {sample:,}): {extrapolated:8.1f} s")
    print(f"  speed-up: {extrapolated / indexed:,.0f} x")


if __name__ == "__main__":
    main()
