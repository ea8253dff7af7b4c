"""Augmentations must carry each box's ann id with the box, and drop it with the box."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from otx_nld.data.dataset import Box, Dataset, Item
from otx_nld.data.loader import DetectionDataset, RandomRotate90, collate, letterbox_scale, make_loader
from otx_nld.errors import DatasetError
from otx_nld.recipe import AugmentConfig, DataConfig

WIDTH, HEIGHT = 160, 120


def _colour(ann_id: int) -> tuple[int, int, int]:
    return ((ann_id * 67) % 256, (ann_id * 131) % 256, (ann_id * 29 + 40) % 256)


@pytest.fixture
def painted(tmp_path):
    """Items whose boxes are painted in a colour derived from their ann id (ids non-contiguous)."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(6):
        pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        boxes = []
        for k in range(4):
            ann_id = 1000 + 37 * (4 * i + k)
            x, y = 40 * k + rng.uniform(0, 6), rng.uniform(0, 60)
            w, h = rng.uniform(20, 32), rng.uniform(30, 55)
            pixels[int(y):int(y + h), int(x):int(x + w)] = _colour(ann_id)
            boxes.append(Box(int(x), int(y), int(x + w) - int(x), int(y + h) - int(y), k % 3, ann_id))
        path = tmp_path / f"{i}.png"
        Image.fromarray(pixels).save(path)
        items.append(Item(f"I{i}", "train", path, WIDTH, HEIGHT, tuple(boxes)))
    return Dataset(tuple(items), ("a", "b", "c"))


def _check_ids_follow_boxes(image, target, data):
    raw = (image * torch.tensor(data.std).view(3, 1, 1) + torch.tensor(data.mean).view(3, 1, 1)).round()
    for box, ann_id in zip(target["boxes"], target["ann_ids"].tolist()):
        x1, y1, x2, y2 = box.tolist()
        cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
        got = raw[:, cy, cx].tolist()
        assert np.allclose(got, _colour(ann_id), atol=12), (ann_id, got)


@pytest.mark.parametrize(
    "augment",
    [AugmentConfig(hflip=1.0), AugmentConfig(hflip=0.5, vflip=0.5),
     AugmentConfig(hflip=0.0, crop=1.0), AugmentConfig(hflip=0.5, scale_range=(0.6, 1.4), crop=0.5),
     AugmentConfig(hflip=0.0, rot90=1.0), AugmentConfig(hflip=0.5, vflip=0.5, rot90=0.5, scale_range=(0.8, 1.2))],
)
def test_ann_ids_follow_their_boxes_through_augmentation(painted, augment):
    data = DataConfig(input_size=(96, 128))
    ds = DetectionDataset(painted, data, augment)
    torch.manual_seed(0)
    dropped = 0
    for _ in range(4):
        for index in range(len(ds)):
            image, target, meta = ds[index]
            assert image.shape == (3, 96, 128)
            assert len(target["boxes"]) == len(target["labels"]) == len(target["ann_ids"])
            source = {b.ann_id: b for b in painted.items[index].boxes}
            assert set(target["ann_ids"].tolist()) <= set(source)
            assert all(source[a].label == lab for a, lab in zip(target["ann_ids"].tolist(), target["labels"].tolist()))
            dropped += len(source) - len(target["ann_ids"])
            _check_ids_follow_boxes(image, target, data)
    if augment.crop == 1.0:
        assert dropped > 0  # crops really removed boxes, and their ids went with them


def test_letterbox_without_augmentation(painted):
    ds = DetectionDataset(painted, DataConfig(input_size=(64, 64)))
    image, target, meta = ds[0]
    assert image.shape == (3, 64, 64)
    assert meta.scale == pytest.approx(letterbox_scale(HEIGHT, WIDTH, (64, 64))) == pytest.approx(0.4)
    expected = torch.tensor([b.xyxy for b in painted.items[0].boxes]) * meta.scale
    assert torch.allclose(target["boxes"], expected, atol=1e-4)
    assert target["ann_ids"].tolist() == [b.ann_id for b in painted.items[0].boxes]


def test_loader_batches_and_is_seeded(painted):
    ds = DetectionDataset(painted, DataConfig(input_size=(64, 64)))
    order = lambda: [m.index for _, _, metas in make_loader(ds, 4, shuffle=True, seed=3) for m in metas]
    assert order() == order() and sorted(order()) == list(range(6))
    images, targets, metas = collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 64, 64) and len(targets) == len(metas) == 2


def test_unreadable_image_names_the_file(painted, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    ds = painted.with_items([painted.items[0].replace(image_path=bad)])
    with pytest.raises(DatasetError, match="bad.jpg: cannot decode image"):
        DetectionDataset(ds, DataConfig(input_size=(64, 64)))[0]
    ds = painted.with_items([painted.items[0].replace(image_path=tmp_path / "gone.png")])
    with pytest.raises(DatasetError, match="gone.png: image file does not exist"):
        DetectionDataset(ds, DataConfig(input_size=(64, 64)))[0]


def test_quarter_turn_keeps_boxes_exact():
    image = tv_tensors.Image(torch.zeros(3, 40, 60, dtype=torch.uint8))
    image[:, 5:15, 10:30] = 255
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[10.0, 5, 30, 15]]), format="XYXY", canvas_size=(40, 60))
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        out, out_boxes = RandomRotate90(1.0)(image, boxes)
        assert out.shape == (3, 60, 40) and out_boxes.canvas_size == (60, 40)
        ys, xs = torch.nonzero(out[0] > 0, as_tuple=True)
        painted_extent = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        assert out_boxes[0].tolist() == pytest.approx(painted_extent, abs=1e-4)
        seen.add(tuple(painted_extent))
    assert len(seen) == 2  # both directions happen
    torch.manual_seed(0)
    same, same_boxes = RandomRotate90(0.0)(image, boxes)
    assert torch.equal(same, image) and torch.equal(same_boxes, boxes)
