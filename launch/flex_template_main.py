"""Flex Template entry point: `shardmeans fit` on Dataflow.

A Flex Template launch runs FLEX_TEMPLATE_PYTHON_PY_FILE (this file, in the image
launch/Dockerfile builds) with the template's parameters as --name=value flags.
A --runner the launcher passes comes after this one, and wins.
"""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["fit", "--runner=DataflowRunner", *sys.argv[1:]]))
