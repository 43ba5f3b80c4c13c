"""The pipeline file the example DAG gives Airflow's BeamRunPythonPipelineOperator.

The operator starts `PY_INTERPRETER [PY_OPTIONS] PY_FILE --runner=RUNNER --NAME=VALUE ...`
(its pipeline options, each as a flag): there is no place for a sub-command, so the
command comes as one more option, `--command=fit` or `--command=score`:

    python shardmeans_job.py --runner=DirectRunner --command=fit --input=... --k=8

is `shardmeans fit --runner=DirectRunner --input=... --k=8`: same flags, same exit
status (0, 2 for a user error, other for a failure). PY_INTERPRETER must be a Python
where shardmeans is installed (its virtual environment's bin/python); nothing here
imports Airflow.
"""

import sys
from typing import List, Tuple

COMMANDS = ("fit", "score")


def split_command(argv: List[str]) -> Tuple[str, List[str]]:
    """(the command `--command=NAME` or `--command NAME` names, the other arguments);
    ValueError naming what is wrong when there is not exactly one, fit or score."""
    commands, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--command" and i + 1 < len(argv):
            commands.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--command="):
            commands.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    if len(commands) != 1 or commands[0] not in COMMANDS:
        raise ValueError(
            f"give exactly one --command ({' or '.join(COMMANDS)}), got {commands or 'none'}"
        )
    return commands[0], rest


def main() -> None:
    try:
        command, rest = split_command(sys.argv[1:])
    except ValueError as e:
        print(f"shardmeans_job.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    from pipeline.cli import run

    sys.argv = [sys.argv[0], command, *rest]
    run()  # exits with the command's status


if __name__ == "__main__":
    main()
