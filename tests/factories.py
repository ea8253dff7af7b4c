"""Small hand-made datasets for tests (no dependence on the dice generator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from otx_nld.data.dataset import Box, Dataset, Item

LABELS = ("cat", "dog", "bird")


def make_dataset(num_items: int = 10, boxes_per_item: int = 3, labels: tuple[str, ...] = LABELS,
                 size: tuple[int, int] = (200, 150), subset: str = "default", seed: int = 0,
                 image_dir: Path | None = None) -> Dataset:
    """A dataset of ``num_items`` items with non-overlapping boxes on a grid.

    With ``image_dir``, a small PNG is written for every item and referenced by the item.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    items = []
    ann_id = 1
    for i in range(num_items):
        boxes = []
        for k in range(boxes_per_item):
            # One box per column so boxes never overlap, leaving room for spawned ones.
            col_w = width / (2 * boxes_per_item)
            x = 2 * k * col_w + rng.uniform(0, col_w * 0.3)
            y = rng.uniform(0, height * 0.4)
            w = col_w * rng.uniform(0.5, 0.9)
            h = height * rng.uniform(0.2, 0.5)
            boxes.append(Box(x, y, w, h, int(rng.integers(len(labels))), ann_id))
            ann_id += 1
        item_id = f"img_{i:03d}"
        path = None
        if image_dir is not None:
            path = image_dir / f"{item_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
        items.append(Item(item_id, subset, path, width, height, tuple(boxes)))
    return Dataset(tuple(items), labels)


def write_yolo_loose(root: Path, lines: dict[str, list[str]], labels: tuple[str, ...] = LABELS,
                     size: tuple[int, int] = (64, 48)) -> Path:
    """A loose-layout YOLO dataset: ``lines`` maps item id -> annotation lines as written."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Images").mkdir(parents=True, exist_ok=True)
    (root / "obj.names").write_text("\n".join(labels) + "\n")
    for item_id, item_lines in lines.items():
        (root / "Annotations" / f"{item_id}.txt").write_text("\n".join(item_lines) + "\n")
        Image.new("RGB", size, (120, 90, 60)).save(root / "Images" / f"{item_id}.jpg")
    return root
