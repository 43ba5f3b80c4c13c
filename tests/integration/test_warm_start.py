"""fit --init_model: a warm start from a fitted model, its centroids in original units.

- same data: the warm fit starts where the old one ended (at most 2 rounds) and equals
  a fit from the old standardized centroids given as --init;
- moved data (new z-score statistics): the start is the old centroids in original
  units, standardized with the new statistics (the first round's starting inertia is
  NumPy's for them), and the rounds from it are scikit-learn's Lloyd from that start;
- a model fitted otherwise (features, K, distance, standardize) or a second way to
  start (--init, a K list): one line, exit 2, nothing written.
"""

import os

import numpy as np
import pyarrow as pa
import pytest

from helpers import assignments, centroids, features_of, fit, metrics, scaled_blobs, write_shards

K = 3
# Few rounds: every round is a stage of the graph, run or not.
FIT_ARGS = ("--k", K, "--id_column", "id", "--init_refine_rounds", 0, "--max_rounds", 12)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(table A, its Parquet glob, table B, its glob): B is A's rows moved by half a
    standard deviation and stretched around their mean, feature by feature, so its
    mean and standard deviation differ from A's."""
    a = scaled_blobs(1500, 3, K, seed=11, cluster_std=1.5)
    x = features_of(a)
    mean, std = x.mean(axis=0), x.std(axis=0)
    moved = (x - mean) * np.array([1.2, 0.9, 1.1]) + mean + 0.5 * std
    b = pa.table(
        {"id": a.column("id"), **{f"f{j}": pa.array(moved[:, j]) for j in range(x.shape[1])}}
    )
    root = tmp_path_factory.mktemp("warm_data")
    return a, write_shards(a, root / "a"), b, write_shards(b, root / "b")


@pytest.fixture(scope="module")
def old(data, tmp_path_factory):
    """The model warm starts start from: a fit on A."""
    out = tmp_path_factory.mktemp("warm_old") / "fit"
    assert fit(out, "--input", data[1], *FIT_ARGS) == 0
    return out


def _original(output) -> np.ndarray:
    """centroids.csv's values, float64 [K, D] (original units)."""
    rows = np.genfromtxt(os.path.join(output, "centroids.csv"), delimiter=",", skip_header=1)
    return rows[:, 1:]


def test_same_data_converges_at_once_and_equals_the_given_start(data, old, tmp_path):
    warm, given = tmp_path / "warm", tmp_path / "given"
    assert fit(warm, "--input", data[1], *FIT_ARGS, "--init_model", old) == 0
    assert fit(given, "--input", data[1], *FIT_ARGS, "--init", old / "centroids.npy") == 0
    m = metrics(warm)
    assert m["converged"] and m["rounds"] <= 2, m
    assert m["init"] == "given" and m["n_init"] == 1
    assert m["init_model"] == str(old / "model" / "1")
    np.testing.assert_allclose(centroids(warm), centroids(given), atol=1e-5)
    np.testing.assert_allclose(centroids(warm), centroids(old), atol=1e-5)
    assert m["cluster_sizes"] == metrics(given)["cluster_sizes"]
    np.testing.assert_array_equal(
        assignments(warm).column("cluster_id"), assignments(given).column("cluster_id")
    )


def test_moved_data_starts_from_the_old_centroids_in_original_units(data, old, tmp_path):
    from sklearn.cluster import KMeans as SkKMeans

    from transforms.beam.warm_start import read_model

    start = read_model(str(old))  # as the fit reads it: the old centroids, original units
    np.testing.assert_allclose(start.centroids, _original(old), rtol=1e-6)

    out = tmp_path / "warm"
    assert fit(out, "--input", data[3], *FIT_ARGS, "--init_model", old, "--tol", 0) == 0
    m = metrics(out)
    x = features_of(data[2])
    mean, std = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / std
    z0 = (_original(old) - mean) / std  # the old centroids, in B's standardized space
    nearest = ((z[:, None, :] - z0[None]) ** 2).sum(axis=2).min(axis=1)
    assert m["inertia_history"][0] == pytest.approx(nearest.sum(), rel=1e-5)
    # A start in the old standardized space would not be this one: B moved.
    assert np.abs(z0 - centroids(old)).max() > 0.1

    oracle = SkKMeans(K, init=z0, n_init=1, tol=0, max_iter=100, algorithm="lloyd").fit(z)
    np.testing.assert_allclose(centroids(out), oracle.cluster_centers_, atol=1e-4)
    assert m["converged"] and not m["reseeded_clusters"], m
    np.testing.assert_allclose((_original(out) - mean) / std, oracle.cluster_centers_, atol=1e-4)


@pytest.mark.parametrize(
    "flags, words",
    [
        (("--k", K + 1), "was fitted with k 3, this fit has k 4"),
        (("--k", K, "--distance", "cosine"), "with distance euclidean, this fit has distance cos"),
        (("--k", K, "--standardize", "none"), "with standardize z_score, this fit has standardize"),
        (
            ("--k", K, "--features", "f0,f1"),
            "was fitted on features f0,f1,f2, this fit's are f0,f1",
        ),
        (("--k", f"{K},{K + 1}"), "it takes neither a --k list nor --n_init above 1, got --k"),
        (("--k", K, "--init", "random"), "gives the initial centroids: it takes no --init random"),
    ],
)
def test_a_model_fitted_otherwise_is_one_line_and_exit_2(data, old, tmp_path, capfd, flags, words):
    out = tmp_path / "out"
    status = fit(out, "--input", data[1], "--id_column", "id", "--init_model", old, *flags)
    err = capfd.readouterr().err.strip()
    assert status == 2, err
    lines = err.splitlines()
    assert lines[-1].startswith("shardmeans fit: error: --init_model "), err
    assert words in lines[-1], err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("out.*"))


def test_a_model_that_is_no_model_is_one_line(data, tmp_path, capfd):
    empty = tmp_path / "empty"
    empty.mkdir()
    status = fit(tmp_path / "out", "--input", data[1], "--k", K, "--init_model", empty)
    err = capfd.readouterr().err.strip()
    assert status == 2, err
    assert f"error: --init_model {empty}: no SavedModel there" in err.splitlines()[-1]


def test_kmeans_takes_init_model_in_a_users_pipeline(data, old, tmp_path):
    """The library transform: KMeans(init_model=PATH) is the command's warm start, its
    features in another order (the centroids' columns follow); a model fitted otherwise
    raises when the transform is built."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

    from transforms import KMeans, UserInputError
    from transforms.beam.warm_start import read_model

    order = [2, 0, 1]
    features = [f"f{j}" for j in order]
    out = str(tmp_path / "library")
    with BeamTestPipeline(runner="DirectRunner") as p:
        _ = (
            p
            | beam.Create([features_of(data[0])[:, order]])
            | KMeans(K, features, out, init_model=str(old), max_rounds=12)
        )
    fitted = read_model(out)  # no metrics.json: the settings are read from the model
    assert (fitted.features, fitted.standardize, fitted.distance) == (
        features,
        "z_score",
        "euclidean",
    )
    np.testing.assert_allclose(fitted.centroids, _original(old)[:, order], rtol=1e-5)
    with pytest.raises(UserInputError, match="was fitted with k 3, this fit has k 4"):
        KMeans(K + 1, features, str(tmp_path / "other"), init_model=str(old))
    with pytest.raises(UserInputError, match="it takes no init"):
        KMeans(K, features, str(tmp_path / "other"), init_model=str(old), init="random")
