"""Which SavedModel a path names: a fit output, a model base path, or a version directory.

A fit writes its model in TF Serving's layout, OUTPUT/model/1/ (a numbered
version directory under the model base path OUTPUT/model). Every reader of the
model (`score --model`, `AssignClusters`, `KMeansModelHandler`) takes any of:

  OUTPUT                     a fit output: its model/ base path, as below
  OUTPUT/model               a base path: its highest numbered version, as TF Serving picks
  OUTPUT/model/1             a version directory, or any directory with saved_model.pb
  OUTPUT/model/1/saved_model.pb   the file itself (what a file pattern such as
                             Beam's WatchFilePattern matches)

Paths are local or anything Beam's FileSystems reads (gs://, ...).
"""

import posixpath
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from transforms.core.errors import UserInputError

SAVED_MODEL_PB = "saved_model.pb"
MODEL_BASE = "model"  # the model base path under a fit output


def _is_saved_model(path: str) -> bool:
    return FileSystems.exists(FileSystems.join(path, SAVED_MODEL_PB))


def highest_version(base: str) -> Optional[str]:
    """The version directory TF Serving would serve from `base`: the numbered
    subdirectory (digits only) with a saved_model.pb and the largest number; None if none."""
    found = FileSystems.match([FileSystems.join(base, "*", SAVED_MODEL_PB)])[0].metadata_list
    versions = {}
    for meta in found:
        version_dir = posixpath.dirname(meta.path.rstrip("/"))
        name = posixpath.basename(version_dir)
        if name.isdigit():
            versions[int(name)] = version_dir
    return versions[max(versions)] if versions else None


def resolve_model_dir(path: str) -> str:
    """The directory that holds the SavedModel `path` names (see the module docstring).

    Raises UserInputError naming `path` when it holds no SavedModel in any of those forms.
    """
    path = path.rstrip("/") or path
    if posixpath.basename(path) == SAVED_MODEL_PB and FileSystems.exists(path):
        return posixpath.dirname(path)
    if _is_saved_model(path):
        return path
    for base in (path, FileSystems.join(path, MODEL_BASE)):
        version = highest_version(base)
        if version is not None:
            return version
    if _is_saved_model(FileSystems.join(path, MODEL_BASE)):  # written before version dirs
        return FileSystems.join(path, MODEL_BASE)
    raise UserInputError(
        f"{path}: no SavedModel there, in a numbered version directory under it "
        f"(e.g. {path}/1), nor under {path}/{MODEL_BASE} (pass a fit output directory, "
        f"its {MODEL_BASE}/ or {MODEL_BASE}/1/)"
    )


def model_base(model_dir: str) -> str:
    """The base path of a version directory (OUTPUT/model/1 -> OUTPUT/model); a directory
    not named by a number is its own base."""
    model_dir = model_dir.rstrip("/") or model_dir
    name = posixpath.basename(model_dir)
    return posixpath.dirname(model_dir) if name.isdigit() else model_dir
