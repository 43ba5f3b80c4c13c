"""Usage: python -m subprocess_checks.core_without_tf ROOT HEAVY MODULE...

Imports every MODULE of transforms/core (ROOT's), then runs each piece once, where
importing any of HEAVY (comma-separated top-level modules: TensorFlow, tf.Transform,
Beam, and what imports them) fails. `transforms` is a bare package here: its real
__init__ imports every layer. Prints "ok".
"""

import importlib
import importlib.abc
import os
import sys
import types

ROOT, HEAVY, MODULES = sys.argv[1], tuple(sys.argv[2].split(",")), sys.argv[3:]
assert not [m for m in HEAVY if m in sys.modules], "imported at start-up"


class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in HEAVY:
            raise ImportError(f"transforms.core may not import {fullname}")
        return None


sys.meta_path.insert(0, Blocked())
package = types.ModuleType("transforms")
package.__path__ = [os.path.join(ROOT, "transforms")]
sys.modules["transforms"] = package

for name in MODULES:
    importlib.import_module(name)

import numpy as np  # noqa: E402 -- once the heavy imports are blocked

from transforms.core.errors import UserInputError  # noqa: E402
from transforms.core.hierarchy import merge_clusters  # noqa: E402
from transforms.core.lloyd import Candidates, RoundState, update_candidates  # noqa: E402, F401
from transforms.core.partials import Partials, merge  # noqa: E402
from transforms.core.sampling import row_hashes  # noqa: E402
from transforms.core.seeding import _initial_state, initial_centroids, sample_inertia  # noqa: E402
from transforms.core.selection import only_candidate, select  # noqa: E402

rng = np.random.default_rng(0)
x = np.concatenate([rng.normal(c, 0.1, size=(100, 2)) for c in (0.0, 5.0, 10.0)])
assert row_hashes(x, 0).dtype == np.uint64
states = []
for k in (2, 3):
    for init in ("k-means++", "random"):
        centroids = initial_centroids(x, k, init, seed=0, refine_rounds=2)
        assert sample_inertia(x, centroids) >= 0
    _, state, _ = _initial_state((0, (k, 0)), x, "k-means++", None, 2, 1e-4)
    states.append(state)
candidates = Candidates(states=tuple(states), seeds=(0, 0))
final = []
for state in states:
    labels = ((x[:, None] - state.centroids[None]) ** 2).sum(-1).argmin(1)
    k = len(state.centroids)
    sums = np.zeros((k, 2))
    np.add.at(sums, labels, x)
    part = Partials(
        sums,
        np.bincount(labels, minlength=k),
        1.0,
        np.zeros(0),
        np.zeros((0, 2), np.float32),
        np.zeros(0, np.int64),
    )
    final.append(merge([part, Partials.zeros(k, 2)], 16))
updated = update_candidates(candidates, final, 1e-4)
chosen = select(updated, final, x, "silhouette", 0)
assert len(chosen.state.centroids) == 3, chosen.sweep
assert only_candidate(updated).index == 0
merged = merge_clusters(chosen.state._replace(counts=final[1].counts), 2)
assert sorted(set(merged.merge_map.tolist())) == [0, 1]
assert issubclass(UserInputError, ValueError)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
assert not loaded, loaded
print("ok")
