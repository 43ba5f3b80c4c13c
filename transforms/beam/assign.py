"""The `AssignClusters` PTransform: rows + a fitted model -> rows with their cluster.

    scored = rows | AssignClusters("gs://bucket/fit-output")  # or .../model, .../model/1

Each worker loads the SavedModel once (`DoFn.setup`, shared by all threads of
the process through `beam.utils.shared`), and scores rows in batches.
"""

from typing import List, Optional, Sequence, Tuple, Union

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.utils import shared

from transforms.beam.elements import (
    REJECTED,
    array_rows,
    batch_elements,
    rejection,
    row_categories,
    row_matrix,
    split_kinds,
)
from transforms.beam.model_paths import resolve_model_dir
from transforms.beam.shards import (
    CATEGORIES_COLUMN,
    FEATURES_COLUMN,
    categories_to_matrix,
    features_to_matrix,
)
from transforms.core.categorical import as_text
from transforms.core.statistics import anomaly_threshold
from transforms.step.buffers import CALL_BUDGET_BYTES
from transforms.step.export import (
    IS_ANOMALY,
    NEAREST_CLUSTER_IDS,
    NEAREST_DISTANCES,
    NORMALIZED_DISTANCE,
    OUTPUT_ORDER,
    SERVED_NEAREST,
)

# The per-row outputs that are lists (one value per nearest centroid), not scalars.
LIST_OUTPUTS = (NEAREST_CLUSTER_IDS, NEAREST_DISTANCES)


def list_column(values: np.ndarray) -> pa.Array:
    """[n, m] NumPy values -> a list<type> Arrow column of n rows of m values each."""
    n, m = values.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * np.int32(m))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(values).ravel()))


def output_column(name: str, values: np.ndarray) -> pa.Array:
    """One per-row output as an Arrow column: a list column for the nearest centroids."""
    return list_column(values) if name in LIST_OUTPUTS else pa.array(values)


def row_values(
    rows: Sequence[dict], features: Sequence[str], categorical: Sequence[str], impute: bool
) -> Tuple[np.ndarray, Optional[np.ndarray], List[Tuple[int, str]]]:
    """Dict rows -> (float64 [n, D] their numeric features; object [n, C] their categorical
    ones' text, None without any; [(index, reason)] of the rows that cannot be scored, a
    numeric feature's reason first). An empty text is a missing value, as the model
    takes it: a reason unless the model imputes (`row_categories`)."""
    x, bad = row_matrix(rows, features, impute)
    if not categorical:
        return x, None, bad
    values, bad_values = row_categories(rows, categorical, impute)
    reasons = dict(bad_values)
    reasons.update(bad)
    return x, values, sorted(reasons.items())


def as_strings(categories, n: int, n_categorical: int) -> np.ndarray:
    """Categorical values [n, C] (str, bytes, booleans, numbers; None is missing) ->
    object [n, C] of their text as the model takes it (core.categorical.as_text; None
    is "", a missing value)."""
    flat = np.asarray(categories, dtype=object).reshape(-1)
    text = [("" if v is None else as_text(v)) for v in flat]
    return np.array(text, dtype=object).reshape(n, n_categorical)


class LoadedModel:
    """A SavedModel written by `export_model`, with its feature names (weak-referenceable).

    `model_dir`: a fit output, a model base path or a version directory
    (`transforms.beam.model_paths`); `path` is the version directory loaded.
    `contamination`: flag anomalies at this fraction instead of the model's
    default (the threshold is read from the training distribution it keeps).
    `top_n`: how many nearest centroids each row gets (nearest_cluster_ids,
    nearest_distances), 0 to K; None: what the model serves, min(K, SERVED_NEAREST)
    (none for a model fitted before them).
    `outputs`: the names of the per-row outputs, in `OUTPUT_ORDER`.
    `features`: the numeric feature names, in the model's order; `categorical`:
    the categorical ones (none for a model without them, or fitted before them).
    """

    def __init__(
        self, model_dir: str, contamination: Optional[float] = None, top_n: Optional[int] = 0
    ):
        import tensorflow as tf

        self.path = resolve_model_dir(model_dir)
        self.model = tf.saved_model.load(self.path)
        self.features = [f.decode() for f in self.model.feature_names.numpy()]
        categorical = getattr(self.model, "categorical_features", None)
        self.categorical = [] if categorical is None else [f.decode() for f in categorical.numpy()]
        # A model fitted before --missing existed rejects missing values.
        missing = getattr(self.model, "missing", None)
        self.missing = "reject" if missing is None else missing.numpy().decode()
        self.k = int(self.model.centroids.shape[0])
        nearest = getattr(self.model, "assign_nearest", None) is not None
        if top_n is None:  # what the model serves (none, for a model fitted before top_n)
            top_n = min(self.k, SERVED_NEAREST) if nearest else 0
        self.top_n = top_n
        if not 0 <= self.top_n <= self.k:
            raise ValueError(f"top_n must be in 0..{self.k} (the model's K), got {self.top_n}")
        if self.top_n and not nearest:
            raise ValueError(
                f"the model in {self.path} cannot give the nearest centroids (fitted "
                f"before top_n): fit it again"
            )
        self.threshold = None
        if contamination is not None:
            if getattr(self.model, "tail", None) is None:
                raise ValueError(
                    f"the model in {self.path} keeps no distribution of distances (fitted "
                    f"before cluster statistics): it cannot flag anomalies; fit it again"
                )
            self.threshold = anomaly_threshold(
                self.model.tail.numpy(), self.model.tail_quantiles.numpy(), contamination
            )
        names = set(self(np.zeros((0, len(self.features))), np.zeros((0, len(self.categorical)))))
        self.outputs = [name for name in OUTPUT_ORDER if name in names]
        self.merged = "merged_cluster_id" in names

    def identity(self):
        """(the feature names, the version directory loaded): what a caller holding a proxy
        of this object (Beam's RunInference with large_model or model_copies runs the model
        in another process) can ask, since a proxy passes method calls, not attributes."""
        return self.features, self.path

    def missing_values(self) -> str:
        """What the model does with a missing value: "reject" or "impute" (a method, as
        `identity`)."""
        return self.missing

    def categorical_features(self) -> List[str]:
        """The categorical feature names, in the model's order (a method, as `identity`)."""
        return self.categorical

    def __call__(self, x: np.ndarray, categories=None) -> dict:
        """float64 [n, D] raw rows (the numeric features), and for a model with categorical
        features their values [n, C] (text; bytes, booleans and numbers are taken as
        core.categorical.as_text spells them; None or "" is missing) -> {cluster_id
        int64 [n], distance float32 [n] (, normalized_distance float32 [n],
        merged_cluster_id int64 [n], is_anomaly bool [n], nearest_cluster_ids int64
        [n, top_n], nearest_distances float32 [n, top_n])} as NumPy arrays."""
        import tensorflow as tf

        x = np.asarray(x, np.float64)
        c = len(self.categorical)
        if c and categories is None:
            raise ValueError(
                f"the model has categorical features {self.categorical}: give their values"
            )
        if not c and categories is not None and np.size(categories):
            raise ValueError("the model has no categorical features: it takes numbers alone")
        if c:
            text = tf.constant(as_strings(categories, len(x), c), tf.string)
        args = (lambda i, j: (x[i:j], text[i:j])) if c else (lambda i, j: (x[i:j],))
        if self.top_n:
            # In calls whose differences to the nearest [rows, top_n, D] and scores
            # [rows, K] stay within the step's budget (a top_n near a large K).
            width = int(self.model.centroids.shape[1])
            per_row = 4 * (self.k + self.top_n * width)
            step = max(1, CALL_BUDGET_BYTES // per_row)
            parts = [
                self.model.assign_nearest(*args(i, i + step), np.int32(self.top_n))
                for i in range(0, max(len(x), 1), step)
            ]
            out = {name: np.concatenate([p[name].numpy() for p in parts]) for name in parts[0]}
        else:
            out = {
                name: value.numpy()
                for name, value in self.model.assign_batch(*args(0, len(x))).items()
            }
        if self.threshold is not None:
            out[IS_ANOMALY] = out[NORMALIZED_DISTANCE] > np.float32(self.threshold)
        return out


def training_statistics(model_dir: str) -> Optional[dict]:
    """What a fitted model keeps of its training rows, for a comparison with new data:
    {"sizes": int64 [K], "tail": float64 [Q], "tail_quantiles": float64 [Q],
    "contamination": float or None}; None for a model that keeps none."""
    model = LoadedModel(model_dir).model
    if getattr(model, "cluster_sizes", None) is None:
        return None
    contamination = getattr(model, "contamination", None)
    return {
        "sizes": model.cluster_sizes.numpy(),
        "tail": model.tail.numpy(),
        "tail_quantiles": model.tail_quantiles.numpy(),
        "contamination": None if contamination is None else float(contamination.numpy()),
    }


class ModelDescription(tuple):
    """What a fitted model expects and gives: unpacks as (features, outputs, missing), the
    numeric feature names in order, its per-row outputs' names in `OUTPUT_ORDER`, and
    what it does with a missing value ("reject" or "impute"); `categorical` is its
    categorical feature names in order ([] for a model without them), which the rows
    must carry too."""

    def __new__(cls, features, outputs, missing, categorical=()):
        description = super().__new__(cls, (list(features), list(outputs), missing))
        description.categorical = list(categorical)
        return description

    def __getnewargs__(self):
        return (*self, self.categorical)

    features = property(lambda self: self[0])
    outputs = property(lambda self: self[1])
    missing = property(lambda self: self[2])


def describe_model(
    model_dir: str, contamination: Optional[float] = None, top_n: int = 0
) -> ModelDescription:
    """What `score` needs of a fitted model (`ModelDescription`)."""
    model = LoadedModel(model_dir, contamination, top_n)
    return ModelDescription(model.features, model.outputs, model.missing, model.categorical)


class _AssignFn(beam.DoFn):
    """Lists from `batch_elements`: each record batch (`FEATURES_COLUMN`, and for a model
    with categorical features `CATEGORIES_COLUMN`, + passthrough) -> passthrough + the
    outputs; the dict rows and beam.Rows -> dicts of their fields and the outputs; each
    array [n, D] -> n such dicts {"features": [D values], ...}.

    A row that cannot be scored (a feature missing, null, not a number, NaN or
    infinite; a categorical one missing, null or empty unless the model imputes;
    an array row, for a model with categorical features) is emitted tagged
    REJECTED (`rejected`), else raises naming it.
    """

    def __init__(
        self,
        model_dir: Optional[str],
        shared_handle: shared.Shared,
        contamination: Optional[float],
        rejected: bool,
        top_n: int = 0,
    ):
        """`model_dir` None: the model comes as a side input of `process` instead."""
        self._model_dir, self._shared = model_dir, shared_handle
        self._contamination, self._rejected, self._top_n = contamination, rejected, top_n
        self._model = None

    def setup(self):
        if self._model_dir is not None:
            self._model = self._load(self._model_dir)

    def _load(self, model_dir: str) -> LoadedModel:
        """The model at `model_dir`, shared by the process's threads; a new path (a side
        input that changed) loads that model instead."""
        return self._shared.acquire(
            lambda: LoadedModel(model_dir, self._contamination, self._top_n), tag=model_dir
        )

    # No output type hint: the output kind is the input's (record batches, or dict
    # rows), which a Beam type hint cannot say; Union would refuse typed consumers.
    def process(self, elements: list, model_dir: Optional[str] = None):
        if model_dir is not None and (self._model is None or self._model_dir != model_dir):
            self._model, self._model_dir = self._load(model_dir), model_dir
        features, categorical = self._model.features, self._model.categorical
        raw = (FEATURES_COLUMN, CATEGORIES_COLUMN) if categorical else (FEATURES_COLUMN,)
        batches, arrays, rows = split_kinds(elements)
        for batch in batches:
            x = features_to_matrix(batch.column(FEATURES_COLUMN), len(features), np.float64)
            categories = None
            if categorical:
                if CATEGORIES_COLUMN not in batch.schema.names:
                    raise ValueError(
                        f"AssignClusters: the model has categorical features "
                        f"{categorical}: a record batch holds their values in the column "
                        f"{CATEGORIES_COLUMN!r} (list<string>), which this one lacks"
                    )
                categories = categories_to_matrix(batch.column(CATEGORIES_COLUMN), len(categorical))
            out = self._model(x, categories)
            keep = [n for n in batch.schema.names if n not in raw]
            added = [n for n in OUTPUT_ORDER if n in out]
            yield pa.RecordBatch.from_arrays(
                [batch.column(n) for n in keep] + [output_column(n, out[n]) for n in added],
                names=keep + added,
            )
        impute = self._model.missing == "impute"
        for array in arrays:
            x, bad = array_rows(array, len(features), impute)
            if categorical:  # an array holds numbers alone
                bad = [(i, "an array row has no categorical features") for i in range(len(x))]
            yield from self._scored(x, [{"features": list(map(float, r))} for r in x], bad)
        if rows:
            x, categories, bad = row_values(rows, features, categorical, impute)
            yield from self._scored(x, rows, bad, categories)

    def _scored(self, x: np.ndarray, rows: list, bad: list, categories=None):
        """Each row of `rows` (dicts, float64 `x` [n, D] their values, `categories` object
        [n, C] their categorical values if the model has any) with its outputs, but those
        in `bad` [(index, reason)]: rejected, or an error."""
        for i, reason in bad:
            if not self._rejected:
                raise ValueError(f"AssignClusters cannot score row {rows[i]!r}: {reason}")
            yield beam.pvalue.TaggedOutput(REJECTED, rejection(rows[i], reason))
        keep = np.setdiff1d(np.arange(len(x)), [i for i, _ in bad])
        if not len(keep):
            return
        out = self._model(x[keep], None if categories is None else categories[keep])
        for j, i in enumerate(keep):
            yield dict(rows[i], **{name: value[j].tolist() for name, value in out.items()})


class AssignClusters(beam.PTransform):
    """Rows -> rows with `cluster_id` (int64) and `distance` (float32, standardized space:
    Euclidean, or 1 - cos for a cosine model), `normalized_distance` (float32, over the
    cluster's radius), `merged_cluster_id` when the model was fitted with merge_to, and
    `is_anomaly` (bool) when it was fitted with a contamination or one is given here,
    and with `top_n` > 0 `nearest_cluster_ids` and `nearest_distances`: the top_n
    nearest centroids, nearest first (ties: the lowest id), in the units of
    distance (lists: Python lists in dicts, list columns in record batches).

    Input elements, the kinds `KMeans` takes: dict rows or beam.Rows holding every
    feature of the model (out: dicts of their fields and the outputs), NumPy arrays
    [n, D] in the model's feature order (out: a dict a row, its values under
    "features"), or Arrow record batches with `FEATURES_COLUMN` (list<float64>) and
    passthrough columns (what pipeline's readers produce, validated; out: record
    batches). A model with categorical features takes their values too: by name
    in dict rows and beam.Rows (text; a boolean or number as the fit read it;
    missing, null or "" is missing), `CATEGORIES_COLUMN` (list<string>, in the
    model's `categorical_features` order) in record batches; an array cannot hold
    them, so its rows are rejected. A row with a feature missing, null, not a number, NaN or infinite:
    with `rejected=True` the output is {"scored": ..., "rejected": JSON lines
    {"reason", "row"}}, as the command's dead letter; without, it raises naming it.

    The model may also come from the same pipeline: `model_dir` a PCollection of one
    path, such as `KMeans`' "model" output, is read as a side input, so one pipeline
    fits and scores (its rows are scored once the model is written):

        fitted = rows | KMeans(k=8, features=FEATURES, output_dir=OUT)
        scored = rows | AssignClusters(fitted["model"])
    """

    def __init__(
        self,
        model_dir: Union[str, beam.pvalue.PCollection],
        batch_size: int = 8192,
        contamination: Optional[float] = None,
        rejected: bool = False,
        top_n: int = 0,
    ):
        """`model_dir`: a fit output, its model/ base path or a version directory
        (model/1/), or a PCollection of one such path (a side input); a base path is
        served at its highest version. `contamination`
        overrides the model's default fraction of anomalies. `top_n`: 0 to the
        model's K (checked when a worker loads the model)."""
        super().__init__()
        self._model_dir, self._batch_size = model_dir, batch_size
        self._contamination, self._rejected, self._top_n = contamination, rejected, top_n
        self._shared = shared.Shared()

    def expand(self, rows):
        side = {}
        model_dir = self._model_dir
        if isinstance(model_dir, beam.pvalue.PCollection):
            side, model_dir = {"model_dir": beam.pvalue.AsSingleton(model_dir)}, None
        fn = _AssignFn(model_dir, self._shared, self._contamination, self._rejected, self._top_n)
        batched = rows | "Batch" >> batch_elements(self._batch_size)
        if not self._rejected:
            return batched | "Assign" >> beam.ParDo(fn, **side)
        outputs = batched | "Assign" >> beam.ParDo(fn, **side).with_outputs(REJECTED, main="scored")
        return {"scored": outputs.scored, "rejected": outputs[REJECTED]}
