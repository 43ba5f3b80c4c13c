"""The CombineFns: the partial sums of a round merged across workers, and the bottom-m sample.

What they merge, and how, is NumPy in `transforms.core.partials` and
`transforms.core.sampling`; these wrap it for Beam's combiners.
"""

from typing import Iterable, Optional, Tuple

import apache_beam as beam
import numpy as np

from transforms.core.partials import Partials, merge
from transforms.core.sampling import Sample, _Bottom, _bottom
from transforms.core.statistics import ClusterTotals, QuantileSketch, add_totals


@beam.typehints.with_input_types(Partials)
@beam.typehints.with_output_types(Partials)
class PartialsCombineFn(beam.CombineFn):
    """Merges the `Partials` of all workers into one.

    The accumulator starts as None (nothing yet), so the CombineFn needs not
    know K: the candidates of a sweep have different Ks, and the final pass
    sees the K the sweep chose. An empty input has no Partials (None): combine
    with `.without_defaults()`, so that the output is one Partials or nothing.
    """

    def __init__(self, n_far: int = 16):
        self._n_far = n_far

    def create_accumulator(self) -> Optional[Partials]:
        return None

    def add_input(self, accumulator: Optional[Partials], element: Partials) -> Partials:
        return element if accumulator is None else merge([accumulator, element], self._n_far)

    def merge_accumulators(self, accumulators: Iterable[Optional[Partials]]) -> Optional[Partials]:
        parts = [a for a in accumulators if a is not None]
        return merge(parts, self._n_far) if parts else None

    def extract_output(self, accumulator: Optional[Partials]) -> Optional[Partials]:
        return accumulator


@beam.typehints.with_input_types(Tuple[Partials, ...])
@beam.typehints.with_output_types(Tuple[Partials, ...])
class CandidatePartialsCombineFn(beam.CombineFn):
    """Merges tuples of Partials, one per candidate fit (restarts, Ks), element-wise.

    Like `PartialsCombineFn`, it needs not know the candidates' Ks; combine with
    `.without_defaults()` (an empty input has no tuple).
    """

    def __init__(self, n_far: int = 16):
        self._n_far = n_far

    def create_accumulator(self) -> Optional[tuple]:
        return None

    def add_input(self, accumulator: Optional[tuple], element: tuple) -> tuple:
        return self.merge_accumulators([accumulator, element])

    def merge_accumulators(self, accumulators: Iterable[Optional[tuple]]) -> Optional[tuple]:
        accumulators = [a for a in accumulators if a is not None]
        if len(accumulators) < 2:
            return tuple(accumulators[0]) if accumulators else None
        return tuple(merge(parts, self._n_far) for parts in zip(*accumulators))

    def extract_output(self, accumulator: Optional[tuple]) -> Optional[tuple]:
        return accumulator


@beam.typehints.with_input_types(ClusterTotals)
@beam.typehints.with_output_types(ClusterTotals)
class ClusterTotalsCombineFn(beam.CombineFn):
    """Sums the per-cluster `ClusterTotals` of all shards (None until the first; combine
    with `.without_defaults()`)."""

    def create_accumulator(self) -> Optional[ClusterTotals]:
        return None

    def add_input(self, accumulator, element: ClusterTotals) -> ClusterTotals:
        return element if accumulator is None else add_totals([accumulator, element])

    def merge_accumulators(self, accumulators) -> Optional[ClusterTotals]:
        return add_totals(a for a in accumulators if a is not None)

    def extract_output(self, accumulator: Optional[ClusterTotals]) -> Optional[ClusterTotals]:
        return accumulator


@beam.typehints.with_input_types(QuantileSketch)
@beam.typehints.with_output_types(QuantileSketch)
class QuantileSketchCombineFn(beam.CombineFn):
    """Merges the shards' sketches of the normalized distance into one."""

    def create_accumulator(self) -> QuantileSketch:
        return QuantileSketch()

    def add_input(self, accumulator: QuantileSketch, element: QuantileSketch) -> QuantileSketch:
        return accumulator.merge(element)

    def merge_accumulators(self, accumulators) -> QuantileSketch:
        merged = QuantileSketch()
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator: QuantileSketch) -> QuantileSketch:
        return accumulator


@beam.typehints.with_input_types(Tuple[np.ndarray, ...])
@beam.typehints.with_output_types(Sample)
class BottomSampleFn(beam.CombineFn):
    """Combines (hashes uint64 [n], rows float64 [n, D]) batches into the bottom-m Sample.

    weighted: the batches are (priority keys uint64 [n], rows, weights float64 [n])
    (`transforms.core.sampling.priority_keys`), and the sample keeps m + 1 rows:
    the last one's key is what `priority_weights` estimates the weights with.
    n_categorical C > 0: each batch has a fourth element, the rows' categorical values
    object [n, C] (the third is None unweighted), and so has the sample.
    """

    def __init__(self, m: int, n_features: int, weighted: bool = False, n_categorical: int = 0):
        self._m, self._d, self._weighted = m + int(weighted), n_features, weighted
        self._c = n_categorical

    def create_accumulator(self) -> _Bottom:
        weights = np.zeros(0) if self._weighted else None
        categories = np.zeros((0, self._c), dtype=object) if self._c else None
        return _Bottom(Sample(np.zeros(0, np.uint64), np.zeros((0, self._d)), weights, categories))

    def add_input(self, accumulator: _Bottom, element) -> _Bottom:
        hashes = element[0]
        if len(accumulator.sample.hashes) == self._m:
            # Full: only rows that hash below its largest can get in.
            keep = hashes <= accumulator.sample.hashes[-1]
            element = tuple(None if a is None else a[keep] for a in element)
        if len(element[0]):
            accumulator.pending.append(tuple(element))
            accumulator.n_pending += len(element[0])
        if accumulator.n_pending >= self._m:
            self._settle(accumulator)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_Bottom]) -> _Bottom:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged.pending += [self._parts(accumulator.sample)] + accumulator.pending
        return self._settle(merged)

    def compact(self, accumulator: _Bottom) -> _Bottom:
        return self._settle(accumulator)  # before it is encoded: m rows, not up to 2m

    def extract_output(self, accumulator: _Bottom) -> Sample:
        return self._settle(accumulator).sample

    def _parts(self, sample: Sample) -> tuple:
        if self._c:
            return tuple(sample)
        return tuple(sample[:3]) if self._weighted else tuple(sample[:2])

    def _settle(self, accumulator: _Bottom) -> _Bottom:
        """Merge the pending batches into the sample."""
        if accumulator.pending:
            parts = [self._parts(accumulator.sample)] + accumulator.pending
            accumulator.sample = _bottom(
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
                self._m,
                np.concatenate([p[2] for p in parts]) if self._weighted else None,
                np.concatenate([p[3] for p in parts]) if self._c else None,
            )
            accumulator.pending, accumulator.n_pending = [], 0
        return accumulator
