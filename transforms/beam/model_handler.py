"""A fitted model in Beam's RunInference: `KMeansModelHandler`.

    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from transforms import KMeansModelHandler

    results = rows | RunInference(KMeansModelHandler("gs://bucket/fit-output"))
    # each a PredictionResult(example=row, inference={"cluster_id": 2, "distance": 0.41},
    #                         model_id=<the version directory loaded>)
    keyed = pairs | RunInference(KeyedModelHandler(KMeansModelHandler(path)))

With `RunInference(..., model_metadata_pcoll=...)` (e.g. Beam's `WatchFilePattern`
on "gs://bucket/fits/*/model/*/saved_model.pb"), each new `ModelMetadata.model_id`
(any path `transforms.beam.model_paths` resolves) swaps in that model; the rows
of a batch are all scored by one model, named by their `model_id`.

Beam's stock `TFModelHandlerTensor(OUTPUT/model/1)` loads the same model too
(see `transforms.step.export`): float [D] tensors in, the same outputs as
scalar tensors; not a model with categorical features, whose text one float
tensor cannot carry: this handler takes them in dict rows.
"""

import sys
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Union

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.beam.assign import LoadedModel, row_values

Example = Union[dict, beam.Row, np.ndarray]


def _row_matrix(
    batch: Sequence[Example],
    features: Sequence[str],
    impute: bool = False,
    categorical: Sequence[str] = (),
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The examples of a batch -> (float64 [n, D] raw values, columns in `features` order;
    object [n, C] the `categorical` features' values, None without any).

    A dict or a beam.Row gives each feature by name (other fields are ignored; a
    vector column's features NAME[0]..NAME[L-1] come from its list NAME), read as
    `AssignClusters` reads them (`assign.row_values`: with `impute`, a model
    fitted with --missing impute, a feature missing or None is NaN, imputed by the
    model, and a categorical one missing, None or empty is __missing__); a NumPy
    array is one row, float [D], already in the model's feature order (a model
    with categorical features takes none: they are text). A row that cannot be
    scored raises ValueError naming it and why.
    """
    x = np.empty((len(batch), len(features)), np.float64)
    categories = np.full((len(batch), len(categorical)), "", dtype=object)
    rows, at = [], []
    for i, example in enumerate(batch):
        if isinstance(example, np.ndarray):
            if categorical:
                raise ValueError(
                    f"a NumPy example has no categorical features: the model needs "
                    f"{list(categorical)} too; give dict rows or beam.Rows"
                )
            if example.shape != (len(features),):
                raise ValueError(
                    f"a NumPy example must be one row of shape ({len(features)},) "
                    f"(features {list(features)}); got shape {example.shape}"
                )
            x[i] = example
        elif isinstance(example, (dict, beam.Row)):
            rows.append(example._asdict() if isinstance(example, beam.Row) else example)
            at.append(i)
        else:
            raise TypeError(
                f"KMeansModelHandler takes dict rows, beam.Rows or NumPy arrays [D]; "
                f"got {type(example).__name__}"
            )
    if rows:
        values, text, bad = row_values(rows, features, categorical, impute)
        if bad:
            i, reason = bad[0]
            raise ValueError(f"KMeansModelHandler cannot score row {rows[i]!r}: {reason}")
        x[at] = values
        if categorical:
            categories[at] = text
    return x, categories if categorical else None


class KMeansModelHandler(ModelHandler[Example, PredictionResult, LoadedModel]):
    """Beam `ModelHandler` of a shardmeans model: examples in, per-row outputs out.

    Each example is a dict row or a `beam.Row` holding every feature of the
    model by name (other fields pass through untouched in `example`), or a
    NumPy array float [D] in the model's feature order (`feature_names`); a
    model with categorical features takes dict rows and beam.Rows alone, each
    categorical feature's value text (or a boolean or a number, read as the fit
    read it).
    RunInference batches them (Beam's `BatchElements`; `min_batch_size`,
    `max_batch_size`, `max_batch_duration_secs` tune it) and each batch is one
    call of the SavedModel, in float64 as the fit read the values.

    Each `PredictionResult.inference` is a dict of Python scalars:
    `cluster_id` (int), `distance` (float, Euclidean in standardized space),
    and `merged_cluster_id` (int) for a model fitted with merge_to; every
    output of the SavedModel appears there by its name, the nearest centroids
    as lists: `nearest_cluster_ids` (ints) and `nearest_distances` (floats),
    nearest first (ties: the lowest id). `top_n` is how many (0 to K; default:
    what the SavedModel serves, min(K, 5)). `model_id` is the
    version directory the model was loaded from. A missing feature is a
    ValueError; a NaN or infinite value a `tf.errors.InvalidArgumentError`.

    `model_dir`: a fit output, its model/ base path (its highest numbered
    version) or a version directory; read when `load_model` runs on a worker,
    never at construction.
    """

    def __init__(
        self,
        model_dir: str,
        *,
        min_batch_size: Optional[int] = None,
        max_batch_size: Optional[int] = None,
        max_batch_duration_secs: Optional[int] = None,
        large_model: bool = False,
        model_copies: Optional[int] = None,
        top_n: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            max_batch_duration_secs=max_batch_duration_secs,
            large_model=large_model,
            model_copies=model_copies,
            **kwargs,
        )
        self._model_dir = self._own_model_dir = model_dir
        self._top_n = top_n

    def load_model(self) -> LoadedModel:
        """Load the SavedModel that the current model path names (TensorFlow is imported here)."""
        return LoadedModel(self._model_dir, top_n=self._top_n)

    def update_model_path(self, model_path: Optional[str] = None):
        """Point the handler at another model (RunInference's side input of
        `ModelMetadata`, whose model_id is the path); the next `load_model` reads it.

        None or "" (what WatchFilePattern sends while no newer file exists) is the
        handler's own model, `model_dir`, not the last one loaded: RunInference
        then loads under the tag of the handler's own model, and a window whose
        side input is "" may be processed after a later window swapped models.
        """
        self._model_dir = model_path or self._own_model_dir

    def validate_inference_args(self, inference_args: Optional[Dict[str, Any]]):
        """The model takes no argument besides the rows: refuse any (RunInference calls
        this when the pipeline is built)."""
        if inference_args:
            raise ValueError(
                f"KMeansModelHandler takes no inference_args; got {sorted(inference_args)}"
            )

    def run_inference(
        self,
        batch: Sequence[Example],
        model: LoadedModel,
        inference_args: Optional[Dict[str, Any]] = None,
    ) -> Iterable[PredictionResult]:
        """One SavedModel call for the batch -> one PredictionResult per example, in order."""
        del inference_args  # none accepted (validate_inference_args refuses them)
        if not batch:
            return []
        features, model_id = model.identity()  # a method: `model` may be a proxy
        impute = model.missing_values() == "impute"
        categorical = model.categorical_features()
        outputs = model(*_row_matrix(batch, features, impute, categorical))
        # Python scalars: JSON- and Beam-coder-friendly, and one dict per row.
        columns = {name: values.tolist() for name, values in outputs.items()}
        return [
            PredictionResult(
                example, {name: values[i] for name, values in columns.items()}, model_id
            )
            for i, example in enumerate(batch)
        ]

    def get_num_bytes(self, batch: Sequence[Example]) -> int:
        """The examples' sizes in memory (what RunInference's byte metrics count)."""
        return sum(sys.getsizeof(example) for example in batch)

    def get_metrics_namespace(self) -> str:
        return "shardmeans_KMeans"
