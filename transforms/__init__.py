"""Reusable shardmeans pieces for your own Beam pipeline (never imports `pipeline`).

    fitted = rows | KMeans(n_clusters=8, features=["a", "b"], output_dir=OUT)
    scored = rows | AssignClusters(OUT + "/model")
"""
from transforms.assign import AssignClusters
from transforms.errors import UserInputError
from transforms.export import export_model
from transforms.hierarchy import merge_map, ward_linkage, ward_merge
from transforms.init import BottomSampleFn, InitialCandidates, initial_centroids, row_hashes
from transforms.kmeans import KMeans
from transforms.kmeans_step import KMeansStep, get_step
from transforms.lloyd import Candidates, RoundState, lloyd_update, update_candidates
from transforms.partials import CandidatePartialsCombineFn, Partials, PartialsCombineFn
from transforms.preprocessing import Standardizer, preprocessing_fn
from transforms.rounds import (AssignShards, EvaluateCandidates, LloydRound, LloydRounds,
                               LloydUpdateFn, StepConfig)
from transforms.select import ChooseCandidate, Selection, select

__all__ = [
    "AssignClusters", "AssignShards", "BottomSampleFn", "CandidatePartialsCombineFn",
    "Candidates", "ChooseCandidate", "EvaluateCandidates", "InitialCandidates", "KMeans",
    "KMeansStep", "LloydRound", "LloydRounds", "LloydUpdateFn", "Partials", "PartialsCombineFn",
    "RoundState", "Selection", "Standardizer", "StepConfig", "UserInputError", "export_model",
    "get_step", "initial_centroids", "lloyd_update", "merge_map", "preprocessing_fn",
    "row_hashes", "select", "update_candidates", "ward_linkage", "ward_merge",
]
