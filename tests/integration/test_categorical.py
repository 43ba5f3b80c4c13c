"""Categorical features end to end through `shardmeans fit`: text, boolean and a numeric
code column declared --categorical, one-hot over their most frequent values inside the
tf.Transform graph, against scikit-learn on the same one-hot rows from the same start;
centroids.csv's shares, values imputed as the category __missing__, rejections."""

import numpy as np
import pyarrow as pa
import pytest
from sklearn.cluster import KMeans

from helpers import assignments, centroids, fit, metrics, rejected, score, write_shards

N, M = 3000, 3  # rows; --max_categories
CITIES, CITY_P = ["paris", "rome", "oslo", "lima", "kyiv"], [0.4, 0.25, 0.2, 0.1, 0.05]


def _table(seed: int, n: int = N, missing_every: int = 97) -> pa.Table:
    """Columns: id; a, b numbers (a shifted for paris); city text (null every
    `missing_every` rows); flag bool; code int (3 values, declared --categorical)."""
    rng = np.random.default_rng(seed)
    city = rng.choice(CITIES, size=n, p=CITY_P)
    a = rng.normal(size=n) + 3.0 * (city == "paris")
    b = rng.normal(size=n) * 2.0 + 100.0
    return pa.table(
        {
            "id": np.arange(n),
            "a": a,
            "city": pa.array([None if i % missing_every == 5 else c for i, c in enumerate(city)]),
            "b": b,
            "flag": rng.random(n) < 0.3,
            "code": rng.choice([7, 8, 9], size=n, p=[0.5, 0.3, 0.2]),
        }
    )


def _one_hot(values, vocabulary, missing=None) -> np.ndarray:
    """float64 [n, M + 2]: the slots of one categorical feature (vocabulary, other, missing)."""
    out = np.zeros((len(values), M + 2))
    for i, v in enumerate(values):
        if v is None:
            out[i, M + 1] = 1.0
        elif v in vocabulary:
            out[i, vocabulary.index(v)] = 1.0
        else:
            out[i, M] = 1.0
    return out


VOCABULARIES = {
    "city": ["paris", "rome", "oslo"],  # the 3 most frequent of 5: lima, kyiv are __other__
    "flag": ["false", "true"],
    "code": ["7", "8", "9"],
}


def _oracle_rows(table: pa.Table, training: pa.Table = None) -> np.ndarray:
    """The oracle's space: a, b z-scored (ddof 0, with the `training` rows' statistics,
    default the table's own), then city, flag, code one-hot."""
    x = np.stack([table[c].to_numpy() for c in ("a", "b")], axis=1)
    t = x if training is None else np.stack([training[c].to_numpy() for c in ("a", "b")], 1)
    z = (x - t.mean(axis=0)) / t.std(axis=0)
    city = table["city"].to_pylist()
    flag = ["true" if v else "false" for v in table["flag"].to_pylist()]
    code = [str(v) for v in table["code"].to_pylist()]
    return np.concatenate(
        [
            z,
            _one_hot(city, VOCABULARIES["city"]),
            _one_hot(flag, VOCABULARIES["flag"]),
            _one_hot(code, VOCABULARIES["code"]),
        ],
        axis=1,
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(fit output, the input table, the initial centroids float32 [4, D])."""
    base = tmp_path_factory.mktemp("categorical")
    table = _table(0)
    pattern = write_shards(table, base / "in", "parquet", shards=2)
    z = _oracle_rows(table)
    init = z[np.random.default_rng(1).choice(N, 4, replace=False)].astype(np.float32)
    np.save(base / "init.npy", init)
    out = base / "out"
    args = ["--input", pattern, "--k", 4, "--id_column", "id", "--features", "a,city,b,flag,code"]
    args += ["--categorical", "code", "--max_categories", M, "--missing", "impute"]
    args += ["--init", base / "init.npy", "--tol", 0, "--max_rounds", 30]
    assert fit(out, *args) == 0
    return out, table, init


def test_vocabularies_are_the_most_frequent_values(fitted):
    out, _, _ = fitted
    from transforms.step.preprocessing import Standardizer

    standardizer = Standardizer(str(out / "transform_fn"), 2, 3)
    assert standardizer.vocabularies() == [VOCABULARIES[c] for c in ("city", "flag", "code")]
    m = metrics(out)
    assert m["categorical"] == ["city", "flag", "code"]
    assert m["values_imputed"] == {"a": 0, "b": 0, "city": N // 97 + 1, "flag": 0, "code": 0}


def test_same_init_gives_sklearn_on_the_one_hot_rows(fitted):
    out, table, init = fitted
    z = _oracle_rows(table)
    km = KMeans(4, init=init.astype(np.float64), n_init=1, max_iter=30, tol=0, algorithm="lloyd")
    km.fit(z)
    np.testing.assert_allclose(centroids(out), km.cluster_centers_, rtol=1e-5, atol=1e-5)
    labels = assignments(out).sort_by("id").column("cluster_id").to_numpy()
    np.testing.assert_array_equal(labels, km.labels_)


def test_centroids_csv_gives_means_and_category_shares(fitted):
    out, table, _ = fitted
    import pyarrow.csv as pacsv

    csv = pacsv.read_csv(out / "centroids.csv")
    expected_columns = ["cluster_id", "a", "b"]
    expected_columns += [f"city={v}" for v in VOCABULARIES["city"]]
    expected_columns += ["city=__other__", "city=__missing__"]
    expected_columns += [f"flag={v}" for v in VOCABULARIES["flag"]]
    expected_columns += ["flag=__other__", "flag=__missing__"]
    expected_columns += [f"code={v}" for v in VOCABULARIES["code"]]
    expected_columns += ["code=__other__", "code=__missing__"]
    assert csv.column_names == expected_columns
    labels = assignments(out).sort_by("id").column("cluster_id").to_numpy()
    city = np.array([v if v is not None else "<none>" for v in table["city"].to_pylist()])
    for k in range(4):
        rows = labels == k
        row = {name: csv[name][k].as_py() for name in csv.column_names}
        np.testing.assert_allclose(row["a"], table["a"].to_numpy()[rows].mean(), rtol=1e-4)
        np.testing.assert_allclose(row["b"], table["b"].to_numpy()[rows].mean(), rtol=1e-5)
        np.testing.assert_allclose(row["city=paris"], (city[rows] == "paris").mean(), atol=1e-6)
        other = np.isin(city[rows], ["lima", "kyiv"]).mean()
        np.testing.assert_allclose(row["city=__other__"], other, atol=1e-6)
        np.testing.assert_allclose(
            row["city=__missing__"], (city[rows] == "<none>").mean(), atol=1e-6
        )
        shares = [row[c] for c in csv.column_names if c.startswith("city=")]
        np.testing.assert_allclose(sum(shares), 1.0, atol=1e-6)
    report = (out / "report.html").read_text()
    assert "city=paris" in report


def test_missing_categories_are_rejected_by_default(tmp_path):
    table = _table(2, n=400, missing_every=50)
    pattern = write_shards(table, tmp_path / "in", "parquet", shards=1)
    out = tmp_path / "out"
    args = ["--input", pattern, "--k", 2, "--id_column", "id", "--features", "a,city"]
    assert fit(out, *args, "--max_rounds", 3) == 0
    m = metrics(out)
    assert m["rows_rejected"] == 8 and m["rows_valid"] == 392
    lines = rejected(out)
    assert {(r["column"], r["reason"]) for r in lines} == {("city", "missing value")}
    assert m["categorical"] == ["city"]


def test_score_reads_categories_as_the_fit_did(fitted, tmp_path):
    out, table, _ = fitted
    # The training rows, and rows with values the fit never saw (a city, a code).
    unseen = _table(5, n=200).set_column(0, "id", pa.array(np.arange(N, N + 200)))
    unseen = unseen.set_column(2, "city", pa.array(["atlantis"] * 200))
    unseen = unseen.set_column(5, "code", pa.array([4] * 200))
    pattern = write_shards(pa.concat_tables([table, unseen]), tmp_path / "in", "parquet", 2)
    scored = tmp_path / "scored"
    assert score(out, scored, "--input", pattern, "--id_column", "id") == 0
    m = metrics(scored)
    assert m["rows_valid"] == m["rows_read"] == N + 200
    assert m["values_imputed"]["city"] == N // 97 + 1
    labels = assignments(scored).column("cluster_id").to_numpy()
    fit_labels = assignments(out).column("cluster_id").to_numpy()
    np.testing.assert_array_equal(labels[:N], fit_labels)
    # Unseen values are __other__, as rare values seen at training are.
    z = _oracle_rows(unseen, training=table)
    c = centroids(out)
    expected = ((z[:, None, :] - c[None]) ** 2).sum(axis=2).argmin(axis=1)
    np.testing.assert_array_equal(labels[N:], expected)


def test_groups_that_differ_only_by_text_are_recovered_whatever_the_sharding(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    # Unscaled, the noise is small beside a category's one-hot distance (sqrt 2). (A
    # z-score would give each noise column variance 1, and a split of the noise
    # would then beat one by category in inertia: docs/input.md.)
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 3, N)
    table = pa.table(
        {
            "id": np.arange(N),
            "x": rng.normal(size=N) * 0.1,
            "y": rng.normal(size=N) * 0.1,
            "shop": pa.array(np.array(["north", "south", "east"])[truth]),
        }
    )
    fits = []
    for shards, batch in ((1, 65536), (5, 700)):
        pattern = write_shards(table, tmp_path / f"in{shards}", "parquet", shards=shards)
        out = tmp_path / f"out{shards}"
        args = ["--input", pattern, "--k", 3, "--id_column", "id", "--batch_size", batch]
        assert fit(out, *args, "--features", "x,y,shop", "--standardize", "none") == 0
        fits.append(out)
    labels = [assignments(out).column("cluster_id").to_numpy() for out in fits]
    assert adjusted_rand_score(truth, labels[0]) >= 0.99
    np.testing.assert_array_equal(labels[0], labels[1])
    np.testing.assert_allclose(centroids(fits[0]), centroids(fits[1]), atol=1e-6)


def test_the_model_trims_values_as_the_readers_did(fitted):
    out, _, _ = fitted
    import tensorflow as tf

    model = tf.saved_model.load(str(out / "model" / "1"))
    x = tf.constant([[0.5, 100.0]] * 3, tf.float64)
    plain = model(x, tf.constant([["paris", "true", "7"], ["", "false", "8"], ["rome"] * 3]))
    padded = model(x, tf.constant([[" paris ", "true", "7"], ["  ", "false", "8"], ["rome"] * 3]))
    for name in ("cluster_id", "distance"):
        np.testing.assert_array_equal(plain[name].numpy(), padded[name].numpy())
