"""Every parameter of the jobs, defined once: its name, default, constraint and help.

One vocabulary: `shardmeans fit --max_rounds 20` is `KMeans(..., max_rounds=20)` and the
Flex Template's `max_rounds` parameter. What reads this module:

- pipeline/options.py builds the command's flags from the groups below (`add_flags`);
- `transforms.KMeans` takes its keyword defaults from `FIT` and checks its arguments
  with `check_fit`, as the command does (tests/unit/test_parameters.py holds its
  signature to this module);
- launch/metadata.json, the Flex Template's parameters, is generated from it
  (`python -m pipeline.template_metadata`; a test keeps the committed file in step).

The constraints here are the ones a value can be checked against on its own, or
against the other parameters (`check_fit`); what needs the data (a feature exists,
K is at most the number of valid rows) is checked where the data is read.
"""

import dataclasses
import numbers
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from transforms.core.errors import UserInputError

INIT_METHODS = ("k-means++", "random")

# Restarts by default: one start can end in a local optimum far above the best
# of a few, and 4 take most of what more restarts gain for a small share of a
# fit's time, while 8 add little for a larger share (bench/RESULTS.md,
# 'Restarts (--n_init)'). Competing on the init sample, they cost only their init.
DEFAULT_N_INIT = 4

# Lloyd rounds over all rows, at most. Every round is unrolled in the graph and
# costs graph construction and runner stages even after convergence (more on a
# cluster than locally), so every fit pays for the cap. The passes start from a
# start refined on the init sample: on overlapping clusters round 30 is already
# negligibly above the converged inertia, and on structureless data, where no
# cap converges, a higher one gains little (bench/RESULTS.md, 'Rounds (--max_rounds)').
DEFAULT_MAX_ROUNDS = 30


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One parameter: a flag of the command, a keyword of `KMeans`, a template parameter.

    `type` is what the command parses the flag's text as (bool: a bare flag).
    `minimum` and `below` bound a number (inclusive, exclusive); `choices` and
    `pattern` (a regex the whole text must match) constrain a string.
    `default_help` describes a default that is not a plain value.
    `label` and `template_pattern` are for the Flex Template's form; without
    `template_pattern` the template's regex is derived from the constraint.
    """

    name: str
    help: str
    label: str
    default: Any = None
    type: type = str
    required: bool = False
    choices: Optional[Tuple[str, ...]] = None
    minimum: Optional[Union[int, float]] = None
    below: Optional[int] = None
    above: Optional[float] = None  # exclusive lower bound
    maximum: Optional[float] = None  # inclusive upper bound
    pattern: Optional[str] = None
    default_help: Optional[str] = None
    template_pattern: Optional[str] = None

    def flag_help(self) -> str:
        """The help line of the command's flag: the help, then what it defaults to."""
        if self.required:
            return f"(required) {self.help}"
        if self.type is bool:
            return self.help
        default = self.default_help or (None if self.default is None else str(self.default))
        return f"{self.help} (default: {default})" if default else self.help

    def check(self, value: Any, prefix: str = "") -> None:
        """Raise UserInputError naming `prefix + name` if `value` breaks the constraint.

        None passes (the default applies); `prefix` is "--" for the command's flags.
        """
        if value is None:
            return
        name = prefix + self.name
        if self.choices is not None and value not in self.choices:
            raise UserInputError(f"{name} must be one of {', '.join(self.choices)}, got {value!r}")
        if self.pattern is not None and not re.fullmatch(self.pattern, str(value)):
            raise UserInputError(f"{name}: {value!r} is not {self.pattern_help}")
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise UserInputError(f"{name} must be a number, got {value!r}")
            if self.type is int and int(value) != value:
                raise UserInputError(f"{name} must be a whole number, got {value!r}")
            if not value == value:  # NaN
                raise UserInputError(f"{name} must be a number, got {value!r}")
            if self.minimum is not None and not value >= self.minimum:
                raise UserInputError(f"{name} must be at least {self.minimum}, got {value}")
            if self.below is not None and not value < self.below:
                raise UserInputError(f"{name} must be below {self.below}, got {value}")
            if self.above is not None and not value > self.above:
                raise UserInputError(f"{name} must be above {self.above}, got {value}")
            if self.maximum is not None and not value <= self.maximum:
                raise UserInputError(f"{name} must be at most {self.maximum}, got {value}")

    @property
    def pattern_help(self) -> str:
        return PATTERN_HELP.get(self.name, f"of the form {self.pattern}")


# What each `pattern` means, for the error that names it.
PATTERN_HELP = {
    "devices": "auto, cpu, cpu:N or gpu:I[,J...]",
    "input_subscription": "a subscription, projects/PROJECT/subscriptions/NAME",
    "input_topic": "a topic, projects/PROJECT/topics/NAME",
    "output_topic": "a topic, projects/PROJECT/topics/NAME",
    "dead_letter_topic": "a topic, projects/PROJECT/topics/NAME",
    "counts_topic": "a topic, projects/PROJECT/topics/NAME",
}

ROUNDS_HELP = "at most this many Lloyd rounds (passes over the data)"

INPUT = (
    Parameter(
        "input",
        "file pattern of the input shards: a local path or any URL Beam reads (gs://, s3://, ...)",
        "Input files",
        required=True,
        template_pattern=r"^gs://[a-z0-9][a-z0-9._-]*/\S+$",
    ),
    Parameter(
        "format",
        "input format: csv (with a header row), parquet or tfrecord (tf.Example)",
        "Input format",
        choices=("csv", "parquet", "tfrecord"),
        default_help="from the file suffix",
    ),
    Parameter(
        "features",
        "comma-separated feature columns to cluster on, e.g. age,income",
        "Feature columns",
        default_help="every numeric column but the id column",
        template_pattern=r"^[^,]+(,[^,]+)*$",
    ),
    Parameter(
        "id_column",
        "column copied to the assignments to identify each row",
        "Id column",
        default_help="every input column is copied",
        template_pattern=r"^.+$",
    ),
    Parameter(
        "weight_column",
        "fit only: numeric column of each row's weight (sample weights, as scikit-learn's "
        "sample_weight): a finite number >= 0, 0 assigning the row without moving any "
        "centroid; a missing, null, NaN, infinite or negative weight rejects the row. Not "
        "a feature; the standardization stays unweighted",
        "Weight column",
        default_help="every row weighs 1",
        template_pattern=r"^.+$",
    ),
    Parameter(
        "on_invalid",
        "a row with a missing, empty, non-numeric, NaN or infinite feature: 'reject' "
        "writes it with its file, row and reason under OUTPUT/rejected/; 'fail' stops "
        "the job naming them",
        "Invalid rows",
        default="reject",
        choices=("reject", "fail"),
    ),
)

FIT = (
    Parameter(
        "k",
        "number of clusters K, or a comma-separated list of Ks (e.g. 4,8,16): a sweep, "
        "every K fitted in the same passes, one chosen by select",
        "Number of clusters, or a list of them",
        required=True,
        template_pattern=r"^[1-9][0-9]*(,[1-9][0-9]*)*$",
    ),
    Parameter(
        "n_init",
        "restarts of each K (k-means++ or random starts, each refined on the init "
        "sample); where they compete is restarts_on",
        "Restarts",
        type=int,
        minimum=1,
        default_help=f"{DEFAULT_N_INIT}, 1 with given initial centroids",
    ),
    Parameter(
        "restarts_on",
        "'sample': the restart of each K with the lowest inertia on the init sample is "
        "the one fitted over all rows, as scikit-learn's MiniBatchKMeans chooses among "
        "its n_init; 'all': every restart is fitted over all rows in the same passes "
        "(one wider matrix product per batch) and the lowest final inertia wins",
        "Where restarts compete",
        default="sample",
        choices=("sample", "all"),
    ),
    Parameter(
        "select",
        "how a sweep chooses K, scored on the init sample (silhouette on at most 10000 "
        "of its rows)",
        "K selection",
        default="silhouette",
        choices=("silhouette", "calinski_harabasz", "davies_bouldin"),
    ),
    Parameter(
        "seed",
        "seed of the init sample's hash and of the initialisation",
        "Seed",
        default=0,
        type=int,
        minimum=0,
        below=2**32,
    ),
    Parameter(
        "init_seed",
        "seed of the first restart's k-means++ (or random) draws; restart r draws with "
        "init_seed + r, so restart r alone is n_init 1 with init_seed INIT_SEED+r",
        "First restart's seed",
        type=int,
        minimum=0,
        below=2**32,
        default_help="seed",
    ),
    Parameter(
        "max_rounds",
        f"{ROUNDS_HELP}; every round is a stage of the graph, run or not",
        "Maximum rounds",
        default=DEFAULT_MAX_ROUNDS,
        type=int,
        minimum=1,
    ),
    Parameter(
        "tol",
        "stop after the first round whose centroids moved by a total squared Euclidean "
        "shift, summed over all K centroids in standardized space, <= tol "
        "(scikit-learn's rule: with unit-variance features its relative tol is this "
        "absolute one); 0 runs until the centroids stop moving or max_rounds",
        "Tolerance",
        default=1e-4,
        type=float,
        minimum=0,
    ),
    Parameter(
        "init",
        "'k-means++' or 'random' on the init sample, or a PATH.npy of float32 [K, D] "
        "centroids in standardized space (KMeans also takes the array)",
        "Initialisation",
        default="k-means++",
        pattern=r"k-means\+\+|random|\S+\.npy",
        template_pattern=r"^(k-means\+\+|random|gs://\S+\.npy)$",  # workers read it
    ),
    Parameter(
        "init_model",
        "warm start: one start from the centroids of a fitted model (its fit output, "
        "model/ base path or a version directory) whose features, standardize, distance "
        "and K match; taken in original units and standardized with this fit's "
        "statistics; instead of init, for one K",
        "Warm start from a model",
        default_help="none",
        template_pattern=r"^gs://[a-z0-9][a-z0-9._-]*/\S+$",
    ),
    Parameter(
        "standardize",
        "how the features are scaled before clustering: 'z_score' ((x - mean) / std per "
        "feature, the global statistics from tf.Transform, as StandardScaler does) or "
        "'none' (the values as read); the model applies the same scaling when it serves",
        "Feature scaling",
        default="z_score",
        choices=("z_score", "none"),
    ),
    Parameter(
        "missing",
        "what a missing, empty or null feature value does: 'reject' sends the row to the "
        "dead letter; 'impute' replaces it by the feature's mean over the training rows "
        "that have it (tf.Transform's analysis, so the model imputes the same value when "
        "it serves); NaN and infinite values are rejected either way",
        "Missing values",
        default="reject",
        choices=("reject", "impute"),
    ),
    Parameter(
        "categorical",
        "comma-separated features clustered as categories even when they hold numbers "
        "(a code, a zip); a text or boolean feature is a category without it. A category "
        "is one-hot over its most frequent values (--max_categories), each column 0 or 1, "
        "not scaled; with --missing impute a missing value is the category __missing__",
        "Categorical features",
        default_help="the text and boolean features",
        template_pattern=r"^[^,]+(,[^,]+)*$",
    ),
    Parameter(
        "max_categories",
        "each categorical feature's vocabulary: its most frequent values in the training "
        "rows, at most this many, a column each; rarer values and values unseen at "
        "training share the column FEATURE=__other__",
        "Categories per feature",
        default=100,
        type=int,
        minimum=1,
    ),
    Parameter(
        "distance",
        "'euclidean', or 'cosine': spherical K-Means, each row (after scaling) divided "
        "by its L2 norm, a row to the centroid of largest cosine similarity, each "
        "centroid the normalized sum of its rows; the distance reported is 1 - cos",
        "Distance",
        default="euclidean",
        choices=("euclidean", "cosine"),
    ),
    Parameter(
        "init_sample_size",
        "rows in the init sample (the rows with the smallest hash of their values and "
        "the seed); at least the largest K",
        "Init sample rows",
        default=100_000,
        type=int,
        minimum=1,
    ),
    Parameter(
        "init_refine_rounds",
        "Lloyd rounds on the init sample, in memory, before the first pass over all rows "
        "(k-means++ and random starts; 0: none): a better start, fewer full passes, "
        "still exact Lloyd after it",
        "Refinement rounds on the sample",
        default=100,
        type=int,
        minimum=0,
    ),
    Parameter(
        "merge_to",
        "merge the K fitted clusters into this many groups by Ward linkage of their "
        "centroids (weighted by cluster size, standardized space): hierarchy.json, "
        "merged_cluster_id in the assignments and the model; at most the smallest K",
        "Merge into groups",
        type=int,
        minimum=1,
        default_help="no merge",
    ),
    Parameter(
        "batch_size",
        "rows per TensorFlow step call",
        "Batch size",
        default=65536,
        type=int,
        minimum=1,
    ),
    Parameter(
        "cache_mb",
        "per-process cache of the shards, in MiB (0 reads the shards again every round)",
        "Shard cache (MiB)",
        type=int,
        minimum=0,
        default_help="a quarter of RAM",
    ),
    Parameter(
        "devices",
        "devices of the MirroredStrategy on each worker: 'auto' (all GPUs, else the "
        "CPU), 'cpu', 'cpu:N' (the CPU split into N logical devices), 'gpu:0,1'",
        "Devices",
        default="auto",
        pattern=r"auto|cpu|cpu:[1-9][0-9]*|gpu:[0-9]+(,[0-9]+)*",
    ),
)

ANOMALY = (
    Parameter(
        "contamination",
        "the expected fraction of anomalies C (0 < C <= 0.5): a row is an anomaly "
        "(is_anomaly) when its normalized distance (distance / its cluster's radius) is "
        "above the (1 - C) quantile of the training rows' (BigQuery ML's rule); given to "
        "fit it is the model's default, given to score it overrides it",
        "Contamination",
        type=float,
        above=0.0,
        maximum=0.5,
        default_help="no is_anomaly output",
        template_pattern=r"^([0-9]*\.?[0-9]+)([eE][-+]?[0-9]+)?$",
    ),
)

OUTPUT = (
    Parameter(
        "output",
        "output directory (local, gs://, ...): empty or absent unless overwrite",
        "Output directory",
        required=True,
        template_pattern=r"^gs://[a-z0-9][a-z0-9._-]*(/\S*)?$",
    ),
    Parameter(
        "overwrite",
        "replace the contents of a non-empty output directory",
        "Overwrite",
        default=False,
        type=bool,
    ),
    Parameter(
        "detach",
        "on a remote runner (Dataflow, Flink, a job service): submit the job, print its "
        "id, how to follow it and where its outputs will appear, and return without "
        "waiting; the job publishes its outputs itself, as its last step",
        "Detach",
        default=False,
        type=bool,
    ),
    Parameter(
        "top_n",
        "also write each row's N nearest centroids, nearest first (ties: lowest id): "
        "nearest_cluster_ids and nearest_distances, list columns in the units of "
        "distance (a CSV cell holds them joined by ';', e.g. 3;1;4); 0 to K (the "
        "smallest K of a sweep); 0: no such columns",
        "Nearest centroids per row",
        default=0,
        type=int,
        minimum=0,
    ),
    Parameter(
        "keep_standardized",
        "keep the shards (OUTPUT/_work/shards/): the valid rows as read, which "
        "transform_fn/ standardizes (transforms.beam.shards.iter_standardized)",
        "Keep the shards",
        default=False,
        type=bool,
    ),
)

SCORE = (
    Parameter(
        "model",
        "a fit output directory, its model/ base path (the highest numbered version "
        "under it is used) or a version directory (model/1/)",
        "Model",
        required=True,
    ),
)

# Pub/Sub resource names, as ReadFromPubSub and WriteToPubSub take them.
_TOPIC = r"projects/[a-z][-a-z0-9:.]*/topics/[A-Za-z][-A-Za-z0-9_.~+%]*"
_SUBSCRIPTION = r"projects/[a-z][-a-z0-9:.]*/subscriptions/[A-Za-z][-A-Za-z0-9_.~+%]*"

# `shardmeans stream`: Pub/Sub in and out, the windows of its counts (with SCORE's
# model and ANOMALY's contamination).
STREAM = (
    Parameter(
        "input_subscription",
        "Pub/Sub subscription to read the JSON messages from, "
        "projects/PROJECT/subscriptions/NAME (this or input_topic)",
        "Input subscription",
        pattern=_SUBSCRIPTION,
    ),
    Parameter(
        "input_topic",
        "Pub/Sub topic to read the JSON messages from, projects/PROJECT/topics/NAME, "
        "through a subscription the job makes when it starts, which sees only the "
        "messages published after that (this or input_subscription)",
        "Input topic",
        pattern=_TOPIC,
    ),
    Parameter(
        "output_topic",
        "Pub/Sub topic of the scored messages (each message's fields and the per-row "
        "outputs), projects/PROJECT/topics/NAME",
        "Scored messages topic",
        required=True,
        pattern=_TOPIC,
    ),
    Parameter(
        "dead_letter_topic",
        "Pub/Sub topic of the messages that cannot be scored, each with its reason",
        "Dead-letter topic",
        required=True,
        pattern=_TOPIC,
    ),
    Parameter(
        "counts_topic",
        "Pub/Sub topic of each window's rows and anomalies by cluster",
        "Window counts topic",
        pattern=_TOPIC,
        default_help="no counts",
    ),
    Parameter(
        "window_s",
        "width of the fixed windows of event time the counts are taken in, in seconds",
        "Window (seconds)",
        default=60,
        type=int,
        minimum=1,
    ),
    Parameter(
        "allowed_lateness_s",
        "seconds after its window's end that a late message still updates the window's "
        "counts (published again, accumulated); a later one is scored but not counted",
        "Allowed lateness (seconds)",
        default=600,
        type=int,
        minimum=0,
    ),
    Parameter(
        "timestamp_attribute",
        "message attribute holding the event time (milliseconds since the epoch or RFC "
        "3339), which the watermark then follows",
        "Event time attribute",
        default_help="the publish time",
        template_pattern=r"^.+$",
    ),
    Parameter(
        "timestamp_field",
        "JSON field of the message holding the event time (milliseconds since the epoch "
        "or RFC 3339); the watermark still follows the publish time (or "
        "timestamp_attribute), so a field far behind it makes the message late",
        "Event time field",
        default_help="timestamp_attribute, else the publish time",
        template_pattern=r"^.+$",
    ),
)

BY_NAME: Dict[str, Parameter] = {p.name: p for p in INPUT + FIT + ANOMALY + OUTPUT + SCORE + STREAM}


def add_flags(parser, parameters: Sequence[Parameter]) -> None:
    """Add `--NAME` for each parameter to an argparse parser (or argument group).

    Required flags are not argparse-required: Beam parses every options class
    wherever options are read (workers too), and a job's own check names them.
    """
    for p in parameters:
        if p.type is bool:
            parser.add_argument(f"--{p.name}", action="store_true", help=p.flag_help())
        else:
            parser.add_argument(
                f"--{p.name}",
                type=p.type,
                default=p.default,
                choices=p.choices,
                help=p.flag_help(),
            )


def parse_ks(value: Union[int, str, Sequence[int]], prefix: str = "") -> Tuple[int, ...]:
    """`k` -> the Ks to fit, ascending: 8 or '8' -> (8,); '16,4,8' or [16, 4, 8] -> (4, 8, 16).

    A sweep (several Ks) needs each K >= 2 to score it.
    """
    name = prefix + "k"
    if value is None:
        raise UserInputError(f"{name} is required")
    if isinstance(value, str):
        parts = value.split(",")
    else:
        parts = [value] if isinstance(value, numbers.Number) else list(value)
    try:
        ks = [_whole(part) for part in parts]
    except ValueError:
        raise UserInputError(
            f"{name} must be a whole number or a list of them (e.g. 4,8,16), got {value!r}"
        ) from None
    if not ks:
        raise UserInputError(f"{name} is an empty list")
    if min(ks) < 1:
        raise UserInputError(f"{name} must be at least 1, got {value}")
    if len(set(ks)) != len(ks):
        raise UserInputError(f"{name} lists a K twice: {value}")
    if len(ks) > 1 and min(ks) < 2:
        raise UserInputError(
            f"a {name} sweep compares clusterings: every K must be at least 2, got {value}"
        )
    return tuple(sorted(ks))


def _whole(value) -> int:
    """'8' or 8 (any integral number) -> 8; ValueError for anything else."""
    if isinstance(value, str):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value:
        raise ValueError(value)
    return int(value)


def check_fit(ks: Tuple[int, ...], values: Mapping[str, Any], prefix: str = "") -> None:
    """Check the fit's parameters (`values`: name -> value, None for a default) on
    their own and against each other; `ks` is `parse_ks`'s result."""
    for name, value in values.items():
        BY_NAME[name].check(value, prefix)
    sample = values.get("init_sample_size")
    if sample is not None and sample < max(ks):
        raise UserInputError(
            f"{prefix}init_sample_size must be at least the largest K ({max(ks)}), got {sample}"
        )
    top_n = values.get("top_n")
    if top_n is not None and top_n > min(ks):
        raise UserInputError(f"{prefix}top_n must be in 0..{min(ks)} (the smallest K), got {top_n}")
    merge_to = values.get("merge_to")
    if merge_to is not None and merge_to > min(ks):
        raise UserInputError(
            f"{prefix}merge_to must be in 1..{min(ks)} (the smallest K), got {merge_to}"
        )


def resolve_n_init(n_init: Optional[int], given: bool) -> int:
    """`n_init`, or its default: DEFAULT_N_INIT random starts, 1 for given centroids
    (one start, as scikit-learn does for explicit centers)."""
    if n_init is not None:
        return n_init
    return 1 if given else DEFAULT_N_INIT
