"""pipeline.io.columns: the columns a fit uses and why not the others; identifier-like
columns, by name or by a sample of unique whole numbers, warned about with the fix."""

import logging

import numpy as np
import pyarrow as pa
import pytest

from pipeline.fit import fit_spec
from pipeline.generate import write_table
from pipeline.io import columns
from pipeline.io.layout import input_layout
from pipeline.options import ViewCachingOptions


@pytest.mark.parametrize(
    "name",
    ["id", "ID", "customer_id", "userId", "user id", "uuid", "row", "Index", "key"]
    + ["order_key", "id_customer", "Unnamed: 0", "__index_level_0__", "rownum"],
)
def test_names_of_identifiers(name):
    assert columns.name_is_identifier(name)


@pytest.mark.parametrize(
    "name", ["paid", "valid", "row_count", "idle_time", "f0", "price", "keys_pressed", "width"]
)
def test_names_of_measures(name):
    assert not columns.name_is_identifier(name)


def test_unique_whole_numbers():
    n = 100
    assert columns.unique_whole_numbers(pa.array(np.arange(n)))
    assert columns.unique_whole_numbers(pa.array(np.random.default_rng(0).permutation(n) * 7.0))
    assert columns.unique_whole_numbers(pa.array([str(i) for i in range(n)]))  # CSV text
    assert not columns.unique_whole_numbers(pa.array(np.arange(n) % 10))  # repeats
    assert not columns.unique_whole_numbers(pa.array(np.arange(n) + 0.5))  # not whole
    assert not columns.unique_whole_numbers(pa.array(list(range(n - 1)) + [None]))  # a gap
    assert not columns.unique_whole_numbers(pa.array(np.arange(5)))  # too few to say
    assert not columns.unique_whole_numbers(pa.array(["a"] * n))


def _table(rows=200):
    rng = np.random.default_rng(1)
    return pa.table(
        {
            "customer_id": pa.array(np.arange(rows) * 3 + 1000),
            "serial": pa.array(rng.permutation(rows) + 5),  # unique, named like a measure
            "height": pa.array(rng.normal(size=rows)),
            "visits": pa.array(rng.integers(0, 5, rows)),  # whole numbers, repeated
            "city": pa.array(["x"] * rows),
            "tags": pa.array([[1.0, 2.0]] * rows),
        }
    ).rename_columns(["customer_id", "record", "height", "visits", "city", "tags"])


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_identifier_like_by_name_and_by_sample(fmt, tmp_path):
    table = _table()
    if fmt == "csv":
        table = table.drop_columns(["tags"])
    path = str(tmp_path / f"a.{fmt}")
    write_table(table, path, fmt)
    features = ["customer_id", "record", "height", "visits"]
    sample = columns.first_rows(path, fmt, features)
    found = dict(columns.identifier_like(features, sample))
    assert found.keys() == {"customer_id", "record"}
    assert found["customer_id"] == "its name"
    assert found["record"] == "a different whole number in each of its first 200 rows"


def test_unused_columns_say_why(tmp_path):
    path = str(tmp_path / "a.parquet")
    write_table(_table(), path, "parquet")
    layout = input_layout(path, id_column="customer_id")
    unused = columns.unused_columns(
        layout.schema, layout.numeric, ["record", "height"], "customer_id", "parquet"
    )
    assert unused == [
        ("customer_id", "the --id_column"),
        ("visits", "not in --features"),
        ("city", "string: --features NAME clusters it as a category"),
        ("tags", "a list (--features NAME clusters its rows of one value)"),
    ]
    line = columns.columns_line(["record", "height"], unused)
    assert line.startswith("features (2): record, height; not used: customer_id (the --id_column)")


def _options(*flags):
    return ViewCachingOptions(["--output", "/nonexistent/out", "--k", "2", *flags])


def test_a_fit_logs_its_columns_and_warns_about_identifiers(tmp_path, caplog):
    path = str(tmp_path / "a.parquet")
    write_table(_table().drop_columns(["tags"]), path, "parquet")
    caplog.set_level(logging.INFO, logger="pipeline.fit")
    spec = fit_spec(_options("--input", path))
    assert spec.features == ["customer_id", "record", "height", "visits"]
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "pipeline.fit"]
    assert lines[0] == (
        logging.INFO,
        "features (4): customer_id, record, height, visits; not used: city (string: "
        "--features NAME clusters it as a category)",
    )
    warnings = [m for level, m in lines if level == logging.WARNING]
    assert warnings == [
        "column 'customer_id' looks like an identifier (its name) but is clustered on as a "
        "feature: pass --id_column customer_id (or --features height,visits)",
        "column 'record' looks like an identifier (a different whole number in each of its "
        "first 200 rows) but is clustered on as a feature: pass --id_column record "
        "(or --features height,visits)",
    ]

    # With --id_column: no warning, the id column named as such. With --features: nothing.
    caplog.clear()
    fit_spec(_options("--input", path, "--id_column", "customer_id"))
    messages = [r.getMessage() for r in caplog.records if r.name == "pipeline.fit"]
    assert len(messages) == 1 and "customer_id (the --id_column)" in messages[0]
    caplog.clear()
    fit_spec(_options("--input", path, "--features", "height,visits"))
    assert not [r for r in caplog.records if r.name == "pipeline.fit"]
