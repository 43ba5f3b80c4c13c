"""The fused op's results for helpers.many_units_case(), saved to ARGV[1] (.npz): every
field of every group's result that holds one, in order. With --one-cpu the process is first confined to
one CPU (its affinity, as taskset sets it); SHARDMEANS_OP_THREADS comes from the
environment the test gives."""

import os
import sys

import numpy as np

if "--one-cpu" in sys.argv[2:]:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

# Imported once the affinity is set: the op sizes its pool when it loads.
from transforms.step.step import KMeansStep

from helpers import many_units_case

x, groups = many_units_case()
r = KMeansStep(native=True).groups(x, groups)
# Every field the results hold (an unweighted call has no weight sums: None).
fields = [getattr(g, f) for g in r for f in g._fields]
np.savez(sys.argv[1], *[v for v in fields if v is not None])
