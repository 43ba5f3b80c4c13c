"""The library's row conversion (transforms.beam.elements): each bad row's reason, vector
columns from dict rows, and what `impute` turns into NaN."""

import numpy as np

from transforms.beam.elements import array_rows, row_matrix
from transforms.core import vectors


def test_each_bad_row_has_its_reason_and_the_good_ones_their_values():
    rows = [
        {"a": 1, "b": 2.5},
        {"a": 1},
        {"a": None, "b": 1},
        {"a": "x", "b": 1},
        {"a": float("nan"), "b": 1},
        {"a": 10**400, "b": 1},  # beyond float64: a reason, not an OverflowError
        [1, 2],
    ]
    x, bad = row_matrix(rows, ["a", "b"])
    np.testing.assert_array_equal(x[0], [1.0, 2.5])
    assert [(i, why.split(":")[0]) for i, why in bad] == [
        (1, "feature 'b' is missing"),
        (2, "feature 'a' is null"),
        (3, "feature 'a' is not a number"),
        (4, "feature 'a' is NaN or infinite"),
        (5, "feature 'a' is too large for a float64"),
        (6, "a list is not a row"),
    ]


def test_a_vector_column_comes_from_a_list_under_its_name():
    features = ["s"] + vectors.element_names("v", 3)
    assert vectors.group(features) == [("s", None), ("v", 3)]
    rows = [
        {"s": 1.0, "v": [1, 2, 3]},
        {"s": 1.0, "v": np.array([4.0, 5.0, 6.0], np.float32)},
        {"s": 1.0, "v": [1, 2]},
        {"s": 1.0, "v": [1, None, 2]},
        {"s": 1.0, "v": "abc"},
    ]
    x, bad = row_matrix(rows, features)
    np.testing.assert_array_equal(x[:2], [[1, 1, 2, 3], [1, 4, 5, 6]])
    assert [i for i, _ in bad] == [2, 3, 4]
    assert "holds 2 values where 3 are expected" in bad[0][1]
    assert "null (an element)" in bad[1][1]


def test_impute_turns_missing_and_null_into_nan_but_not_nan_or_inf():
    rows = [{"s": None, "v": [1, 2, 3]}, {"v": None}, {"s": float("nan"), "v": [1, 2, 3]}]
    x, bad = row_matrix(rows, ["s"] + vectors.element_names("v", 3), impute=True)
    assert np.isnan(x[0, 0]) and not np.isnan(x[0, 1:]).any()
    assert np.isnan(x[1]).all()
    assert [i for i, _ in bad] == [2]
    x, bad = array_rows(np.array([[np.nan, 1.0], [np.inf, 1.0]]), 2, impute=True)
    assert [i for i, _ in bad] == [1]


def test_group_keeps_a_column_literally_named_like_an_element():
    assert vectors.group(["a[0]", "a[1]", "b"], present=["a[0]", "a[1]"]) == [
        ("a[0]", None),
        ("a[1]", None),
        ("b", None),
    ]
    assert vectors.group(["a[0]", "b[1]"]) == [("a[0]", None), ("b[1]", None)]
    assert vectors.expand([("a", 2), ("b", None)]) == ["a[0]", "a[1]", "b"]
