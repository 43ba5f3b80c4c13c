"""Reusable shardmeans pieces for your own Beam pipeline (never imports `pipeline`)."""
from transforms.errors import UserInputError
from transforms.init import BottomSampleFn, initial_centroids, row_hashes
from transforms.kmeans_step import KMeansStep, get_step
from transforms.lloyd import RoundState, lloyd_update
from transforms.partials import Partials, PartialsCombineFn
from transforms.preprocessing import Standardizer, preprocessing_fn
from transforms.rounds import AssignShards, LloydRound, LloydRounds, StepConfig

__all__ = [
    "AssignShards", "BottomSampleFn", "KMeansStep", "LloydRound", "LloydRounds", "Partials",
    "PartialsCombineFn", "RoundState", "Standardizer", "StepConfig", "UserInputError",
    "get_step", "initial_centroids", "lloyd_update", "preprocessing_fn", "row_hashes",
]
