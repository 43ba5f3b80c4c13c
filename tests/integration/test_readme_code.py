"""The code in README.md and docs/*.md works as written.

- Every ```python block runs. A page's blocks run in order, each in a namespace of
  its own, all pages in one fresh interpreter (tests/subprocess_checks/doc_blocks.py),
  in a temporary directory that holds what the examples name: `data/` (small
  sample data from `shardmeans generate`: columns id, f0..f7, blob) and `out/` (a
  fit of it, K=6, id column `id`).
- Every command of a ```sh block that runs shardmeans is checked without running a
  job: `shardmeans fit|score ...` (also `.venv/bin/shardmeans`, `python -m
  pipeline`) by the command's own flag check (pipeline.flags), `generate` by its
  parser; `launch/local.sh`, `dataflow.sh` and `flink.sh` print the command they
  would run (SHARDMEANS_DRY_RUN=1), which is checked the same way; `portable.sh`
  passes its flags through, so they are checked as `fit`'s.

Every link between the pages names a page that exists and one of its headings.

A block that cannot run here (it needs Dataflow, a Flink cluster, a TF Serving
container) is marked on the line right before it with `<!-- not run: REASON -->`;
the reason is required. `python` blocks marked so are not run, `sh` blocks so
marked are not checked.
"""

import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from pipeline import flags, generate
from pipeline.cli import main

from helpers import ROOT, run_check

PAGES = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(f"{ROOT}/docs/*.md"))]
NOT_RUN = re.compile(r"^<!-- not run: \S.* -->$")
DRY_RUN_SCRIPTS = ("local.sh", "dataflow.sh", "flink.sh")
# Pages README links to that other branches write: a link to them may dangle
# until they are merged (none now); every other link must resolve.
PENDING_PAGES: set = set()


def blocks(page: str, text=None):
    """[(language, first line number, code, marked not run)] of a Markdown page
    (its `text`, else the file ROOT/page)."""
    if text is None:
        with open(os.path.join(ROOT, page)) as f:
            text = f.read()
    lines = text.split("\n")
    found, i = [], 0
    while i < len(lines):
        match = re.match(r"^```(\w*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        end = lines.index("```", i + 1)
        marked = i > 0 and lines[i - 1].startswith("<!-- not run")
        if marked:
            assert NOT_RUN.match(lines[i - 1]), (
                f"{page}:{i}: <!-- not run: REASON --> needs a reason"
            )
        found.append((match.group(1), i + 2, "\n".join(lines[i + 1 : end]) + "\n", marked))
        i = end + 1
    return found


def shell_commands(code: str):
    """The commands of a shell block: continuation lines joined, here-documents and
    comments dropped, leading VAR=value assignments removed; each a list of words."""
    commands, heredoc, pending = [], None, ""
    for line in code.replace("\\\n", " ").splitlines():
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        match = re.search(r"<<-?\s*'?(\w+)'?", line)
        if match:
            heredoc = match.group(1)
            line = line[: match.start()]
        try:
            words = shlex.split(pending + line, comments=True)
        except ValueError:  # a quoted string that goes on to the next line
            pending += line + "\n"
            continue
        pending = ""
        while words and re.match(r"^\w+=", words[0]):
            words = words[1:]
        if words:
            commands.append(words)
    return commands


def check_shell_command(words) -> bool:
    """Check one command if it runs shardmeans (raises on a bad flag); False if it
    does not run shardmeans."""
    program = os.path.basename(words[0])
    if program == "shardmeans":
        args = words[1:]
    elif program.startswith("python") and words[1:3] == ["-m", "pipeline"]:
        args = words[3:]
    elif words[0].startswith("launch/") and program in DRY_RUN_SCRIPTS:
        proc = subprocess.run(
            [os.path.join(ROOT, words[0]), *words[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, SHARDMEANS_DRY_RUN="1", SHARDMEANS_PYTHON=sys.executable),
        )
        assert proc.returncode == 0, proc.stderr
        printed = shlex.split(proc.stdout)
        assert printed[1:3] == ["-m", "pipeline"], printed
        args = printed[3:]
    elif words[0].startswith("launch/") and program == "portable.sh":
        # its command named first, else fit (launch/common.bash, split_command)
        named = len(words) > 1 and not words[1].startswith("-")
        args = words[1:] if named else ["fit", *words[1:]]
    else:
        return False
    if args and args[0] == "generate":
        generate.arg_parser().parse_args(args[1:])
    else:
        assert args and args[0] in ("fit", "score", "stream"), words
        flags.check_job_flags(args[1:], prog=f"shardmeans {args[0]}")
    return True


def test_every_shardmeans_command_in_the_docs_passes_the_flag_check():
    checked = []
    for page in PAGES:
        for language, line, code, marked in blocks(page):
            if language not in ("sh", "bash", "shell") or marked:
                continue
            for words in shell_commands(code):
                try:
                    if check_shell_command(words):
                        checked.append(f"{page}:{line}")
                except Exception as e:
                    raise AssertionError(f"{page}:{line}: {shlex.join(words)}: {e}") from e
    # README's own: fit and score; the docs' fits, scores and launch lines.
    assert sum(c.startswith("README.md") for c in checked) >= 2, checked
    assert len(checked) >= 10, checked


def test_a_block_marked_not_run_is_skipped_and_needs_a_reason():
    page = "text\n<!-- not run: needs Dataflow -->\n```python\n1 / 0\n```\n\n```sh\nls\n```\n"
    assert blocks("page.md", page) == [("python", 4, "1 / 0\n", True), ("sh", 8, "ls\n", False)]
    with pytest.raises(AssertionError, match="needs a reason"):
        blocks("page.md", "<!-- not run -->\n```python\nx = 1\n```\n")


def test_a_mistyped_flag_in_a_block_fails_the_check():
    """The check can fail: a block with a flag `fit` does not know."""
    (words,) = shell_commands(
        "shardmeans fit --input 'x/*.csv' \\\n  --output o --k 2 --max_round 3\n"
    )
    with pytest.raises(flags.FlagError, match="max_round"):
        check_shell_command(words)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The directory the pages' Python blocks run in: data/ and out/, as the docs name them."""
    path = tmp_path_factory.mktemp("docs")
    data = path / "data"
    assert main(["generate", "--output", str(data), "--rows", "2000", "--format", "parquet"]) == 0
    fit = ["fit", "--input", f"{data}/*.parquet", "--output", str(path / "out"), "--k", "6"]
    assert main([*fit, "--id_column", "id", "--n_init", "1", "--max_rounds", "3"]) == 0
    return path


def _python_blocks(page):
    return [
        (f"{page}:{line}", code)
        for lang, line, code, marked in blocks(page)
        if lang == "python" and not marked
    ]


def test_python_blocks_run(workdir):
    """All pages' blocks in one interpreter (each block in its own namespace): one
    import of TensorFlow and Beam for all of them."""
    program = [block for page in PAGES for block in _python_blocks(page)]
    assert any(label.startswith("README.md") for label, _ in program), program
    path = workdir / "blocks.json"
    path.write_text(json.dumps(program))
    proc = run_check("doc_blocks", path, workdir)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        proc.stdout[-3000:] + proc.stderr[-5000:]
    )


def test_a_broken_python_block_fails(tmp_path):
    """The runner can fail: a block that raises is named with its page and line."""
    program = tmp_path / "broken.json"
    program.write_text(json.dumps([("ok.md:1", "x = 1\n"), ("broken.md:7", "1 / 0\n")]))
    proc = run_check("doc_blocks", program, tmp_path)
    assert proc.returncode == 1 and "broken.md:7" in proc.stderr, proc.stderr[-3000:]


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped,
    spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_the_pages_resolves():
    """[text](page.md#anchor) in README and docs/ names a page that exists and a
    heading of it; links in code blocks are not links."""
    text = {}
    for page in PAGES:
        with open(os.path.join(ROOT, page)) as f:
            text[page] = re.sub(r"^```.*?^```", "", f.read(), flags=re.S | re.M)
    anchors = {
        page: {_slug(h) for h in re.findall(r"^#+ (.*)$", body, re.M)}
        for page, body in text.items()
    }
    broken, seen = [], 0
    for page, body in text.items():
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(#[^)\s]*)?\)", body):
            if target.startswith(("http://", "https://")):
                continue
            seen += 1
            path = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
            if not os.path.exists(os.path.join(ROOT, path)):
                if path not in PENDING_PAGES:
                    broken.append(f"{page}: {target}")
            elif anchor and path in anchors and anchor[1:] not in anchors[path]:
                broken.append(f"{page}: {target}{anchor}")
    assert seen > 20 and not broken, broken
