"""`shardmeans stream` for Dataflow, offline: a streaming job template is written and
nothing is submitted (no Pub/Sub is reachable here). The template reads the
subscription and publishes to the three topics; the flags are checked before it is
built; its Flex Template spec (launch/metadata_stream.json) is what
`python -m pipeline.stream` prints and its regexes take what the command takes."""

import json
import os
import re
import subprocess
import sys
import tarfile

import pytest
from apache_beam.portability.api import beam_runner_api_pb2

from pipeline import stream
from pipeline.cli import main
from transforms.core import parameters

from helpers import FAST, ROOT, fit, scaled_blobs, write_shards

PROJECT = "demo-project"
TOPICS = {
    "output_topic": f"projects/{PROJECT}/topics/scored",
    "dead_letter_topic": f"projects/{PROJECT}/topics/bad-rows",
    "counts_topic": f"projects/{PROJECT}/topics/counts",
}
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/rows"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A fit output (2 clusters of 3 features)."""
    base = tmp_path_factory.mktemp("stream_model")
    pattern = write_shards(scaled_blobs(200, 3, 2, seed=1), base / "in", "parquet", shards=1)
    assert fit(base / "out", "--input", pattern, "--id_column", "id", *FAST) == 0
    return base / "out"


def _topic_flags(**changes) -> list:
    flags = {**TOPICS, "input_subscription": SUBSCRIPTION, **changes}
    return [f"--{name}={value}" for name, value in flags.items() if value is not None]


def test_dataflow_writes_a_streaming_template(model, tmp_path):
    temp, staging, template = tmp_path / "temp", tmp_path / "staging", tmp_path / "job.json"
    temp.mkdir()
    staging.mkdir()
    command = [sys.executable, "-m", "pipeline", "stream", "--model", str(model)]
    command += _topic_flags() + ["--window_s=30", "--timestamp_attribute=ts"]
    command += [
        "--runner=DataflowRunner",
        f"--project={PROJECT}",
        "--region=us-central1",
        "--dataflow_endpoint=http://localhost:1",
        "--no_auth",
        f"--temp_location={temp}",
        f"--staging_location={staging}",
        f"--template_location={template}",
        f"--setup_file={ROOT}/setup.py",
    ]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "wrote a job template; nothing was run" in proc.stdout

    with open(template) as f:
        job = json.load(f)
    assert job["type"] == "JOB_TYPE_STREAMING"
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert options["streaming"] is True
    assert options["input_subscription"] == SUBSCRIPTION
    assert {name: options[name] for name in TOPICS} == TOPICS
    assert int(options["window_s"]) == 30
    assert options["model"] == str(model)

    pipeline = beam_runner_api_pb2.Pipeline()
    with open(options["pipelineUrl"], "rb") as f:
        pipeline.ParseFromString(f.read())
    transforms = pipeline.components.transforms.values()
    steps = {t.unique_name for t in transforms}
    assert {"Read", "ScoreMessages", "WriteScored", "WriteRejected", "WriteCounts"} <= steps
    # Dataflow's own Pub/Sub source and sinks, on the subscription and the three topics.
    reads = [
        beam_runner_api_pb2.PubSubReadPayload.FromString(t.spec.payload)
        for t in transforms
        if t.spec.urn == "beam:transform:pubsub_read:v1"
    ]
    assert [(r.subscription, r.topic, r.with_attributes, r.timestamp_attribute) for r in reads] == [
        (SUBSCRIPTION, "", True, "ts")
    ]
    writes = {
        beam_runner_api_pb2.PubSubWritePayload.FromString(t.spec.payload).topic
        for t in transforms
        if t.spec.urn == "beam:transform:pubsub_write:v1"
    }
    assert writes == set(TOPICS.values())

    with tarfile.open(staging / "workflow.tar.gz") as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {"pipeline/stream.py", "transforms/beam/streaming.py"} <= members


@pytest.mark.parametrize(
    "flags, error",
    [
        (_topic_flags(output_topic=None), "--output_topic is required"),
        (
            _topic_flags(input_topic=f"projects/{PROJECT}/topics/rows"),
            "give one of --input_subscription and --input_topic",
        ),
        (_topic_flags(input_subscription=None), "give one of --input_subscription and"),
        (_topic_flags(counts_topic="counts"), "--counts_topic: 'counts' is not a topic"),
        (_topic_flags(input_subscription="projects/p/topics/t"), "is not a subscription"),
        (_topic_flags(window_s=0), "--window_s must be at least 1, got 0"),
        (["--contamination=0.7", *_topic_flags()], "--contamination must be at most 0.5"),
    ],
)
def test_stream_refuses_bad_flags_in_one_line(model, flags, error, capsys):
    assert main(["stream", "--model", str(model), *flags]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("shardmeans stream: error: ") and error in line, line


def test_the_direct_runner_without_credentials_stops_in_one_line(model):
    """The DirectRunner reads Pub/Sub itself: without credentials its client fails inside
    the runner, which the command names (exit 2) instead of a traceback."""
    env = {k: v for k, v in os.environ.items() if k != "PUBSUB_EMULATOR_HOST"}
    env["GOOGLE_APPLICATION_CREDENTIALS"] = os.path.join(ROOT, "no-such-credentials.json")
    command = [sys.executable, "-m", "pipeline", "stream", "--model", str(model), *_topic_flags()]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("shardmeans stream: error: Pub/Sub needs Google Cloud credentials: ")
    assert "no-such-credentials.json was not found" in line


def test_stream_refuses_a_model_directory_that_is_no_model(tmp_path, capsys):
    assert main(["stream", "--model", str(tmp_path), *_topic_flags()]) == 2
    assert f"--model {tmp_path}" in capsys.readouterr().err


def test_flex_template_metadata_is_generated_and_validates(model):
    with open(os.path.join(ROOT, "launch", "metadata_stream.json")) as f:
        text = f.read()
    assert text == stream.render_metadata(), (
        "run python -m pipeline.stream > launch/metadata_stream.json"
    )
    spec = json.loads(text)
    assert spec["streaming"] is True
    regexes = {p["name"]: p["regexes"][0] for p in spec["parameters"]}
    assert set(regexes) == {
        p.name for p in parameters.SCORE + parameters.STREAM + parameters.ANOMALY
    }
    required = {p["name"] for p in spec["parameters"] if not p["isOptional"]}
    assert required == {"model", "output_topic", "dead_letter_topic"}
    good = {
        "input_subscription": [SUBSCRIPTION, "projects/example.com:p-1/subscriptions/Rows_1.a"],
        "output_topic": list(TOPICS.values()),
        "window_s": ["1", "3600"],
        "allowed_lateness_s": ["0", "600"],
        "contamination": ["0.01", "1e-3"],
    }
    bad = {
        "input_subscription": [
            "rows",
            f"projects/{PROJECT}/topics/rows",
            "projects//subscriptions/x",
        ],
        "output_topic": ["scored", SUBSCRIPTION, f"projects/{PROJECT}/topics/a b"],
        "window_s": ["0", "-1", "1.5"],
        "allowed_lateness_s": ["-1", "x"],
    }
    for name, values in good.items():
        for value in values:
            assert re.fullmatch(regexes[name], value), (name, value)
    for name, values in bad.items():
        for value in values:
            assert not re.fullmatch(regexes[name], value), (name, value)


def test_the_docs_flag_table_lists_every_stream_flag():
    """docs/streaming.md's table of `stream`'s flags: one row per flag of the command."""
    with open(os.path.join(ROOT, "docs", "streaming.md")) as f:
        table = f.read().split("| flag | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `--(\w+)` \|", table, re.M)
    assert sorted(rows) == sorted(
        p.name for p in parameters.SCORE + parameters.STREAM + parameters.ANOMALY
    )
