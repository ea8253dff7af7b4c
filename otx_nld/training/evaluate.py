"""COCO-style detection metrics through pycocotools (not hand-written).

:func:`coco_map` scores predictions, given in the original image's pixel coordinates, against
a dataset's boxes and returns mAP@[.5:.95], mAP@0.5, mAP@0.75 and per-class AP.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from otx_nld.data.dataset import Dataset


@dataclass(frozen=True)
class Prediction:
    """Detections for one item, in the item's image pixels: boxes ``[K, 4]`` xyxy."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class DetectionMetrics:
    map: float  # COCO mAP@[.5:.95]
    map50: float
    map75: float
    per_class_ap: dict[str, float] = field(default_factory=dict)  # AP@[.5:.95] per label
    per_class_ap50: dict[str, float] = field(default_factory=dict)
    num_images: int = 0
    num_boxes: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def coco_map(dataset: Dataset, predictions: Mapping[tuple[str, str], Prediction]) -> DetectionMetrics:
    """Score ``predictions`` keyed by ``(subset, item id)`` against ``dataset``'s boxes.

    Items without a prediction count as having no detections. Labels with no ground-truth box
    get AP ``nan`` (pycocotools' -1) and are left out of the per-class tables.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, detections = [], [], []
    for image_id, item in enumerate(dataset.items, start=1):
        images.append({"id": image_id, "width": item.width, "height": item.height, "file_name": item.id})
        for box in item.boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": box.label + 1,
                                "bbox": list(box.xywh), "area": box.area, "iscrowd": 0})
        pred = predictions.get(item.key)
        if pred is None:
            continue
        for (x1, y1, x2, y2), score, label in zip(np.asarray(pred.boxes).reshape(-1, 4).tolist(),
                                                  np.asarray(pred.scores).tolist(), np.asarray(pred.labels).tolist()):
            detections.append({"image_id": image_id, "category_id": int(label) + 1,
                               "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(dataset.labels)]
    if not annotations:
        return DetectionMetrics(float("nan"), float("nan"), float("nan"), num_images=len(images))

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        gt.createIndex()
        dt = gt.loadRes(detections) if detections else COCO()
        if not detections:
            dt.dataset = {"images": images, "annotations": [], "categories": categories}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.maxDets = [1, 10, 100]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]: IoU thr, recall, class, area, maxDets
    per_class, per_class50 = {}, {}
    for k, name in enumerate(dataset.labels):
        p = precision[:, :, k, 0, -1]
        if (p > -1).any():
            per_class[name] = float(np.mean(p[p > -1]))
            p50 = precision[0, :, k, 0, -1]
            per_class50[name] = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else float("nan")
    return DetectionMetrics(float(stats[0]), float(stats[1]), float(stats[2]), per_class, per_class50,
                            num_images=len(images), num_boxes=len(annotations))


def predictions_from_tensors(keys: Sequence[tuple[str, str]], outputs: Sequence[Mapping]) -> dict:
    """Pair ``(subset, item id)`` keys with model outputs (dicts of boxes/scores/labels tensors)."""
    return {key: Prediction(np.asarray(out["boxes"].detach().cpu()), np.asarray(out["scores"].detach().cpu()),
                            np.asarray(out["labels"].detach().cpu())) for key, out in zip(keys, outputs)}
