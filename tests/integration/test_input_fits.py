"""Input files as users have them (issue #20, the input half), through whole CLI fits:
empty and header-only first shards, gzip with a BOM, Parquet shards that differ, tf.Example
kinds, a dangling link in both --on_invalid modes, a file without read permission. The
readers, layout and validation on their own are in tests/unit/test_input_files.py.
"""

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from helpers import (
    FAST,
    ab_csv,
    assignments,
    fit,
    fit_subprocess,
    metrics,
    rejected,
    tf_example,
    write_tfrecord,
)


def test_file_without_read_permission_is_rejected_whole(tmp_path):
    """A fit whose process may not read one input file: that file is one rejected record.

    Root reads any file: the fit runs without the capabilities that let it
    (setpriv drops them), as an ordinary user would."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.csv").write_text("id,x\n1,1.0\n2,2.0\n3,9.0\n")
    (d / "b.csv").write_text("id,x\n4,1.0\n")
    (d / "b.csv").chmod(0)
    out = tmp_path / "out"
    proc = fit_subprocess(
        out, "--input", d / "*.csv", "--id_column", "id", *FAST, unprivileged=True
    )
    assert proc.returncode == 0, proc.stderr
    m = metrics(out)
    assert (m["rows_read"], m["rows_valid"], m["files_rejected"]) == (3, 3, 1)
    (record,) = rejected(out)
    assert record["file"] == str(d / "b.csv") and "PermissionError" in record["reason"]


def test_fit_with_empty_and_header_only_first_shards(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.csv").write_text("")
    (d / "b.csv").write_text("id,a,b\n")
    (d / "c.csv").write_text(ab_csv(6))
    (d / "d.csv").write_text(
        "id,a,b,extra\n"
        + "\n".join(f"{i},{(i % 2) * 10},{(i % 2) * 10},e{i}" for i in range(6, 10))
        + "\n"
    )
    out = tmp_path / "out"
    assert fit(out, "--input", d / "*.csv", *FAST) == 0
    m = metrics(out)
    assert (m["rows_read"], m["rows_valid"], m["rows_rejected"]) == (10, 10, 0)
    assert m["features"] == ["id", "a", "b"]  # every numeric column (no --id_column)
    table = assignments(out)
    assert table.schema.names[:4] == ["id", "a", "b", "extra"]
    extra = dict(zip(table.column("id").to_pylist(), table.column("extra").to_pylist()))
    assert extra[7] == "e7" and extra[1] in (None, "")  # null: an empty CSV field


def test_fit_gzip_csv_with_bom(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "data.csv.gz").write_bytes(gzip.compress(("\ufeff" + ab_csv(10)).encode("utf-8")))
    out = tmp_path / "out"
    assert fit(out, "--input", d / "*.csv.gz", "--id_column", "id", *FAST) == 0
    m = metrics(out)
    assert (m["rows_read"], m["rows_valid"], m["rows_rejected"]) == (10, 10, 0)
    assert m["features"] == ["a", "b"]
    assert sorted(assignments(out).column("id").to_pylist()) == list(range(10))


def test_fit_parquet_shards_that_differ(tmp_path):
    """Zero-row first shard, a column only the second has, a category and a list column,
    int32 in one shard where another has int64: all rows valid, passed through as values."""
    d = tmp_path / "in"
    d.mkdir()
    pq.write_table(
        pa.table({"id": pa.array([], pa.int64()), "a": pa.array([], pa.float64())}),
        d / "p0.parquet",
    )
    pd.DataFrame(
        {
            "id": np.arange(4, dtype=np.int32),
            "a": [0.0, 10.0, 0.5, 10.5],
            "kind": pd.Categorical(["u", "v", "u", "v"]),
            "vec": [[1.0], [1.0, 2.0], [], [3.0]],
        }
    ).to_parquet(d / "p1.parquet")
    pd.DataFrame(
        {"id": np.arange(4, 8), "a": [0.2, 10.2, 0.1, 10.1], "b": [1.0, 2.0, 3.0, 4.0]}
    ).to_parquet(d / "p2.parquet")
    out = tmp_path / "out"
    assert fit(out, "--input", d / "*.parquet", "--features", "a", *FAST) == 0
    m = metrics(out)
    assert (m["rows_read"], m["rows_valid"], m["rows_rejected"]) == (8, 8, 0)
    table = assignments(out)
    assert table.schema.field("id").type == pa.int64()
    assert table.column("kind").to_pylist() == ["u", "v", "u", "v", None, None, None, None]
    assert table.column("b").to_pylist()[3:5] == [None, 1.0]
    assert table.column("vec").to_pylist()[:2] == [[1.0], [1.0, 2.0]]


def test_fit_tfrecord_with_mixed_feature_kinds(tmp_path):
    """int64_list in some rows, float_list in others: all numbers; a bytes_list row rejected."""
    d = tmp_path / "in"
    d.mkdir()
    records = []
    for i in range(10):
        a = float((i % 2) * 10) + 0.5 if i % 3 else (i % 2) * 10  # int in every third row
        records.append(tf_example(id=[i], a=[a], b=[float(i % 2)]))
    records.append(tf_example(id=[10], a=[b"ten"], b=[1.0]))
    write_tfrecord(d / "part-0.tfrecord", records)
    out = tmp_path / "out"
    assert fit(out, "--input", d / "*.tfrecord", "--id_column", "id", *FAST) == 0
    m = metrics(out)
    assert (m["rows_read"], m["rows_valid"], m["rows_rejected"]) == (11, 10, 1)
    assert m["features"] == ["a", "b"]
    (record,) = rejected(out)
    assert (record["row"], record["column"]) == (11, "a")
    assert record["reason"] == "value of type large_binary, not a number"
    assert assignments(out).column("id").to_pylist() == list(range(10))


def test_fit_dangling_link_reject_mode_writes_one_file_record(with_dangling_link, tmp_path):
    out = tmp_path / "out"
    assert fit(out, "--input", with_dangling_link / "*.csv", "--id_column", "id", *FAST) == 0
    m = metrics(out)
    assert (m["rows_read"], m["rows_valid"], m["rows_rejected"]) == (8, 8, 0)
    (record,) = rejected(out)
    assert record["file"] == str(with_dangling_link / "b.csv")
    assert (record["row"], record["column"]) == (None, None)
    assert record["reason"].startswith("cannot read file: FileNotFoundError")
    if "files_rejected" in m:  # written by the metrics writers once they read counts[3]
        assert m["files_rejected"] == 1


def test_fit_dangling_link_fail_mode_names_the_file(with_dangling_link, tmp_path, capsys):
    assert (
        fit(
            tmp_path / "out", "--input", with_dangling_link / "*.csv", "--on_invalid", "fail", *FAST
        )
        == 2
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("shardmeans fit: error: cannot read file ")
    assert "b.csv" in last and "--on_invalid=fail" in last
