"""`otx-nld infer`, `eval` on an IR, `benchmark`, and bad input: exit 2, one line, no partial output."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import openvino as ov
import pytest
import torch

from otx_nld.cli import main
from otx_nld.deploy.inference import OpenVINOPredictor
from otx_nld.errors import DatasetError


def _image_dir(tiny, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for item in tiny.dataset.items[:2] + tiny.dataset.items[-1:]:
        shutil.copy(item.image_path, images / f"{item.subset}_{item.id}.png")
    return images


def test_infer_ir_and_checkpoint(tiny, exported, tmp_path, capsys):
    images = _image_dir(tiny, tmp_path)
    preds, vis = tmp_path / "preds.json", tmp_path / "vis"
    assert main(["infer", str(exported / "model.xml"), str(images), "-o", str(preds), "--vis", str(vis),
                 "--vis-score", "0"]) == 0
    assert "3 images" in capsys.readouterr().out
    result = json.loads(preds.read_text())
    assert result["runtime"] == "openvino" and result["labels"] == list(tiny.dataset.labels)
    assert sorted(p.name for p in vis.iterdir()) == sorted(p.with_suffix(".png").name for p in images.iterdir())
    for record in result["images"]:
        assert record["detections"]
        for det in record["detections"]:
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= record["width"] and 0 <= y1 <= y2 <= record["height"]
            assert det["label_name"] == result["labels"][det["label"]]

    torch_preds = tmp_path / "torch.json"
    assert main(["infer", str(tiny.checkpoint), str(images / "val_img_003.png"), "-o", str(torch_preds)]) == 0
    expected = json.loads(torch_preds.read_text())["images"][0]
    got = next(r for r in result["images"] if r["image"].endswith("val_img_003.png"))
    assert len(expected["detections"]) == len(got["detections"])
    np.testing.assert_allclose([d["score"] for d in expected["detections"]],
                               [d["score"] for d in got["detections"]], atol=1e-3)

    sync = tmp_path / "sync.json"
    assert main(["infer", str(exported / "model.xml"), str(images), "-o", str(sync), "--mode", "sync"]) == 0
    assert json.loads(sync.read_text())["images"] == result["images"]


def test_eval_accepts_ir_with_the_same_output(tiny, exported, tmp_path, capsys):
    reports = {}
    for name, model in (("pt", tiny.checkpoint), ("xml", exported / "model.xml")):
        assert main(["eval", str(model), "--data", str(tiny.data), "--subset", "val",
                     "-o", str(tmp_path / f"{name}.json")]) == 0
        reports[name] = (json.loads((tmp_path / f"{name}.json").read_text()), capsys.readouterr().out)
    (pt, pt_out), (xml, xml_out) = reports["pt"], reports["xml"]
    assert list(pt) == list(xml) and xml["checkpoint"].endswith("model.xml")
    assert xml["num_images"] == pt["num_images"] == 4
    assert xml["map50"] == pytest.approx(pt["map50"], abs=1e-3)
    assert pt_out.splitlines()[0].split(":")[0] == xml_out.splitlines()[0].split(":")[0] == "val"
    assert len(pt_out.splitlines()) == len(xml_out.splitlines())


def test_benchmark_cli(tiny, exported, quantized, tmp_path, capsys):
    out = tmp_path / "bench" / "result.json"
    assert main(["benchmark", str(tiny.checkpoint), str(exported / "model.xml"), str(quantized / "model.xml"),
                 "--data", str(tiny.data), "--subset", "val", "--warmup", "1", "--throughput-images", "8",
                 "--threads", "1", "-o", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| PyTorch eager FP32 |" in table and "| OpenVINO FP32 |" in table and "| OpenVINO INT8 |" in table
    result = json.loads(out.read_text())
    assert out.with_suffix(".md").read_text().startswith("4 images of subset `val`")
    assert [m["precision"] for m in result["models"]] == ["FP32", "FP32", "INT8"] and result["threads"] == 1
    assert "INFERENCE_NUM_THREADS=1" in result["models"][1]["throughput_mode"]
    for m in result["models"]:
        assert m["latency_ms_p50"] > 0 and m["latency_ms_p90"] >= m["latency_ms_p50"] and m["throughput_fps"] > 0
        assert m["size_mb"] > 0 and 0 <= m["map50"] <= 1
    assert result["models"][2]["size_mb"] < result["models"][1]["size_mb"]


# -- bad input -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_models(tiny, exported, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-models")
    (root / "corrupt.xml").write_text("<net><layers>this is not an IR")
    shutil.copy(exported / "model.xml", root / "nobin.xml")  # its .bin is missing
    conv = torch.nn.Conv2d(3, 3, 1).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace deprecation
        plain = ov.convert_model(conv, example_input=torch.zeros(1, 3, 64, 96), input=[1, 3, 64, 96])
    ov.save_model(plain, str(root / "foreign.xml"))  # a valid IR without our metadata
    return root


@pytest.mark.parametrize(
    ("model", "message"),
    [("missing.xml", "model file does not exist"),
     ("corrupt.xml", "cannot read OpenVINO model"),
     ("nobin.xml", "cannot read OpenVINO model"),
     ("foreign.xml", "not an otx-nld model")],
)
def test_bad_model_exits_2_without_output(tiny, bad_models, tmp_path, capsys, model, message):
    image = str(tiny.dataset.items[0].image_path)
    for argv in (["infer", str(bad_models / model), image, "-o", str(tmp_path / "preds.json"),
                  "--vis", str(tmp_path / "vis")],
                 ["eval", str(bad_models / model), "--data", str(tiny.data), "-o", str(tmp_path / "m.json")],
                 ["benchmark", str(bad_models / model), "--data", str(tiny.data), "-o", str(tmp_path / "b.json")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("otx-nld: error: ") and message in err and str(bad_models / model) in err
        assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(DatasetError, match=message):
        OpenVINOPredictor(bad_models / model)


def test_undecodable_image_names_the_file(tiny, exported, tmp_path, capsys):
    images = _image_dir(tiny, tmp_path)
    bad = images / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    for model in (exported / "model.xml", tiny.checkpoint):
        assert main(["infer", str(model), str(images), "-o", str(out / "preds.json"), "--vis", str(out / "vis")]) == 2
        err = capsys.readouterr().err
        assert f"{bad}: cannot decode image" in err
        assert not out.exists()
    assert main(["infer", str(exported / "model.xml"), str(tmp_path / "nope.jpg"), "-o", str(out / "p.json")]) == 2
    assert "nope.jpg: image file does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["infer", str(exported / "model.xml"), str(empty), "-o", str(out / "p.json")]) == 2
    assert "has no image files" in capsys.readouterr().err
    assert not out.exists()


def test_labels_mismatch_is_an_error(tiny, exported, tmp_path, capsys):
    from tests.factories import make_dataset

    other = make_dataset(2, 1, labels=("x", "y"), image_dir=tmp_path / "img").export(tmp_path / "other", "datumaro")
    assert main(["eval", str(exported / "model.xml"), "--data", str(other), "--subset", "default"]) == 2
    assert "differ from the model's" in capsys.readouterr().err
    assert main(["benchmark", str(exported / "model.xml"), "--data", str(other), "--subset", "default"]) == 2
    assert "differ" in capsys.readouterr().err
