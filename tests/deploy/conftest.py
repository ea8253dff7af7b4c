"""Shared fixtures for the deployment tests: one tiny trained model, exported and quantized once.

The model is ``test_tiny`` trained for one epoch on random-noise images (seconds on a CPU) with the
confidence threshold lowered to 0.001, so that it emits a few dozen boxes per image and every
parity test compares non-empty outputs. Its mAP is ~0, so accuracy statements about INT8 here are
about agreement with FP32, not about detection quality (the dice benchmark measures that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from otx_nld.data.dataset import Dataset
from tests.factories import make_dataset

INPUT_SIZE = (64, 96)  # height, width: both image shapes below get letterbox padding


@dataclass
class Tiny:
    root: Path
    data: Path  # Datumaro dataset: subsets train (8 items, 100x90 images), val (4 items, 60x110)
    dataset: Dataset
    checkpoint: Path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
    from otx_nld.recipe import load_recipe
    from otx_nld.training.trainer import Trainer

    root = tmp_path_factory.mktemp("deploy")
    wide = make_dataset(8, 3, size=(100, 90), subset="train", image_dir=root / "images" / "train")
    tall = make_dataset(4, 2, size=(60, 110), subset="val", seed=1, image_dir=root / "images" / "val")
    dataset = Dataset(wide.items + tall.items, wide.labels).reindex_annotations()
    data = dataset.export(root / "data", "datumaro", save_media=False)
    recipe = load_recipe("test_tiny", ["train.epochs=1", "train.eval_interval=0", "tracking.enabled=false",
                                       "model.score_thresh=0.001",
                                       f"data.input_size=[{INPUT_SIZE[0]}, {INPUT_SIZE[1]}]"])
    Trainer(recipe, dataset.subset("train"), root / "run", progress=False).fit()
    return Tiny(root, data, Dataset.import_from(data), root / "run" / "checkpoints" / "best.pt")


@pytest.fixture(scope="session")
def exported(tiny) -> Path:
    """``otx-nld export --format both`` output directory (model.xml/.bin, model.onnx)."""
    from otx_nld.cli import main

    out = tiny.root / "export"
    assert main(["export", str(tiny.checkpoint), "-o", str(out), "--format", "both"]) == 0
    return out


@pytest.fixture(scope="session")
def quantized(tiny, exported) -> Path:
    """``otx-nld optimize`` output directory (INT8 model.xml/.bin, quantization.json)."""
    from otx_nld.cli import main

    out = tiny.root / "int8"
    assert main(["optimize", str(exported / "model.xml"), "--data", str(tiny.data), "--samples", "8",
                 "-o", str(out)]) == 0
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import torch
    from torchvision.ops import box_iou

    return box_iou(torch.as_tensor(a).reshape(-1, 4), torch.as_tensor(b).reshape(-1, 4)).numpy()


def assert_same_detections(a, b, min_iou: float = 0.99, score_tol: float = 1e-3) -> None:
    """Every detection of ``a`` has its own partner in ``b`` (and no more): same label, IoU >= min_iou,
    score within score_tol. Greedy by ``a``'s score, each partner used once. Degenerate boxes (a
    detection in the letterbox padding, clipped to zero width at the image border) have no IoU; they
    match a box within 0.01 px."""
    assert len(a.boxes) > 0, "compare non-empty outputs"
    assert len(a.boxes) == len(b.boxes), (len(a.boxes), len(b.boxes))
    iou = iou_matrix(a.boxes, b.boxes)
    close = np.abs(a.boxes[:, None, :] - b.boxes[None, :, :]).max(axis=2) <= 1e-2
    iou = np.where(close, 1.0, np.nan_to_num(iou))  # zero-area boxes: IoU 0/0
    used = np.zeros(len(b.boxes), dtype=bool)
    for i in np.argsort(-a.scores, kind="stable"):
        candidates = (~used) & (b.labels == a.labels[i]) & (iou[i] >= min_iou) & \
            (np.abs(b.scores - a.scores[i]) <= score_tol)
        assert candidates.any(), f"detection {i} ({a.boxes[i]}, {a.scores[i]:.4f}, label {a.labels[i]}) unmatched"
        j = int(np.argmax(np.where(candidates, iou[i], -1)))
        used[j] = True
