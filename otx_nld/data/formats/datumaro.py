"""Datumaro JSON, as Datumaro 1.11 writes and reads it (``dm_format_version`` 1.0)::

    annotations/<subset>.json      dm_format_version, media_type, infos, categories, items
    images/<subset>/<id><ext>      when saved with the media

An item is ``{"id", "annotations", "attr", "image": {"path", "size": [h, w]}}``; a box is
``{"id", "type": "bbox", "attributes", "group", "label_id", "z_order", "bbox": [x, y, w, h]}``.
Datumaro resolves a relative image path against ``images/<subset>/`` (then ``images/``) and
keeps an absolute one, which is how ``save_media=False`` exports reference source images.

This is the format that keeps everything of a :class:`Dataset`: infos, item and box
attributes (any JSON values, e.g. lists of per-iteration losses), ids and subsets. Datumaro's
``group``, ``z_order`` and ``object_id`` are not kept (written as 0), and annotations other
than boxes are skipped on reading with one warning per file.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

from otx_nld.data.dataset import Box, Dataset, Item
from otx_nld.data.formats._common import (
    InvalidReporter,
    SkipHandler,
    check_item_id,
    dump_json,
    parse_json_box,
    resolve_image_path,
    export_media,
    image_size,
    is_int,
    is_number,
    load_json,
    media_ext,
    merge_subset_files,
    to_jsonable,
)
from otx_nld.errors import DatasetError, OtxNldError

log = logging.getLogger(__name__)

ANNOTATIONS_DIR = "annotations"
IMAGES_DIR = "images"
FORMAT_VERSION = "1.0"
#: ``datumaro.components.media.MediaType.IMAGE``.
MEDIA_TYPE_IMAGE = 2
#: Datumaro's implicit image name when an item's image has no path.
DEFAULT_IMAGE_EXT = ".jpg"

# Datumaro itself detects the format by the "categories"/"items" sections; both this and the
# version key are near the start of a file written by Datumaro or by us.
_HEAD_KEY = re.compile(r'"(dm_format_version|items)"\s*:')
_HEAD_SIZE = 1 << 16


def _annotation_files(root: Path) -> list[Path]:
    ann_dir = Path(root) / ANNOTATIONS_DIR
    if not ann_dir.is_dir():
        return []
    return sorted(p for p in ann_dir.glob("*.json") if p.is_file())


def detect(root: Path) -> bool:
    """Whether ``annotations/`` of ``root`` holds a Datumaro JSON file (COCO ``instances_*`` excluded)."""
    for path in _annotation_files(root):
        if path.name.startswith("instances_"):
            continue
        try:
            with path.open("rb") as f:
                head = f.read(_HEAD_SIZE).decode("utf-8", errors="replace")
        except OSError:
            continue
        if _HEAD_KEY.search(head):
            return True
    return False


# -- reading ------------------------------------------------------------------------------


def read(root: Path, *, skip_invalid: bool = False, on_skip: SkipHandler | None = None) -> Dataset:
    """Read every ``annotations/<subset>.json`` of ``root``.

    Args:
        skip_invalid: skip invalid boxes (bad id, label or bbox), passing each error to
            ``on_skip``. Broken JSON, missing keys, unsupported versions or media types, items
            without an image size and inconsistent label categories still raise.

    Raises:
        DatasetError: naming the file, and the item/annotation index and id or JSON line.
    """
    root = Path(root)
    files = _annotation_files(root)
    if not files:
        raise DatasetError(root / ANNOTATIONS_DIR, "no <subset>.json annotation file")
    report = InvalidReporter(skip_invalid, on_skip)
    parts = [(path, *_read_file(root, path, path.stem, report)) for path in files]
    return merge_subset_files(root, parts, "label categories")


def _labels(path: Path, categories: Any) -> tuple[str, ...]:
    if not isinstance(categories, dict):
        raise DatasetError(path, "'categories' must be a JSON object")
    label_cat = categories.get("label")
    if label_cat is None:
        return ()
    labels = label_cat.get("labels") if isinstance(label_cat, dict) else None
    if not isinstance(labels, list):
        raise DatasetError(path, "categories.label: missing list 'labels'")
    names = []
    for index, label in enumerate(labels):
        name = label.get("name") if isinstance(label, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(path, f"categories.label.labels[{index}]: missing or empty 'name'")
        if name in names:
            raise DatasetError(path, f"categories.label.labels[{index}]: duplicate label name {name!r}")
        names.append(name)
    return tuple(names)


def _resolve_image(root: Path, subset: str, item_id: str, image_path: str | None) -> Path | None:
    """The item's image file, found the way Datumaro finds it; ``None`` when the item names none."""
    if image_path is None:
        # Datumaro falls back to images/<subset>/<id>.jpg; use it only when it is there.
        implicit = root / IMAGES_DIR / subset / f"{item_id}{DEFAULT_IMAGE_EXT}"
        return implicit if implicit.is_file() else None
    return resolve_image_path(root, subset, image_path, IMAGES_DIR)


def _read_file(root: Path, path: Path, subset: str,
               report: InvalidReporter) -> tuple[tuple[str, ...], dict[str, Any], list[Item]]:
    data = load_json(path)
    if not isinstance(data, dict):
        raise DatasetError(path, "top level must be a JSON object")
    version = data.get("dm_format_version")
    if version is not None and version != FORMAT_VERSION:
        raise DatasetError(path, f"unsupported dm_format_version {version!r} (supported: {FORMAT_VERSION})")
    media_type = data.get("media_type", MEDIA_TYPE_IMAGE)
    if media_type != MEDIA_TYPE_IMAGE:
        raise DatasetError(path, f"unsupported media_type {media_type!r}: only images ({MEDIA_TYPE_IMAGE})")
    for key in ("categories", "items"):
        if key not in data:
            raise DatasetError(path, f"top level: missing key {key!r}")
    labels = _labels(path, data["categories"])
    infos = data.get("infos") or {}
    if not isinstance(infos, dict):
        raise DatasetError(path, "'infos' must be a JSON object")
    if not isinstance(data["items"], list):
        raise DatasetError(path, "'items' must be a list")

    items = []
    seen: dict[str, int] = {}
    skipped_types: Counter[str] = Counter()
    for index, desc in enumerate(data["items"]):
        item_id = desc.get("id") if isinstance(desc, dict) else None
        where = f"items[{index}]" + (f" (id {item_id!r})" if item_id is not None else "")
        if not isinstance(item_id, str) or not item_id:
            raise DatasetError(path, f"{where}: 'id' must be a non-empty string")
        if item_id in seen:
            raise DatasetError(path, f"{where}: duplicate item id (first at items[{seen[item_id]}])")
        seen[item_id] = index
        attributes = desc.get("attr") or {}
        if not isinstance(attributes, dict):
            raise DatasetError(path, f"{where}: 'attr' must be a JSON object")
        image_path, width, height = _image(root, path, subset, item_id, desc.get("image"), where)

        anns = desc.get("annotations") or []
        if not isinstance(anns, list):
            raise DatasetError(path, f"{where}: 'annotations' must be a list")
        boxes = []
        for ann_index, ann in enumerate(anns):
            ann_type = ann.get("type") if isinstance(ann, dict) else None
            if ann_type != "bbox" and isinstance(ann_type, str):
                skipped_types[ann_type] += 1
                continue
            ann_where = f"{where} annotations[{ann_index}]"
            if isinstance(ann, dict) and "id" in ann:
                ann_where += f" (id {ann['id']!r})"
            try:
                boxes.append(_parse_box(ann, len(labels)))
            except ValueError as e:
                report(DatasetError(path, f"{ann_where}: {e}"))
        items.append(Item(item_id, subset, image_path, width, height, tuple(boxes), attributes))
    if skipped_types:
        log.warning("%s: skipped annotations that are not boxes: %s", path,
                    ", ".join(f"{n} {t}" for t, n in sorted(skipped_types.items())))
    return labels, infos, items


def _image(root: Path, path: Path, subset: str, item_id: str, image: Any,
           where: str) -> tuple[Path | None, int, int]:
    """``(image path, width, height)`` of an item's ``image`` section."""
    if not isinstance(image, dict):
        raise DatasetError(path, f"{where}: missing 'image' (only image datasets are supported)")
    rel = image.get("path")
    if rel is not None and not isinstance(rel, str):
        raise DatasetError(path, f"{where}: image 'path' must be a string")
    image_path = _resolve_image(root, subset, item_id, rel or None)
    size = image.get("size")
    if size is None:
        # Datumaro omits the size when it never loaded the image: read it from the header.
        if image_path is None or not image_path.is_file():
            raise DatasetError(path, f"{where}: image has no 'size' and no readable file")
        width, height = image_size(image_path)
        return image_path, width, height
    if (not isinstance(size, list) or len(size) != 2
            or not all(is_number(v) and float(v).is_integer() and v > 0 for v in size)):
        raise DatasetError(path, f"{where}: image 'size' must be [height, width] positive integers, "
                                 f"got {size!r}")
    height, width = (int(v) for v in size)
    return image_path, width, height


def _parse_box(ann: Any, num_labels: int) -> Box:
    """A box from a ``bbox`` annotation; ``ValueError`` says what is wrong."""
    ann_id, (x, y, w, h) = parse_json_box(ann, ("id", "type", "label_id", "bbox"))
    label = ann["label_id"]
    if not is_int(label) or not 0 <= label < num_labels:
        raise ValueError(f"label_id {label!r} is not one of the {num_labels} labels")
    attributes = ann.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise ValueError("'attributes' must be a JSON object")
    return Box(x, y, w, h, label, ann_id, attributes)


# -- writing ------------------------------------------------------------------------------


def _box_json(item: Item, box: Box) -> dict[str, Any]:
    return {
        "id": box.ann_id,
        "type": "bbox",
        "attributes": to_jsonable(box.attributes, f"item {item.id!r} box {box.ann_id} attributes"),
        "group": 0,
        "label_id": box.label,
        "z_order": 0,
        "bbox": [box.x, box.y, box.w, box.h],
    }


def write(dataset: Dataset, out: Path, *, save_media: bool = True) -> None:
    """Write ``dataset`` in Datumaro JSON into the empty directory ``out``.

    With ``save_media`` each image is copied to ``images/<subset>/<id><ext>`` (subdirectories
    of the id kept) and referenced relative to ``images/<subset>/``; without it the item
    references its source image by absolute path. An item without an image gets only its size.

    Raises:
        OtxNldError: a subset name with a path separator, an id that cannot be a file name,
            or an attribute/info value JSON cannot hold (e.g. NaN).
        DatasetError: ``save_media`` and an image file is missing.
    """
    out = Path(out)
    (out / ANNOTATIONS_DIR).mkdir(parents=True, exist_ok=True)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    infos = to_jsonable(dataset.infos, "dataset infos")
    # Datumaro's label categories list the attribute names the annotations use.
    attribute_names = sorted({name for _, box in dataset.iter_boxes() for name in box.attributes})
    categories = {
        "label": {
            "labels": [{"name": name, "parent": "", "attributes": []} for name in dataset.labels],
            "label_groups": [],
            "attributes": attribute_names,
        }
    }
    for subset in dataset.subsets:
        if "/" in subset or "\\" in subset:
            raise OtxNldError(f"subset name {subset!r} cannot be part of a file name")
        items = []
        for item in dataset.subset(subset):
            desc: dict[str, Any] = {"id": item.id,
                                    "annotations": [_box_json(item, box) for box in item.boxes]}
            if item.attributes:
                desc["attr"] = to_jsonable(item.attributes, f"item {item.id!r} attributes")
            image: dict[str, Any] = {}
            if item.image_path is not None:
                if save_media:
                    name = f"{check_item_id(item)}{media_ext(item)}"
                    export_media(item, out / IMAGES_DIR / subset / name)
                    image["path"] = name
                else:
                    image["path"] = str(item.image_path.absolute())
            image["size"] = [item.height, item.width]
            desc["image"] = image
            items.append(desc)
        # dm_format_version first: Datumaro looks for it in the first kilobyte only.
        dump_json(out / ANNOTATIONS_DIR / f"{subset}.json", {
            "dm_format_version": FORMAT_VERSION,
            "media_type": MEDIA_TYPE_IMAGE,
            "infos": infos,
            "categories": categories,
            "items": items,
        })
