"""The blobs that several integration tests fit."""

import pytest

from helpers import scaled_blobs, write_shards


@pytest.fixture(scope="session")
def blob_table():
    """3000 rows x 5 features, 4 overlapping blobs (Lloyd needs several rounds)."""
    return scaled_blobs(3000, 5, 4, seed=3, cluster_std=2.5)


@pytest.fixture(scope="session")
def blob_parquet(blob_table, tmp_path_factory):
    return write_shards(blob_table, tmp_path_factory.mktemp("blobs"), "parquet")
