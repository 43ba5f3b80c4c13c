"""Reusable shardmeans pieces for your own Beam pipeline (never imports `pipeline`).

    fitted = rows | KMeans(n_clusters=8, features=["a", "b"], output_dir=OUT)
    scored = rows | AssignClusters(OUT + "/model")

Three layers: `transforms.core` (NumPy/SciPy), `transforms.step` (TensorFlow
on the workers) and `transforms.beam` (the PTransforms and combiners).
"""

from transforms.beam.assign import AssignClusters
from transforms.beam.candidates import ChooseCandidate, InitialCandidates
from transforms.beam.combiners import BottomSampleFn, CandidatePartialsCombineFn, PartialsCombineFn
from transforms.beam.kmeans import KMeans
from transforms.beam.rounds import (
    AssignShards,
    EvaluateCandidates,
    LloydRound,
    LloydRounds,
    LloydUpdateFn,
    StepConfig,
)
from transforms.core.errors import UserInputError
from transforms.core.hierarchy import merge_map, ward_linkage, ward_merge
from transforms.core.lloyd import Candidates, RoundState, lloyd_update, update_candidates
from transforms.core.partials import Partials
from transforms.core.sampling import row_hashes
from transforms.core.seeding import initial_centroids
from transforms.core.selection import Selection, select
from transforms.step.export import export_model
from transforms.step.preprocessing import Standardizer, preprocessing_fn
from transforms.step.step import KMeansStep, get_step

__all__ = [
    "AssignClusters",
    "AssignShards",
    "BottomSampleFn",
    "CandidatePartialsCombineFn",
    "Candidates",
    "ChooseCandidate",
    "EvaluateCandidates",
    "InitialCandidates",
    "KMeans",
    "KMeansStep",
    "LloydRound",
    "LloydRounds",
    "LloydUpdateFn",
    "Partials",
    "PartialsCombineFn",
    "RoundState",
    "Selection",
    "Standardizer",
    "StepConfig",
    "UserInputError",
    "export_model",
    "get_step",
    "initial_centroids",
    "lloyd_update",
    "merge_map",
    "preprocessing_fn",
    "row_hashes",
    "select",
    "update_candidates",
    "ward_linkage",
    "ward_merge",
]
