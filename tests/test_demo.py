"""The main job, end to end on a tiny budget (tiny recipe, few images)."""

import json

from otx_nld.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "-o", str(out), "--images", "16", "--flip", "2", "--recipe", "test_tiny",
            "--set", "train.epochs=2", "--set", "data.input_size=[96, 128]"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Accuracy = " in printed and "Recall = " in printed
    for name in ("d6-dice/obj.names", "d6-dice-split/annotations/train.json", "d6-dice-noisy/noise_truth.json",
                 "noisy_boxes.png", "run/checkpoints/best.pt", "run/test_metrics.json",
                 "run/noisy_label_detection/annotations/train.json", "report/report.html",
                 "report/candidates.csv", "summary.json", "deploy/fp32/model.xml", "deploy/int8/model.xml",
                 "deploy/benchmark.json", "deploy/benchmark.md"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["top_k"] == 2 and 0 <= summary["accuracy"] <= 1 and 0 <= summary["test_map50"] <= 1
    truth = json.loads((out / "d6-dice-noisy" / "noise_truth.json").read_text())
    assert truth["counts"]["flip"] == 2
    # A second run into the same directory needs --overwrite.
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
