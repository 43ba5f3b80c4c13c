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

from helpers import ROOT, run_check

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


def test_core_runs_where_tensorflow_and_beam_cannot_be_imported():
    """Not even indirectly (scikit-learn, SciPy, a function-local import): every core
    module imports, and each piece runs once, in a process that cannot import them
    (tests/subprocess_checks/core_without_tf.py)."""
    modules = [name for name, _ in _modules("transforms/core")]
    assert "transforms.core.lloyd" in modules and "transforms.core" in modules
    proc = run_check("core_without_tf", ROOT, ",".join(HEAVY), *modules)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_the_package_exports_what_a_pipeline_composes_and_imports_it_lazily():
    """`import transforms` and its error type load no TensorFlow, tf.Transform or Beam
    (a command's error handling, a `--help`); KMeans and the rest import on first use
    (tests/subprocess_checks/light_imports.py)."""
    proc = run_check("light_imports", ",".join(HEAVY))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
