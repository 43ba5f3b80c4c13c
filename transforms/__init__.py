"""Reusable shardmeans pieces for your own Beam pipeline (never imports `pipeline`).

    from transforms import AssignClusters, KMeans

    fitted = rows | KMeans(k=8, features=["a", "b"], output_dir=OUT)
    scored = rows | AssignClusters(OUT)
    streamed = messages | ScoreMessages(OUT, window_s=60)  # Pub/Sub JSON, streaming
    results = rows | RunInference(KMeansModelHandler(OUT))

The names below are what a pipeline composes: the PTransforms (ScoreMessages
for streams of JSON messages), the model export, the RunInference model
handler, the error a user's input raises, and the types of KMeans' outputs.
Everything else stays in its layer: `transforms.core` (NumPy/SciPy),
`transforms.step` (TensorFlow on the workers), `transforms.beam` (the
PTransforms and combiners).

Each name is imported on first use (PEP 562): importing a light module such as
`transforms.core.errors` does not import TensorFlow, tf.Transform or Beam.
"""

import importlib
from typing import TYPE_CHECKING

# name -> the module that defines it
_EXPORTS = {
    "AssignClusters": "transforms.beam.assign",
    "Centroids": "transforms.core.centroids",  # KMeans' "centroids": both spaces
    "ClusterStats": "transforms.core.statistics",  # KMeans' "statistics": radii, quantiles
    "KMeans": "transforms.beam.kmeans",
    "KMeansModelHandler": "transforms.beam.model_handler",
    "Partials": "transforms.core.partials",  # KMeans' "final": the last pass's partials
    "RoundState": "transforms.core.lloyd",  # KMeans' "state": the chosen fit
    "Sample": "transforms.core.sampling",  # KMeans' "sample": the init sample
    "ScoreMessages": "transforms.beam.streaming",  # JSON messages -> scored, rejected, counts
    "Selection": "transforms.core.selection",  # KMeans' "selection": what it was chosen from
    "UserInputError": "transforms.core.errors",
    "export_model": "transforms.step.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'transforms' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # imported once
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and editors see
    from transforms.beam.assign import AssignClusters as AssignClusters
    from transforms.beam.kmeans import KMeans as KMeans
    from transforms.beam.model_handler import KMeansModelHandler as KMeansModelHandler
    from transforms.beam.streaming import ScoreMessages as ScoreMessages
    from transforms.core.centroids import Centroids as Centroids
    from transforms.core.errors import UserInputError as UserInputError
    from transforms.core.lloyd import RoundState as RoundState
    from transforms.core.partials import Partials as Partials
    from transforms.core.sampling import Sample as Sample
    from transforms.core.selection import Selection as Selection
    from transforms.core.statistics import ClusterStats as ClusterStats
    from transforms.step.export import export_model as export_model
