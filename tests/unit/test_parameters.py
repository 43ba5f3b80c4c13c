"""One vocabulary: each parameter defined once (transforms.core.parameters), and the
command's flags, `KMeans`' keywords and the Flex Template built from it or held to it."""

import inspect
import json
import os

import numpy as np
import pytest

from transforms.core import parameters
from transforms.core.errors import UserInputError

from helpers import ROOT

# KMeans' arguments that are no flag of `fit`: the command derives them (features from
# --features and the input, output_dir and work_dir from the run, passthrough from
# the input's columns).
LIBRARY_ONLY = {"features", "output_dir", "passthrough", "work_dir"}


def test_kmeans_takes_the_fit_flags_by_name_and_default():
    from transforms.beam.kmeans import KMeans

    signature = inspect.signature(KMeans).parameters
    flags = {p.name: p for p in parameters.FIT + parameters.ANOMALY} | {
        "keep_standardized": parameters.BY_NAME["keep_standardized"],
        "weight_column": parameters.BY_NAME["weight_column"],
        "top_n": parameters.BY_NAME["top_n"],
    }
    assert set(signature) - LIBRARY_ONLY == set(flags)
    for name, p in flags.items():
        if not p.required:
            assert signature[name].default == p.default, name


def test_the_command_flags_are_the_parameters():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import (
        AnomalyOptions,
        InputOptions,
        KMeansOptions,
        OutputOptions,
        ScoreOptions,
    )

    options = PipelineOptions([])
    groups = (
        (InputOptions, parameters.INPUT),
        (KMeansOptions, parameters.FIT),
        (AnomalyOptions, parameters.ANOMALY),
        (OutputOptions, parameters.OUTPUT),
        (ScoreOptions, parameters.SCORE),
    )
    for cls, group in groups:
        view = options.view_as(cls)
        for p in group:
            assert getattr(view, p.name) == p.default, p.name


def test_select_choices_are_the_criteria_selection_knows():
    from transforms.core.selection import CRITERIA

    assert parameters.BY_NAME["select"].choices == tuple(CRITERIA)


def test_help_says_required_and_default():
    assert parameters.BY_NAME["k"].flag_help().startswith("(required) ")
    assert (
        parameters.BY_NAME["max_rounds"]
        .flag_help()
        .endswith(f"(default: {parameters.DEFAULT_MAX_ROUNDS})")
    )
    assert parameters.BY_NAME["cache_mb"].flag_help().endswith("(default: a quarter of RAM)")


@pytest.mark.parametrize(
    "value, expected",
    [(8, (8,)), ("8", (8,)), ("16,4,8", (4, 8, 16)), ([16, 4], (4, 16)), (np.int64(3), (3,))],
)
def test_parse_ks(value, expected):
    assert parameters.parse_ks(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("three", "must be a whole number or a list of them"),
        ("2.5", "must be a whole number or a list of them"),
        ([2.5], "must be a whole number or a list of them"),
        ("0", "must be at least 1, got 0"),
        ("4,4", "lists a K twice"),
        ("1,4", "every K must be at least 2"),
        ([], "is an empty list"),
        (None, "is required"),
    ],
)
@pytest.mark.parametrize("prefix", ["", "--"])
def test_parse_ks_names_the_bad_value(value, message, prefix):
    with pytest.raises(UserInputError, match=f"^(a )?{prefix}k ") as e:
        parameters.parse_ks(value, prefix)
    assert message in str(e.value)


BAD = [
    ("max_rounds", 0, "max_rounds must be at least 1, got 0"),
    ("batch_size", 2.5, "batch_size must be a whole number, got 2.5"),
    ("tol", -1e-3, "tol must be at least 0, got -0.001"),
    ("tol", float("nan"), "tol must be a number, got nan"),
    ("seed", 2**32, "seed must be below 4294967296, got 4294967296"),
    ("init_seed", -1, "init_seed must be at least 0, got -1"),
    ("n_init", True, "n_init must be a number, got True"),
    ("init_refine_rounds", -1, "init_refine_rounds must be at least 0"),
    ("cache_mb", -5, "cache_mb must be at least 0, got -5"),
    ("select", "inertia", "select must be one of silhouette, calinski_harabasz, davies_bouldin"),
    ("restarts_on", "full", "restarts_on must be one of sample, all, got 'full'"),
    ("devices", "tpu", "devices: 'tpu' is not auto, cpu, cpu:N or gpu:I[,J...]"),
    ("init", "kmeans", "init: 'kmeans' is not of the form"),
    ("merge_to", 5, "merge_to must be in 1..4 (the smallest K), got 5"),
    ("top_n", 5, "top_n must be in 0..4 (the smallest K), got 5"),
    ("top_n", -1, "top_n must be at least 0, got -1"),
    ("init_sample_size", 3, "init_sample_size must be at least the largest K (8), got 3"),
]


@pytest.mark.parametrize("name, value, message", BAD)
def test_check_fit_names_the_bad_value(name, value, message):
    with pytest.raises(UserInputError) as e:
        parameters.check_fit((4, 8), {name: value})
    assert str(e.value).startswith(message)
    with pytest.raises(UserInputError) as e:
        parameters.check_fit((4, 8), {name: value}, prefix="--")
    assert str(e.value).startswith("--" + message)


@pytest.mark.parametrize("name, value, message", BAD)
def test_kmeans_refuses_what_the_command_refuses(name, value, message):
    from transforms.beam.kmeans import KMeans

    with pytest.raises(UserInputError) as e:
        KMeans([4, 8], ["a", "b"], "/nonexistent", **{name: value})
    assert str(e.value).startswith(message)


def test_kmeans_given_centroids_are_one_start():
    from transforms.beam.kmeans import KMeans

    with pytest.raises(UserInputError, match=r"init has shape \(2, 3\), expected \(2, 2\)"):
        KMeans(2, ["a", "b"], "/nonexistent", init=np.zeros((2, 3)))
    with pytest.raises(UserInputError, match="one start: they take a single K and n_init=1"):
        KMeans(2, ["a", "b"], "/nonexistent", init=np.zeros((2, 2)), n_init=2)
    with pytest.raises(UserInputError, match="numpy.load a .npy first"):
        KMeans(2, ["a", "b"], "/nonexistent", init="c.npy")
    assert KMeans(2, ["a", "b"], "/nonexistent", init=np.zeros((2, 2))).n_init == 1


def test_flex_template_metadata_is_generated_from_the_parameters():
    """launch/metadata.json is `python -m pipeline.template_metadata`'s output."""
    from pipeline.template_metadata import render

    with open(os.path.join(ROOT, "launch", "metadata.json")) as f:
        committed = f.read()
    assert committed == render(), "run: python -m pipeline.template_metadata > launch/metadata.json"
    names = [p["name"] for p in json.loads(committed)["parameters"]]
    assert "max_rounds" in names and "overwrite" not in names
