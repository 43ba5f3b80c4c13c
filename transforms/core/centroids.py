"""The chosen fit's centroids in the space the fit ran in and in the input's units."""

from typing import List, NamedTuple

import numpy as np


class Centroids(NamedTuple):
    """KMeans' `centroids` output: the final centroids, named by their space.

    features:     the D feature names, in column order.
    standardized: float64 [K, D], the space the fit ran in: after --standardize (the
                  z-score, or the values as read) and, for cosine, on the unit sphere;
                  what RoundState.centroids, centroids.npy and the model hold.
    original:     float64 [K, D], in the input's units (`in_original_units`): what
                  centroids.csv holds.
    """

    features: List[str]
    standardized: np.ndarray
    original: np.ndarray


def in_original_units(standardized: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """float64 [K, D] centroids of the scaled space -> the input's units: z * std + mean,
    per feature (`mean`, `std` float64 [D], the transform's; a feature of std 0 was
    only centred, so its values are z + mean). For a cosine fit this maps the unit
    centroids back through the scaling alone: a direction in the input's units."""
    return np.asarray(standardized, np.float64) * np.where(std > 0, std, 1.0) + mean
