"""Categorical features' pieces: the layout of their one-hot slots, the transform that fills
them (a tiny tf.Transform analysis), the readers' validation, dict rows, the sample."""

import json
import tempfile

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from pipeline.io.readers import Chunk
from pipeline.io.validation import check_chunk
from transforms.beam.combiners import BottomSampleFn
from transforms.beam.elements import row_categories
from transforms.beam.shards import CATEGORIES_COLUMN, FEATURES_COLUMN, categories_to_matrix
from transforms.core import categorical
from transforms.core.categorical import MISSING_VALUE, Layout
from transforms.core.sampling import row_hashes
from transforms.step import preprocessing


def test_layout_names_numeric_then_each_categorys_slots():
    layout = Layout.of(["a", "city", "b", "flag"], ["flag", "city"], 3)
    assert layout.numeric == ("a", "b") and layout.categorical == ("city", "flag")
    assert layout.width == 2 + 2 * 5
    names = layout.columns([["paris", "rome"], ["false", "true"]])
    assert names[:7] == ["a", "b", "city=paris", "city=rome", "city=#2", "city=__other__"] + [
        "city=__missing__"
    ]
    used = layout.used_columns([["paris", "rome"], ["false", "true"]], impute=False)
    assert [names[j] for j in used] == ["a", "b", "city=paris", "city=rome", "city=__other__"] + [
        "flag=false",
        "flag=true",
        "flag=__other__",
    ]
    with pytest.raises(ValueError, match="not in features"):
        Layout.of(["a"], ["b"], 3)


def test_the_transform_and_the_layout_agree_on_the_missing_value():
    # step/ and core/ may not import each other: each has the constant.
    assert preprocessing.MISSING_VALUE == categorical.MISSING_VALUE == categorical.MISSING


def _analyse(numbers: np.ndarray, values: np.ndarray, max_categories: int):
    """Run the real preprocessing_fn over one record batch; return its Standardizer."""
    import functools

    import tensorflow_transform.beam as tft_beam

    from transforms.beam.shards import matrix_to_categories, matrix_to_features

    out, tmp = tempfile.mkdtemp(), tempfile.mkdtemp()
    schema = pa.schema(
        [
            pa.field(FEATURES_COLUMN, pa.list_(pa.float64())),
            pa.field(CATEGORIES_COLUMN, pa.list_(pa.string())),
        ]
    )
    batch = pa.RecordBatch.from_arrays(
        [matrix_to_features(numbers), matrix_to_categories(values)], schema=schema
    )
    config = preprocessing.tensor_adapter_config(
        schema, FEATURES_COLUMN, numbers.shape[1], CATEGORIES_COLUMN, values.shape[1]
    )
    fn = functools.partial(
        preprocessing.preprocessing_fn, missing="impute", max_categories=max_categories
    )
    with beam.Pipeline() as p, tft_beam.Context(temp_dir=tmp):
        transform_fn = (p | beam.Create([batch]), config) | tft_beam.AnalyzeDataset(fn)
        _ = transform_fn | tft_beam.WriteTransformFn(out)
    return preprocessing.Standardizer(out, numbers.shape[1], values.shape[1])


def test_one_hot_slots_vocabulary_other_and_missing():
    values = np.array(
        [["b"], ["a"], ["b"], [MISSING_VALUE], [MISSING_VALUE], [MISSING_VALUE], ["a"], ["b"]]
        + [["c"]],
        dtype=object,
    )
    numbers = np.arange(len(values), dtype=np.float64)[:, None]
    standardizer = _analyse(numbers, values, max_categories=2)
    # The missing value, though the most frequent, takes no place in the vocabulary.
    assert standardizer.vocabularies() == [["b", "a"]]
    layout = Layout.of(["x", "v"], ["v"], 2)
    z = standardizer(numbers[:4], np.array([["a"], ["b"], ["never seen"], [MISSING_VALUE]]))
    assert z.shape == (4, layout.width)
    np.testing.assert_array_equal(z[:, 1:], np.eye(4, dtype=np.float32)[[1, 0, 2, 3]])
    mean, std = standardizer.mean_and_std()
    np.testing.assert_array_equal(mean[1:], 0.0)
    np.testing.assert_array_equal(std[1:], 1.0)
    np.testing.assert_allclose(mean[0], numbers.mean())


def _chunk(batch: pa.RecordBatch) -> Chunk:
    return Chunk("f.parquet", batch, np.arange(1, batch.num_rows + 1), [])


def test_validation_reads_text_bools_bytes_and_codes_as_categories():
    batch = pa.RecordBatch.from_pydict(
        {
            "x": [1.0, 2.0, 3.0, 4.0],
            "t": [" paris", "rome", None, ""],
            "b": [True, False, True, None],
            "raw": pa.array([[b"p"], [b"q"], [b"p", b"q"], []], pa.list_(pa.binary())),
            "code": [7, 8, 7, 9],
        }
    )
    checked = check_chunk(
        _chunk(batch), ["x"], pa.schema([]), FEATURES_COLUMN, categorical=["t", "b", "raw", "code"]
    )
    assert checked.valid.num_rows == 2
    values = categories_to_matrix(checked.valid.column(CATEGORIES_COLUMN), 4)
    assert values.tolist() == [["paris", "true", "p", "7"], ["rome", "false", "q", "8"]]
    reasons = [(r["row"], r["column"], r["reason"]) for r in map(json.loads, checked.rejected)]
    assert reasons == [(3, "t", "missing value"), (4, "t", "empty value")]

    imputed = check_chunk(
        _chunk(batch),
        ["x"],
        pa.schema([]),
        FEATURES_COLUMN,
        impute=True,
        categorical=["t", "b", "raw"],
    )
    reasons = [(r["row"], r["column"], r["reason"]) for r in map(json.loads, imputed.rejected)]
    assert reasons == [(3, "raw", "2 values where one is expected")]
    values = categories_to_matrix(imputed.valid.column(CATEGORIES_COLUMN), 3)
    assert values[:, 0].tolist() == ["paris", "rome", MISSING_VALUE]
    assert values[2].tolist() == [MISSING_VALUE, MISSING_VALUE, MISSING_VALUE]
    assert imputed.imputed.tolist() == [0, 1, 1, 1]  # x, then t, b, raw


def test_dict_rows_give_text_and_name_what_is_wrong():
    rows = [
        {"c": "a", "d": True},
        {"c": b"b", "d": 3},
        {"c": None, "d": "x"},
        {"d": "x"},
        {"c": float("nan"), "d": "x"},
    ]
    values, bad = row_categories(rows, ["c", "d"])
    assert values[:2].tolist() == [["a", "true"], ["b", "3"]]
    assert bad == [
        (2, "feature 'c' is null"),
        (3, "feature 'c' is missing"),
        (4, "categorical feature 'c' is NaN or infinite"),
    ]
    values, bad = row_categories(rows[2:4], ["c"], impute=True)
    assert values[:, 0].tolist() == [MISSING_VALUE, MISSING_VALUE] and bad == []


def test_the_sample_keeps_each_rows_categories_whatever_the_batches():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 2))
    values = rng.choice(["a", "b", "c"], size=(500, 1)).astype(object)
    x[250:] = x[:250]  # duplicate numbers, told apart by their category
    values[250:] = np.where(values[:250] == "a", "b", "a")
    hashes = row_hashes(x, 7, values)
    assert len(np.unique(hashes)) == 500
    np.testing.assert_array_equal(hashes, row_hashes(x, 7, values.copy()))

    def sample(order, cuts):
        fn = BottomSampleFn(100, 2, n_categorical=1)
        accumulators = []
        for part in np.array_split(order, cuts):
            accumulator = fn.create_accumulator()
            fn.add_input(accumulator, (hashes[part], x[part], None, values[part]))
            accumulators.append(accumulator)
        return fn.extract_output(fn.merge_accumulators(accumulators))

    one = sample(np.arange(500), 1)
    other = sample(rng.permutation(500), 7)
    np.testing.assert_array_equal(one.rows, other.rows)
    np.testing.assert_array_equal(one.categories, other.categories)
    by_hash = dict(zip(hashes.tolist(), values[:, 0].tolist()))
    assert [by_hash[h] for h in one.hashes.tolist()] == one.categories[:, 0].tolist()
