"""Pipeline options of the shardmeans jobs: one PipelineOptions subclass per concern.

Read them with `options.view_as(InputOptions)` and so on. The flags, their
defaults, constraints and help are transforms.core.parameters' (one vocabulary with
`KMeans` and the Flex Template). Every flag not defined here is a Beam pipeline
option (`--runner`, `--direct_num_workers`, ...).
"""

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.core import parameters


class InputOptions(PipelineOptions):
    """What to read and which rows count."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parameters.add_flags(parser, parameters.INPUT)


class KMeansOptions(PipelineOptions):
    """The K-Means fit."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parameters.add_flags(parser, parameters.FIT)


class AnomalyOptions(PipelineOptions):
    """Which rows are anomalies."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parameters.add_flags(parser, parameters.ANOMALY)


class OutputOptions(PipelineOptions):
    """Where the results go."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parameters.add_flags(parser, parameters.OUTPUT)


class ScoreOptions(PipelineOptions):
    """Which fitted model scores the input."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parameters.add_flags(parser, parameters.SCORE)


class StreamOptions(PipelineOptions):
    """Pub/Sub in and out, and the windows of the counts."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parameters.add_flags(parser, parameters.STREAM)


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
