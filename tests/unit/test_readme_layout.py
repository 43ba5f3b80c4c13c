"""The layout table (docs/design.md, "Layout") matches the tree: every module of
`pipeline/` and `transforms/` is named in the row of its directory, and every file a
row names exists there. (docs/flags.md, the flag reference, is generated and held to
its generator by test_flag_reference.py.)"""

import os
import re

from helpers import ROOT


def _layout_rows():
    """{directory: the text of its row} from docs/design.md's '## Layout' table."""
    with open(os.path.join(ROOT, "docs", "design.md")) as f:
        text = f.read()
    table = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        match = re.match(r"\| `([^`]+)` \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_every_module_is_in_its_directorys_row():
    rows = _layout_rows()
    missing = []
    for package in ("pipeline", "transforms"):
        for directory, _, files in os.walk(os.path.join(ROOT, package)):
            if "__pycache__" in directory:
                continue
            key = os.path.relpath(directory, ROOT) + "/"
            names = [f for f in files if f.endswith((".py", ".cc")) and f != "__init__.py"]
            for name in names:
                row = rows.get(key) or rows.get(os.path.dirname(key.rstrip("/")) + "/", "")
                if f"`{name}`" not in row:
                    missing.append(key + name)
    assert not missing, f"docs/design.md's layout table does not name: {missing}"


def test_every_file_a_row_names_exists():
    for directory, row in _layout_rows().items():
        base = os.path.join(ROOT, directory)
        if not os.path.isdir(base):
            continue
        for name in re.findall(r"`([\w./-]+\.(?:py|cc|sh|json|md))`", row):
            candidates = [os.path.join(base, name), os.path.join(ROOT, name)]
            candidates += [os.path.join(base, sub, name) for sub in ("native",)]
            assert any(os.path.exists(c) for c in candidates), f"{directory}: {name}"
