"""Usage: python -m subprocess_checks.light_imports HEAVY

Imports the `transforms` package and its error type as a command's error handling
does, checks that none of HEAVY (comma-separated top-level modules: TensorFlow,
tf.Transform, Beam) was imported by that, then that the public names import on
first use and internal names are not public. Prints "ok".
"""

import sys

HEAVY = tuple(sys.argv[1].split(","))

import transforms  # noqa: E402 -- after reading the arguments, as a command would
from transforms.core.errors import UserInputError  # noqa: E402

loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
assert not loaded, f"importing transforms and its errors loaded {loaded[:5]}"
assert transforms.UserInputError is UserInputError
assert transforms.KMeans.__module__ == "transforms.beam.kmeans"
assert "tensorflow" in sys.modules  # KMeans' module needs it: imported on first use
assert transforms.KMeansModelHandler.__module__ == "transforms.beam.model_handler"
assert sorted(transforms.__all__) == sorted(
    [
        "AssignClusters",
        "Centroids",
        "ClusterStats",
        "KMeans",
        "KMeansModelHandler",
        "Partials",
        "RoundState",
        "Sample",
        "ScoreMessages",
        "Selection",
        "UserInputError",
        "export_model",
    ]
)
try:
    transforms.LloydRounds  # noqa: B018 -- internal: in transforms.beam.rounds only
except AttributeError:
    print("ok")
