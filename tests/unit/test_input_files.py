"""Input files as users have them (issue #20, the input half): every file's columns, empty and
odd shards, encodings, compression, number grammar, tf.Example kinds, unreadable files.

Unit tests of pipeline.io.files / layout / readers / validation / ingest (the ingest's
PTransform on the FnApiRunner, with assert_that); the CLI fits where the whole path
matters are in tests/integration/test_input_fits.py.
"""

import bz2
import gzip
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.fit import _features
from pipeline.io import files, readers
from pipeline.io.files import FileUnreadable, match_input
from pipeline.io.ingest import FILES_REJECTED, ReadValidRows, _ReadAndValidateFn
from pipeline.io.layout import InputLayout, input_layout, unify_types
from pipeline.io.readers import parse_numbers, read_chunks
from pipeline.io.validation import check_chunk, conform
from transforms.core.errors import UserInputError

from helpers import ab_csv, tf_example, write_tfrecord

F = "__features__"


# ----------------------------------------------------------------------------- helpers


def _chunks(path, fmt, batch_rows=1000):
    return list(read_chunks(str(path), fmt, batch_rows))


def _check_all(path, fmt, features, layout):
    """Every chunk of `path` checked against `layout`: (valid rows as dicts, rejected records)."""
    valid, rejects = [], []
    for chunk in _chunks(path, fmt):
        checked = check_chunk(chunk, features, layout.passthrough, F)
        assert checked.n_read == (0 if checked.valid is None else checked.valid.num_rows) + len(
            checked.rejected
        )
        valid += [] if checked.valid is None else checked.valid.to_pylist()
        rejects += [json.loads(line) for line in checked.rejected]
    return valid, rejects


# ----------------------------------------------------------------------------- layout: all files


def test_layout_reads_every_file_and_skips_empty_ones(tmp_path):
    """A 0-byte, a header-only and a zero-row first shard do not decide (or fail) anything;
    the union of the headers decides the columns, in order of first appearance."""
    (tmp_path / "a.csv").write_text("")
    (tmp_path / "b.csv").write_text("id,x\n")
    (tmp_path / "c.csv").write_text("id,x\n1,1.5\n2,2.5\n")
    (tmp_path / "d.csv").write_text("id,y,x\n3,7,3.5\n")
    layout = input_layout(str(tmp_path / "*.csv"))
    assert layout.schema.names == ["id", "x", "y"]
    assert layout.numeric == ["id", "x", "y"]  # y's values come from d.csv, x's from c.csv
    assert layout.passthrough.names == ["id", "x", "y"]
    assert "4 files" in layout.path

    pq.write_table(
        pa.table({"id": pa.array([], pa.int64()), "s": pa.array([], pa.string())}),
        tmp_path / "a.parquet",
    )
    pq.write_table(pa.table({"id": [1, 2], "s": [1.5, 2.5]}), tmp_path / "b.parquet")
    layout = input_layout(str(tmp_path / "*.parquet"))
    # the zero-row file's string type does not conflict with the rows' double
    assert layout.schema == pa.schema([("id", pa.int64()), ("s", pa.float64())])
    assert layout.numeric == ["id", "s"]


def test_empty_parquet_and_tfrecord_shards_have_no_rows(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"")
    pq.write_table(pa.table({"x": [1.0]}), tmp_path / "b.parquet")
    assert input_layout(str(tmp_path / "*.parquet")).numeric == ["x"]
    assert _chunks(tmp_path / "a.parquet", "parquet") == []
    (tmp_path / "a.tfrecord").write_bytes(b"")
    write_tfrecord(tmp_path / "b.tfrecord", [])
    write_tfrecord(tmp_path / "c.tfrecord", [tf_example(x=[1.0])])
    assert input_layout(str(tmp_path / "*.tfrecord")).numeric == ["x"]
    assert _chunks(tmp_path / "a.tfrecord", "tfrecord") == []


def test_no_column_anywhere_is_one_error(tmp_path):
    (tmp_path / "a.csv").write_text("")
    (tmp_path / "b.csv").write_text("")
    with pytest.raises(
        UserInputError,
        match="no column to read: the 2 files matching .* are all empty or unreadable",
    ):
        input_layout(str(tmp_path / "*.csv"))


def test_csv_numeric_kind_is_sampled_from_the_files_that_have_the_column(tmp_path):
    (tmp_path / "a.csv").write_text("id,name\n1,x\n2,y\n")
    (tmp_path / "b.csv").write_text("id,name,v\n3,z,\n4,w,\n")  # v: no value here
    (tmp_path / "c.csv").write_text("id,v\n5,1e3\n6, -2.5 \n7,oops\n")
    layout = input_layout(str(tmp_path / "*.csv"), id_column="id")
    assert layout.numeric == ["id", "v"]
    assert layout.passthrough == pa.schema([("id", pa.string())])


def test_missing_passthrough_column_is_null_missing_feature_is_a_reject(tmp_path):
    (tmp_path / "a.csv").write_text("id,x,note\n1,1.0,hello\n")
    (tmp_path / "b.csv").write_text("id,x\n2,2.0\n")
    (tmp_path / "c.csv").write_text("id,note\n3,bye\n")
    layout = input_layout(str(tmp_path / "*.csv"))
    valid, rejects = _check_all(tmp_path / "b.csv", "csv", ["x"], layout)
    assert valid == [{F: [2.0], "id": "2", "x": "2.0", "note": None}] and rejects == []
    valid, rejects = _check_all(tmp_path / "c.csv", "csv", ["x"], layout)
    assert valid == []
    assert [(r["row"], r["column"], r["reason"]) for r in rejects] == [
        (1, "x", "the file has no such column")
    ]


def test_type_unification():
    assert unify_types(pa.int32(), pa.int64()) == pa.int64()
    assert unify_types(pa.uint8(), pa.int16()) == pa.int64()
    assert unify_types(pa.int64(), pa.float32()) == pa.float64()
    assert unify_types(pa.float32(), pa.float64()) == pa.float64()
    assert unify_types(pa.string(), pa.large_string()) == pa.large_string()
    assert unify_types(pa.null(), pa.string()) == pa.string()
    assert unify_types(pa.list_(pa.int32()), pa.list_(pa.float64())) == pa.list_(pa.float64())
    assert unify_types(pa.int64(), pa.string()) is None
    assert unify_types(pa.float32(), pa.list_(pa.float32())) is None
    assert unify_types(
        pa.float32(), pa.large_list(pa.float32()), lists_take_scalars=True
    ) == pa.large_list(pa.float32())


def test_parquet_columns_unify_across_files_and_conflicts_name_both(tmp_path):
    pq.write_table(
        pa.table(
            {
                "id": pa.array([1], pa.int32()),
                "v": pa.array([1], pa.int64()),
                "s": pa.array(["a"], pa.string()),
            }
        ),
        tmp_path / "a.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "id": pa.array([2], pa.int64()),
                "v": pa.array([2.5]),
                "s": pa.array(["b"], pa.large_string()),
            }
        ),
        tmp_path / "b.parquet",
    )
    layout = input_layout(str(tmp_path / "*.parquet"))
    assert layout.passthrough == pa.schema(
        [("id", pa.int64()), ("v", pa.float64()), ("s", pa.large_string())]
    )
    valid, rejects = _check_all(tmp_path / "a.parquet", "parquet", ["v"], layout)
    assert rejects == [] and valid == [{F: [1.0], "id": 1, "v": 1.0, "s": "a"}]

    pq.write_table(pa.table({"id": ["x"], "v": [3.0]}), tmp_path / "c.parquet")
    with pytest.raises(UserInputError) as error:
        input_layout(str(tmp_path / "*.parquet"))
    message = str(error.value)
    assert "\n" not in message
    assert "column 'id' is int64 in " in message and "a.parquet" in message
    assert "but string in " in message and "c.parquet" in message
    # Not copied (another --id_column): not an error, but neither a default feature ...
    layout = input_layout(str(tmp_path / "*.parquet"), id_column="v")
    assert layout.numeric == ["v"]
    # ... and named as a feature, the same one line.
    with pytest.raises(UserInputError, match="feature 'id': column 'id' is int64 in"):
        _features("id", layout, "v")


def test_dictionary_column_passes_through_as_its_values(tmp_path):
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "kind": pd.Categorical(["u", "v", "u"])}).to_parquet(
        tmp_path / "a.parquet"
    )
    layout = input_layout(str(tmp_path / "*.parquet"))
    assert layout.passthrough.field("kind").type == pa.string()
    assert layout.numeric == ["x"]
    valid, _ = _check_all(tmp_path / "a.parquet", "parquet", ["x"], layout)
    assert [r["kind"] for r in valid] == ["u", "v", "u"]


def test_list_column_is_never_a_default_feature(tmp_path):
    pq.write_table(
        pa.table(
            {
                "id": [1, 2],
                "x": [1.0, 2.0],
                "vec": pa.array([[1.0], [2.0, 3.0]], pa.list_(pa.float64())),
            }
        ),
        tmp_path / "a.parquet",
    )
    layout = input_layout(str(tmp_path / "*.parquet"), id_column="id")
    assert layout.numeric == ["id", "x"]
    assert _features(None, layout, "id") == ["x"]
    # named explicitly: its rows with one value are clustered, the others rejected (as before)
    assert _features("x,vec", layout, "id") == ["x", "vec"]
    valid, rejects = _check_all(tmp_path / "a.parquet", "parquet", ["x", "vec"], layout)
    assert [r["id"] for r in valid] == [1]
    assert [(r["row"], r["column"], r["reason"]) for r in rejects] == [
        (2, "vec", "2 values where one is expected")
    ]


def test_a_list_column_of_width_l_is_l_features(tmp_path):
    """A vector (embedding) column: its width from the first list; NAME[i] features; a
    list of another length, a null element, NaN: rejected with the reason; a null list is
    missing (imputed with impute)."""
    vec = pa.array(
        [[1.0, 2.0, 3.0], [4.0, 5.0], None, [1.0, None, 2.0], [1.0, float("nan"), 0.0], [0, 1, 2]],
        pa.list_(pa.float32()),
    )
    pq.write_table(pa.table({"id": list(range(1, 7)), "vec": vec}), tmp_path / "a.parquet")
    layout = input_layout(str(tmp_path / "*.parquet"), id_column="id")
    features = _features("vec", layout, "id")
    assert features == ["vec[0]", "vec[1]", "vec[2]"]
    valid, rejects = _check_all(tmp_path / "a.parquet", "parquet", features, layout)
    assert [r["id"] for r in valid] == [1, 6]
    assert [(r["row"], r["column"], r["reason"]) for r in rejects] == [
        (2, "vec", "2 values where 3 are expected"),
        (3, "vec", "missing value"),
        (4, "vec", "null element"),
        (5, "vec", "NaN"),
    ]
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(8.0)), 4)
    pq.write_table(pa.table({"id": [1, 2], "e": fixed}), tmp_path / "b.parquet")
    layout = input_layout(str(tmp_path / "b.parquet"), id_column="id")
    assert _features("e", layout, "id") == [f"e[{i}]" for i in range(4)]


def test_features_messages_name_the_input(tmp_path):
    when = pa.array([1], pa.timestamp("s"))
    pq.write_table(pa.table({"x": [1.0], "name": ["a"], "when": when}), tmp_path / "a.parquet")
    layout = input_layout(str(tmp_path / "*.parquet"))
    with pytest.raises(UserInputError, match=r"unknown feature 'zz': .*a\.parquet"):
        _features("x,zz", layout, None)
    with pytest.raises(UserInputError, match="feature 'when' .* is neither numbers nor text"):
        _features("x,when", layout, None)
    assert _features("x,name", layout, None) == ["x", "name"]  # text: a category


# ----------------------------------------------------------------------------- CSV text


def test_bom_is_stripped_and_duplicate_header_is_an_error(tmp_path):
    (tmp_path / "a.csv").write_text("\ufeffid,x\n1,2\n", encoding="utf-8")
    assert readers.csv_header(str(tmp_path / "a.csv")) == ["id", "x"]
    assert input_layout(str(tmp_path / "a.csv"), id_column="id").passthrough.names == ["id"]
    (tmp_path / "b.csv").write_text("id,x,x\n1,2,3\n")
    with pytest.raises(UserInputError) as error:
        input_layout(str(tmp_path / "*.csv"))
    assert str(error.value) == f"{tmp_path / 'b.csv'}: the header names column 'x' twice"


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_compressed_csv_reads_like_plain_csv(tmp_path, suffix, compress):
    path = tmp_path / f"data.csv{suffix}"
    path.write_bytes(compress("\ufeffid,x\n1,1.5\n2,2,9\n3,3.5\n".encode("utf-8")))
    assert files.format_from_path(str(path)) == "csv"
    (chunk,) = _chunks(path, "csv")
    assert chunk.batch.to_pylist() == [{"id": "1", "x": "1.5"}, {"id": "3", "x": "3.5"}]
    assert chunk.rows.tolist() == [1, 3]
    assert [(r, why) for r, _, why in chunk.unparsed] == [(2, "expected 2 fields, found 3")]


def test_corrupt_compressed_csv_is_the_files_error_not_unreadable(tmp_path):
    """It opens: its content is wrong, which stops the job as a corrupt Parquet file does."""
    (tmp_path / "a.csv.gz").write_bytes(b"id,x\n1,2\n")  # not gzip
    with pytest.raises(UserInputError, match=r"cannot read csv file .*a\.csv\.gz") as error:
        input_layout(str(tmp_path / "a.csv.gz"))
    assert not isinstance(error.value, FileUnreadable)


def test_cell_larger_than_the_block_is_read(tmp_path, monkeypatch):
    """The block grows (the file is read again from where it got to): no row lost or repeated."""
    monkeypatch.setattr(readers, "_CSV_BLOCK_BYTES", 1 << 12)
    big = "y" * (100_000)
    lines = ["id,x,note"] + [f"{i},{i},n{i}" for i in range(1, 200)]
    lines[150] = f"150,150,{big}"
    lines.insert(120, "bad,row,with,fields")
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    chunks = _chunks(tmp_path / "a.csv", "csv", batch_rows=64)
    rows = np.concatenate([c.rows for c in chunks]).tolist()
    assert rows == [r for r in range(1, 201) if r != 120]
    assert [u[0] for c in chunks for u in c.unparsed] == [120]
    notes = {
        int(i): n
        for c in chunks
        for i, n in zip(c.batch.column("id").to_pylist(), c.batch.column("note").to_pylist())
    }
    assert notes[150] == big and notes[199] == "n199" and len(notes) == 199

    monkeypatch.setattr(readers, "_CSV_MAX_BLOCK_BYTES", 1 << 14)
    with pytest.raises(UserInputError, match=r"a\.csv, row .*: a CSV record larger than"):
        _chunks(tmp_path / "a.csv", "csv")


def test_number_grammar():
    text = pa.array(
        [
            "1",
            "-2.5",
            "+.5",
            "5.",
            "1e3",
            "1E-2",
            "nan",
            "-inf",
            "Infinity",
            "1_000",
            "\u0661\u0662\u0663",
            "0x10",
            "1,5",
            "\uff11",
            None,
        ]
    )
    values, non_numeric = parse_numbers(text)
    got = values.to_pylist()
    assert got[:6] == [1.0, -2.5, 0.5, 5.0, 1000.0, 0.01]
    assert np.isnan(got[6]) and got[7] == -np.inf and got[8] == np.inf
    assert got[9:] == [None] * 6
    assert non_numeric.tolist() == [False] * 9 + [True] * 5 + [False]


def test_csv_rows_with_non_decimal_numbers_are_rejected(tmp_path):
    (tmp_path / "a.csv").write_text(
        "id,x\n1, 2.5 \n2,1_000\n3,\u0661\u0662\u0663\n4,nan\n5,inf\n6,\n7,-1e2\n", encoding="utf-8"
    )
    layout = input_layout(str(tmp_path / "a.csv"), id_column="id")
    valid, rejects = _check_all(tmp_path / "a.csv", "csv", ["x"], layout)
    assert [(r["id"], r[F]) for r in valid] == [("1", [2.5]), ("7", [-100.0])]
    assert [(r["row"], r["column"], r["reason"]) for r in rejects] == [
        (2, "x", "non-numeric value '1_000'"),
        (3, "x", "non-numeric value '\u0661\u0662\u0663'"),
        (4, "x", "NaN"),
        (5, "x", "infinite value"),
        (6, "x", "empty value"),
    ]


# ----------------------------------------------------------------------------- tf.Example


def test_tfrecord_mixed_kinds_are_numbers_and_bytes_rows_are_rejected(tmp_path):
    path = tmp_path / "a.tfrecord"
    write_tfrecord(
        path,
        [
            tf_example(id=[b"a"], x=[1.5]),
            tf_example(id=[b"b"], x=[2]),
            tf_example(id=[b"c"], x=[b"z"]),
            tf_example(id=[b"d"], x=[3.5]),
            tf_example(id=[b"e"], x=[4]),
            tf_example(id=[b"f"]),
        ],
    )
    layout = input_layout(str(path), id_column="id")
    assert layout.numeric == ["x"]
    assert layout.passthrough == pa.schema([("id", pa.large_binary())])
    valid, rejects = _check_all(path, "tfrecord", ["x"], layout)
    assert sorted((r["id"], r[F]) for r in valid) == [
        (b"a", [1.5]),
        (b"b", [2.0]),
        (b"d", [3.5]),
        (b"e", [4.0]),
    ]
    assert sorted((r["row"], r["column"], r["reason"]) for r in rejects) == [
        (3, "x", "value of type large_binary, not a number"),
        (6, "x", "missing value"),
    ]


def test_tfrecord_passthrough_scalar_in_layout_with_lists_later(tmp_path):
    """The layout sampled only single values; rows holding several are rejected naming the
    column, rows holding none pass with a null."""
    path = tmp_path / "a.tfrecord"
    records = [tf_example(x=[float(i)], tag=[i]) for i in range(5)]
    records += [tf_example(x=[9.0], tag=[1, 2]), tf_example(x=[8.0], tag=[])]
    write_tfrecord(path, records)
    layout = InputLayout(
        str(path),
        "tfrecord",
        None,
        ["x", "tag"],
        pa.schema([("x", pa.float32()), ("tag", pa.int64())]),
        [str(path)],
    )
    valid, rejects = _check_all(path, "tfrecord", ["x"], layout)
    assert [r["tag"] for r in valid] == [0, 1, 2, 3, 4, None]
    assert [(r["row"], r["column"], r["reason"]) for r in rejects] == [
        (6, "tag", "2 values where one is expected")
    ]


def test_conform_casts_per_row_where_it_must():
    values, bad, why = conform(pa.array([1, 2**63, None], pa.uint64()), pa.int64())
    assert values.to_pylist() == [1, None, None] and bad.tolist() == [1]
    assert why[0].startswith("value does not fit type int64")
    values, bad, why = conform(pa.array([1.5, None]), pa.large_binary())
    assert bad.tolist() == [0] and why[0] == "a value of type double where large_binary is expected"
    values, bad, _ = conform(pa.array([1.5, None], pa.float32()), pa.large_list(pa.float32()))
    assert values.to_pylist() == [[1.5], None] and bad.size == 0


def test_relative_patterns_match_against_the_current_directory(tmp_path, monkeypatch):
    """A bare relative glob matches as './glob' does (Beam's alone matched nothing), and
    the files come back absolute, as the workers of any runner can open them."""
    (tmp_path / "sub").mkdir()
    for name in ("part-0.csv", "part-1.csv", "sub/part-2.csv"):
        (tmp_path / name).write_text(ab_csv(2))
    monkeypatch.chdir(tmp_path)
    top = [str(tmp_path / "part-0.csv"), str(tmp_path / "part-1.csv")]
    for pattern in ("part-*.csv", "./part-*.csv", "part-?.csv"):
        assert match_input(pattern) == top, pattern
    assert match_input("sub/*.csv") == [str(tmp_path / "sub" / "part-2.csv")]
    assert match_input("part-1.csv") == [top[1]]
    assert input_layout("part-*.csv").files == top
    with pytest.raises(UserInputError, match=r"no file matches --input 'nope-\*\.csv'$"):
        match_input("nope-*.csv")


# ----------------------------------------------------------------------------- unreadable files


def test_dangling_link_is_matched_and_reported(with_dangling_link):
    d = with_dangling_link
    assert match_input(str(d / "*.csv")) == [str(d / "a.csv"), str(d / "b.csv")]
    assert match_input(str(d / "b.csv")) == [str(d / "b.csv")]
    (d / "sub").mkdir()
    os.symlink(d / "nowhere.csv", d / "sub" / "c.csv")
    assert match_input(str(d / "*" / "*.csv")) == [str(d / "sub" / "c.csv")]
    assert match_input(str(d / "*.csv")) == [str(d / "a.csv"), str(d / "b.csv")]
    with pytest.raises(UserInputError, match=r"cannot read file .*b\.csv: FileNotFoundError"):
        input_layout(str(d / "*.csv"), on_invalid="fail")
    assert input_layout(str(d / "*.csv")).schema.names == ["id", "a", "b"]
    with pytest.raises(FileUnreadable):
        _chunks(d / "b.csv", "csv")
    for fmt in ("parquet", "tfrecord"):
        with pytest.raises(FileUnreadable):
            _chunks(d / "b.csv", fmt)


def test_read_fn_rejects_an_unreadable_file_whole_or_fails(tmp_path):
    path = str(tmp_path / "vanished.csv")
    fn = _ReadAndValidateFn("csv", ["a"], pa.schema([]), "reject", 100)
    outputs = list(fn.process(path))
    (record,) = [o.value for o in outputs if o.tag == "rejected"]
    (counts,) = [o.value for o in outputs if o.tag == "counts"]
    record = json.loads(record)
    assert (record["file"], record["row"], record["column"]) == (path, None, None)
    assert record["reason"].startswith("cannot read file: FileNotFoundError")
    assert counts.tolist()[:4] == [0, 0, 0, 1] and not counts[4:].any() and FILES_REJECTED == 3
    fn = _ReadAndValidateFn("csv", ["a"], pa.schema([]), "fail", 100)
    with pytest.raises(
        UserInputError, match=r"cannot read file .*vanished\.csv.*--on_invalid=fail"
    ):
        list(fn.process(path))


def test_read_valid_rows_counts_files_rejected(with_dangling_link):
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.util import assert_that, equal_to

    d = with_dangling_link
    (d / "c.csv").write_text("id,a,b\n100,1,oops\n")
    passthrough = pa.schema([("id", pa.string())])
    with beam.Pipeline(runner=fn_runner.FnApiRunner()) as p:
        rows = p | ReadValidRows(str(d / "*.csv"), "csv", ["a", "b"], passthrough)
        assert_that(
            rows["counts"] | beam.Map(lambda c: (c.dtype.name, c.tolist())),
            equal_to([("int64", [9, 8, 1, 1, 0, 0])]),
            label="Counts",
        )
        reasons = rows["rejected"] | beam.Map(lambda line: json.loads(line)["reason"][:22])
        assert_that(
            reasons,
            equal_to(["cannot read file: File", "non-numeric value 'oop"]),
            label="Rejected",
        )


def test_read_valid_rows_reads_the_files_matched_before_and_reports_one_gone(tmp_path):
    """Given the driver's list, a file gone since it was matched is a rejected file, and a
    file that appeared since is not read: the job reads what its layout was built from."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.util import assert_that, equal_to

    (tmp_path / "a.csv").write_text("a\n1\n2\n")
    (tmp_path / "late.csv").write_text("a\n3\n")
    files = [str(tmp_path / "a.csv"), str(tmp_path / "gone.csv")]
    with beam.Pipeline(runner=fn_runner.FnApiRunner()) as p:
        rows = p | ReadValidRows(str(tmp_path / "*.csv"), "csv", ["a"], pa.schema([]), files=files)
        assert_that(rows["counts"] | beam.Map(lambda c: c.tolist()[:4]), equal_to([[2, 2, 0, 1]]))
        assert_that(
            rows["rejected"] | beam.Map(lambda line: json.loads(line)["file"]),
            equal_to([files[1]]),
            label="Rejected",
        )
