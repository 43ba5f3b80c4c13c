"""Commit subjects of at most 72 characters: what `git log --oneline`, GitHub and mail
tools show whole.

    python .ci/commit_subjects.py            # the commits on HEAD after BASELINE (make lint)
    python .ci/commit_subjects.py MSG_FILE   # one message (pre-commit's commit-msg hook)

The history before BASELINE is kept as it is: rewriting published commits would
break every clone.
"""

import subprocess
import sys

MAX_SUBJECT = 72
BASELINE = "fbfa36d"  # the last commit before the rule was checked


def too_long(subject: str) -> bool:
    return len(subject) > MAX_SUBJECT


def _subjects_after_baseline():
    """(hash, subject) of each commit on HEAD after BASELINE; None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "log", "--format=%h %s", f"{BASELINE}..HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [tuple(line.split(" ", 1)) for line in out.splitlines() if line]


def main(argv) -> int:
    if len(argv) > 1:
        with open(argv[1]) as f:
            lines = [line for line in f.read().splitlines() if not line.startswith("#")]
        subject = lines[0] if lines else ""
        if too_long(subject):
            print(f"commit subject is {len(subject)} characters, at most {MAX_SUBJECT}: {subject}")
            return 1
        return 0
    commits = _subjects_after_baseline()
    if commits is None:
        print("commit subjects: not a git checkout with its history; nothing checked")
        return 0
    long = [(h, s) for h, s in commits if too_long(s)]
    for h, s in long:
        print(f"{h}: subject is {len(s)} characters, at most {MAX_SUBJECT}: {s}")
    return 1 if long else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
