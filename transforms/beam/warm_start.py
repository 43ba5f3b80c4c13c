"""Warm start: a fitted model's centroids as the one start of a new fit.

    fitted = rows | KMeans(8, features, OUT, init_model="gs://bucket/last-month")

The old centroids are carried in ORIGINAL units, not in the old standardized space:
the new fit's tf.Transform analyses the new rows, and once its statistics are written
the old centroids are standardized with them (`standardize_centroids`, a step of the
graph after the transform). On the same data the start is the old centroids (up to
float32 rounding); on data whose mean or spread moved, the start sits where the old
clusters were, in the units of the rows. (Taking the old standardized centroids as
they are would move them with the new mean and spread instead.)

What must match, else a one-line UserInputError naming the difference: the features
(by name; in another order the columns are reordered), `standardize`, `distance`
and K. The SavedModel says each itself: `feature_names`, the centroids' shape, and its
transform graph, whose outputs hold the statistics (`feature_mean`, `feature_std`; a
`standardize="none"` transform outputs mean 0 and std 1) and, for cosine distance, the
rows before their division by the norm (`features_scaled`). A fit output's
metrics.json records standardize and distance too: when the model is in one, that
record is what is compared (a z-score whose statistics happen to be exactly 0 and 1
reads as "none" from the graph alone).
"""

import json
import posixpath
from typing import List, NamedTuple

import numpy as np
from apache_beam.io.filesystems import FileSystems

from transforms.beam.model_paths import model_base, resolve_model_dir
from transforms.core.errors import UserInputError


class WarmStart(NamedTuple):
    """A fitted model as the start of a new fit (`read_model`)."""

    model_dir: str  # the version directory read (OUTPUT/model/1)
    features: List[str]  # the model's feature names, in its column order
    standardize: str  # "z_score" or "none"
    distance: str  # "euclidean" or "cosine"
    centroids: np.ndarray  # float64 [K, D], original units, columns in `features` order

    @property
    def k(self) -> int:
        return len(self.centroids)


def read_model(path: str, name: str = "init_model") -> WarmStart:
    """The model `path` names (a fit output, a model base path or a version directory,
    transforms.beam.model_paths), its settings and its centroids in original units.
    `name` is how messages name the argument ("--init_model" for the command)."""
    import tensorflow as tf

    from transforms.step.preprocessing import FEATURES, MEAN, SCALED, STD

    try:
        model_dir = resolve_model_dir(path)
    except UserInputError as e:
        raise UserInputError(f"{name} {e}") from None
    try:
        model = tf.saved_model.load(model_dir)
        features = [f.decode() for f in model.feature_names.numpy()]
        centroids = model.centroids.numpy().astype(np.float64)
        probe = tf.zeros([1, len(features)], tf.float64)
        out = model.transform.transform_fn({FEATURES: probe})
    except Exception as e:  # noqa: BLE001 -- any load failure is the model's, named here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(
            f"{name} {model_dir} cannot be loaded as a shardmeans model: {first}"
        ) from None
    mean = out[MEAN].numpy()[0].astype(np.float64)
    std = out[STD].numpy()[0].astype(np.float64)
    standardize = "none" if np.all(mean == 0) and np.all(std == 1) else "z_score"
    distance = "cosine" if SCALED in out else "euclidean"
    recorded = _fit_record(model_dir)
    standardize = recorded.get("standardize", standardize)
    distance = recorded.get("distance", distance)
    # As centroids.csv: raw = z * std + mean (a zero-variance column: raw = z + mean).
    # A cosine model's centroids are unit vectors of the scaled space: this is a point
    # in that direction, which the new transform divides by its norm again.
    original = centroids * np.where(std > 0, std, 1.0) + mean
    return WarmStart(model_dir, features, standardize, distance, original)


def _fit_record(model_dir: str) -> dict:
    """The fit output's metrics.json holding this model (OUTPUT/model/1 -> OUTPUT), if any."""
    path = FileSystems.join(posixpath.dirname(model_base(model_dir)), "metrics.json")
    try:
        with FileSystems.open(path) as f:
            record = json.load(f)
    except Exception:  # noqa: BLE001 -- a model copied out of its fit's output
        return {}
    return {key: record[key] for key in ("standardize", "distance") if key in record}


def check_matches(
    warm: WarmStart,
    features: List[str],
    k: int,
    standardize: str,
    distance: str,
    name: str = "init_model",
) -> np.ndarray:
    """The model's centroids, float64 [K, D] in original units with their columns in
    `features` order, if the model was fitted as this fit is; else UserInputError naming
    the first setting that differs."""
    where = f"{name} {warm.model_dir}"
    if sorted(warm.features) != sorted(features):
        extra = [f for f in warm.features if f not in features]
        missing = [f for f in features if f not in warm.features]
        raise UserInputError(
            f"{where} was fitted on features {','.join(warm.features)}, this fit's are "
            f"{','.join(features)} (not in the model: {','.join(missing) or '-'}; only "
            f"in the model: {','.join(extra) or '-'})"
        )
    for setting, ours, theirs in (
        ("k", k, warm.k),
        ("standardize", standardize, warm.standardize),
        ("distance", distance, warm.distance),
    ):
        if ours != theirs:
            raise UserInputError(
                f"{where} was fitted with {setting} {theirs}, this fit has {setting} {ours}"
            )
    return warm.centroids[:, [warm.features.index(f) for f in features]]


def standardize_centroids(original: np.ndarray, transform_dir: str, ready=None) -> np.ndarray:
    """Centroids in original units, float64 [K, D] -> this fit's standardized space,
    float64 [K, D] (float32 values, as the standardized shards hold), with the
    tf.Transform output in `transform_dir` (and, for cosine, divided by their norms).
    `ready`: a side input that orders this step after the transform is written."""
    from transforms.step.preprocessing import Standardizer

    del ready
    z = Standardizer(transform_dir, original.shape[1])(original).astype(np.float64)
    if not np.all(np.isfinite(z)):
        raise UserInputError(
            "init_model: the model's centroids are not finite in this fit's standardized space"
        )
    return z
