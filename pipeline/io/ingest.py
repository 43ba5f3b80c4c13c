"""The `ReadValidRows` PTransform: input files -> valid rows, rejected rows, counts,
and the rejected rows' summary by reason and by file."""

import json
import re
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipeline.io.files import FileUnreadable, match_input
from pipeline.io.readers import read_chunks
from pipeline.io.validation import check_chunk, file_rejection
from transforms.beam import job_metrics
from transforms.beam.shards import FEATURES_COLUMN
from transforms.core.errors import UserInputError

# counts: int64 [4 + D]: these four, then the values imputed per feature (--missing impute)
ROWS_READ, ROWS_VALID, ROWS_REJECTED, FILES_REJECTED = range(4)
IMPUTED = slice(4, None)

# The key of a rejection summary's bucket for the reasons or files not kept by name
# (a reason key is never "other", a file is a path: neither can be this key).
OTHER = "other"
# A rejection summary keeps at most this many reasons and files by name; the rest are
# folded into OTHER, so the summary stays small however many files or reasons there are.
MAX_SUMMARY_KEYS = 1000
# A reason text longer than this is cut: a key, not a record (rejected/ has it whole).
MAX_REASON_CHARS = 200

# Parts of a reason that vary with the row: its value. Replaced so that rows
# rejected for the same kind of problem share one key.
_VARIABLE_REASONS = (
    (re.compile(r"non-numeric value .*", re.S), "non-numeric value"),
    (re.compile(r"\d+ values where one is expected"), "several values where one is expected"),
    (re.compile(r"(value does not fit type [^:]*): .*", re.S), r"\1"),
)


def reason_key(column: Optional[str], reason: str) -> str:
    """The summary key of a rejected row: "COLUMN: kind of problem", or the kind alone
    for a row that names no column (a CSV line with the wrong number of fields)."""
    kind = str(reason)
    for pattern, replacement in _VARIABLE_REASONS:
        if pattern.fullmatch(kind):
            kind = pattern.sub(replacement, kind)
            break
    key = kind if column is None else f"{column}: {kind}"
    return key[:MAX_REASON_CHARS]


def _bounded(counts: Dict[str, int]) -> Dict[str, int]:
    """`counts` with at most MAX_SUMMARY_KEYS keys besides OTHER: the largest kept (ties by
    key), the rest added to OTHER. The total is unchanged."""
    if len(counts) - (OTHER in counts) <= MAX_SUMMARY_KEYS:
        return counts
    named = sorted(((n, k) for k, n in counts.items() if k != OTHER), key=lambda x: (-x[0], x[1]))
    kept = {k: n for n, k in named[:MAX_SUMMARY_KEYS]}
    kept[OTHER] = counts.get(OTHER, 0) + sum(n for n, _ in named[MAX_SUMMARY_KEYS:])
    return kept


class RejectionSummary(beam.CombineFn):
    """Per-file summaries -> one: {"files": int (files read), "by_reason": {str: int},
    "by_file": {str: int}}, rows rejected by reason key (`reason_key`) and by file.

    Mergeable and bounded: each count dict keeps MAX_SUMMARY_KEYS keys by name and
    OTHER for the rest, so each dict's counts always add up to the rows rejected.
    Which keys are named is exact while no partial sum sees more than
    MAX_SUMMARY_KEYS of them; past that, a key folded into OTHER in one partial
    may keep only its other partials' rows by name.
    """

    def create_accumulator(self) -> dict:
        return {"files": 0, "by_reason": {}, "by_file": {}}

    def add_input(self, accumulator: dict, summary: dict) -> dict:
        return self.merge_accumulators([accumulator, summary])

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        merged = self.create_accumulator()
        for a in accumulators:
            merged["files"] += a["files"]
            for key in ("by_reason", "by_file"):
                counts = merged[key]
                for name, n in a[key].items():
                    counts[name] = counts.get(name, 0) + int(n)
        for key in ("by_reason", "by_file"):
            merged[key] = _bounded(merged[key])
        return merged

    def extract_output(self, accumulator: dict) -> dict:
        return accumulator


class _ReadAndValidateFn(beam.DoFn):
    """file path -> valid record batches (main), rejected JSON lines, the counts
    (int64 [4 + D]: rows read, valid, rejected; files rejected; values imputed per
    feature) and the file's rejection
    summary (a `RejectionSummary` input: one file, its rejected rows by reason)."""

    REJECTED, COUNTS, SUMMARY = "rejected", "counts", "summary"

    def __init__(
        self,
        fmt: str,
        features: List[str],
        passthrough: pa.Schema,
        on_invalid: str,
        batch_rows: int,
        directions: bool = False,
        impute: bool = False,
        weight_column: Optional[str] = None,
        categorical: Sequence[str] = (),
    ):
        self._fmt, self._features, self._passthrough = fmt, features, passthrough
        self._on_invalid, self._batch_rows = on_invalid, batch_rows
        self._directions, self._impute = directions, impute
        self._weight_column, self._categorical = weight_column, list(categorical)

    def process(self, path: str) -> Iterator[pa.RecordBatch]:
        counts = np.zeros(4 + len(self._features) + len(self._categorical), np.int64)
        by_reason: Dict[str, int] = {}
        try:
            for chunk in read_chunks(path, self._fmt, self._batch_rows):
                checked = check_chunk(
                    chunk,
                    self._features,
                    self._passthrough,
                    FEATURES_COLUMN,
                    self._directions,
                    self._impute,
                    weight_column=self._weight_column,
                    categorical=self._categorical,
                )
                if checked.first_error and self._on_invalid == "fail":
                    raise UserInputError(f"invalid row (--on_invalid=fail): {checked.first_error}")
                n_valid = 0 if checked.valid is None else checked.valid.num_rows
                counts[[ROWS_READ, ROWS_VALID, ROWS_REJECTED]] += (
                    checked.n_read,
                    n_valid,
                    len(checked.rejected),
                )
                if checked.imputed is not None:
                    counts[IMPUTED] += checked.imputed
                # As the rows are read, for a driver following the job (job_metrics).
                job_metrics.count(job_metrics.ROWS_READ, checked.n_read)
                job_metrics.count(job_metrics.ROWS_VALID, n_valid)
                job_metrics.count(job_metrics.ROWS_REJECTED, len(checked.rejected))
                if n_valid:
                    yield checked.valid
                for line in checked.rejected:
                    # Read back for its column and reason (few rows, as a rule; they
                    # are written out as JSON anyway).
                    record = json.loads(line)
                    key = reason_key(record.get("column"), record.get("reason"))
                    by_reason[key] = by_reason.get(key, 0) + 1
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
        n_rejected = int(counts[ROWS_REJECTED])
        yield beam.pvalue.TaggedOutput(
            self.SUMMARY,
            {
                "files": 1,
                "by_reason": _bounded(by_reason),
                "by_file": {path: n_rejected} if n_rejected else {},
            },
        )


class ReadValidRows(beam.PTransform):
    """A file pattern -> {'valid', 'rejected', 'counts'}.

    `files`: the files to read, as the driver matched them; a file gone since
    is then rejected (or fatal) as unreadable, not missed. Without them (a
    template, built once and run later) the pattern is matched when the job
    runs.

    valid:    pa.RecordBatch: `FEATURES_COLUMN` (list<float64>, D values of the numeric
              `features`) (+ `CATEGORIES_COLUMN`, list<string>, the C `categorical`
              features' values) + passthrough columns.
    rejected: str, one JSON object per line: a rejected row (file, row, column, reason, values
              or text), or a file that cannot be read (file, row and column null, reason).
    counts:   one int64 [4 + D + C] array: rows read, valid, rejected (read == valid +
              rejected); files rejected (unreadable, with --on_invalid reject); then
              per feature (the numeric ones, then the categorical ones) the valid
              rows whose value is imputed (`impute`).
    rejections: one dict, `RejectionSummary`'s: files read, and the rejected rows by
              reason and by file (each adding up to counts' rows rejected).
    `directions`: rows whose features are all 0 are rejected too (they have no
    cosine distance: a fit with --distance cosine and --standardize none).
    `weight_column`: each valid row's weight goes to `WEIGHT_COLUMN` (float64, after the
    features); a row whose weight is not a finite number >= 0 is rejected.
    `impute`: a missing feature value is NaN in a valid row (--missing impute), not
    a rejection.
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
        impute: bool = False,
        weight_column: Optional[str] = None,
        categorical: Sequence[str] = (),
    ):
        super().__init__()
        self._pattern, self._files = pattern, None if files is None else list(files)
        self._n_counts = 4 + len(features) + len(categorical)
        self._fn = _ReadAndValidateFn(
            fmt,
            features,
            passthrough,
            on_invalid,
            batch_rows,
            directions,
            impute,
            weight_column,
            categorical,
        )

    @classmethod
    def of_job(cls, spec) -> "ReadValidRows":
        """The reading of a job's spec (fit.FitSpec, score.ScoreSpec: the fields named here;
        `categorical`, the features that are categories, is optional)."""
        categorical = list(getattr(spec, "categorical", ()))
        return cls(
            spec.input,
            spec.format,
            [f for f in spec.features if f not in categorical],
            spec.passthrough,
            spec.on_invalid,
            spec.batch_size,
            files=None if spec.match_when_run else spec.files,
            directions=spec.needs_directions,
            impute=spec.missing == "impute",
            weight_column=getattr(spec, "weight_column", None),  # fit only
            categorical=categorical,
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
                _ReadAndValidateFn.REJECTED,
                _ReadAndValidateFn.COUNTS,
                _ReadAndValidateFn.SUMMARY,
                main="valid",
            )
        )
        n = self._n_counts
        counts = outputs[_ReadAndValidateFn.COUNTS] | "SumCounts" >> beam.CombineGlobally(
            lambda arrays: np.sum([np.zeros(n, np.int64), *arrays], axis=0)
        )
        return {
            "valid": outputs.valid,
            "rejected": outputs[_ReadAndValidateFn.REJECTED],
            "counts": counts,
            "rejections": outputs[_ReadAndValidateFn.SUMMARY]
            | "SumRejections" >> beam.CombineGlobally(RejectionSummary()),
        }
