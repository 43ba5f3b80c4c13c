"""`python -m pipeline fit|generate ...`: the same as the `shardmeans` command."""

from pipeline.cli import run

run()
