"""The `ReadValidRows` PTransform: input files -> valid rows, rejected rows, counts."""
from typing import List

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io import fileio

from pipeline.readers import read_chunks
from pipeline.validation import check_chunk
from transforms.errors import UserInputError
from transforms.shards import FEATURES_COLUMN


class _ReadAndValidateFn(beam.DoFn):
    """file path -> valid record batches (main), rejected JSON lines, and [read, valid, rejected]."""

    REJECTED, COUNTS = "rejected", "counts"

    def __init__(self, fmt: str, features: List[str], passthrough: pa.Schema,
                 on_invalid: str, batch_rows: int):
        self._fmt, self._features, self._passthrough = fmt, features, passthrough
        self._on_invalid, self._batch_rows = on_invalid, batch_rows

    def process(self, path: str):
        counts = np.zeros(3, np.int64)
        for chunk in read_chunks(path, self._fmt, self._batch_rows):
            checked = check_chunk(chunk, self._features, self._passthrough, FEATURES_COLUMN)
            if checked.first_error and self._on_invalid == "fail":
                raise UserInputError(f"invalid row (--on_invalid=fail): {checked.first_error}")
            n_valid = 0 if checked.valid is None else checked.valid.num_rows
            counts += (checked.n_read, n_valid, len(checked.rejected))
            if n_valid:
                yield checked.valid
            for line in checked.rejected:
                yield beam.pvalue.TaggedOutput(self.REJECTED, line)
        yield beam.pvalue.TaggedOutput(self.COUNTS, counts)


class ReadValidRows(beam.PTransform):
    """A file pattern -> {'valid', 'rejected', 'counts'}.

    valid:    pa.RecordBatch: `FEATURES_COLUMN` (list<float64>, D values) + passthrough columns.
    rejected: str, one JSON object per rejected row (file, row, column, reason, values).
    counts:   one int64 [3] array: rows read, valid, rejected (read == valid + rejected).
    """

    def __init__(self, pattern: str, fmt: str, features: List[str], passthrough: pa.Schema,
                 on_invalid: str = "reject", batch_rows: int = 65536):
        super().__init__()
        self._pattern = pattern
        self._fn = _ReadAndValidateFn(fmt, features, passthrough, on_invalid, batch_rows)

    def expand(self, pbegin):
        outputs = (
            pbegin
            # The driver matched the pattern already: matching nothing here (a worker
            # that does not see the files) is an error, not an empty input.
            | "MatchFiles" >> fileio.MatchFiles(
                self._pattern, empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
            | "PathOf" >> beam.Map(lambda metadata: metadata.path)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadAndValidate" >> beam.ParDo(self._fn).with_outputs(
                _ReadAndValidateFn.REJECTED, _ReadAndValidateFn.COUNTS, main="valid"))
        counts = outputs[_ReadAndValidateFn.COUNTS] | "SumCounts" >> beam.CombineGlobally(
            lambda arrays: np.sum(list(arrays), axis=0) if arrays else np.zeros(3, np.int64))
        return {"valid": outputs.valid, "rejected": outputs[_ReadAndValidateFn.REJECTED],
                "counts": counts}
