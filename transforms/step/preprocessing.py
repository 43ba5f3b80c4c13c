"""tf.Transform: the pure `preprocessing_fn`, and applying its saved output to NumPy rows.

The raw input is one dense float64 feature `features` [batch, D_num], and with
categorical features one dense string feature `categories` [batch, C]; the
output is the z-score of each numeric column (or the values as read), then each
categorical column one-hot over its vocabulary (transforms.core.categorical's
slots), float32 [batch, D]. One vector feature with `elementwise=True` is one
analyzer pass for all D_num columns instead of D_num.
"""

import numpy as np

FEATURES = "features"
CATEGORIES = "categories"
# A categorical value as the raw rows carry it when it is missing (--missing impute),
# and the vocabulary file of the j-th categorical feature; a categorical feature's
# one-hot slots are its vocabulary (max_categories), OTHER, MISSING: the layout
# transforms.core.categorical names (`step/` and `core/` import neither each other;
# tests/unit/test_categorical.py holds the two to the same values).
MISSING_VALUE = "__missing__"


def vocabulary_name(j: int) -> str:
    return f"categories_{j}"


MEAN, STD = "feature_mean", "feature_std"
SCALED = "features_scaled"  # a cosine transform's rows before they are divided by their norm


def preprocessing_fn(
    inputs,
    standardize: str = "z_score",
    distance: str = "euclidean",
    missing: str = "reject",
    max_categories: int = 0,
):
    """{'features': float64 [batch, D_num] (, 'categories': string [batch, C])} -> the
    scaled features and the statistics behind them.

    standardize "z_score" (the default):
    features:     float32 [batch, D], (x - mean) / std; a column with zero
                  variance becomes x - mean (zeros), as in StandardScaler.
    feature_mean: float32 [batch, D], the global mean, repeated on every row.
    feature_std:  float32 [batch, D], the global standard deviation (ddof=0).
    standardize "none": features are x as read (float32), with mean 0 and std 1,
    so that raw = features * std + mean holds for both.
    distance "cosine": each scaled row is then divided by its L2 norm. A row of
    norm 0 stays 0: it moves no centroid, and is as far from every centroid as
    any (|0 - c|^2 / 2 = 0.5). The fit rejects such rows where it can see them
    as read (pipeline.io.validation, NO_DIRECTION). The scaled rows before the
    division are output too, `features_scaled` float32 [batch, D]: what reads the
    scaling back from the saved transform (the Keras view of the model) needs them.
    missing "impute": a NaN value is a missing one (the readers turn a missing,
    empty or null value into NaN, and reject a NaN read as such) and becomes its
    column's mean over the rows that have a value: tf.Transform's mean and
    variance skip NaN, so the statistics are those of the present values, and an
    imputed value is 0 after the z-score (the mean itself with "none"). With
    "reject" nothing is imputed: the readers and the model refuse NaN.
    categories: each column j has a vocabulary (`tft.vocabulary`, file
    categories_j): its `max_categories` most frequent values over the rows; the
    column is then one-hot over max_categories + 2 slots (core.categorical):
    its value's place in the vocabulary, else OTHER, and MISSING for the value
    core.categorical.MISSING_VALUE, which is left out of the vocabulary's counts
    (tft.compute_and_apply_vocabulary's two halves, so that it can be). The
    one-hot columns are neither scaled nor centred (mean 0, std 1): a category's
    column is 0 or 1, BigQuery ML's rule. They follow the numeric columns:
    features, feature_mean and feature_std are [batch, D_num + C * slots].
    Bind `standardize`, `distance`, `missing` and `max_categories` with
    functools.partial: tf.Transform calls the function with the inputs alone.
    Mean and variance are analysed in float64: a float32 analysis loses the
    digits of columns with a large offset. The statistics are outputs so that
    centroids can be mapped back to the original units (tf.Transform has no
    inverse transform); their analyzers share the data pass.
    """
    import tensorflow as tf
    import tensorflow_transform as tft

    x = inputs[FEATURES]
    ones = tf.ones_like(x, dtype=tf.float32)
    if missing not in ("reject", "impute"):
        raise ValueError(f"missing must be reject or impute, got {missing!r}")
    absent = tf.math.is_nan(x) if missing == "impute" else None
    if standardize not in ("none", "z_score"):
        raise ValueError(f"standardize must be z_score or none, got {standardize!r}")
    if x.shape[1] == 0:  # categorical features alone: no statistics to analyse
        z, mean, std = x, tf.zeros_like(ones), ones
    elif standardize == "none":
        z, mean, std = x, tf.zeros_like(ones), ones
        if absent is not None:
            z = tf.where(absent, tft.mean(x, reduce_instance_dims=False) + tf.zeros_like(x), x)
    else:
        z = tft.scale_to_z_score(x, elementwise=True)
        if absent is not None:  # the mean, in z-score units
            z = tf.where(absent, tf.zeros_like(z), z)
        mean = ones * tf.cast(tft.mean(x, reduce_instance_dims=False), tf.float32)
        std = ones * tf.cast(tf.sqrt(tft.var(x, reduce_instance_dims=False)), tf.float32)
    if CATEGORIES in inputs:
        one_hot = _one_hot(inputs[CATEGORIES], max_categories)
        z = tf.concat([z, tf.cast(one_hot, z.dtype)], axis=1)
        mean = tf.concat([mean, tf.zeros_like(one_hot)], axis=1)
        std = tf.concat([std, tf.ones_like(one_hot)], axis=1)
    outputs = {MEAN: mean, STD: std}
    if distance == "cosine":
        outputs[SCALED] = tf.cast(z, tf.float32)
        z = tf.math.l2_normalize(z, axis=1)  # in float64, then cast like the rest
    elif distance != "euclidean":
        raise ValueError(f"distance must be euclidean or cosine, got {distance!r}")
    outputs[FEATURES] = tf.cast(z, tf.float32)
    return outputs


def _one_hot(categories, max_categories: int):
    """string [batch, C] -> float32 [batch, C * (max_categories + 2)]: each column's slots
    (see preprocessing_fn)."""
    import tensorflow as tf
    import tensorflow_transform as tft

    if max_categories < 1:
        raise ValueError(f"max_categories must be at least 1, got {max_categories}")
    other, absent_slot = max_categories, max_categories + 1
    columns = []
    for j in range(categories.shape[1]):
        values = categories[:, j]
        absent = tf.equal(values, MISSING_VALUE)
        vocabulary = tft.vocabulary(
            tf.boolean_mask(values, tf.logical_not(absent)),
            top_k=max_categories,
            vocab_filename=vocabulary_name(j),
        )
        ids = tft.apply_vocabulary(values, vocabulary, default_value=-1)
        ids = tf.where(ids < 0, tf.constant(other, ids.dtype), ids)
        ids = tf.where(absent, tf.constant(absent_slot, ids.dtype), ids)
        columns.append(tf.one_hot(ids, max_categories + 2, dtype=tf.float32))
    return tf.concat(columns, axis=1)


def tensor_adapter_config(
    arrow_schema, column: str, n_features: int, categories_column=None, n_categorical: int = 0
):
    """The TFXIO config that shows tf.Transform the list<float64> `column` as `features`
    [batch, D_num], and the list<string> `categories_column` as `categories` [batch, C]."""
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx_bsl.tfxio import tensor_adapter

    def dense(name, width):
        rep = schema_pb2.TensorRepresentation()
        rep.dense_tensor.column_name = name
        rep.dense_tensor.shape.dim.add().size = width
        return rep

    reps = {FEATURES: dense(column, n_features)}
    if n_categorical:
        reps[CATEGORIES] = dense(categories_column, n_categorical)
    return tensor_adapter.TensorAdapterConfig(arrow_schema, reps)


class Standardizer:
    """Applies a saved tf.Transform output to raw rows: float64 [n, D_num] (and, with
    categorical features, their values, str or bytes [n, C]) -> float32 [n, D].

    `transform_output_dir` is what `tft_beam.WriteTransformFn` wrote (readable
    with `tft.TFTransformOutput`). Build it once per worker (DoFn.setup or the
    first element); a call is one graph execution.
    """

    def __init__(self, transform_output_dir: str, n_features: int, n_categorical: int = 0):
        import tensorflow as tf
        import tensorflow_transform as tft

        # The saved transform_fn itself, not transform_features_layer(): the
        # layer casts inputs to the raw metadata's dtypes, and tf.Metadata has
        # no float64, so it would feed float32 to a graph traced for float64.
        self._output = tft.TFTransformOutput(transform_output_dir)
        self._model = tf.saved_model.load(self._output.transform_savedmodel_dir)
        self.n_features, self.n_categorical = n_features, n_categorical

        def fn(x, categories):
            inputs = {FEATURES: tf.constant(x)}
            if n_categorical:
                inputs[CATEGORIES] = tf.constant(categories, tf.string)
            return self._model.transform_fn(inputs)

        self._fn = fn

    def __call__(self, x: np.ndarray, categories=None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return self._fn(x, self._categories(categories, len(x)))[FEATURES].numpy()

    def _categories(self, categories, n: int):
        if not self.n_categorical:
            return None
        if categories is None:
            raise ValueError(
                f"rows without the values of the {self.n_categorical} categorical features"
            )
        return np.asarray(categories, dtype=object).reshape(n, self.n_categorical)

    def mean_and_std(self):
        """(mean float64 [D], std float64 [D]) as analysed: raw = z * std + mean (std 0: raw =
        z + mean); a categorical feature's slots have mean 0 and std 1."""
        out = self._fn(
            np.zeros((1, self.n_features)), self._categories([""] * self.n_categorical, 1)
        )
        return (out[MEAN].numpy()[0].astype(np.float64), out[STD].numpy()[0].astype(np.float64))

    def vocabularies(self):
        """Per categorical feature, its vocabulary: the values, most frequent first (str)."""
        return [
            [
                v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v
                for v in self._output.vocabulary_by_name(vocabulary_name(j))
            ]
            for j in range(self.n_categorical)
        ]
