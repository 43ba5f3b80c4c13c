"""docs/flags.md and `fit --help` / `score --help` come from transforms.core.parameters
(pipeline/flag_reference.py): the committed reference is what the generator prints,
and the help built without Beam is the help Beam's options classes would give."""

import argparse
import os

from pipeline import flag_reference
from transforms.core import parameters

from helpers import ROOT


def test_docs_flags_md_is_generated():
    with open(os.path.join(ROOT, "docs", "flags.md")) as f:
        committed = f.read()
    assert committed == flag_reference.render(), (
        "docs/flags.md is stale: run python -m pipeline.flag_reference > docs/flags.md"
    )


def test_every_parameter_is_in_its_commands_reference():
    """fit: every group but SCORE, in the order of `fit --help`; score: SCORE first."""
    shared = parameters.ANOMALY + parameters.OUTPUT
    expected = {
        "fit": parameters.INPUT + parameters.FIT + shared,
        "score": parameters.SCORE + parameters.INPUT + shared,
        "stream": parameters.SCORE + parameters.STREAM + parameters.ANOMALY,
    }
    text = flag_reference.render()
    for command, spec in flag_reference.COMMANDS.items():
        names = [p.name for _, group in spec.groups for p in group]
        assert names == [p.name for p in expected[command]], command
        for name in names:
            assert f"| `--{name}` |" in text, name


def _options_help(command: str) -> str:
    """The help as the options classes define the flags: one group per class, titled
    by its docstring, in the order the command parses them."""
    from pipeline import options

    classes = {
        "fit": (
            options.InputOptions,
            options.KMeansOptions,
            options.AnomalyOptions,
            options.OutputOptions,
        ),
        "score": (
            options.ScoreOptions,
            options.InputOptions,
            options.AnomalyOptions,
            options.OutputOptions,
        ),
        "stream": (options.ScoreOptions, options.StreamOptions, options.AnomalyOptions),
    }[command]
    spec = flag_reference.COMMANDS[command]
    parser = argparse.ArgumentParser(
        prog=f"shardmeans {command}", description=spec.description, epilog=flag_reference.EPILOG
    )
    for cls in classes:
        cls._add_argparse_args(parser.add_argument_group(cls.__doc__.strip().rstrip(".")))
    parser.add_argument_group("The command").add_argument(
        "--verbose", action="store_true", help=flag_reference.VERBOSE_HELP
    )
    return parser.format_help()


def test_help_without_beam_equals_the_options_classes_help():
    for command in ("fit", "score", "stream"):
        assert flag_reference.help_parser(command).format_help() == _options_help(command)
