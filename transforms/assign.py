"""The `AssignClusters` PTransform: rows + a fitted model directory -> rows with their cluster.

    scored = rows | AssignClusters("gs://bucket/fit-output/model")

Each worker loads the SavedModel once (`DoFn.setup`, shared by all threads of
the process through `beam.utils.shared`), and scores rows in batches.
"""
import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils import shared
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms.export import CLUSTER_ID, DISTANCE
from transforms.shards import FEATURES_COLUMN, features_to_matrix


class LoadedModel:
    """A SavedModel written by `export_model`, with its feature names (weak-referenceable)."""

    def __init__(self, model_dir: str):
        import tensorflow as tf

        self.model = tf.saved_model.load(model_dir)
        self.features = [f.decode() for f in self.model.feature_names.numpy()]

    def __call__(self, x: np.ndarray):
        """float64 [n, D] raw rows -> (cluster_id int64 [n], distance float32 [n])."""
        out = self.model.assign_batch(np.asarray(x, np.float64))
        return out[CLUSTER_ID].numpy(), out[DISTANCE].numpy()


def read_model_features(model_dir: str):
    """The feature names a fitted model expects, in order."""
    return LoadedModel(model_dir).features


class _AssignFn(beam.DoFn):
    """Record batches (`FEATURES_COLUMN` + passthrough) -> passthrough + cluster_id + distance;
    dict rows -> the same dicts with `cluster_id` and `distance` added (scored in batches)."""

    def __init__(self, model_dir: str, shared_handle: shared.Shared, batch_size: int):
        self._model_dir, self._shared, self._batch_size = model_dir, shared_handle, batch_size

    def setup(self):
        self._model = self._shared.acquire(lambda: LoadedModel(self._model_dir))

    def start_bundle(self):
        self._rows = []

    def process(self, element):
        if isinstance(element, pa.RecordBatch):
            x = features_to_matrix(element.column(FEATURES_COLUMN), len(self._model.features),
                                   np.float64)
            labels, distances = self._model(x)
            keep = [n for n in element.schema.names if n != FEATURES_COLUMN]
            yield pa.RecordBatch.from_arrays(
                [element.column(n) for n in keep] + [pa.array(labels), pa.array(distances)],
                names=keep + [CLUSTER_ID, DISTANCE])
            return
        self._rows.append(element)
        if len(self._rows) >= self._batch_size:
            yield from self._flush()

    def finish_bundle(self):
        for row in self._flush():
            yield WindowedValue(row, MIN_TIMESTAMP, [GlobalWindow()])

    def _flush(self):
        rows, self._rows = self._rows, []
        if not rows:
            return
        x = np.array([[row[name] for name in self._model.features] for row in rows], np.float64)
        labels, distances = self._model(x)
        for row, label, distance in zip(rows, labels, distances):
            yield dict(row, **{CLUSTER_ID: int(label), DISTANCE: float(distance)})


class AssignClusters(beam.PTransform):
    """Rows -> rows with `cluster_id` (int64) and `distance` (Euclidean, standardized space).

    Input elements: dict rows holding every feature of the model (a missing,
    NaN or infinite feature raises), or Arrow record batches with
    `FEATURES_COLUMN` (list<float64>) and passthrough columns (what pipeline's
    readers produce, validated).
    """

    def __init__(self, model_dir: str, batch_size: int = 8192):
        super().__init__()
        self._model_dir, self._batch_size = model_dir, batch_size
        self._shared = shared.Shared()

    def expand(self, rows):
        return rows | "Assign" >> beam.ParDo(_AssignFn(self._model_dir, self._shared, self._batch_size))
