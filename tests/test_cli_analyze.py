"""`otx-nld analyze`: the report from a run directory, the tutorial's numbers, bad input."""

from __future__ import annotations

import json

import pytest

from otx_nld.cli import main
from tests.analysis.test_report import LOUD_ANN, WEIRD_ID, build_run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return build_run(tmp_path_factory.mktemp("cli_analyze"))


def test_analyze_run_with_truth(setup, tmp_path, capsys):
    run, truth, _ = setup
    out = tmp_path / "report"
    assert main(["analyze", str(run), "-o", str(out), "--truth", str(truth), "--top-k", "4"]) == 0
    captured = capsys.readouterr()
    assert "top 4 candidates:" in captured.out
    assert WEIRD_ID in captured.out.splitlines()[3] and "flip (was " in captured.out
    assert "Accuracy = " in captured.out and "% and Recall = " in captured.out and "AUROC" in captured.out
    assert f"report: {out / 'report.html'}" in captured.out
    assert (out / "report.html").is_file() and (out / "metrics.json").is_file()
    candidates = json.loads((out / "candidates.json").read_text())["candidates"]
    assert candidates[0]["ann_id"] == LOUD_ANN and candidates[0]["noise_kind"] == "flip"


def test_analyze_options(setup, tmp_path, capsys):
    run, _, _ = setup
    out = tmp_path / "report"
    assert main(["analyze", str(run / "stats"), "-o", str(out), "--loss", "cls+bbox", "--score", "late_mean",
                 "--alpha", "0.01", "--top-k", "2"]) == 0
    text = capsys.readouterr().out
    assert "score late_mean on cls+bbox (alpha 0.01)" in text and "Accuracy" not in text
    data = json.loads((out / "candidates.json").read_text())
    assert (data["score"], data["tracking_loss_type"], data["alpha"], len(data["candidates"])) == \
        ("late_mean", "cls+bbox", 0.01, 2)
    # An existing report is replaced only with --overwrite.
    assert main(["analyze", str(run), "-o", str(out), "--top-k", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["analyze", str(run), "-o", str(out), "--top-k", "1", "--overwrite"]) == 0


@pytest.mark.parametrize(("argv", "message"), [
    (["{tmp}/missing"], "does not exist"),
    (["{run}", "--truth", "{tmp}/bad.json"], "invalid JSON"),
    (["{run}", "--truth", "{tmp}/missing.json"], "truth manifest does not exist"),
    (["{run}", "--score", "nope"], "score: unknown 'nope'"),
    (["{run}", "--loss", "nope"], "not in the statistics"),
    (["{run}", "--alpha", "2"], "alpha must be in (0, 1]"),
    (["{run}", "--data", "{tmp}/missing"], "does not exist"),
    (["{tmp}"], "no loss statistics here"),
])
def test_bad_input_exits_2_and_writes_nothing(setup, tmp_path, capsys, argv, message):
    run, _, _ = setup
    (tmp_path / "bad.json").write_text("{not json")
    out = tmp_path / "out" / "report"
    argv = ["analyze", *(a.format(tmp=tmp_path, run=run) for a in argv), "-o", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "otx-nld: error: " in err and message in err
    assert not out.exists()


def test_bad_top_k_is_a_usage_error(setup, tmp_path, capsys):
    run, _, _ = setup
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(run), "-o", str(tmp_path / "r"), "--top-k", "0"])
    assert exc.value.code == 2 and "positive integer" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
