"""Example Airflow DAG: fit once, score each day's partition, refit warm when it drifts.

Copy this file and `shardmeans_job.py` (the pipeline file the jobs run, beside it) into
your DAGs folder; docs/workflow.md says how to configure it. Each run, for its logical
date DS (`{{ ds }}`):

  latest_model  branches: to `fit` when WORK/models/ holds no finished model of DS or
                before (or params.force_fit), else straight to `model`
  fit           shardmeans fit of params.fit_input (default: DS's partition)
                -> WORK/models/DS-fit/; fit_done waits for its _SUCCESS marker
  model         the model to score with: the newest finished one (the fit's, if it ran)
  score         shardmeans score of DS's partition (params.input with '{ds}' replaced by
                DS) -> WORK/scores/DS/; score_done waits for its marker
  check_drift   branches on WORK/scores/DS/metrics.json's `drift.warning`, set when the
                score job's own rule (pipeline/outputs/drift.py) finds the day off the
                training distribution -> `refit`, else `no_drift`
  refit         shardmeans fit --init_model MODEL of DS's partition: a warm start from
                the model that scored it, its centroids kept in original units
                -> WORK/models/DS-refit/ (the newest model from then on); refit_done
                waits for its marker

"Finished" is the marker of the output protocol: a fit output holds _SUCCESS only once
every file of it is published. The jobs run through the Beam provider's
BeamRunPythonPipelineOperator: `PYTHON shardmeans_job.py --runner=RUNNER --command=fit
--NAME=VALUE ...`, with PYTHON (params.python) a Python where shardmeans is installed.
With params.detach on a remote runner (Dataflow, Flink, a job service) each job task
returns once the job is submitted and its *_done sensor waits, in reschedule mode, for
the marker; on the DirectRunner (the default) the job has published it by then.
Paths are local or gs:// (Airflow's ObjectStoragePath: the google provider for gs://).
"""

import json
import os
from typing import Optional

import pendulum
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import DAG, ObjectStoragePath, Param, TriggerRule, task

JOB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shardmeans_job.py")
MARKER = "_SUCCESS"  # what a finished shardmeans output holds (its run id, as JSON)
GCP_CONN_ID = "google_cloud_default"  # the connection gs:// paths are read with

PARAMS = {
    "python": Param(
        os.environ.get("SHARDMEANS_PYTHON", "python3"),
        type="string",
        description="a Python where shardmeans is installed (its venv's bin/python): "
        "what runs the jobs (the operator's py_interpreter)",
    ),
    "runner": Param(
        "DirectRunner",
        type="string",
        description="Beam runner: DirectRunner, DataflowRunner, FlinkRunner, PortableRunner",
    ),
    "beam_options": Param(
        {},
        type="object",
        description="Beam pipeline options for the runner, e.g. Dataflow: project, region, "
        "temp_location, setup_file; Flink: flink_master, environment_type",
    ),
    "detach": Param(
        False,
        type="boolean",
        description="remote runners: each job task submits its job and returns; the "
        "*_done sensors wait for the job's _SUCCESS marker",
    ),
    "input": Param(
        "/data/events/{ds}/*.parquet",
        type="string",
        description="the file pattern of a day's partition; '{ds}' is the run's date",
    ),
    "fit_input": Param(
        "",
        type="string",
        description="what the first fit reads ('{ds}' replaced too); empty: the day's partition",
    ),
    "work": Param(
        "/data/shardmeans",
        type="string",
        description="where the models (WORK/models/) and scores (WORK/scores/DS/) go",
    ),
    "k": Param(8, type="integer", minimum=1, description="number of clusters"),
    "fit_flags": Param(
        {},
        type="object",
        description='more flags of fit and refit, e.g. {"id_column": "id", "contamination": 0.01}',
    ),
    "score_flags": Param(
        {}, type="object", description='more flags of score, e.g. {"id_column": "id"}'
    ),
    "force_fit": Param(
        False, type="boolean", description="fit from scratch even when a model exists"
    ),
}


def _storage(location: str) -> ObjectStoragePath:
    """A local path or URL as Airflow's ObjectStoragePath (gs:// through GCP_CONN_ID)."""
    conn_id = GCP_CONN_ID if location.startswith("gs://") else None
    return ObjectStoragePath(location, conn_id=conn_id)


def under(params: dict, *parts: str) -> str:
    """params.work/PART/...: where the DAG's outputs go."""
    return "/".join([params["work"].rstrip("/"), *parts])


def partition(params: dict, ds: str, key: str = "input") -> str:
    """The input of day `ds`: params[key] with '{ds}' replaced (fit_input: the
    partition when empty)."""
    pattern = params.get(key) or params["input"]
    return pattern.replace("{ds}", ds)


def job_options(params: dict, flags: str) -> dict:
    """The runner's Beam options and a job's own extra flags (params[flags]), merged."""
    return {**params["beam_options"], **params[flags]}


def newest_model(params: dict, ds: str) -> Optional[str]:
    """The newest finished model under params.work/models/ of day `ds` or before
    (outputs are named DS-fit and DS-refit: sorted by name, a day's refit comes after
    its fit), or None."""
    models = _storage(under(params, "models"))
    if not models.exists():
        return None
    names = sorted(
        marker.parent.name
        for marker in models.glob(f"*/{MARKER}")
        if marker.parent.name[: len(ds)] <= ds
    )
    return under(params, "models", names[-1]) if names else None


def published(output: str) -> bool:
    """Whether the shardmeans output `output` is finished: its marker is there."""
    return _storage(f"{output.rstrip('/')}/{MARKER}").exists()


def drifted(scored: str) -> bool:
    """The score output's own verdict: metrics.json's drift.warning is set (never for a
    model that keeps no training statistics: its score writes no drift section)."""
    metrics = json.loads(_storage(f"{scored.rstrip('/')}/metrics.json").read_text())
    return metrics.get("drift", {}).get("warning") is not None


class ShardmeansJob(BeamRunPythonPipelineOperator):
    """The Beam provider's operator, with the interpreter templated too (a DAG param)."""

    template_fields = (*BeamRunPythonPipelineOperator.template_fields, "py_interpreter")


def shardmeans(task_id: str, command: str, flags: str, **options) -> ShardmeansJob:
    """A task running `shardmeans COMMAND` with `options` (templated values), the DAG's
    runner and Beam options, and params[flags]. --overwrite: a rerun of a day replaces
    that day's output, whole, once it has succeeded (never a half-written one)."""
    return ShardmeansJob(
        task_id=task_id,
        py_file=JOB,
        py_interpreter="{{ params.python }}",
        runner="{{ params.runner }}",
        default_pipeline_options="{{ job_options(params, '%s') }}" % flags,
        pipeline_options={
            "command": command,
            **options,
            "overwrite": True,
            "detach": "{{ params.detach }}",
        },
    )


def wait_for(task_id: str, output: str) -> PythonSensor:
    """A sensor that waits for the marker of `output` (templated)."""
    return PythonSensor(
        task_id=task_id,
        python_callable=published,
        op_kwargs={"output": output},
        mode="reschedule",
        poke_interval=60,
        timeout=24 * 3600,
    )


with DAG(
    dag_id="shardmeans",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # a day's refit is the next day's model
    params=PARAMS,
    render_template_as_native_obj=True,  # options as values: a dict, an int, a bool
    user_defined_macros={"job_options": job_options, "partition": partition, "under": under},
    doc_md=__doc__,
    tags=["shardmeans"],
) as dag:
    FIT_OUTPUT = "{{ under(params, 'models', ds ~ '-fit') }}"
    REFIT_OUTPUT = "{{ under(params, 'models', ds ~ '-refit') }}"
    SCORES = "{{ under(params, 'scores', ds) }}"
    MODEL = "{{ ti.xcom_pull(task_ids='model') }}"

    @task.branch
    def latest_model(params=None, ds=None):
        if params["force_fit"] or newest_model(params, ds) is None:
            return "fit"
        return "model"

    fit = shardmeans(
        "fit",
        "fit",
        "fit_flags",
        input="{{ partition(params, ds, 'fit_input') }}",
        output=FIT_OUTPUT,
        k="{{ params.k }}",
    )

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def model(params=None, ds=None):
        found = newest_model(params, ds)
        if found is None:
            raise ValueError(f"no finished model under {under(params, 'models')}")
        return found

    score = shardmeans(
        "score",
        "score",
        "score_flags",
        model=MODEL,
        input="{{ partition(params, ds) }}",
        output=SCORES,
    )

    @task.branch
    def check_drift(params=None, ds=None):
        return "refit" if drifted(under(params, "scores", ds)) else "no_drift"

    refit = shardmeans(
        "refit",
        "fit",
        "fit_flags",
        input="{{ partition(params, ds) }}",
        output=REFIT_OUTPUT,
        k="{{ params.k }}",
        init_model=MODEL,
    )

    chosen = model()
    branch = latest_model()
    branch >> fit >> wait_for("fit_done", FIT_OUTPUT) >> chosen
    branch >> chosen
    chosen >> score >> wait_for("score_done", SCORES) >> check_drift()
    dag.get_task("check_drift") >> [refit, EmptyOperator(task_id="no_drift")]
    refit >> wait_for("refit_done", REFIT_OUTPUT)
