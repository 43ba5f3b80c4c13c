"""tf.Transform: the pure `preprocessing_fn`, and applying its saved output to NumPy rows.

The raw input is one dense float64 feature `features` [batch, D]; the output is
its z-score per column (or the values as read), float32 [batch, D]. One vector
feature with `elementwise=True` is one analyzer pass for all D columns instead of D.
"""

import numpy as np

FEATURES = "features"
MEAN, STD = "feature_mean", "feature_std"
SCALED = "features_scaled"  # a cosine transform's rows before they are divided by their norm


def preprocessing_fn(
    inputs, standardize: str = "z_score", distance: str = "euclidean", missing: str = "reject"
):
    """{'features': float64 [batch, D]} -> the scaled features and the statistics behind them.

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
    Bind `standardize`, `distance` and `missing` with functools.partial:
    tf.Transform calls the function with the inputs alone.
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
    if standardize == "none":
        z, mean, std = x, tf.zeros_like(ones), ones
        if absent is not None:
            z = tf.where(absent, tft.mean(x, reduce_instance_dims=False) + tf.zeros_like(x), x)
    elif standardize == "z_score":
        z = tft.scale_to_z_score(x, elementwise=True)
        if absent is not None:  # the mean, in z-score units
            z = tf.where(absent, tf.zeros_like(z), z)
        mean = ones * tf.cast(tft.mean(x, reduce_instance_dims=False), tf.float32)
        std = ones * tf.cast(tf.sqrt(tft.var(x, reduce_instance_dims=False)), tf.float32)
    else:
        raise ValueError(f"standardize must be z_score or none, got {standardize!r}")
    outputs = {MEAN: mean, STD: std}
    if distance == "cosine":
        outputs[SCALED] = tf.cast(z, tf.float32)
        z = tf.math.l2_normalize(z, axis=1)  # in float64, then cast like the rest
    elif distance != "euclidean":
        raise ValueError(f"distance must be euclidean or cosine, got {distance!r}")
    outputs[FEATURES] = tf.cast(z, tf.float32)
    return outputs


def tensor_adapter_config(arrow_schema, column: str, n_features: int):
    """The TFXIO config that shows tf.Transform the list<float64> `column` as `features` [batch, D]."""
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx_bsl.tfxio import tensor_adapter

    rep = schema_pb2.TensorRepresentation()
    rep.dense_tensor.column_name = column
    rep.dense_tensor.shape.dim.add().size = n_features
    return tensor_adapter.TensorAdapterConfig(arrow_schema, {FEATURES: rep})


class Standardizer:
    """Applies a saved tf.Transform output to raw rows: float64 [n, D] -> float32 [n, D].

    `transform_output_dir` is what `tft_beam.WriteTransformFn` wrote (readable
    with `tft.TFTransformOutput`). Build it once per worker (DoFn.setup or the
    first element); a call is one graph execution.
    """

    def __init__(self, transform_output_dir: str, n_features: int):
        import tensorflow as tf
        import tensorflow_transform as tft

        # The saved transform_fn itself, not transform_features_layer(): the
        # layer casts inputs to the raw metadata's dtypes, and tf.Metadata has
        # no float64, so it would feed float32 to a graph traced for float64.
        path = tft.TFTransformOutput(transform_output_dir).transform_savedmodel_dir
        self._model = tf.saved_model.load(path)
        self._fn = lambda x: self._model.transform_fn({FEATURES: tf.constant(x)})
        self.n_features = n_features

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._fn(np.asarray(x, dtype=np.float64))[FEATURES].numpy()

    def mean_and_std(self):
        """(mean float64 [D], std float64 [D]) as analysed: raw = z * std + mean (std 0: raw = z + mean)."""
        out = self._fn(np.zeros((1, self.n_features)))
        return (out[MEAN].numpy()[0].astype(np.float64), out[STD].numpy()[0].astype(np.float64))
