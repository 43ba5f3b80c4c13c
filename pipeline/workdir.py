"""Paths as workers see them, and how a run ends (executed, or only a template written).

The output directory's protocol is pipeline.outputs.run_output."""

import os

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions


def is_template_run(options) -> bool:
    """True when the runner only wrote a job template (Dataflow --template_location)."""
    runner = options.view_as(StandardOptions).runner or ""
    return "Dataflow" in str(runner) and bool(options.view_as(GoogleCloudOptions).template_location)


def absolute_path(path: str) -> str:
    """A local path made absolute: the SDK workers of a portable runner (Flink, the local
    job service, ...) may share the filesystem but not the driver's current directory."""
    return path if FileSystems.get_scheme(path) else os.path.abspath(path)
