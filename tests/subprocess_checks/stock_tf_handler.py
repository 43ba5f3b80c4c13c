"""Usage: python -m subprocess_checks.stock_tf_handler MODEL_DIR ROWS.npy KERAS

Runs Beam's stock `TFModelHandlerTensor(MODEL_DIR)`, every argument at its default, in
RunInference over the rows of ROWS.npy (float64 [n, D], as float32 [D] tensors), and
checks its outputs against the SavedModel's own. KERAS is which Keras `tf.keras` must be:
`keras3` (a fresh process: nothing imported tf.Transform) or `tf_keras` (tf.Transform
imported first: it sets TF_USE_LEGACY_KERAS=1 when unset). Prints "ok".
"""

import os
import sys

model_dir, rows_path, keras = sys.argv[1:4]
assert "TF_USE_LEGACY_KERAS" not in os.environ, "the check needs a clean environment"
if keras == "tf_keras":
    import tensorflow_transform  # noqa: F401 -- its import routes tf.keras to tf-keras

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from apache_beam.ml.inference.base import RunInference  # noqa: E402
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerTensor  # noqa: E402
from apache_beam.testing.util import assert_that, equal_to  # noqa: E402

loader = tf.keras.models.load_model.__module__  # what TFModelHandlerTensor loads with
assert loader.split(".")[0] == ("tf_keras" if keras == "tf_keras" else "keras"), loader
x = np.load(rows_path).astype(np.float32)
expected = {k: v.numpy() for k, v in tf.saved_model.load(model_dir)(tf.constant(x)).items()}


def check(result) -> int:
    """A PredictionResult against the SavedModel's outputs for its row; 1 if it holds."""
    i = order[result.example.numpy().tobytes()]
    assert result.model_id == model_dir, result.model_id
    inference = result.inference
    assert set(inference) == set(expected), (sorted(inference), sorted(expected))
    for name, value in inference.items():
        value = np.asarray(value)
        assert value.dtype == expected[name].dtype, (name, value.dtype)
        np.testing.assert_allclose(value, expected[name][i], rtol=1e-5, atol=1e-6, err_msg=name)
    return 1


order = {row.tobytes(): i for i, row in enumerate(x)}
with beam.Pipeline(runner="FnApiRunner") as p:
    checked = (
        p
        | beam.Create(list(range(len(x))))
        | beam.Map(lambda i: tf.constant(x[i]))
        | RunInference(TFModelHandlerTensor(model_dir))
        | beam.Map(check)
    )
    assert_that(checked | beam.combiners.Count.Globally(), equal_to([len(x)]))
print("ok")
