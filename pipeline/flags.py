"""The commands' flags, checked before anything runs.

Beam parses pipeline options leniently: a flag that no PipelineOptions class
defines is dropped with a warning ("Discarding unparseable args"), so a typo
(`--max_round 2`) ran a whole job on the defaults and exited 0. Here every
flag of `fit` and `score` is parsed up front by one parser holding every flag
Beam would accept (shardmeans' option classes are PipelineOptions too), and
the first problem stops the command with one line: an unknown flag named with
the closest known one, or argparse's own complaint (a missing value, a value
that is not an int, not one of the choices).

What Beam accepts, and so what is accepted here (apache_beam 2.77):
`--flag value` and `--flag=value`; boolean flags bare (`--overwrite`, not
`--overwrite=true`); a flag given twice keeps the last value, or adds to the
list for the list flags (`--experiments a,b --experiments c`); one value per
flag (`--experiments a b` leaves `b` over, refused here as an unexpected
argument). No abbreviations: Beam's parsers are built with allow_abbrev=False,
so `--max_round` is not taken for `--max_rounds`; refusing it is what keeps
Beam from running on the defaults. `generate` follows the same rules.
"""

import argparse
import difflib
import importlib
from typing import Iterable, List, Optional, Sequence

from transforms.core.errors import UserInputError


class FlagError(UserInputError):
    """A flag the command cannot take: printed alone as the command's error line, exit 2."""


# Beam modules that register PipelineOptions classes of their own when they are
# imported. Beam imports a runner's module only once --runner names it, after
# the flags were parsed, so a runner's flags would look unknown here without
# these imports. In Beam 2.77 the Dataflow, Flink, Spark, Prism, portable and
# job-server options live in apache_beam.options.pipeline_options itself; the
# runner modules are listed anyway so that options moved into them later are
# still found. A module whose dependencies are missing (the Dask runner without
# dask) cannot be the runner either, and is skipped.
RUNNER_OPTION_MODULES = (
    "apache_beam.runners.direct.direct_runner",
    "apache_beam.runners.dataflow.dataflow_runner",
    "apache_beam.runners.portability.portable_runner",
    "apache_beam.runners.portability.flink_runner",
    "apache_beam.runners.portability.spark_runner",
    "apache_beam.runners.portability.prism_runner",
    "apache_beam.runners.render",
    "apache_beam.runners.dask.dask_runner",
)


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose every complaint is a FlagError: the command
    prints it as its one error line, without argparse's usage block and exit.

    `parse_args` refuses an unknown flag with the closest known one, as `fit`
    and `score` do, and abbreviations are off (Beam's rule) unless asked for.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise FlagError(message)

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            raise FlagError(unknown_flags_message(unknown, option_strings(self), self.prog))
        return parsed


def check_job_flags(argv: Sequence[str], prog: str) -> None:
    """Raise FlagError if Beam would drop or choke on any of `argv`.

    `argv` are the flags of `fit` or `score`; `prog` ("shardmeans fit") is named
    in the hint of an unknown flag that resembles none.
    """
    argv = list(argv)
    if _only_shardmeans_flags(argv, prog.split()[-1]):
        return
    parser = pipeline_options_parser()
    try:
        _, unknown = parser.parse_known_args(argv)
    except FlagError:
        raise
    except Exception as e:
        # (e.g. --sdk_harness_log_level_overrides 1: JSON, but not an object)
        raise FlagError(f"{_failing_flag(parser, argv)}: {type(e).__name__}: {e}") from e
    if unknown:
        raise FlagError(unknown_flags_message(unknown, option_strings(parser), prog))


def _only_shardmeans_flags(argv: List[str], command: str) -> bool:
    """Whether `argv` parses cleanly with the command's own flags alone (no Beam flag,
    nothing wrong): then Beam's parsers, seconds to import, need not be built to know
    it. Anything else (a Beam flag, a typo, a bad value) returns False, and the full
    check decides and words the error."""
    from pipeline import flag_reference

    if command not in flag_reference.COMMANDS:
        return False
    parser = flag_reference.help_parser(command)
    parser.allow_abbrev = False  # (Beam's rule; read when parsing)

    def refuse(message):
        raise FlagError(message)

    parser.error = refuse
    try:
        _, unknown = parser.parse_known_args(argv)
    except Exception:  # noqa: BLE001 -- any complaint: the full check words it
        return False
    return not unknown


def _failing_flag(parser: argparse.ArgumentParser, argv: List[str]) -> str:
    """The flag (with its value) whose parsing raises: the shortest prefix of `argv` that fails."""
    for end in range(1, len(argv) + 1):
        try:
            parser.parse_known_args(argv[:end])
        except FlagError:  # a prefix that cuts a flag from its value
            continue
        except Exception:  # noqa: BLE001 -- the one looked for
            start = end - 2 if end >= 2 and not argv[end - 1].startswith("-") else end - 1
            return "argument " + " ".join(argv[start:end])
    return "the flags"


def pipeline_options_parser() -> argparse.ArgumentParser:
    """One parser with the flags of every PipelineOptions class, as Beam gathers them.

    Beam's `PipelineOptions.get_all_options` adds the flags of each direct
    subclass of PipelineOptions (one per class name) to a `_BeamArgumentParser`
    with allow_abbrev=False; so does this, after importing shardmeans' options
    and the runners' option modules. Beam's own parser class is the base so that
    the option classes' `add_value_provider_argument` calls work.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    import pipeline.options  # noqa: F401 -- registers shardmeans' option classes
    from pipeline.private_apis import beam_argument_parser

    _import_runner_options()

    class Parser(beam_argument_parser()):
        def error(self, message):  # Beam's prints the usage of ~180 flags and exits
            raise FlagError(message)

    parser = Parser(allow_abbrev=False, add_help=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return parser


def _import_runner_options() -> None:
    for module in RUNNER_OPTION_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional runner whose dependencies are not installed
            pass


def option_strings(parser: argparse.ArgumentParser) -> List[str]:
    """Every flag `parser` knows, e.g. ['--k', '--n_init', '--experiment', '--experiments', ...]."""
    return [s for action in parser._actions for s in action.option_strings]  # noqa: SLF001


def unknown_flags_message(unknown: Sequence[str], known: Iterable[str], prog: str) -> str:
    """One line about the arguments a parser left over, e.g.
    "unknown flag --max_round (did you mean --max_rounds?)".

    Every unknown flag is named (one line all the same); the values after them
    are not (`--max_round 2` leaves '2' over too). A leftover that is no flag and
    follows none (`fit data.csv`, the second value of `--experiments a b`) is
    named as an unexpected argument.
    """
    known = list(known)
    problems = []
    after_flag = False
    for arg in unknown:
        if _looks_like_flag(arg):
            problems.append(_unknown_flag(arg.split("=", 1)[0], known, prog))
            after_flag = "=" not in arg
        elif after_flag:
            after_flag = False  # the value of the unknown flag before it
        else:
            problems.append(f"unexpected argument {arg!r} (flags are --name value or --name=value)")
    return "; ".join(problems)


def _looks_like_flag(arg: str) -> bool:
    return arg.startswith("-") and arg not in ("-", "--") and not _is_number(arg)


def _is_number(arg: str) -> bool:
    try:
        float(arg)
        return True
    except ValueError:
        return False


def _unknown_flag(flag: str, known: List[str], prog: str) -> str:
    suggestion = closest_flag(flag, known)
    if suggestion:
        return f"unknown flag {flag} (did you mean {suggestion}?)"
    return f"unknown flag {flag} ({prog} --help lists the flags)"


def closest_flag(flag: str, known: Iterable[str]) -> Optional[str]:
    """The known flag most like `flag` by difflib's ratio, or None if none is close.

    Dashes and underscores, case, and one or two leading dashes count as the
    same ('--n-init' and '-n_init' are '--n_init'): they are the usual slips,
    and argparse treats them as different flags.
    """
    by_normal = {}
    for option in known:
        by_normal.setdefault(_normal(option), option)
    target = _normal(flag)
    if target in by_normal:
        return by_normal[target]
    match = difflib.get_close_matches(target, list(by_normal), n=1)
    return by_normal[match[0]] if match else None


def _normal(flag: str) -> str:
    return "--" + flag.lstrip("-").replace("-", "_").lower()


def flag_value(argv: Sequence[str], flag: str) -> Optional[str]:
    """The last value given to `flag` in `argv` (`--flag v` or `--flag=v`), or None.

    For error messages only (the job's --output, named when a full disk's error
    names no path); the jobs read their flags through their parsers.
    """
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1 :]
    return value
