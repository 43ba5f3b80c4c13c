"""The output directory before a run, and how a run ends (executed, or only a template written)."""
import os

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions

from transforms.errors import UserInputError


def prepare_output(output: str, overwrite: bool) -> None:
    """Refuse a non-empty `output` unless `overwrite`, in which case empty it first."""
    try:
        existing = [m.path for m in FileSystems.match([FileSystems.join(output, "*")])[0].metadata_list]
    except Exception:  # nothing there yet
        existing = []
    if not existing:
        return
    if not overwrite:
        raise UserInputError(f"output directory {output} exists and is not empty; "
                             f"pass --overwrite to replace its contents")
    FileSystems.delete(existing)


def is_template_run(options) -> bool:
    """True when the runner only wrote a job template (Dataflow --template_location)."""
    runner = options.view_as(StandardOptions).runner or ""
    return "Dataflow" in str(runner) and bool(options.view_as(GoogleCloudOptions).template_location)


def absolute_path(path: str) -> str:
    """A local path made absolute: the SDK workers of a portable runner (Flink, the local
    job service, ...) may share the filesystem but not the driver's current directory."""
    return path if FileSystems.get_scheme(path) else os.path.abspath(path)
