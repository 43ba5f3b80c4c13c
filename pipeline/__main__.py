"""`python -m pipeline fit|generate ...`: the same as the `shardmeans` command."""
import sys

from pipeline.cli import main

sys.exit(main())
