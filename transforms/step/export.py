"""The fitted model as a TensorFlow SavedModel: raw features in, cluster id and distance out.

The tf.Transform graph is inside it, so it takes raw values; loading it needs
TensorFlow alone (no shardmeans, no tf.Transform), so TF Serving and other
languages can use it. A fit writes it in TF Serving's layout: version
`MODEL_VERSION` under the model base path (OUTPUT/model/1/). Signatures:

  serving_default: examples, string [n] serialized tf.Example (one value per
                   numeric feature, in a float_list or an int64_list; one value
                   per categorical feature, in a bytes_list, or in an int64_list
                   read as its decimal text) -> cluster_id
                   int64 [n], distance float32 [n], nearest_cluster_ids int64
                   [n, m] and nearest_distances float32 [n, m]: the m = min(K,
                   `SERVED_NEAREST`) nearest centroids, nearest first (ties: the
                   lowest id), in the units of distance
  predict_raw:     one float32 [n] tensor per numeric feature and one string [n]
                   tensor per categorical feature, by name -> the same outputs

distance is Euclidean, in standardized space, or for a model fitted with
--distance cosine 1 - cos (the transform graph divides each scaled row by its
norm, and the centroids are unit vectors); a model fitted with --merge_to
also outputs merged_cluster_id int64 [n]. A missing feature or a NaN or
infinite value is an error (InvalidArgumentError), never a silent cluster;
a model fitted with --missing impute takes a missing feature (absent from a
tf.Example, NaN in a tensor) as its training mean, and refuses infinity.

Categorical features (a fit's `categorical`; their names, in order, are the
string [C] variable `categorical_features`, beside `feature_names`, the numeric
ones): the transform graph one-hot encodes each over its vocabulary, a value
outside it in the feature's __other__ slot. An empty string is a missing value,
as is a feature absent from a tf.Example or holding no value: a model fitted
with --missing impute puts it in the feature's __missing__ slot, any other
refuses it (InvalidArgumentError naming the feature). A model without
categorical features has no `categorical_features`.

Besides the signatures, the loaded object is callable: `model(x)` with x
float32 or float64 [n, D] (columns in `feature_names` order) returns the same
outputs dict; `assign_batch(x)` (float64 [n, D]) is the same without the
nearest centroids, `assign_nearest(x, m)` (float64 [n, D], int32 m in 1..K)
the same with the m nearest, and `feature_names` is string [D]. Float64 input keeps raw values in float64 as
the fit did (tf.Example carries float32). With categorical features each takes
their values too, string [n, C] in `categorical_features` order: `model(x,
categories)`, `assign_batch(x, categories)`, `assign_nearest(x, categories, m)`
(D is then the numeric features alone, and may be 0).

Beam's stock `TFModelHandlerTensor` loads with `tf.keras.models.load_model`,
which is Keras 3 in a fresh process and tf-keras (Keras 2) once tf.Transform
has been imported (tensorflow_transform sets TF_USE_LEGACY_KERAS=1 when it is
unset). Keras 3 refuses a SavedModel, so the directory also holds the same
model as an unzipped Keras 3 model (`write_keras_view`); tf-keras loads the
SavedModel itself and calls `model(x)` above. A model with categorical
features has no Keras view: that handler passes one float tensor, which cannot
carry their text; use `transforms.KMeansModelHandler` or the signatures.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np

CLUSTER_ID, DISTANCE, MERGED_CLUSTER_ID = "cluster_id", "distance", "merged_cluster_id"
NORMALIZED_DISTANCE, IS_ANOMALY = "normalized_distance", "is_anomaly"
NEAREST_CLUSTER_IDS, NEAREST_DISTANCES = "nearest_cluster_ids", "nearest_distances"
# The order of the per-row outputs wherever they are columns (the assignments).
OUTPUT_ORDER = (
    CLUSTER_ID,
    DISTANCE,
    NORMALIZED_DISTANCE,
    MERGED_CLUSTER_ID,
    IS_ANOMALY,
    NEAREST_CLUSTER_IDS,
    NEAREST_DISTANCES,
)
# How many nearest centroids the signatures (and `model(x)`) return, at most: the
# few that routing to a second-best segment needs (BigQuery ML's ML.PREDICT
# returns every centroid's distance; a caller wanting more asks `assign_nearest`).
SERVED_NEAREST = 5


def inverse_radii(radii: np.ndarray) -> np.ndarray:
    """float32 [K]: 1 / radius, and for a radius of 0 the largest float32, so that
    distance * it is the normalized distance: 0 at distance 0, +inf (overflow) beyond
    (core.statistics.normalized_distances' rule)."""
    r = np.asarray(radii, np.float64)
    big = np.finfo(np.float32).max
    return np.where(r > 0, 1.0 / np.where(r > 0, r, 1.0), big).astype(np.float32)


# The version directory a fit writes under the model base path (TF Serving serves
# the highest number it finds there).
MODEL_VERSION = 1


def build_model_module(
    transform_savedmodel_dir: str,
    centroids: np.ndarray,
    features: List[str],
    merge_map: Optional[np.ndarray] = None,
    distance: str = "euclidean",
    statistics=None,
    contamination: Optional[float] = None,
    missing: str = "reject",
    columns: Optional[Sequence[Tuple[str, Optional[int]]]] = None,
    categorical: Sequence[str] = (),
):
    """A tf.Module with the two signatures' functions (see the module docstring).

    `features`: the D numeric feature names (the transform's `features` input,
    in order). `columns`: the input columns they come from, [(name, width)]: width
    None for a scalar column (feature `name`), L for a vector column (the L
    features name[0]..name[L-1], transforms.core.vectors); default every feature
    a scalar column. tf.Example records and `predict_raw` take a vector column as
    one feature of L values. `categorical`: the C categorical feature names (the
    transform's `categories` input, in order); the centroids' columns are the
    numeric features then the categorical ones' one-hot slots.

    With `merge_map` (int64 [K], fine cluster -> merged group) the outputs also
    hold merged_cluster_id (int64 [n]). With `statistics` (core.statistics.
    ClusterStats) they hold normalized_distance (float32 [n]), and with a
    `contamination` too is_anomaly (bool [n]): normalized_distance above the
    training rows' (1 - contamination) quantile.
    """
    import tensorflow as tf

    from transforms.step.preprocessing import CATEGORIES, FEATURES, MISSING_VALUE

    columns = [(name, None) for name in features] if columns is None else list(columns)
    if sum(width or 1 for _, width in columns) != len(features):
        raise ValueError(f"columns {columns} do not hold the {len(features)} features")
    categorical = list(categorical)
    clash = sorted({name for name, _ in columns} & set(categorical))
    if clash:
        raise ValueError(f"features {clash} are both numeric and categorical")
    d, c_count = len(features), len(categorical)
    served = min(len(centroids), SERVED_NEAREST)

    class KMeansModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.transform = tf.saved_model.load(transform_savedmodel_dir)
            self.centroids = tf.Variable(
                np.asarray(centroids, np.float32), trainable=False, name="centroids"
            )
            self.feature_names = tf.Variable(features, trainable=False, name="feature_names")
            if c_count:  # absent without any: a model without them is as it always was
                self.categorical_features = tf.Variable(
                    categorical, trainable=False, name="categorical_features"
                )
            self.missing = tf.Variable(missing, trainable=False, name="missing")
            self.merge_map = (
                None
                if merge_map is None
                else tf.Variable(np.asarray(merge_map, np.int64), trainable=False, name="merge_map")
            )
            self.inverse_radii = self.tail = self.tail_quantiles = None
            self.contamination = self.anomaly_threshold = None
            if statistics is not None:
                self.inverse_radii = tf.Variable(inverse_radii(statistics.radii), trainable=False)
                self.radii = tf.Variable(np.asarray(statistics.radii, np.float64), trainable=False)
                self.cluster_sizes = tf.Variable(
                    np.asarray(statistics.sizes, np.int64), trainable=False
                )
                # The training distribution, for a threshold at another contamination
                # (score --contamination; KMeansModelHandler).
                self.tail = tf.Variable(statistics.tail, trainable=False)
                self.tail_quantiles = tf.Variable(statistics.tail_quantiles, trainable=False)
            if statistics is not None and contamination is not None:
                self.contamination = tf.Variable(
                    float(contamination), dtype=tf.float64, trainable=False
                )
                self.anomaly_threshold = tf.Variable(
                    statistics.threshold(contamination), dtype=tf.float32, trainable=False
                )

        def categories_in(self, categories):
            """string [n, C] as given -> as the transform takes them, trimmed: an empty
            string is a missing value, MISSING_VALUE with --missing impute, else an
            error naming the feature."""
            # Trimmed, as the readers trim what the fit learned its vocabularies from.
            categories = tf.strings.strip(tf.convert_to_tensor(categories, tf.string))
            empty = tf.equal(categories, "")
            if missing == "impute":
                return tf.where(empty, tf.constant(MISSING_VALUE), categories)
            checks = [
                tf.debugging.Assert(
                    tf.logical_not(tf.reduce_any(empty[:, j])),
                    [f"shardmeans model: categorical feature {name} is missing (empty)"],
                )
                for j, name in enumerate(categorical)
            ]
            with tf.control_dependencies(checks):
                return tf.identity(categories)

        def assign(self, columns, nearest=0, categories=None):
            """columns: float [n] per numeric feature, in `features` order (and with
            categorical features `categories`, string [n, C]) -> outputs dict; with
            `nearest` (an int or an int32 scalar tensor, >= 1) the outputs also hold
            the nearest centroids: ids int64 [n, m] and distances float32 [n, m]."""
            if columns:
                x = tf.cast(tf.stack(columns, axis=1), tf.float64)
            else:  # categorical features alone: the rows are as many as their values
                x = tf.zeros([tf.shape(categories)[0], 0], tf.float64)
            if missing == "impute":  # NaN is a missing value, which the transform imputes
                check = tf.debugging.assert_equal(
                    tf.reduce_any(tf.math.is_inf(x)),
                    False,
                    message="shardmeans model: a feature is infinite",
                )
                with tf.control_dependencies([check]):
                    x = tf.identity(x)
            else:
                x = tf.debugging.assert_all_finite(
                    x, "shardmeans model: a feature is NaN or infinite"
                )
            inputs = {FEATURES: tf.cast(x, tf.float64)}
            if c_count:
                inputs[CATEGORIES] = self.categories_in(categories)
            z = self.transform.transform_fn(inputs)[FEATURES]
            c = self.centroids
            scores = tf.reduce_sum(c * c, axis=1)[tf.newaxis, :] - 2.0 * tf.matmul(
                z, c, transpose_b=True
            )
            labels = tf.argmin(scores, axis=1, output_type=tf.int64)
            diff = z - tf.gather(c, labels)
            sq_dist = tf.reduce_sum(diff * diff, axis=1)
            # Unit rows and centroids: 1 - cos = |z - c|^2 / 2, as the fit reports it.
            reported = sq_dist / 2.0 if distance == "cosine" else tf.sqrt(sq_dist)
            out = {CLUSTER_ID: labels, DISTANCE: reported}
            if self.merge_map is not None:
                out[MERGED_CLUSTER_ID] = tf.gather(self.merge_map, labels)
            if self.inverse_radii is not None:
                normalized = reported * tf.gather(self.inverse_radii, labels)
                out[NORMALIZED_DISTANCE] = normalized
            if self.anomaly_threshold is not None:
                out[IS_ANOMALY] = normalized > self.anomaly_threshold
            if isinstance(nearest, tf.Tensor) or nearest:
                # The order of the argmin above: top_k puts the lower index first on ties.
                ids = tf.math.top_k(-scores, nearest).indices
                near = z[:, tf.newaxis, :] - tf.gather(c, ids)  # [n, m, D]
                near_sq = tf.reduce_sum(near * near, axis=2)
                out[NEAREST_CLUSTER_IDS] = tf.cast(ids, tf.int64)
                out[NEAREST_DISTANCES] = near_sq / 2.0 if distance == "cosine" else tf.sqrt(near_sq)
            return out

        if c_count:
            # The same functions with the categorical values as a second argument.
            @tf.function(
                input_signature=[
                    tf.TensorSpec([None, d], tf.float64),
                    tf.TensorSpec([None, c_count], tf.string),
                ],
                autograph=False,
            )
            def assign_batch(self, x, categories):
                return self.assign(tf.unstack(x, num=d, axis=1), 0, categories)

            @tf.function(
                input_signature=[
                    tf.TensorSpec([None, d], tf.float64),
                    tf.TensorSpec([None, c_count], tf.string),
                    tf.TensorSpec([], tf.int32),
                ],
                autograph=False,
            )
            def assign_nearest(self, x, categories, n):
                return self.assign(tf.unstack(x, num=d, axis=1), n, categories)

            @tf.function(autograph=False)
            def __call__(self, x, categories):
                """x: float32 or float64 [n, D] in `features` order, categories string
                [n, C] in `categorical` order -> outputs dict. Traced for both dtypes
                below (a SavedModel keeps only traced calls)."""
                return self.assign(tf.unstack(x, num=d, axis=1), served, categories)

        else:

            @tf.function(input_signature=[tf.TensorSpec([None, d], tf.float64)], autograph=False)
            def assign_batch(self, x):  # autograph off: no Python control flow on tensors
                return self.assign(tf.unstack(x, num=d, axis=1))

            @tf.function(
                input_signature=[tf.TensorSpec([None, d], tf.float64), tf.TensorSpec([], tf.int32)],
                autograph=False,
            )
            def assign_nearest(self, x, n):
                return self.assign(tf.unstack(x, num=d, axis=1), n)

            @tf.function(autograph=False)
            def __call__(self, x):
                """x: float32 or float64 [n, D], columns in `features` order -> outputs dict.
                Traced for both dtypes below (a SavedModel keeps only traced calls)."""
                return self.assign(tf.unstack(x, num=d, axis=1), served)

        @tf.function(
            input_signature=[tf.TensorSpec([None], tf.string, name="examples")], autograph=False
        )
        def serve_examples(self, examples):
            categories = None
            if c_count:
                categories = tf.stack(parse_categorical_examples(examples, categorical), axis=1)
            return self.assign(
                parse_numeric_examples(examples, columns, allow_missing=missing == "impute"),
                served,
                categories,
            )

        @tf.function(
            input_signature=[
                {
                    **{
                        name: tf.TensorSpec(
                            [None] if width is None else [None, width], tf.float32, name=name
                        )
                        for name, width in columns
                    },
                    **{name: tf.TensorSpec([None], tf.string, name=name) for name in categorical},
                }
            ],
            autograph=False,
        )
        def predict_raw(self, inputs):
            values = []
            for name, width in columns:
                value = inputs[name]
                values += [value] if width is None else tf.unstack(value, num=width, axis=1)
            categories = None
            if c_count:
                categories = tf.stack([inputs[name] for name in categorical], axis=1)
            return self.assign(values, served, categories)

    module = KMeansModel()
    extra = [tf.TensorSpec([None, c_count], tf.string)] if c_count else []
    for dtype in (tf.float32, tf.float64):
        module.__call__.get_concrete_function(tf.TensorSpec([None, d], dtype), *extra)
    return module


def _fields(serialized, message: str, names, dtypes):
    """`tf.io.decode_proto` of tensorflow.`message` records -> the named fields' values."""
    import tensorflow as tf

    return tf.io.decode_proto(serialized, f"tensorflow.{message}", names, dtypes).values


def _pad(values):
    """[..., c] -> [..., c + 1], b"" or 0 last: decode_proto refuses an input of no
    element, which a batch of no record, or of records without features, would be."""
    import tensorflow as tf

    return tf.pad(values, [[0, 0]] * (values.shape.rank - 1) + [[0, 1]])


def _single(values):
    """[..., c] a non-repeated field (c is 0 when no record has it) -> [...]; b"" if absent."""
    return _pad(values)[..., 0]


def _feature_entries(examples):
    """examples: string [n] serialized tf.Example -> (keys, values): string [n + 1, m + 1],
    each record's feature names and their serialized tensorflow.Feature; the last row
    (one empty record more, so that no input is empty) and the padding are b""."""
    import tensorflow as tf

    padded = tf.concat([examples, [b""]], axis=0)
    body = _single(_fields(padded, "Example", ["features"], [tf.string])[0])  # [n + 1]
    entries = _pad(_fields(body, "Features", ["feature"], [tf.string])[0])  # [n + 1, m + 1]
    entry = _fields(entries, "Features.FeatureEntry", ["key", "value"], [tf.string, tf.string])
    return _single(entry[0]), _single(entry[1])


def parse_numeric_examples(
    examples, columns: Sequence[Tuple[str, Optional[int]]], allow_missing: bool = False
):
    """examples: string [n] serialized tf.Example -> one float64 [n] tensor per feature
    of `columns` ([(name, width)], `build_model_module`'s).

    Each feature must hold exactly one value, in a float_list or an int64_list
    (a file may store whole numbers as ints; `tf.io.parse_example` takes one
    declared type and rejects the other), else InvalidArgumentError naming it;
    a vector column (name, L) is one tf.Example feature holding exactly L values.
    `allow_missing`: a feature may also hold no value (or be absent), and is NaN.
    The records are decoded with `tf.io.decode_proto` against the tf.Example
    descriptors compiled into TensorFlow itself (its "local://" source).
    """
    import tensorflow as tf

    keys, values = _feature_entries(examples)  # [n + 1, m + 1]; padding: b""
    kinds = _fields(values, "Feature", ["float_list", "int64_list"], [tf.string, tf.string])
    floats = tf.io.decode_proto(_single(kinds[0]), "tensorflow.FloatList", ["value"], [tf.float32])
    ints = tf.io.decode_proto(_single(kinds[1]), "tensorflow.Int64List", ["value"], [tf.int64])
    # [n + 1, m + 1]: how many values each entry holds
    counts = floats.sizes[..., 0] + ints.sizes[..., 0]

    def leading(values, width):
        """[n + 1, m + 1, c] values, padded -> their first `width`, float64 (zeros past c)."""
        values = tf.cast(values, tf.float64)
        return tf.pad(values, [[0, 0], [0, 0], [0, width]])[..., :width]

    parsed = []
    for name, width in columns:
        n_values = 1 if width is None else width
        here = tf.equal(keys, name)
        count = tf.reduce_sum(tf.where(here, counts, 0), axis=1)[:-1]
        expected = tf.fill(tf.shape(count), tf.constant(n_values, count.dtype))
        ok = tf.equal(count, expected)
        if allow_missing:
            ok = tf.logical_or(ok, tf.equal(count, 0))
        what = "one number" if width is None else f"{width} numbers"
        check = tf.debugging.Assert(
            tf.reduce_all(ok),
            [
                f"shardmeans model: feature {name} must hold exactly {what} "
                f"(float_list or int64_list) in every tf.Example"
                + (", or none" if allow_missing else "")
            ],
        )
        with tf.control_dependencies([check]):
            # An entry holds floats or ints, never both: their sum is its values.
            entry = leading(floats.values[0], n_values) + leading(ints.values[0], n_values)
            value = tf.reduce_sum(tf.where(here[..., tf.newaxis], entry, 0.0), axis=1)[:-1]
            if allow_missing:
                value = tf.where((count > 0)[:, tf.newaxis], value, np.nan)
            parsed += tf.unstack(value, num=n_values, axis=1)
    return parsed


def parse_categorical_examples(examples, names: Sequence[str]):
    """examples: string [n] serialized tf.Example -> one string [n] tensor per categorical
    feature of `names`: its value, b"" when it holds none or is absent (a missing value,
    which the model imputes or refuses).

    A categorical feature holds at most one value: text in a bytes_list, or a
    whole number in an int64_list, taken as its decimal text (a numeric code
    declared categorical; the fit read it as text the same way). A float_list, or
    more than one value, is an InvalidArgumentError naming the feature: a float's
    text has no spelling that surely matches the training rows'.
    """
    import tensorflow as tf

    keys, values = _feature_entries(examples)  # [n + 1, m + 1]; padding: b""
    kinds = _fields(values, "Feature", ["bytes_list", "float_list", "int64_list"], [tf.string] * 3)
    texts = tf.io.decode_proto(_single(kinds[0]), "tensorflow.BytesList", ["value"], [tf.string])
    floats = tf.io.decode_proto(_single(kinds[1]), "tensorflow.FloatList", ["value"], [tf.float32])
    ints = tf.io.decode_proto(_single(kinds[2]), "tensorflow.Int64List", ["value"], [tf.int64])
    counts = texts.sizes[..., 0] + ints.sizes[..., 0]  # [n + 1, m + 1]
    # Each entry's one value as text (b"" when it holds none).
    number = tf.strings.as_string(_single(ints.values[0]))
    entry = tf.where(ints.sizes[..., 0] > 0, number, _single(texts.values[0]))

    parsed = []
    for name in names:
        here = tf.equal(keys, name)
        count = tf.reduce_sum(tf.where(here, counts, 0), axis=1)[:-1]
        n_floats = tf.reduce_sum(tf.where(here, floats.sizes[..., 0], 0), axis=1)[:-1]
        check = tf.debugging.Assert(
            tf.reduce_all(tf.logical_and(count <= 1, tf.equal(n_floats, 0))),
            [
                f"shardmeans model: categorical feature {name} must hold one value "
                f"(bytes_list, or int64_list) in every tf.Example, or none"
            ],
        )
        with tf.control_dependencies([check]):
            value = tf.strings.reduce_join(tf.where(here, entry, b""), axis=1)[:-1]
        parsed.append(value)
    return parsed


def export_model(
    model_dir: str,
    transform_savedmodel_dir: str,
    centroids: np.ndarray,
    features: List[str],
    merge_map: Optional[np.ndarray] = None,
    distance: str = "euclidean",
    statistics=None,
    contamination: Optional[float] = None,
    missing: str = "reject",
    columns: Optional[Sequence[Tuple[str, Optional[int]]]] = None,
    categorical: Sequence[str] = (),
) -> None:
    """Write the SavedModel of `centroids` float32 [K, D] (standardized space) to `model_dir`
    itself (a fit passes its version directory, OUTPUT/model/`MODEL_VERSION`); see
    `build_model_module` for `statistics`, `contamination` and `categorical` (a model
    with categorical features has no Keras view: see the module docstring)."""
    import tensorflow as tf

    module = build_model_module(
        transform_savedmodel_dir,
        centroids,
        features,
        merge_map,
        distance,
        statistics,
        contamination,
        missing,
        columns,
        categorical,
    )
    tf.saved_model.save(
        module,
        model_dir,
        signatures={
            "serving_default": module.serve_examples.get_concrete_function(),
            "predict_raw": module.predict_raw.get_concrete_function(),
        },
    )
    if not categorical:  # one float tensor cannot carry their text: no Keras view
        write_keras_view(model_dir, module, distance)


def _standardization(module, n_features: int, cosine: bool = False):
    """(mean, std), float64 [D], of the module's tf.Transform z-score, read back from it.

    The transform's outputs are float32: its z-score of 0 would lose the digits
    of a column with a large offset. So each probe sits where z is small: at
    the float32 mean (z ~ 0), then one float32 standard deviation above it.
    A cosine model's transform divides each row by its norm, which hides the
    scale: its probes read the rows before that division (`SCALED`).
    """
    import tensorflow as tf

    from transforms.step.preprocessing import FEATURES, MEAN, SCALED, STD

    def transform(x):
        out = module.transform.transform_fn({FEATURES: tf.constant(x[np.newaxis], tf.float64)})
        return {k: v.numpy()[0].astype(np.float64) for k, v in out.items()}

    first = transform(np.zeros(n_features))
    m0, s0 = first[MEAN], np.where(first[STD] > 0, first[STD], 1.0)
    scaled = SCALED if cosine else FEATURES
    z_mean, z_up = transform(m0)[scaled], transform(m0 + s0)[scaled]
    std = s0 / (z_up - z_mean)  # a column of zero variance: z = x - mean, so std = 1
    return m0 - z_mean * std, std


def _imputed(module, n_features: int, cosine: bool = False) -> np.ndarray:
    """float64 [D]: what the module's transform makes of a missing value (NaN), scaled
    (before the division by the norm, for cosine): 0 after a z-score, the training
    mean without one; read back from the transform, as `_standardization` reads."""
    import tensorflow as tf

    from transforms.step.preprocessing import FEATURES, SCALED

    nan = tf.constant(np.full((1, n_features), np.nan), tf.float64)
    out = module.transform.transform_fn({FEATURES: nan})
    return out[SCALED if cosine else FEATURES].numpy()[0].astype(np.float64)


def write_keras_view(model_dir: str, module, distance: str = "euclidean") -> None:
    """Write the same model as a Keras 3 model, unzipped, beside the SavedModel in
    `model_dir` (config.json, metadata.json, model.weights.h5).

    Why: Beam's stock `TFModelHandlerTensor` loads with `tf.keras.models.load_model`,
    which in TensorFlow 2.16+ is Keras 3: it refuses a SavedModel but loads a
    directory holding these files. TF Serving and `tf.saved_model.load` ignore them.
    The Keras model takes float [n, D] (columns in `feature_names` order) and
    returns the SavedModel's outputs dict: z-score in float64, then float32 as the
    SavedModel (standardize, for cosine divide by the norm, nearest centroid by
    the same expansion, distance, the nearest `SERVED_NEAREST` by `top_k` of the
    same scores). It checks nothing: a NaN row gets a NaN distance rather than an
    error.
    """
    import tempfile
    import zipfile

    import keras
    import tensorflow as tf

    if getattr(module, "categorical_features", None) is not None:
        raise ValueError("a model with categorical features has no Keras view: it takes text")
    c = module.centroids.numpy().astype(np.float32)
    k, d = c.shape
    cosine = distance == "cosine"
    mean, std = _standardization(module, d, cosine)
    fill = _imputed(module, d, cosine) if module.missing.numpy() == b"impute" else None

    x = keras.Input((d,), dtype="float64", name="x")
    # z = x / std - mean / std, elementwise, from weights (float64 in model.weights.h5):
    # Normalization(mean=...) keeps its statistics in config.json and reloads them as float32.
    zscore = keras.layers.EinsumDense("ab,b->ab", d, bias_axes="b", dtype="float64", name="zscore")
    z = zscore(x)
    if fill is not None:  # a NaN is missing: its scaled value is the transform's, `fill`
        filled = keras.layers.EinsumDense(
            "ab,b->ab", d, bias_axes="b", dtype="float64", name="imputed"
        )
        z = keras.ops.where(keras.ops.isnan(z), filled(keras.ops.zeros_like(z)), z)
    if cosine:  # as tf.math.l2_normalize in the transform: a zero row stays zero
        z = z / keras.ops.sqrt(
            keras.ops.maximum(keras.ops.sum(z * z, axis=1, keepdims=True), 1e-12)
        )
    z = keras.ops.cast(z, "float32")
    scores = keras.layers.Dense(k, dtype="float32", name="scores")(z)
    labels = keras.ops.argmin(scores, axis=1)
    centroid_of = keras.layers.Embedding(k, d, dtype="float32", name="centroids")
    nearest = centroid_of(labels)
    outputs = {
        CLUSTER_ID: keras.ops.cast(labels, "int64"),
        DISTANCE: keras.ops.sum(keras.ops.square(z - nearest), axis=1) / 2.0
        if cosine
        else keras.ops.sqrt(keras.ops.sum(keras.ops.square(z - nearest), axis=1)),
    }
    merge_map = None if module.merge_map is None else module.merge_map.numpy()
    if merge_map is not None:
        merged = keras.layers.Embedding(k, 1, dtype="float32", name="merge_map")(labels)
        outputs[MERGED_CLUSTER_ID] = keras.ops.cast(keras.ops.round(merged[:, 0]), "int64")
    if module.inverse_radii is not None:
        # Per-cluster values as embeddings (weights): the SavedModel's variables.
        inverse = keras.layers.Embedding(k, 1, dtype="float32", name="inverse_radii")(labels)
        outputs[NORMALIZED_DISTANCE] = outputs[DISTANCE] * inverse[:, 0]
    if module.anomaly_threshold is not None:
        # normalized > threshold, as distance * inverse radius > threshold
        limit = keras.layers.Embedding(k, 1, dtype="float32", name="anomaly_threshold")(labels)
        outputs[IS_ANOMALY] = outputs[NORMALIZED_DISTANCE] > limit[:, 0]
    served = min(k, SERVED_NEAREST)
    # top_k of the negated scores: the SavedModel's order, lower id first on ties
    _, ids = keras.ops.top_k(-scores, served)
    near = z[:, None, :] - centroid_of(ids)
    near_sq = keras.ops.sum(keras.ops.square(near), axis=2)
    outputs[NEAREST_CLUSTER_IDS] = keras.ops.cast(ids, "int64")
    outputs[NEAREST_DISTANCES] = near_sq / 2.0 if cosine else keras.ops.sqrt(near_sq)
    model = keras.Model(x, outputs, name="shardmeans_kmeans")
    # scores = |c|^2 - 2 z.c: the SavedModel's expansion, whose argmin is the nearest centroid
    zscore.set_weights([1.0 / std, -mean / std])
    if fill is not None:
        model.get_layer("imputed").set_weights([np.zeros(d), fill])
    model.get_layer("scores").set_weights([-2.0 * c.T, (c * c).sum(axis=1)])
    model.get_layer("centroids").set_weights([c])
    if merge_map is not None:
        model.get_layer("merge_map").set_weights([merge_map.astype(np.float32)[:, np.newaxis]])
    if module.inverse_radii is not None:
        inverse = module.inverse_radii.numpy()[:, np.newaxis]
        model.get_layer("inverse_radii").set_weights([inverse])
    if module.anomaly_threshold is not None:
        threshold = np.full((k, 1), module.anomaly_threshold.numpy(), np.float32)
        model.get_layer("anomaly_threshold").set_weights([threshold])

    with tempfile.TemporaryDirectory() as tmp:
        archive = f"{tmp}/model.keras"
        model.save(archive)
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if name.endswith("/"):  # a directory entry
                    continue
                with tf.io.gfile.GFile(f"{model_dir.rstrip('/')}/{name}", "wb") as f:
                    f.write(zf.read(name))
