"""The `stream` job: score JSON messages from Pub/Sub as they arrive, with a fitted model.

    shardmeans stream --model gs://b/fit-output \\
        --input_subscription projects/P/subscriptions/rows \\
        --output_topic projects/P/topics/scored --dead_letter_topic projects/P/topics/bad \\
        --counts_topic projects/P/topics/counts --window_s 60 \\
        --runner DataflowRunner --project P --region R --temp_location gs://b/tmp

ReadFromPubSub -> `transforms.ScoreMessages` -> WriteToPubSub, one topic for each of
its outputs; `--streaming` is set by the job. It writes to topics, not files, so the
output directory's protocol of `fit` and `score` (pipeline.outputs.run_output: lock,
stage, _SUCCESS) has no part in it: a message is published once scored.

`python -m pipeline.stream` prints launch/metadata_stream.json, the spec of its Flex
Template (launch/flex_template_stream.py), from transforms.core.parameters.
"""

import json
import logging
import sys
from typing import List, NamedTuple, Optional, Tuple

from transforms.core import parameters
from transforms.core.errors import UserInputError

DESCRIPTION = (
    "Score JSON messages from Pub/Sub with a fitted shardmeans model: each message's "
    "fields and its cluster, distances and anomaly flag to one topic, the messages "
    "that cannot be scored with their reason to a dead-letter topic, and each fixed "
    "window's rows and anomalies by cluster to a third."
)


class StreamSpec(NamedTuple):
    subscription: Optional[str]  # --input_subscription, or
    topic: Optional[str]  # --input_topic
    output_topic: str
    dead_letter_topic: str
    counts_topic: Optional[str]
    window_s: int
    allowed_lateness_s: int
    timestamp_attribute: Optional[str]
    timestamp_field: Optional[str]
    model_dir: str  # the version directory (FIT_OUTPUT/model/1)
    contamination: Optional[float]  # --contamination: overrides the model's
    features: List[str]  # what each message must hold
    outputs: Tuple[str, ...]  # the per-row outputs the model adds


def stream_spec(options) -> StreamSpec:
    """Check the stream options and the model (it loads): the job's spec, or UserInputError."""
    from pipeline.options import AnomalyOptions, ScoreOptions, StreamOptions
    from pipeline.score import finished_model_dir, model_description
    from pipeline.workdir import absolute_path

    stream = options.view_as(StreamOptions)
    model = options.view_as(ScoreOptions).model
    contamination = options.view_as(AnomalyOptions).contamination
    for p in parameters.STREAM:
        if p.required and getattr(stream, p.name) is None:
            raise UserInputError(f"--{p.name} is required")
        p.check(getattr(stream, p.name), "--")
    if model is None:
        raise UserInputError("--model is required")
    if (stream.input_subscription is None) == (stream.input_topic is None):
        raise UserInputError("give one of --input_subscription and --input_topic")
    parameters.BY_NAME["contamination"].check(contamination, "--")
    model_dir = finished_model_dir(absolute_path(model))
    description = model_description(model_dir, contamination, top_n=0)
    features, outputs, _ = description
    return StreamSpec(
        stream.input_subscription,
        stream.input_topic,
        stream.output_topic,
        stream.dead_letter_topic,
        stream.counts_topic,
        stream.window_s,
        stream.allowed_lateness_s,
        stream.timestamp_attribute,
        stream.timestamp_field,
        absolute_path(model_dir),
        contamination,
        list(features) + list(description.categorical),
        tuple(outputs),
    )


def build_stream_pipeline(pipeline, spec: StreamSpec) -> None:
    """Add the stream job to `pipeline` (runs nothing): read, score, publish."""
    import apache_beam as beam

    from transforms.beam.streaming import ScoreMessages

    read = beam.io.ReadFromPubSub(
        topic=spec.topic,
        subscription=spec.subscription,
        with_attributes=True,  # the dead letter keeps a bad message's attributes
        timestamp_attribute=spec.timestamp_attribute,
    )
    results = (
        pipeline
        | "Read" >> read
        | "ScoreMessages"
        >> ScoreMessages(
            spec.model_dir,
            window_s=spec.window_s,
            allowed_lateness_s=spec.allowed_lateness_s,
            timestamp_field=spec.timestamp_field,
            contamination=spec.contamination,
        )
    )
    _ = results["scored"] | "WriteScored" >> beam.io.WriteToPubSub(spec.output_topic)
    _ = results["rejected"] | "WriteRejected" >> beam.io.WriteToPubSub(spec.dead_letter_topic)
    if spec.counts_topic is not None:
        _ = results["counts"] | "WriteCounts" >> beam.io.WriteToPubSub(spec.counts_topic)


def main(argv: List[str]) -> int:
    """`shardmeans stream ARGV`: build the job, then write its template (Dataflow with
    --template_location), submit it (a remote runner: the job runs until drained or
    cancelled), or run it here until Ctrl-C (the DirectRunner, with a real Pub/Sub)."""
    if "-h" in argv or "--help" in argv:
        from pipeline.flag_reference import help_parser

        help_parser("stream").print_help()
        return 0
    logging.getLogger("pipeline.progress").info("stream: loading Beam and TensorFlow")
    from pipeline import logs

    logs.import_tensorflow()
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions

    from pipeline import private_apis
    from pipeline.options import ViewCachingOptions
    from pipeline.workdir import is_template_run

    options = ViewCachingOptions(argv)
    options.view_as(StandardOptions).streaming = True
    spec = stream_spec(options)
    pipeline = beam.Pipeline(options=options)
    build_stream_pipeline(pipeline, spec)
    runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
    source = spec.subscription or spec.topic
    logging.getLogger("pipeline.progress").info(
        "running on %s: scoring the messages of %s", runner, source
    )
    try:
        result = pipeline.run()
    except Exception as e:
        _raise_if_no_credentials(e)
        raise
    if is_template_run(options):
        print("wrote a job template; nothing was run")
        return 0
    if "Direct" not in runner and "Prism" not in runner:
        print(
            f"submitted streaming job {private_apis.job_id(result)} to {runner}: it runs "
            f"until drained or cancelled (gcloud dataflow jobs drain JOB --region REGION "
            f"on Dataflow); scored messages to {spec.output_topic}"
        )
        return 0
    try:
        result.wait_until_finish()
    except BaseException as e:
        try:
            result.cancel()
        except Exception:  # noqa: BLE001 -- finished already, or cannot cancel
            pass
        _raise_if_no_credentials(e)
        raise
    return 0


def _raise_if_no_credentials(error: BaseException) -> None:
    """A UserInputError for a run that found no Google Cloud credentials to reach Pub/Sub
    (the DirectRunner's Pub/Sub client raises it from inside the runner)."""
    from google.auth.exceptions import DefaultCredentialsError

    seen = error
    while seen is not None and not isinstance(seen, DefaultCredentialsError):
        seen = seen.__cause__ or seen.__context__
    if seen is not None:
        first = str(seen).strip().splitlines()[0] if str(seen).strip() else ""
        raise UserInputError(
            f"Pub/Sub needs Google Cloud credentials: {first} (gcloud auth "
            f"application-default login, or GOOGLE_APPLICATION_CREDENTIALS; "
            f"PUBSUB_EMULATOR_HOST=HOST:PORT for the Pub/Sub emulator)"
        ) from error


def metadata() -> dict:
    """The Flex Template spec of `stream`: name, description, one entry per parameter."""
    from pipeline.template_metadata import template_parameters

    return {
        "name": "shardmeans stream",
        "description": DESCRIPTION,
        "streaming": True,
        "parameters": template_parameters(
            parameters.SCORE + parameters.STREAM + parameters.ANOMALY
        ),
    }


def render_metadata() -> str:
    return json.dumps(metadata(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_metadata())
