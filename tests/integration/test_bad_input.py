"""A corpus of bad input through both --on_invalid modes, and every clear error."""

import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import assignments, fit, main, metrics, rejected

GOOD = ["1,1.0,2.0", "2,1.5,2.5", "3,9.0,9.5", "4,9.5,9.0", "5,  2.5 ,1.0"]
BAD = {  # row text -> (column, reason fragment)
    "6,nan,1.0": ("x", "NaN"),
    "7,1.0,inf": ("y", "infinite"),
    "8,,1.0": ("x", "empty"),
    "9,1.0,abc": ("y", "non-numeric value 'abc'"),
    "10,-inf,2": ("x", "infinite"),
}


@pytest.fixture()
def corpus(tmp_path):
    """CSV files: good and bad values, a short and a long row, an empty file,
    a header-only file, and a file without column y."""
    d = tmp_path / "in"
    d.mkdir()
    lines = [
        "id,x,y",
        GOOD[0],
        "6,nan,1.0",
        GOOD[1],
        "7,1.0,inf",
        "8,,1.0",
        "11,3.0",
        GOOD[2],
        "9,1.0,abc",
        "12,1,2,3",
        "10,-inf,2",
        GOOD[3],
        GOOD[4],
    ]
    (d / "a.csv").write_text("\n".join(lines) + "\n")
    (d / "b.csv").write_text("")
    (d / "c.csv").write_text("id,x,y\n")
    (d / "d.csv").write_text("id,x\n13,1.0\n14,2.0\n")
    return str(d / "*.csv")


def test_reject_mode_counts_and_reasons(corpus, tmp_path):
    out = tmp_path / "out"
    assert (
        fit(
            out,
            "--input",
            corpus,
            "--k",
            2,
            "--features",
            "x,y",
            "--id_column",
            "id",
            "--max_rounds",
            10,
        )
        == 0
    )
    m = metrics(out)
    assert (m["rows_read"], m["rows_valid"], m["rows_rejected"]) == (14, 5, 9)
    rows = rejected(out)
    assert len(rows) == 9
    by_id = {r["values"]["id"]: r for r in rows if "values" in r}
    for text, (column, reason) in BAD.items():
        r = by_id[text.split(",")[0]]
        assert r["column"] == column and reason in r["reason"], r
        assert r["file"].endswith("a.csv")
    assert by_id["13"]["reason"] == by_id["14"]["reason"] == "the file has no such column"
    assert by_id["13"]["column"] == "y" and by_id["13"]["file"].endswith("d.csv")
    short = [r for r in rows if "text" in r]
    assert sorted((r["row"], r["text"]) for r in short) == [(6, "11,3.0"), (9, "12,1,2,3")]
    assert all("expected 3 fields" in r["reason"] for r in short)
    # row numbers are data rows of the file (header excluded)
    assert by_id["6"]["row"] == 2 and by_id["10"]["row"] == 10
    ids = assignments(out).column("id").to_pylist()
    assert sorted(ids) == sorted(int(g.split(",")[0]) for g in GOOD)


def _cli(capfd, *args) -> subprocess.CompletedProcess:
    """`shardmeans ARGS` in this process: its status, and what it wrote on the file
    descriptors 1 and 2 (capfd), whatever wrote it: Python's streams, a logging handler
    or a library's C++ code."""
    capfd.readouterr()
    status = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(args, status, out, err)


def _assert_clear_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("shardmeans fit: error: "), proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in last, last
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_fail_mode_names_file_row_and_column(corpus, tmp_path, capfd):
    proc = _cli(
        capfd,
        "fit",
        "--input",
        corpus,
        "--output",
        tmp_path / "out",
        "--k",
        2,
        "--features",
        "x,y",
        "--on_invalid",
        "fail",
    )
    # Files are read in parallel: the job stops at the first bad row of whichever comes first.
    _assert_clear_error(proc, "--on_invalid=fail")
    message = proc.stderr.strip().splitlines()[-1]
    assert (
        "a.csv, row 2, column 'x': NaN" in message
        or "d.csv, row 1, column 'y': the file has no such column" in message
    ), message


@pytest.fixture()
def small_parquet(tmp_path):
    d = tmp_path / "pq"
    d.mkdir()
    pq.write_table(
        pa.table(
            {
                "id": np.arange(6),
                "x": np.arange(6.0),
                "y": np.ones(6),
                "name": [f"n{i}" for i in range(6)],
            }
        ),
        d / "a.parquet",
    )
    return d


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--input", "{tmp}/nothing*.parquet", "--k", 2], ["no file matches"]),
        (
            ["--input", "{pq}/*.parquet", "--k", 2, "--features", "x,zz"],
            ["unknown feature 'zz'", "a.parquet"],
        ),
        (
            ["--input", "{pq}/*.parquet", "--k", 2, "--features", "x", "--categorical", "name"],
            ["--categorical names 'name', not among the features (x)"],
        ),
        (["--input", "{pq}/*.parquet", "--k", 0], ["--k must be at least 1, got 0"]),
        (
            ["--input", "{pq}/*.parquet", "--k", 7, "--features", "x,y", "--init_sample_size", 10],
            ["--k 7 is larger than the number of valid rows (6)"],
        ),
        (["--input", "{pq}/*.parquet", "--k", 2, "--id_column", "nope"], ["--id_column 'nope'"]),
        (
            ["--input", "{pq}/*.parquet", "--k", 2, "--init", "{tmp}/missing.npy"],
            ["cannot read --init"],
        ),
    ],
)
def test_clear_errors(tmp_path, small_parquet, args, fragments, capsys):
    args = [str(a).format(tmp=tmp_path, pq=small_parquet) for a in args]
    assert fit(tmp_path / "out", *args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("shardmeans fit: error: ")
    for fragment in fragments:
        assert fragment in last, last


def test_unreadable_file_is_named(tmp_path, small_parquet, capfd):
    (small_parquet / "b.parquet").write_bytes(b"this is not parquet")
    # the first file probes fine; the second fails while the job runs
    _assert_clear_error(
        _cli(
            capfd,
            "fit",
            "--input",
            small_parquet / "*.parquet",
            "--output",
            tmp_path / "out",
            "--k",
            2,
            "--features",
            "x,y",
        ),
        "cannot read parquet file",
        "b.parquet",
    )


def test_nothing_valid_left(tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.csv").write_text("x,y\n1,abc\n,2\nnan,3\n4,inf\n5,\n6,7x\n")
    assert fit(tmp_path / "out", "--input", d / "*.csv", "--k", 1, "--features", "x,y") == 2
    assert "no valid rows" in capsys.readouterr().err


def test_existing_output_needs_overwrite(tmp_path, small_parquet, capfd):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    args = [
        "fit",
        "--input",
        small_parquet / "*.parquet",
        "--output",
        out,
        "--k",
        2,
        "--features",
        "x,y",
    ]
    _assert_clear_error(_cli(capfd, *args), "exists and is not empty", "--overwrite")
    assert (
        fit(out, *args[1:3], "--k", 2, "--features", "x,y", "--overwrite", "--max_rounds", 5) == 0
    )
    assert not (out / "keep.txt").exists() and metrics(out)["rows_valid"] == 6
