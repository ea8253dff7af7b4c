"""Parity: the deployed models see the training preprocessing and give PyTorch's detections.

FP32 IR (``INFERENCE_PRECISION_HINT=f32``) and ONNX (run by OpenVINO) against eager PyTorch on the
same images, both aspect ratios (letterbox padding right and bottom): same number of detections,
each matched one-to-one with IoU >= 0.99, |score difference| <= 1e-3 and the same label.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from otx_nld.deploy.inference import OpenVINOPredictor, TorchPredictor, load_predictor, preprocess, read_image
from tests.deploy.conftest import assert_same_detections


@pytest.fixture(scope="module")
def torch_predictor(tiny):
    return TorchPredictor(tiny.checkpoint)


def test_preprocessing_equals_training_loader(tiny, exported, torch_predictor):
    from otx_nld.data.loader import DetectionDataset

    ir = OpenVINOPredictor(exported / "model.xml")
    assert ir.metadata.input_size == torch_predictor.metadata.input_size
    assert ir.metadata.mean == torch_predictor.metadata.mean and ir.metadata.std == torch_predictor.metadata.std
    loader = DetectionDataset(tiny.dataset, torch_predictor.recipe.data)
    for index in (0, len(tiny.dataset) - 1):  # a wide and a tall image
        expected, _, meta = loader[index]
        x, scale = preprocess(read_image(tiny.dataset.items[index].image_path), ir.metadata)
        assert scale == meta.scale
        assert torch.equal(torch.from_numpy(x[0]), expected)


@pytest.mark.parametrize("model", ["model.xml", "model.onnx"])
def test_fp32_openvino_matches_pytorch(tiny, exported, torch_predictor, model):
    ir = load_predictor(exported / model)
    assert ir.precision == "f32"
    for item in tiny.dataset.items:
        expected = torch_predictor.predict(item.image_path)
        got = ir.predict(item.image_path)
        assert_same_detections(expected, got)
        # Boxes come back in the original image's pixels.
        assert got.boxes[:, 2].max() <= item.width and got.boxes[:, 3].max() <= item.height


def test_async_queue_equals_sync(tiny, exported):
    ir = OpenVINOPredictor(exported / "model.xml", performance_hint="THROUGHPUT")
    paths = [item.image_path for item in tiny.dataset.items]
    many = ir.predict_many(paths, asynchronous=True, with_sizes=True)
    assert len(many) == len(paths)
    for path, item, (pred, size) in zip(paths, tiny.dataset.items, many):
        one = ir.predict(path)
        assert size == (item.height, item.width)
        np.testing.assert_array_equal(one.boxes, pred.boxes)
        np.testing.assert_array_equal(one.labels, pred.labels)


def test_predictors_accept_arrays_and_pil(tiny, exported):
    from PIL import Image

    ir = OpenVINOPredictor(exported / "model.xml")
    path = tiny.dataset.items[0].image_path
    with Image.open(path) as im:
        array = np.asarray(im.convert("RGB"))
        from_pil = ir.predict(im)
    from_array, from_path = ir.predict(array), ir.predict(path)
    np.testing.assert_array_equal(from_array.boxes, from_path.boxes)
    np.testing.assert_array_equal(from_pil.boxes, from_path.boxes)
