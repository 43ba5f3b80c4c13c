"""Publishing a run's output (pipeline/outputs/run_output.py) on its own, on local files:
by rename and by copy (the object-store way), after an interrupted attempt, and never over
an output something else filled meanwhile. The protocol through the fit and score jobs
is in tests/integration/test_output_safety.py."""

import json
import os

import pytest

from pipeline.outputs import run_output

from helpers import leftovers


def _stage(tmp_path, run, files):
    for path, text in files.items():
        full = os.path.join(run.stage, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)


def _tree(directory):
    return {
        os.path.relpath(os.path.join(d, f), directory): open(os.path.join(d, f)).read()
        for d, _, files in os.walk(directory)
        for f in files
    }


NEW = {
    "metrics.json": "{}",
    "assignments/part-00000-of-00001.csv": "id\n1\n",
    "model/1/saved_model.pb": "pb",
}
OLD = {
    "_SUCCESS": json.dumps({"run_id": "old"}),
    "metrics.json": "old",
    "assignments/part-00000-of-00002.csv": "id\n1\n",
    "assignments/part-00001-of-00002.csv": "id\n2\n",
}


@pytest.mark.parametrize("how", ["rename", "copy"])
def test_publish_replaces_the_whole_tree_and_finishes_an_interrupted_attempt(tmp_path, how):
    """Both ways of publishing (rename: local; copy: object stores, run here on local paths)
    leave exactly the new run's files with its marker, also when an attempt stopped midway."""
    out = str(tmp_path / "out")
    for path, text in OLD.items():
        os.makedirs(os.path.dirname(os.path.join(out, path)), exist_ok=True)
        with open(os.path.join(out, path), "w") as f:
            f.write(text)
    run = run_output.RunOutput(out, "new", "fit", True, True)
    _stage(tmp_path, run, NEW)
    manifest = run_output._manifest(run)
    # An attempt that stopped midway.
    if how == "rename":
        os.rename(out, run.replaced)
    else:
        os.remove(os.path.join(out, "_SUCCESS"))
        os.remove(os.path.join(out, "metrics.json"))
        os.rename(os.path.join(run.stage, "metrics.json"), os.path.join(out, "metrics.json"))
    for _ in range(2):  # the second time as a retried step would
        run_output._publish(run, by_rename=how == "rename")
    tree = _tree(out)
    assert json.loads(tree.pop("_SUCCESS")) == manifest
    assert tree == NEW
    assert {f["path"] for f in manifest["files"]} == set(NEW)
    assert not leftovers(out)


def test_publish_without_overwrite_never_replaces_an_output_filled_meanwhile(tmp_path):
    out = str(tmp_path / "out")
    run = run_output.begin(out, "fit", overwrite=False, inputs=[])
    _stage(tmp_path, run, NEW)
    os.makedirs(out)
    with open(os.path.join(out, "theirs.txt"), "w") as f:
        f.write("x")
    with pytest.raises(Exception, match="filled by something else"):
        run_output.publish(None, run=run)
    staged = _tree(run.stage)
    assert (
        _tree(out) == {"theirs.txt": "x"}
        and json.loads(staged.pop("_SUCCESS"))["run_id"] == run.run_id
    )
    assert staged == NEW
    assert run_output.abort(run) is None
    assert not leftovers(out)


def test_an_input_in_a_run_directory_beside_the_output_is_refused(tmp_path):
    """A stale run's directory (OUTPUT.incomplete-RUN) is removed by the next run, and a
    replaced output by the run that replaced it: neither may hold what a run reads."""
    out = str(tmp_path / "out")
    for inside in (".incomplete-20261207T000000-abcdef/data.csv", ".replaced-x/data.csv"):
        with pytest.raises(run_output.UserInputError, match="overlaps the input"):
            run_output.begin(out, "fit", overwrite=False, inputs=[out + inside])
    assert not leftovers(out)
