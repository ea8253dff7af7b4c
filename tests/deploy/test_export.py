"""Export: IR + ONNX files, graph content (NMS inside, static input, named outputs), metadata, FP16."""

from __future__ import annotations

import json

import numpy as np
import onnx
import openvino as ov
import pytest

from otx_nld.cli import main
from tests.deploy.conftest import INPUT_SIZE


def _all_op_types(model) -> set[str]:
    """Op types of a model, ``If`` bodies included."""
    types = set()
    for op in model.get_ordered_ops():
        types.add(op.get_type_name())
        if op.get_type_name() == "If":
            for body in (op.get_function(0), op.get_function(1)):
                types |= _all_op_types(body)
    return types


def _rt(model, key: str) -> str:
    return model.get_rt_info(["model_info", key]).astype(str)


def test_ir_graph_and_metadata(tiny, exported):
    model = ov.Core().read_model(exported / "model.xml")
    assert [list(p.get_partial_shape().to_shape()) for p in model.inputs] == [[1, 3, *INPUT_SIZE]]
    assert model.inputs[0].get_any_name() == "image"
    assert [p.get_any_name() for p in model.outputs] == ["boxes", "scores", "labels"]
    assert str(model.outputs[0].get_partial_shape()) == "[..100,4]"  # K dynamic, <= detections_per_image
    assert model.outputs[2].get_element_type() == ov.Type.i64
    types = _all_op_types(model)
    assert {"NonMaxSuppression", "TopK", "Exp"} <= types  # decoding and NMS are in the graph
    # FP32 weights by default: no f16 constant anywhere.
    assert not any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16
                   for op in model.get_ordered_ops())

    assert _rt(model, "format") == "otx-nld-atss"
    assert json.loads(_rt(model, "labels")) == list(tiny.dataset.labels)
    assert _rt(model, "input_size") == f"{INPUT_SIZE[0]} {INPUT_SIZE[1]}"
    assert _rt(model, "mean_values") == "123.675 116.28 103.53"
    assert _rt(model, "scale_values") == "58.395 57.12 57.375"
    assert _rt(model, "color_order") == "RGB" and _rt(model, "reverse_input_channels") == "False"
    assert _rt(model, "resize_type") == "letterbox" and _rt(model, "pad_value") == "0"
    assert float(_rt(model, "confidence_threshold")) == pytest.approx(0.001)
    assert float(_rt(model, "iou_threshold")) == pytest.approx(0.6)
    assert _rt(model, "detections_per_image") == "100"
    assert _rt(model, "recipe") == "test_tiny" and _rt(model, "precision") == "FP32"
    assert "xyxy" in _rt(model, "output_layout")


def test_onnx_file_checks_and_carries_metadata(tiny, exported):
    path = exported / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "labels"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["format"] == "otx-nld-atss" and json.loads(props["labels"]) == list(tiny.dataset.labels)
    assert props["input_size"] == f"{INPUT_SIZE[0]} {INPUT_SIZE[1]}"


def test_fp16_export(tiny, exported, tmp_path):
    out = tmp_path / "fp16"
    assert main(["export", str(tiny.checkpoint), "-o", str(out), "--fp16"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.bin", "model.xml"]
    assert (out / "model.bin").stat().st_size < 0.7 * (exported / "model.bin").stat().st_size
    model = ov.Core().read_model(out / "model.xml")
    assert _rt(model, "precision") == "FP16"
    assert any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16
               for op in model.get_ordered_ops())
    from otx_nld.deploy.inference import load_predictor

    image = tiny.dataset.items[0].image_path
    a, b = load_predictor(exported / "model.xml").predict(image), load_predictor(out / "model.xml").predict(image)
    assert len(b.boxes) > 0 and np.abs(a.scores[:5] - b.scores[:5]).max() < 1e-2


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["export", "{tmp}/missing.pt", "-o", "{tmp}/out"], "checkpoint does not exist"),
     (["export", "{ckpt}", "-o", "{tmp}/out", "--format", "onnx", "--fp16"], "--fp16 applies to the OpenVINO IR"),
     (["export", "{bad}", "-o", "{tmp}/out"], "cannot read checkpoint")],
)
def test_export_bad_input_exits_2_and_writes_nothing(tiny, tmp_path, capsys, argv, message):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    argv = [a.format(tmp=tmp_path, ckpt=tiny.checkpoint, bad=tmp_path / "bad.pt") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("otx-nld: error: ") and message in err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dir left


def test_export_refuses_non_empty_output(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(tiny.checkpoint), "-o", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
