"""Flex Template entry point: `shardmeans stream` on Dataflow (a streaming job).

The image launch/Dockerfile builds holds this file beside flex_template_main.py (fit's);
a template built with FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/shardmeans/flex_template_stream.py
and launch/metadata_stream.json runs it with the template's parameters as --name=value
flags. A --runner the launcher passes comes after this one, and wins.
"""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["stream", "--runner=DataflowRunner", *sys.argv[1:]]))
