"""Every test's kind from its directory, and the fixtures more than one directory uses.

tests/unit/ is marked `unit`, tests/integration/ `integration`, tests/runners/ `runners`,
tests/workflow/ `workflow` (the markers pyproject.toml registers), so `pytest -m unit`
selects what `make test-fast` runs. A test file anywhere else under tests/ is an error: every test has a kind.
The helpers are a module, tests/helpers.py (`from helpers import ...`).
"""

import os
from pathlib import Path

import pytest

from helpers import TESTS, ab_csv

KINDS = ("unit", "integration", "runners", "workflow")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    misplaced = []
    for item in items:
        try:
            kind = Path(item.path).relative_to(TESTS).parts[0]
        except ValueError:  # not under tests/
            continue
        if kind in KINDS:
            item.add_marker(kind)
        else:
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            f"tests outside tests/{{{','.join(KINDS)}}}/, so without a kind: {misplaced}"
        )


@pytest.fixture(scope="module")
def steps():
    """(the fused op, TensorFlow's ops): the op must build here, else this fails."""
    from transforms.step.step import KMeansStep

    return KMeansStep(native=True), KMeansStep(native=False)


@pytest.fixture()
def with_dangling_link(tmp_path):
    """tmp_path/in holding a.csv (8 rows: id, a, b) and b.csv, a link to no file."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.csv").write_text(ab_csv(8))
    os.symlink(tmp_path / "gone.csv", d / "b.csv")
    return d
