"""NNCF INT8: the graph is quantized, the postprocessing is not, and INT8 agrees with FP32.

On the tiny random-data model mAP against the real boxes is ~0 for every precision, so the
accuracy check here is *agreement*: INT8 detections scored (COCO mAP@0.5) against the FP32 IR's
own detections as ground truth must reach 0.8 (measured: ~0.97), and the val mAP@0.5 of INT8 must
be within 0.05 of FP32's (weak on this model). The real accuracy drop is measured on the dice
set by ``benchmarks/inference.py``.
"""

from __future__ import annotations

import json

import openvino as ov
import pytest

from otx_nld.cli import main
from otx_nld.data.dataset import Box
from otx_nld.deploy.inference import OpenVINOPredictor
from otx_nld.deploy.quantize import count_ops, postprocessing_nodes
from otx_nld.training.evaluate import coco_map


def test_int8_graph(exported, quantized):
    model = ov.Core().read_model(quantized / "model.xml")
    fq = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    assert len(fq) >= 10
    assert any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
               for op in model.get_ordered_ops())  # int8 weights
    # Nothing after the network is quantized: no FakeQuantize feeds a postprocessing node.
    post = set(postprocessing_nodes(model))
    for op in fq:
        consumers = {t.get_node().get_friendly_name() for t in op.output(0).get_target_inputs()}
        assert not consumers & post, (op.get_friendly_name(), consumers & post)
    # The NMS is still there, in float.
    assert model.get_rt_info(["model_info", "precision"]).astype(str) == "INT8"
    assert "calibration images" in model.get_rt_info(["model_info", "quantization"]).astype(str)
    # At run time the convolutions execute in int8.
    compiled = OpenVINOPredictor(quantized / "model.xml").compiled
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str)
                  for op in compiled.get_runtime_model().get_ordered_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    assert precisions & {"i8", "u8"}, precisions
    report = json.loads((quantized / "quantization.json").read_text())
    assert report["calibration_images"] == 8 and report["fake_quantize_nodes"] == len(fq)
    assert report["ignored_postprocessing_nodes"] > 100
    assert count_ops(ov.Core().read_model(exported / "model.xml"), "FakeQuantize") == 0


def test_int8_agrees_with_fp32(tiny, exported, quantized):
    fp32 = OpenVINOPredictor(exported / "model.xml")
    int8 = OpenVINOPredictor(quantized / "model.xml")
    ref, got = fp32.predict_dataset(tiny.dataset), int8.predict_dataset(tiny.dataset)
    assert all(len(p.boxes) for p in got.values())
    # FP32's detections as ground truth (zero-area ones, clipped in the letterbox padding, cannot be boxes).
    pseudo = tiny.dataset.with_items(
        item.replace(boxes=tuple(Box.from_xyxy(*b.tolist(), int(label), k + 1)
                                 for k, (b, label) in enumerate(zip(ref[item.key].boxes, ref[item.key].labels))
                                 if b[2] - b[0] > 0.5 and b[3] - b[1] > 0.5))
        for item in tiny.dataset.items)
    assert pseudo.num_boxes > 100
    assert coco_map(pseudo, got).map50 >= 0.8
    val = tiny.dataset.subset("val")
    assert abs(int8.evaluate(val).map50 - fp32.evaluate(val).map50) <= 0.05


def test_accuracy_control(tiny, exported, tmp_path, capsys):
    out = tmp_path / "int8-ac"
    assert main(["optimize", str(exported / "model.xml"), "--data", str(tiny.data), "--samples", "4",
                 "--max-accuracy-drop", "1.0", "-o", str(out)]) == 0
    assert "accuracy control" in capsys.readouterr().out
    report = json.loads((out / "quantization.json").read_text())
    assert report["accuracy_control"] == {"metric": "mAP@0.5", "validation_subset": "val",
                                          "validation_images": 4, "max_drop": 1.0}
    assert count_ops(ov.Core().read_model(out / "model.xml"), "FakeQuantize") > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["optimize", "{int8}", "--data", "{data}", "-o", "{tmp}/out"], "already quantized"),
     (["optimize", "{tmp}/missing.xml", "--data", "{data}", "-o", "{tmp}/out"], "model file does not exist"),
     (["optimize", "{fp32}", "--data", "{data}", "--subset", "nope", "-o", "{tmp}/out"], "no 'nope' subset"),
     (["optimize", "{fp32}", "--data", "{data}", "--max-accuracy-drop", "2", "-o", "{tmp}/out"],
      "expected a rate in [0, 1]")],
)
def test_optimize_bad_input(tiny, exported, quantized, tmp_path, capsys, argv, message):
    argv = [a.format(int8=quantized / "model.xml", fp32=exported / "model.xml", data=tiny.data, tmp=tmp_path)
            for a in argv]
    with pytest.raises(SystemExit) if "--max-accuracy-drop" in argv else _no_raise() as caught:
        code = main(argv)
    if caught is None:
        assert code == 2
    else:
        assert caught.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
