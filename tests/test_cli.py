"""The `otx-nld` command line: the tutorial's data pipeline and bad-input behaviour."""

import json
import subprocess
import sys

import pytest

from otx_nld.cli import main
from tests.factories import write_yolo_loose


@pytest.fixture(scope="module")
def dice(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "d6"
    assert main(["data", "synth-dice", str(out), "--images", "20", "--seed", "1"]) == 0
    return out


def _listing(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def test_tutorial_pipeline(dice, tmp_path, capsys):
    split, noisy = tmp_path / "d6s", tmp_path / "d6n"
    assert main(["data", "split", str(dice), str(split), "--splits", "train:0.5,val:0.2,test:0.3"]) == 0
    assert main(["data", "noise", str(split), str(noisy), "--subset", "train", "--flip", "4"]) == 0
    truth = json.loads((noisy / "noise_truth.json").read_text())
    assert truth["counts"]["flip"] == 4 and all(c["subset"] == "train" for c in truth["changes"])
    capsys.readouterr()
    assert main(["data", "info", str(noisy), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "datumaro" and info["unique_ann_ids"]
    assert {s: info["subsets"][s]["items"] for s in info["subsets"]} == {"train": 10, "val": 4, "test": 6}
    assert info["labels"] == [f"dice{k}" for k in range(1, 7)]
    assert main(["data", "info", str(noisy)]) == 0
    text = capsys.readouterr().out
    assert "train" in text and "total" in text and "dice6" in text


def test_convert_and_gallery(dice, tmp_path, capsys):
    coco = tmp_path / "coco"
    assert main(["data", "convert", str(dice), str(coco), "--to", "coco"]) == 0
    assert (coco / "annotations" / "instances_default.json").is_file()
    png = tmp_path / "g.png"
    assert main(["data", "gallery", str(coco), "-o", str(png), "--ann-ids", "1", "2"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["data", "info", "{tmp}/missing"], "does not exist"),
     (["data", "split", "{dice}", "{tmp}/o", "--splits", "train:0.5,val:0.6"], "sum to 1"),
     (["data", "noise", "{dice}", "{tmp}/o", "--subset", "train", "--flip", "1"], "no subset 'train'"),
     (["data", "noise", "{dice}", "{tmp}/o", "--subset", "default"], "no change requested"),
     (["data", "convert", "{dice}", "{tmp}/o", "--to", "yolo_loose", "--from", "coco"], "instances"),
     ],
)
def test_bad_input_exits_2_and_writes_nothing(dice, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, dice=dice) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("otx-nld: error: ") and message in err
    assert not (tmp_path / "o").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temp dirs either


@pytest.mark.parametrize(
    "argv",
    [["data", "noise", "SRC", "OUT", "--flip-rate", "2"],
     ["data", "noise", "SRC", "OUT", "--flip", "-1"],
     ["data", "noise", "SRC", "OUT", "--flip", "1", "--flip-rate", "0.1"],
     ["data", "synth-dice", "OUT", "--images", "0"],
     ["data", "convert", "SRC", "OUT", "--to", "pascal"],
     ["data", "split", "SRC", "OUT"]],
)
def test_bad_option_values_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_malformed_yolo_line_names_file_and_line(tmp_path, capsys):
    src = write_yolo_loose(tmp_path / "src", {"a": ["0 0.5 0.5 0.2 0.2", "1 0.5 0.5 0.2"]})
    out = tmp_path / "out"
    assert main(["data", "convert", str(src), str(out), "--to", "coco"]) == 2
    err = capsys.readouterr().err
    assert "a.txt:2:" in err
    assert not out.exists()
    # --skip-invalid reports the skip and converts the rest.
    assert main(["data", "convert", str(src), str(out), "--to", "coco", "--skip-invalid"]) == 0
    assert "a.txt:2:" in capsys.readouterr().err
    coco = json.loads((out / "annotations" / "instances_default.json").read_text())
    assert len(coco["annotations"]) == 1


def test_existing_output_is_not_touched(dice, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["data", "convert", str(dice), str(out), "--to", "coco"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert _listing(out) == ["keep.txt"]
    assert main(["data", "convert", str(dice), str(out), "--to", "coco", "--overwrite"]) == 0
    assert "keep.txt" not in _listing(out)


def test_module_entry_point_exit_code(tmp_path):
    result = subprocess.run([sys.executable, "-m", "otx_nld", "data", "info", str(tmp_path / "nope")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and result.stdout == ""


@pytest.fixture(scope="module")
def split_dice(dice, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-split") / "d6s"
    assert main(["data", "split", str(dice), str(out), "--splits", "train:0.5,val:0.2,test:0.3"]) == 0
    return out


def test_train_then_eval(split_dice, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "test_tiny", "--train-data", str(split_dice), "--val-data", str(split_dice),
                 "-o", str(run), "--set", "train.epochs=1", "--set", "data.input_size=[64, 96]"]) == 0
    assert "trained 1 epochs" in capsys.readouterr().out
    assert (run / "noisy_label_detection" / "annotations" / "train.json").is_file()
    report = tmp_path / "metrics.json"
    assert main(["eval", str(run / "checkpoints" / "best.pt"), "--data", str(split_dice), "-o", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert metrics["subset"] == "test" and metrics["num_images"] == 6 and 0 <= metrics["map50"] <= 1
    assert "mAP@0.5" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["train", "test_tiny", "--train-data", "{data}", "-o", "{tmp}/r", "--set", "optimizer.lrr=1"],
      "unknown key 'optimizer.lrr'"),
     (["train", "test_tiny", "--train-data", "{data}", "-o", "{tmp}/r", "--set", "train.epochs=zero"],
      "train.epochs: Input should be a valid integer"),
     (["train", "nope.yaml", "--train-data", "{data}", "-o", "{tmp}/r"], "recipe file does not exist"),
     (["train", "test_tiny", "--train-data", "{tmp}/none", "-o", "{tmp}/r"], "does not exist"),
     (["eval", "{tmp}/missing.pt", "--data", "{data}"], "checkpoint does not exist")],
)
def test_train_and_eval_bad_input(split_dice, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, data=split_dice) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
