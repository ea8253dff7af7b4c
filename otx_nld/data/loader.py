"""From a :class:`~otx_nld.data.dataset.Dataset` subset to training batches.

Augmentations are torchvision ``transforms.v2`` ops on ``tv_tensors.BoundingBoxes``. Each box
travels with its label *and its ann id*: ``SanitizeBoundingBoxes`` removes the ann id together
with any box a crop made degenerate, so a per-annotation loss is always credited to the box it
was computed for (the tutorial's upstream trainer got this wrong after crops).

Images are then letterboxed to the recipe's fixed input size (aspect kept, padded right and
bottom), which is also what inference does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms import v2

from otx_nld.data.dataset import Dataset, Item
from otx_nld.errors import DatasetError
from otx_nld.recipe import AugmentConfig, DataConfig

MIN_BOX_SIZE = 2.0  # px: smaller boxes after augmentation are removed (with their ann ids)


@dataclass(frozen=True)
class SampleMeta:
    """What maps a network input back to its item: letterbox ``scale`` (input px per image px)."""

    index: int  # position of the item in the loader's dataset
    item_id: str
    subset: str
    scale: float
    orig_size: tuple[int, int]  # height, width of the source image


def load_image(item: Item) -> Image.Image:
    """The item's image as RGB; a missing or undecodable file is a DatasetError naming it."""
    if item.image_path is None:
        raise DatasetError(None, f"item {item.id!r} ({item.subset}) has no image file")
    try:
        with Image.open(item.image_path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(item.image_path, "image file does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(item.image_path, f"cannot decode image: {e}") from None


def letterbox_scale(height: int, width: int, input_size: tuple[int, int]) -> float:
    """The resize factor that fits a ``height x width`` image inside ``input_size`` (h, w)."""
    return min(input_size[0] / height, input_size[1] / width)


class RandomRotate90(v2.Transform):
    """Rotate by a quarter turn (+90 or -90 degrees, equally likely) with probability ``p``.

    The canvas is expanded (a H x W image becomes W x H), so nothing is cut off and boxes stay
    exact: a quarter turn maps a box's corners onto the rotated box's corners. Only for data
    whose classes survive the rotation (dice faces, aerial views; not digits or text).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if torch.rand(()) >= self.p:
            return {"angle": 0.0}
        return {"angle": 90.0 if torch.rand(()) < 0.5 else -90.0}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["angle"] == 0.0:
            return inpt
        return self._call_kernel(v2.functional.rotate, inpt, angle=params["angle"], expand=True)


def build_augmentation(cfg: AugmentConfig) -> v2.Transform:
    """The training augmentation pipeline (before letterboxing); identity ops are skipped."""
    ops: list[v2.Transform] = []
    if cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue:
        ops.append(v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue))
    if cfg.rot90 > 0:
        ops.append(RandomRotate90(cfg.rot90))
    if cfg.scale_range != (1.0, 1.0):
        ops.append(v2.RandomAffine(degrees=0.0, scale=cfg.scale_range))
    if cfg.crop > 0:
        ops.append(v2.RandomApply([v2.RandomIoUCrop()], p=cfg.crop))
    if cfg.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(cfg.hflip))
    if cfg.vflip > 0:
        ops.append(v2.RandomVerticalFlip(cfg.vflip))
    ops.append(v2.ClampBoundingBoxes())
    # Removes degenerate boxes together with their labels *and ann ids*.
    ops.append(v2.SanitizeBoundingBoxes(min_size=MIN_BOX_SIZE, labels_getter=_labels_and_ann_ids))
    return v2.Compose(ops)


def _labels_and_ann_ids(inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    target = inputs[1]
    return target["labels"], target["ann_ids"]


class DetectionDataset(torch.utils.data.Dataset):
    """Items of a dataset as ``(image [3,H,W] float normalized, target, SampleMeta)``.

    ``target`` has ``boxes`` [M, 4] xyxy in input pixels, ``labels`` [M] int64 and
    ``ann_ids`` [M] int64 (the dataset's annotation ids, carried through augmentation).
    """

    def __init__(self, dataset: Dataset, data: DataConfig, augment: AugmentConfig | None = None,
                 cache_images: bool = True):
        self.dataset = dataset
        self.items = dataset.items
        self.input_size = tuple(data.input_size)
        self.mean = torch.tensor(data.mean).view(3, 1, 1)
        self.std = torch.tensor(data.std).view(3, 1, 1)
        self.augment = build_augmentation(augment) if augment is not None else None
        self._cache: dict[int, torch.Tensor] | None = {} if cache_images else None

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, index: int) -> torch.Tensor:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image = v2.functional.pil_to_tensor(load_image(self.items[index]))  # [3, H, W] uint8
        if self._cache is not None:
            self._cache[index] = image
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], SampleMeta]:
        item = self.items[index]
        raw = self._image(index)
        height, width = raw.shape[-2:]
        if (height, width) != (item.height, item.width):
            raise DatasetError(item.image_path, f"image is {width}x{height} but the annotation says "
                               f"{item.width}x{item.height}")
        image = tv_tensors.Image(raw)
        boxes = tv_tensors.BoundingBoxes(
            torch.tensor([b.xyxy for b in item.boxes], dtype=torch.float32).reshape(-1, 4),
            format="XYXY", canvas_size=(height, width))
        target = {
            "boxes": boxes,
            "labels": torch.tensor([b.label for b in item.boxes], dtype=torch.int64),
            "ann_ids": torch.tensor([b.ann_id for b in item.boxes], dtype=torch.int64),
        }
        if self.augment is not None:
            image, target = self.augment(image, target)
        image, target, scale = self._letterbox(image, target)
        pixels = (image.float() - self.mean) / self.std
        meta = SampleMeta(index, item.id, item.subset, scale, (item.height, item.width))
        return pixels, {k: v.as_subclass(torch.Tensor) for k, v in target.items()}, meta

    def _letterbox(self, image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any], float]:
        height, width = image.shape[-2:]
        scale = letterbox_scale(height, width, self.input_size)
        new_h, new_w = min(round(height * scale), self.input_size[0]), min(round(width * scale), self.input_size[1])
        if (new_h, new_w) != (height, width):
            image, boxes = v2.functional.resize(image, [new_h, new_w], antialias=True), \
                v2.functional.resize(target["boxes"], [new_h, new_w])
            target = {**target, "boxes": boxes}
        pad = [0, 0, self.input_size[1] - new_w, self.input_size[0] - new_h]  # left, top, right, bottom
        if pad[2] or pad[3]:
            image = v2.functional.pad(image, pad, fill=0)
            target = {**target, "boxes": v2.functional.pad(target["boxes"], pad)}
        return image, target, scale


def collate(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor], SampleMeta]]):
    """Stack images into ``[N, 3, H, W]``; targets and metas stay lists."""
    images, targets, metas = zip(*batch)
    return torch.stack(images), list(targets), list(metas)


def make_loader(dataset: DetectionDataset, batch_size: int, shuffle: bool, seed: int = 0,
                num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader whose shuffling order depends only on ``seed`` (and the epoch)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      num_workers=num_workers, generator=generator, drop_last=drop_last,
                      persistent_workers=num_workers > 0)
