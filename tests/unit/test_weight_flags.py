"""--weight_column's errors: one line and status 2 from the job's checks of its flags
(fit_spec, score_spec), before any pipeline is built. The weighted fits themselves are
in tests/integration/test_weights.py."""

import pytest

from pipeline.cli import main


@pytest.fixture()
def tiny_csv(tmp_path):
    path = tmp_path / "in.csv"
    text = "id,x,y,w,label\n" + "".join(
        f"{i},{i % 7}.5,{i % 3}.25,{i % 4},g{i}\n" for i in range(40)
    )
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--weight_column", "v"], "--weight_column 'v' is not a column of"),
        (["--weight_column", "label"], "--weight_column 'label' of"),
        (["--weight_column", "x", "--features", "x,y"], "--weight_column 'x' is also a feature"),
    ],
)
def test_a_bad_weight_column_is_one_line(extra, message, tiny_csv, tmp_path, capfd):
    argv = ["fit", "--input", tiny_csv, "--output", str(tmp_path / "out"), "--k", "2"]
    assert main(argv + extra) == 2
    lines = capfd.readouterr().err.strip("\n").splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_score_refuses_a_weight_column(tiny_csv, tmp_path, capfd):
    argv = ["score", "--model", str(tmp_path), "--input", tiny_csv, "--output", str(tmp_path / "o")]
    assert main(argv + ["--weight_column", "w"]) == 2
    assert "--weight_column is fit's" in capfd.readouterr().err


def test_the_weight_column_is_not_a_default_feature(tiny_csv):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.fit import fit_spec

    args = ["--input", tiny_csv, "--output", "o", "--k", "2", "--id_column", "id"]
    spec = fit_spec(PipelineOptions(args + ["--weight_column", "w"]))
    assert spec.features == ["x", "y"] and spec.weight_column == "w"
    assert fit_spec(PipelineOptions(args)).features == ["x", "y", "w"]
