import numpy as np
import pytest

from otx_nld.training.evaluate import Prediction, coco_map
from tests.factories import make_dataset


def _perfect(ds, drop_label=None):
    preds = {}
    for item in ds:
        boxes = [b for b in item.boxes if b.label != drop_label]
        preds[item.key] = Prediction(np.array([b.xyxy for b in boxes]).reshape(-1, 4),
                                     np.ones(len(boxes)), np.array([b.label for b in boxes]))
    return preds


def test_perfect_predictions_score_one():
    ds = make_dataset(6, 3)
    metrics = coco_map(ds, _perfect(ds))
    assert metrics.map == pytest.approx(1.0) and metrics.map50 == pytest.approx(1.0)
    assert set(metrics.per_class_ap) == set(ds.labels)
    assert all(v == pytest.approx(1.0) for v in metrics.per_class_ap50.values())
    assert metrics.num_boxes == ds.num_boxes


def test_missing_class_and_no_predictions():
    ds = make_dataset(6, 3)
    metrics = coco_map(ds, _perfect(ds, drop_label=0))
    assert metrics.per_class_ap["cat"] == pytest.approx(0.0)
    assert metrics.per_class_ap["dog"] == pytest.approx(1.0)
    assert 0.5 < metrics.map < 0.8
    assert coco_map(ds, {}).map == pytest.approx(0.0)


def test_shifted_boxes_hurt_strict_iou_more():
    ds = make_dataset(6, 3)
    preds = {}
    for item in ds:
        boxes = np.array([b.xyxy for b in item.boxes])
        widths = boxes[:, 2] - boxes[:, 0]
        boxes[:, [0, 2]] += 0.15 * widths[:, None]  # IoU ~0.74: counts at 0.5, not at 0.75+
        preds[item.key] = Prediction(boxes, np.ones(len(boxes)), np.array([b.label for b in item.boxes]))
    metrics = coco_map(ds, preds)
    assert metrics.map50 == pytest.approx(1.0) and metrics.map < 0.6
