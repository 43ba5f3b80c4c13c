"""The `ReadValidRows` PTransform: input files -> valid rows, rejected rows, counts."""

from typing import Iterator, List, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipeline.io.files import FileUnreadable, match_input
from pipeline.io.readers import read_chunks
from pipeline.io.validation import check_chunk, file_rejection
from transforms.beam import job_metrics
from transforms.beam.shards import FEATURES_COLUMN
from transforms.core.errors import UserInputError

# counts: int64 [4]
ROWS_READ, ROWS_VALID, ROWS_REJECTED, FILES_REJECTED = range(4)


class _ReadAndValidateFn(beam.DoFn):
    """file path -> valid record batches (main), rejected JSON lines, and the counts
    (int64 [4]: rows read, valid, rejected; files rejected)."""

    REJECTED, COUNTS = "rejected", "counts"

    def __init__(
        self,
        fmt: str,
        features: List[str],
        passthrough: pa.Schema,
        on_invalid: str,
        batch_rows: int,
        directions: bool = False,
    ):
        self._fmt, self._features, self._passthrough = fmt, features, passthrough
        self._on_invalid, self._batch_rows = on_invalid, batch_rows
        self._directions = directions

    def process(self, path: str) -> Iterator[pa.RecordBatch]:
        counts = np.zeros(4, np.int64)
        try:
            for chunk in read_chunks(path, self._fmt, self._batch_rows):
                checked = check_chunk(
                    chunk, self._features, self._passthrough, FEATURES_COLUMN, self._directions
                )
                if checked.first_error and self._on_invalid == "fail":
                    raise UserInputError(f"invalid row (--on_invalid=fail): {checked.first_error}")
                n_valid = 0 if checked.valid is None else checked.valid.num_rows
                counts[[ROWS_READ, ROWS_VALID, ROWS_REJECTED]] += (
                    checked.n_read,
                    n_valid,
                    len(checked.rejected),
                )
                # As the rows are read, for a driver following the job (job_metrics).
                job_metrics.count(job_metrics.ROWS_READ, checked.n_read)
                job_metrics.count(job_metrics.ROWS_VALID, n_valid)
                job_metrics.count(job_metrics.ROWS_REJECTED, len(checked.rejected))
                if n_valid:
                    yield checked.valid
                for line in checked.rejected:
                    yield beam.pvalue.TaggedOutput(self.REJECTED, line)
        except FileUnreadable as e:
            # Raised before the file's first row: nothing of it was emitted.
            if self._on_invalid == "fail":
                raise UserInputError(f"{e} (--on_invalid=fail)") from None
            counts[FILES_REJECTED] += 1
            job_metrics.count(job_metrics.FILES_REJECTED, 1)
            yield beam.pvalue.TaggedOutput(self.REJECTED, file_rejection(path, e.reason))
        else:
            job_metrics.count(job_metrics.FILES_READ, 1)
        job_metrics.record_time(job_metrics.READ_MS)
        yield beam.pvalue.TaggedOutput(self.COUNTS, counts)


class ReadValidRows(beam.PTransform):
    """A file pattern -> {'valid', 'rejected', 'counts'}.

    `files`: the files to read, as the driver matched them; a file gone since
    is then rejected (or fatal) as unreadable, not missed. Without them (a
    template, built once and run later) the pattern is matched when the job
    runs.

    valid:    pa.RecordBatch: `FEATURES_COLUMN` (list<float64>, D values) + passthrough columns.
    rejected: str, one JSON object per line: a rejected row (file, row, column, reason, values
              or text), or a file that cannot be read (file, row and column null, reason).
    counts:   one int64 [4] array: rows read, valid, rejected (read == valid + rejected);
              files rejected (unreadable, with --on_invalid reject).
    `directions`: rows whose features are all 0 are rejected too (they have no
    cosine distance: a fit with --distance cosine and --standardize none).
    """

    def __init__(
        self,
        pattern: str,
        fmt: str,
        features: List[str],
        passthrough: pa.Schema,
        on_invalid: str = "reject",
        batch_rows: int = 65536,
        files: Optional[Sequence[str]] = None,
        directions: bool = False,
    ):
        super().__init__()
        self._pattern, self._files = pattern, None if files is None else list(files)
        self._fn = _ReadAndValidateFn(
            fmt, features, passthrough, on_invalid, batch_rows, directions
        )

    @classmethod
    def of_job(cls, spec) -> "ReadValidRows":
        """The reading of a job's spec (fit.FitSpec, score.ScoreSpec: the fields named here)."""
        return cls(
            spec.input,
            spec.format,
            spec.features,
            spec.passthrough,
            spec.on_invalid,
            spec.batch_size,
            files=None if spec.match_when_run else spec.files,
            directions=spec.needs_directions,
        )

    def expand(self, pbegin):
        if self._files is not None:
            paths = pbegin | "Files" >> beam.Create(self._files)
        else:
            # As fileio.MatchFiles would, but keeping the entries Beam's match drops
            # (dangling links); matching nothing here (a worker that does not see
            # the files) is an error, not an empty input.
            paths = (
                pbegin
                | "Pattern" >> beam.Create([self._pattern])
                | "MatchFiles" >> beam.FlatMap(match_input)
            )
        outputs = (
            paths
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadAndValidate"
            >> beam.ParDo(self._fn).with_outputs(
                _ReadAndValidateFn.REJECTED, _ReadAndValidateFn.COUNTS, main="valid"
            )
        )
        counts = outputs[_ReadAndValidateFn.COUNTS] | "SumCounts" >> beam.CombineGlobally(
            lambda arrays: np.sum(list(arrays), axis=0) if arrays else np.zeros(4, np.int64)
        )
        return {
            "valid": outputs.valid,
            "rejected": outputs[_ReadAndValidateFn.REJECTED],
            "counts": counts,
        }
