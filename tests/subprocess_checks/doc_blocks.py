"""Usage: python -m subprocess_checks.doc_blocks PROGRAM.json WORKDIR

Runs the code blocks of a documentation page (tests/integration/test_readme_code.py):
PROGRAM.json is a list of [label, code] ("README.md:93", the block's text). Each
block runs in WORKDIR, in a namespace of its own, in order, as `python` would run
it as a script. The first block that raises is named on stderr with its traceback
(exit 1); prints "ok" when all ran.
"""

import json
import os
import sys
import traceback

with open(sys.argv[1]) as f:
    program = json.load(f)
os.chdir(sys.argv[2])
for label, code in program:
    try:
        exec(compile(code, label, "exec"), {"__name__": "__main__"})
    except BaseException:  # noqa: BLE001 -- named with its page and line, whatever it is
        print(f"{label}: this block failed", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    print(f"{label}: ran", flush=True)
print("ok")
