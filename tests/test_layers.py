"""The layers of the tree: what each package may import (transforms/core, step, beam; pipeline).

- transforms/ never imports pipeline/;
- transforms/core/ imports neither TensorFlow, tf.Transform nor Beam, not even through
  another module: it is checked on its import statements (function-local ones too) and
  by importing and running it in a process where those imports fail;
- transforms/step/ and transforms/core/ import neither each other nor transforms/beam/;
- pipeline/io/ and pipeline/outputs/ import neither each other.

The import statements are read from the files (ast), not from `sys.modules`: importing any
`transforms.x` runs `transforms/__init__.py`, which imports every layer.
"""

import ast
import glob
import os
import subprocess
import sys

from conftest import ROOT

# Top-level modules that are TensorFlow, tf.Transform or Beam, or import them.
HEAVY = ("tensorflow", "tensorflow_transform", "apache_beam", "tfx_bsl", "tensorflow_metadata")


def _modules(package: str):
    """(dotted name, path) of every module under `package` (a directory under ROOT)."""
    for path in sorted(glob.glob(os.path.join(ROOT, package, "**", "*.py"), recursive=True)):
        relative = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        yield relative[: -len(".__init__")] if relative.endswith(".__init__") else relative, path


def _imports(name: str, path: str):
    """Every module `path` imports, at any depth of its code: (dotted name, line)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            yield module, node.lineno
            for alias in node.names:  # `from transforms.step import step` imports a module too
                yield f"{module}.{alias.name}", node.lineno
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                getattr(node.func, "attr", None) == "import_module"
                or getattr(node.func, "id", None) in ("import_module", "__import__")
            )
        ):
            yield node.args[0].value, node.lineno


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _violations(package: str, forbidden) -> list:
    return [
        f"{os.path.relpath(path, ROOT)}:{line} imports {imported}"
        for name, path in _modules(package)
        for imported, line in _imports(name, path)
        if any(_under(imported, f) for f in forbidden)
    ]


def test_the_layers_are_packages():
    """Every directory of modules is a package, so setup.py's find_packages ships it."""
    for package in ("pipeline", "transforms"):
        for path in glob.glob(os.path.join(ROOT, package, "**", "*.py"), recursive=True):
            assert os.path.exists(os.path.join(os.path.dirname(path), "__init__.py")), path
    for layer in ("core", "step", "step/native", "beam"):
        assert os.path.exists(os.path.join(ROOT, "transforms", layer, "__init__.py"))
    for layer in ("io", "outputs"):
        assert os.path.exists(os.path.join(ROOT, "pipeline", layer, "__init__.py"))


def test_transforms_never_imports_pipeline():
    assert list(_modules("transforms"))
    assert _violations("transforms", ["pipeline"]) == []


def test_core_imports_no_tensorflow_beam_or_other_layer():
    """Its own import statements: only other core modules of shardmeans, no heavy library.
    `import transforms` (the package itself) would run its __init__, which imports all."""
    assert _violations("transforms/core", HEAVY + ("transforms.step", "transforms.beam")) == []
    bare = [
        f"{os.path.relpath(path, ROOT)}:{line}"
        for name, path in _modules("transforms/core")
        for imported, line in _imports(name, path)
        if imported == "transforms"
        or (_under(imported, "transforms") and not _under(imported, "transforms.core"))
    ]
    assert bare == []


def test_step_imports_neither_beam_nor_core():
    assert (
        _violations("transforms/step", ["apache_beam", "transforms.core", "transforms.beam"]) == []
    )
    assert [
        m
        for name, path in _modules("transforms/step")
        for m, _ in _imports(name, path)
        if m == "transforms"
    ] == []


def test_pipeline_io_and_outputs_import_neither_each_other():
    assert _violations("pipeline/io", ["pipeline.outputs"]) == []
    assert _violations("pipeline/outputs", ["pipeline.io"]) == []


# Imports every core module, then runs each piece once, where importing TensorFlow,
# tf.Transform or Beam (or what imports them) fails. `transforms` is a bare package
# here: its real __init__ imports every layer.
_CORE_WITHOUT_TF = """
import importlib, importlib.abc, os, sys, types

HEAVY = {heavy!r}
assert not [m for m in HEAVY if m in sys.modules], "imported at start-up"


class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in HEAVY:
            raise ImportError(f"transforms.core may not import {{fullname}}")
        return None


sys.meta_path.insert(0, Blocked())
package = types.ModuleType("transforms")
package.__path__ = [os.path.join({root!r}, "transforms")]
sys.modules["transforms"] = package

for name in {modules!r}:
    importlib.import_module(name)

import numpy as np
from transforms.core.errors import UserInputError
from transforms.core.hierarchy import merge_clusters
from transforms.core.lloyd import Candidates, RoundState, update_candidates
from transforms.core.partials import Partials, merge
from transforms.core.sampling import row_hashes
from transforms.core.seeding import _initial_state, initial_centroids, sample_inertia
from transforms.core.selection import only_candidate, select

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
    part = Partials(sums, np.bincount(labels, minlength=k), 1.0, np.zeros(0),
                    np.zeros((0, 2), np.float32), np.zeros(0, np.int64))
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
"""


def test_core_runs_where_tensorflow_and_beam_cannot_be_imported():
    """Not even indirectly (scikit-learn, SciPy, a function-local import): every core
    module imports, and each piece runs once, in a process that cannot import them."""
    modules = [name for name, _ in _modules("transforms/core")]
    assert "transforms.core.lloyd" in modules and "transforms.core" in modules
    code = _CORE_WITHOUT_TF.format(heavy=HEAVY, root=ROOT, modules=modules)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
