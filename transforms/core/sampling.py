"""The bottom-m sample: a bounded sample that no sharding or ordering can change.

The sample is the m rows with the smallest 64-bit hash of (row content, seed):
a bottom-m sample. Every runner computes the same one, whatever the shards,
bundles or worker count, because a row's hash depends on nothing but its values
and the seed. `transforms.beam.combiners.BottomSampleFn` draws it in a pass;
`transforms.core.seeding` starts the fits from it.

A weighted fit draws a weighted sample the same way, by priority sampling
(Duffield, Lund and Thorup, 2007): a row of weight w gets the key u / w, u in
(0, 1] from its hash, and the sample is the m rows of smallest key (largest
priority w / u), again a function of the rows alone. With the (m+1)-th key
kept, tau = 1 / that key gives each sampled row the weight max(w, tau), whose
sums over any subset are unbiased for the sums of the weights of all rows
(`priority_weights`); with no more than m rows, tau is 0 and the sample is the
rows with their own weights. A row of weight 0 has key +inf: drawn only when
there are at most m rows of positive weight, and then with weight 0.
"""

from typing import NamedTuple, Optional

import numpy as np


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser, vectorised over uint64 (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def row_hashes(x: np.ndarray, seed: int, categories: Optional[np.ndarray] = None) -> np.ndarray:
    """uint64 [n]: a hash of each row of float64 `x` [n, D] (its exact bits), of its
    categorical values (object [n, C] of str, each by `text_hashes`) and of `seed`."""
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    h = _splitmix64(np.full(len(x), seed & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64))
    for j in range(bits.shape[1]):
        h = _splitmix64(h ^ bits[:, j])
    if categories is not None:
        for j in range(categories.shape[1]):
            h = _splitmix64(h ^ text_hashes(categories[:, j]))
    return h


def text_hashes(values: np.ndarray) -> np.ndarray:
    """uint64 [n]: a hash of each string of object [n], the same in every process (Python's
    `hash` of a str is salted per process). Each distinct value is hashed once: a
    categorical column holds few."""
    import hashlib

    distinct, inverse = np.unique(values.astype(str), return_inverse=True)
    digests = [hashlib.blake2b(v.encode(), digest_size=8).digest() for v in distinct]
    return np.frombuffer(b"".join(digests), dtype="<u8")[inverse.reshape(-1)]


def priority_keys(hashes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """uint64 [n]: the keys of weighted rows, u / w as float64 bits, u in (0, 1] the top 53
    bits of each row's hash, w float64 [n] >= 0 its weight (w = 0: +inf). Non-negative
    float64s order as their bits do, so the keys sort as the hashes do."""
    u = ((hashes >> np.uint64(11)).astype(np.float64) + 1.0) / float(1 << 53)
    with np.errstate(divide="ignore", over="ignore"):
        keys = u / np.asarray(weights, np.float64)
    return np.ascontiguousarray(keys).view(np.uint64)


def priority_weights(sample: "Sample", r: int) -> np.ndarray:
    """float64 [min(r, m')]: the weights of the first r rows of a weighted `sample` (in key
    order, holding one row beyond them when there were more), as priority sampling
    estimates them: max(w, tau), tau = 1 / the (r+1)-th key (0 if there is none)."""
    n = min(r, len(sample.hashes))
    tau = 0.0
    if len(sample.hashes) > r:
        tau = 1.0 / float(sample.hashes[r : r + 1].view(np.float64)[0])
    return np.maximum(sample.weights[:n], tau)


class Sample(NamedTuple):
    """A bottom-m sample: hashes uint64 [m'] ascending, rows float64 [m', D]; weighted,
    the hashes are `priority_keys` and weights float64 [m'] the rows' own weights; with
    categorical features, categories object [m', C] the rows' values (str)."""

    hashes: np.ndarray
    rows: np.ndarray
    weights: Optional[np.ndarray] = None
    categories: Optional[np.ndarray] = None


def _take(sample: Sample, index) -> Sample:
    return Sample(*(None if a is None else a[index] for a in sample))


def _bottom(
    hashes: np.ndarray,
    rows: np.ndarray,
    m: int,
    weights: Optional[np.ndarray] = None,
    categories: Optional[np.ndarray] = None,
) -> Sample:
    """The m smallest (hash, row) pairs in ascending order; equal hashes by row values
    (and weights, which travel with their rows, as do their categories)."""
    sample = Sample(hashes, rows, weights, categories)
    if len(hashes) > m:
        cut = np.partition(hashes, m - 1)[m - 1]
        sample = _take(sample, hashes <= cut)
    sample = _take(sample, np.argsort(sample.hashes, kind="stable"))
    hashes = sample.hashes
    if np.any(hashes[1:] == hashes[:-1]):
        # Duplicate rows share a hash: order them by their values too, so that
        # the sample does not depend on the order rows arrived in (rare: sort all).
        extra = () if sample.weights is None else (sample.weights,)
        if sample.categories is not None:
            extra += tuple(sample.categories.astype(str).T[::-1])
        order = np.lexsort(extra + tuple(sample.rows.T[::-1]) + (hashes,))
        sample = _take(sample, order)
    return _take(sample, slice(0, m))


class _Bottom:
    """BottomSampleFn's accumulator: a bottom-m Sample, and the batches that may still enter it.

    Merged into the sample only once they hold m rows: merging costs a copy
    of the sample (m x D float64), so merging every batch would copy it once
    a batch; this way it is copied about ln(rows / m) times over a pass.
    n_pending counts their rows: once the sample is full a batch keeps few rows,
    so the list grows long, and summing it on every batch would be quadratic.
    """

    def __init__(self, sample: Sample):
        self.sample, self.pending, self.n_pending = sample, [], 0
