"""Which SavedModel a path names: fit output, base path (highest version), version directory."""

import pytest

from transforms.beam.model_paths import highest_version, model_base, resolve_model_dir
from transforms.core.errors import UserInputError


def _saved_model(directory):
    directory.mkdir(parents=True)
    (directory / "saved_model.pb").write_bytes(b"pb")
    return str(directory)


@pytest.fixture()
def fit_output(tmp_path):
    """OUT/model/{1,2,10}/ (10 the highest, though not by name), and what TF Serving skips."""
    out = tmp_path / "out"
    for version in ("1", "2", "10"):
        _saved_model(out / "model" / version)
    _saved_model(out / "model" / "99-old")  # not a number
    (out / "model" / "200").mkdir()  # a version still being written: no saved_model.pb
    return out


def test_every_form_names_the_highest_version(fit_output):
    want = str(fit_output / "model" / "10")
    for path in (fit_output, fit_output / "model", f"{fit_output}/model/"):
        assert resolve_model_dir(str(path)) == want
    assert highest_version(str(fit_output / "model")) == want


def test_a_version_directory_or_its_file_is_taken_as_it_is(fit_output):
    one = str(fit_output / "model" / "1")
    assert resolve_model_dir(one) == one
    assert resolve_model_dir(one + "/saved_model.pb") == one
    assert resolve_model_dir(str(fit_output / "model" / "99-old")) == str(
        fit_output / "model" / "99-old"
    )


def test_a_copied_model_and_the_unversioned_layout(tmp_path):
    copied = _saved_model(tmp_path / "anywhere" / "my-model")
    assert resolve_model_dir(copied) == copied
    old = _saved_model(tmp_path / "old" / "model")  # a fit written before version directories
    assert resolve_model_dir(str(tmp_path / "old")) == old


def test_no_saved_model_is_a_user_error(tmp_path):
    (tmp_path / "empty" / "model" / "1").mkdir(parents=True)
    with pytest.raises(UserInputError, match="no SavedModel"):
        resolve_model_dir(str(tmp_path / "empty"))
    with pytest.raises(UserInputError, match="no SavedModel"):
        resolve_model_dir(str(tmp_path / "missing"))


def test_model_base():
    assert model_base("/o/model/1") == "/o/model"
    assert model_base("/o/model/12/") == "/o/model"
    assert model_base("/copied/my-model") == "/copied/my-model"
