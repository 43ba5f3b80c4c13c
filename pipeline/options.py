"""Pipeline options of the shardmeans jobs: one PipelineOptions subclass per concern.

Read them with `options.view_as(InputOptions)` and so on. Every flag not
defined here is a Beam pipeline option (`--runner`, `--direct_num_workers`, ...).
"""

from apache_beam.options.pipeline_options import PipelineOptions


class InputOptions(PipelineOptions):
    """What to read and which rows count."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", help="file pattern of the input shards (local, gs://, ...)")
        parser.add_argument(
            "--format",
            choices=["csv", "parquet", "tfrecord"],
            default=None,
            help="input format (default: from the file suffix)",
        )
        parser.add_argument(
            "--features",
            default=None,
            help="comma-separated feature columns (default: every numeric "
            "column but the id column)",
        )
        parser.add_argument(
            "--id_column",
            default=None,
            help="column copied to the assignments to identify each row "
            "(default: all input columns are copied)",
        )
        parser.add_argument(
            "--on_invalid",
            choices=["reject", "fail"],
            default="reject",
            help="a row with a missing, empty, non-numeric, NaN or infinite "
            "feature: 'reject' writes it with its file, row and reason "
            "under OUTPUT/rejected/; 'fail' stops the job naming it",
        )


class KMeansOptions(PipelineOptions):
    """The K-Means fit."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--k",
            default=None,
            help="number of clusters K, or a comma-separated list of Ks "
            "(e.g. 4,8,16): a sweep, every K fitted in the same passes, "
            "one chosen by --select",
        )
        parser.add_argument(
            "--n_init",
            type=int,
            default=None,
            help="restarts of each K (k-means++ or random starts, each "
            "refined on the init sample); where they compete is "
            "--restarts_on; default 4 (1 with --init PATH.npy)",
        )
        parser.add_argument(
            "--restarts_on",
            choices=["sample", "all"],
            default="sample",
            help="'sample' (default): the restart of each K with the lowest "
            "inertia on the init sample is the one fitted over all rows, "
            "as scikit-learn's MiniBatchKMeans chooses among its n_init; "
            "'all': every restart is fitted over all rows in the same "
            "passes (one wider matrix product per batch) and the lowest "
            "final inertia wins",
        )
        parser.add_argument(
            "--select",
            default="silhouette",
            choices=["silhouette", "calinski_harabasz", "davies_bouldin"],
            help="how a sweep chooses K, scored on the init sample "
            "(silhouette on at most 10000 of its rows); default silhouette",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=0,
            help="seed of the init sample's hash and of the initialisation; default 0",
        )
        parser.add_argument(
            "--init_seed",
            type=int,
            default=None,
            help="seed of the first restart's k-means++ (or random) draws; "
            "restart r draws with init_seed + r, so restart r alone is "
            "--n_init 1 --init_seed INIT_SEED+r; default --seed",
        )
        parser.add_argument(
            "--max_rounds",
            type=int,
            default=30,
            help="at most this many Lloyd rounds (passes over the data); every "
            "round is a stage of the graph, run or not; default 30",
        )
        parser.add_argument(
            "--tol",
            type=float,
            default=1e-4,
            help="stop after the first round whose centroids moved by a total "
            "squared Euclidean shift, summed over all K centroids in "
            "standardized space, <= tol (scikit-learn's rule: with "
            "unit-variance features its relative tol is this absolute one); "
            "0 runs until the centroids stop moving or max_rounds; "
            "default 1e-4",
        )
        parser.add_argument(
            "--init",
            default="k-means++",
            help="'k-means++' (default) or 'random' on the init sample, or a "
            "PATH.npy of float32 [K, D] centroids in standardized space",
        )
        parser.add_argument(
            "--init_sample_size",
            type=int,
            default=100_000,
            help="rows in the init sample (the rows with the smallest hash of "
            "their values and the seed); default 100000",
        )
        parser.add_argument(
            "--init_refine_rounds",
            type=int,
            default=100,
            help="Lloyd rounds on the init sample, in memory, before the first "
            "pass over all rows (k-means++ and random starts; 0: none): a "
            "better start, fewer full passes, still exact Lloyd after it",
        )
        parser.add_argument(
            "--batch_size",
            type=int,
            default=65536,
            help="rows per TensorFlow step call; default 65536",
        )
        parser.add_argument(
            "--cache_mb",
            type=int,
            default=None,
            help="per-process cache of standardized shards, in MiB (default: a "
            "quarter of RAM; 0 reads the shards again every round)",
        )
        parser.add_argument(
            "--merge_to",
            type=int,
            default=None,
            help="merge the K fitted clusters into this many groups by Ward "
            "linkage of their centroids (weighted by cluster size, "
            "standardized space): hierarchy.json, merged_cluster_id in the "
            "assignments and the model",
        )
        parser.add_argument(
            "--devices",
            default="auto",
            help="devices of the MirroredStrategy on each worker: 'auto' (all "
            "GPUs, else the CPU), 'cpu', 'cpu:N' (CPU split into N "
            "logical devices), 'gpu:0,1'",
        )


class OutputOptions(PipelineOptions):
    """Where the results go."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--output", help="output directory (local, gs://, ...)")
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="replace the contents of a non-empty output directory",
        )
        parser.add_argument(
            "--keep_standardized",
            action="store_true",
            help="keep the shards (OUTPUT/_work/shards/): the valid rows as read, "
            "which transform_fn/ standardizes "
            "(transforms.beam.shards.iter_standardized)",
        )


class ScoreOptions(PipelineOptions):
    """Which fitted model scores the input."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--model",
            help="a fit output directory, its model/ base path (the highest numbered "
            "version under it is used) or a version directory (model/1/)",
        )


class ViewCachingOptions(PipelineOptions):
    """PipelineOptions whose `view_as(cls)` builds each class's view once.

    Beam calls `view_as` on the pipeline's options for every transform it
    applies and translates (type checks, result types, runner checks): thousands
    of times for a fit, whose rounds are unrolled, and each call builds an
    argparse parser and parses the flags again, most of a fit's graph
    construction (bench/RESULTS.md, 'Fixed costs'). Every view of one options object
    reads and writes the same shared dict of values, so one view per class is
    the same as a new one each time. Options that are not views (no flags of
    their own) are parsed exactly as `PipelineOptions(flags)` parses them.
    """

    def view_as(self, cls):
        views = self.__dict__.setdefault("_views", {})  # not __setattr__: Beam's takes options only
        if cls not in views:
            views[cls] = super().view_as(cls)
        return views[cls]

    def __getstate__(self):
        # Without the views: pickled, each would carry its own copy of the values
        # (Beam's state copies them to blank impersonate_service_account), and
        # the loaded views would no longer share them. They are rebuilt on use.
        state = dict(super().__getstate__())
        state.pop("_views", None)
        return state
