"""launch/metadata.json, the Flex Template's parameters, built from transforms.core.parameters.

    python -m pipeline.template_metadata > launch/metadata.json

A test checks that the committed file is what this prints, so a parameter added,
renamed or re-documented in transforms.core.parameters reaches the template too.
Every parameter of `fit` is in it but the bare flags (`overwrite`, `detach`,
`keep_standardized`): a template passes each parameter as `--NAME=VALUE`, which a
bare flag refuses. The regexes let Dataflow refuse a bad value before a job starts;
`fit` checks each value again, fully, when the template runs.
"""

import json
import re

from transforms.core import parameters
from transforms.core.parameters import Parameter

DESCRIPTION = (
    "K-Means on sharded CSV, Parquet or TFRecord (tf.Example) files: bad rows go to "
    "OUTPUT/rejected/ with a reason, features are standardized with global statistics "
    "(tf.Transform), and exact Lloyd rounds run as TensorFlow on every worker. Writes "
    "model/1/ (SavedModel, in TF Serving's layout), transform_fn/, centroids.csv, "
    "centroids.npy, metrics.json, "
    "assignments/ and rejected/ under the output directory."
)

# A non-negative decimal number as `float()` reads it: 0, 1e-4, 0.001, .5, 1E-6.
_NON_NEGATIVE_FLOAT = r"^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$"


def template_regex(p: Parameter) -> str:
    """The regex a template value of `p` must match: its own, else from its constraint."""
    if p.template_pattern is not None:
        return p.template_pattern
    if p.choices is not None:
        return "^(" + "|".join(re.escape(c) for c in p.choices) + ")$"
    if p.pattern is not None:
        return f"^({p.pattern})$"
    if p.type is int and p.minimum == 1:
        return r"^[1-9][0-9]*$"
    if p.type is int and p.minimum == 0:
        return r"^[0-9]{1,%d}$" % len(str(p.below - 1)) if p.below else r"^[0-9]+$"
    if p.type is float and p.minimum == 0:
        return _NON_NEGATIVE_FLOAT
    return r"^.+$"


def _help_text(p: Parameter) -> str:
    text = p.help[0].upper() + p.help[1:] + "."
    default = p.default_help or (None if p.default is None else str(p.default))
    return f"{text} Default: {default}." if default and not p.required else text


def template_parameters(flags) -> list:
    """The Flex Template's entry of each parameter in `flags` but the bare ones (a
    template parameter takes a value)."""
    return [
        {
            "name": p.name,
            "label": p.label,
            "helpText": _help_text(p),
            "isOptional": not p.required,
            "regexes": [template_regex(p)],
        }
        for p in flags
        if p.type is not bool
    ]


def metadata() -> dict:
    """The Flex Template spec of `fit`: name, description, one entry per parameter."""
    return {
        "name": "shardmeans fit",
        "description": DESCRIPTION,
        "parameters": template_parameters(
            parameters.INPUT + parameters.FIT + parameters.ANOMALY + parameters.OUTPUT
        ),
    }


def render() -> str:
    return json.dumps(metadata(), indent=2) + "\n"


if __name__ == "__main__":
    print(render(), end="")
