"""COCO instances (bounding boxes only)::

    annotations/instances_<subset>.json    one file per subset
    images/<subset>/<file_name>            (``images/<file_name>`` is accepted too)

Item ids are ``file_name`` without extension, subdirectories kept (absolute file names, as
written by ``save_media=False`` exports, count from the directory they all share). Label indexes follow the
category ids in ascending order; the writer numbers categories ``index + 1``. Annotation ids
are kept. ``iscrowd`` becomes the box attribute ``is_crowd`` (only when set), ``score`` and the
``attributes`` object (Datumaro's COCO extension) become box attributes, the image id becomes
the item attribute ``id`` and the top-level ``info`` object becomes :attr:`Dataset.infos`;
the writer maps them back. Image sizes come from the JSON; images are not opened.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
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
    is_int,
    is_number,
    load_json,
    media_ext,
    merge_subset_files,
    to_jsonable,
)
from otx_nld.errors import DatasetError, OtxNldError

ANNOTATIONS_DIR = "annotations"
IMAGES_DIR = "images"
FILE_PREFIX = "instances_"


def _annotation_files(root: Path) -> list[Path]:
    ann_dir = Path(root) / ANNOTATIONS_DIR
    if not ann_dir.is_dir():
        return []
    return sorted(p for p in ann_dir.glob(f"{FILE_PREFIX}*.json")
                  if p.is_file() and len(p.stem) > len(FILE_PREFIX))


def detect(root: Path) -> bool:
    """Whether ``root`` holds ``annotations/instances_<subset>.json`` files."""
    return bool(_annotation_files(root))


# -- reading ------------------------------------------------------------------------------


def read(root: Path, *, skip_invalid: bool = False, on_skip: SkipHandler | None = None) -> Dataset:
    """Read every ``annotations/instances_<subset>.json`` of ``root``.

    Args:
        skip_invalid: skip invalid annotations (unknown image or category, bad bbox),
            passing each error to ``on_skip``. Broken JSON, missing keys, bad image entries
            and inconsistent categories still raise.

    Raises:
        DatasetError: naming the file, and the annotation index/id or JSON line.
    """
    root = Path(root)
    files = _annotation_files(root)
    if not files:
        raise DatasetError(root / ANNOTATIONS_DIR, f"no {FILE_PREFIX}<subset>.json file")
    report = InvalidReporter(skip_invalid, on_skip)
    parts = [(path, *_read_file(root, path, path.stem[len(FILE_PREFIX):], report)) for path in files]
    return merge_subset_files(root, parts, "categories")


def _require(path: Path, obj: Any, key: str, kinds: tuple[type, ...], where: str) -> Any:
    """``obj[key]``, checked to be one of ``kinds`` (never a bool)."""
    if not isinstance(obj, dict):
        raise DatasetError(path, f"{where}: must be a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DatasetError(path, f"{where}: missing key {key!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join(kind.__name__ for kind in kinds)
        raise DatasetError(path, f"{where}: {key!r} must be {names}, got {value!r}")
    return value


def _positive_int(path: Path, value: Any, where: str) -> int:
    # Some tools write sizes as 640.0; accept integral floats.
    if is_number(value) and float(value).is_integer() and value > 0:
        return int(value)
    raise DatasetError(path, f"{where} must be a positive integer, got {value!r}")


def _categories(path: Path, data: dict) -> tuple[tuple[str, ...], dict[Any, int]]:
    cats = _require(path, data, "categories", (list,), "top level")
    by_id: dict[Any, str] = {}
    for index, cat in enumerate(cats):
        where = f"categories[{index}]"
        cat_id = _require(path, cat, "id", (int, str), where)
        name = _require(path, cat, "name", (str,), where)
        if cat_id in by_id:
            raise DatasetError(path, f"{where}: duplicate category id {cat_id!r}")
        if not name.strip():
            raise DatasetError(path, f"{where}: empty category name")
        by_id[cat_id] = name
    # Ids are normally ints; string ids (seen in some tools) sort after them.
    ordered = sorted(by_id, key=lambda k: (isinstance(k, str), k))
    names = tuple(by_id[k] for k in ordered)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DatasetError(path, f"duplicate category names: {dup}")
    return names, {cat_id: index for index, cat_id in enumerate(ordered)}


def _absolute_base(file_names: list[str]) -> PurePosixPath | None:
    """The deepest directory holding every absolute ``file_name``, or ``None`` if there is none.

    A ``save_media=False`` export writes absolute source paths; ids are recovered relative to
    this directory, which is the source images directory whenever the ids do not all share a
    leading subdirectory (Datumaro would make the whole absolute path the id instead).
    """
    dirs = [str(PurePosixPath(name).parent) for name in file_names if PurePosixPath(name).is_absolute()]
    return PurePosixPath(os.path.commonpath(dirs)) if dirs else None


def _item_id(file_name: str, absolute_base: PurePosixPath | None) -> str:
    rel = PurePosixPath(file_name)
    if rel.is_absolute() and absolute_base is not None:
        rel = rel.relative_to(absolute_base)
    return rel.with_suffix("").as_posix()


def _read_file(root: Path, path: Path, subset: str,
               report: InvalidReporter) -> tuple[tuple[str, ...], dict[str, Any], list[Item]]:
    data = load_json(path)
    if not isinstance(data, dict):
        raise DatasetError(path, "top level must be a JSON object")
    labels, label_of = _categories(path, data)
    images = _require(path, data, "images", (list,), "top level")
    anns = _require(path, data, "annotations", (list,), "top level")
    info = data.get("info")
    infos = dict(info) if isinstance(info, dict) else {}

    file_names = [image.get("file_name") for image in images if isinstance(image, dict)]
    absolute_base = _absolute_base([name for name in file_names if isinstance(name, str)])
    # image id -> item id, file_name, size and boxes
    entries: dict[Any, dict[str, Any]] = {}
    item_ids: dict[str, int] = {}
    for index, image in enumerate(images):
        where = f"images[{index}]"
        image_id = _require(path, image, "id", (int, str), where)
        file_name = _require(path, image, "file_name", (str,), where)
        width, height = (_positive_int(path, _require(path, image, key, (int, float), where),
                                       f"{where}: {key!r}")
                         for key in ("width", "height"))
        if image_id in entries:
            raise DatasetError(path, f"{where}: duplicate image id {image_id!r}")
        item_id = _item_id(file_name, absolute_base)
        if not item_id:
            raise DatasetError(path, f"{where}: empty file_name")
        if item_id in item_ids:
            raise DatasetError(path, f"{where}: item {item_id!r} already comes from "
                                     f"images[{item_ids[item_id]}]")
        item_ids[item_id] = index
        entries[image_id] = {"id": item_id, "file_name": file_name, "width": width, "height": height,
                             "boxes": []}

    for index, ann in enumerate(anns):
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        where = f"annotations[{index}]" + (f" (id {ann_id})" if ann_id is not None else "")
        try:
            image_id, box = _parse_annotation(ann, label_of, entries)
        except ValueError as e:
            report(DatasetError(path, f"{where}: {e}"))
            continue
        entries[image_id]["boxes"].append(box)

    items = []
    for image_id, entry in entries.items():
        image_path = resolve_image_path(root, subset, entry["file_name"], IMAGES_DIR)
        items.append(Item(entry["id"], subset, image_path,
                          entry["width"], entry["height"], tuple(entry["boxes"]), {"id": image_id}))
    return labels, infos, items


def _is_key(value: Any) -> bool:
    """Whether ``value`` can be a COCO image/category id (an int, or a string for some tools)."""
    return isinstance(value, str) or is_int(value)


def _parse_annotation(ann: Any, label_of: dict[Any, int], entries: dict[Any, Any]) -> tuple[Any, Box]:
    """``(image id, box)`` of one annotation; ``ValueError`` says what is wrong."""
    ann_id, (x, y, w, h) = parse_json_box(ann, ("id", "image_id", "category_id", "bbox"))
    image_id = ann["image_id"]
    if not _is_key(image_id) or image_id not in entries:
        raise ValueError(f"unknown image_id {image_id!r}")
    category_id = ann["category_id"]
    if not _is_key(category_id) or category_id not in label_of:
        raise ValueError(f"unknown category_id {category_id!r}")

    attributes: dict[str, Any] = {}
    extra = ann.get("attributes")
    if isinstance(extra, dict):
        attributes.update(extra)
    if ann.get("iscrowd"):
        attributes["is_crowd"] = True
    if "score" in ann:
        attributes["score"] = ann["score"]
    return image_id, Box(x, y, w, h, label_of[category_id], ann_id, attributes)


# -- writing ------------------------------------------------------------------------------


def _image_ids(items: list[Item]) -> list[int]:
    """Keep the source image ids (item attribute ``id``) when every item has a distinct one."""
    ids = [item.attributes.get("id") for item in items]
    if all(is_int(i) for i in ids) and len(set(ids)) == len(ids):
        return ids  # type: ignore[return-value]
    return list(range(1, len(items) + 1))


def _annotation(box: Box, image_id: int, item: Item) -> dict[str, Any]:
    attrs = dict(box.attributes)
    ann: dict[str, Any] = {
        "id": box.ann_id,
        "image_id": image_id,
        "category_id": box.label + 1,
        "bbox": [box.x, box.y, box.w, box.h],
        "area": box.w * box.h,
        "segmentation": [],
        "iscrowd": int(bool(attrs.pop("is_crowd", False))),
    }
    if "score" in attrs:
        score = attrs.pop("score")
        if not is_number(score):
            raise OtxNldError(f"item {item.id!r} box {box.ann_id}: attribute 'score' must be a number, "
                              f"got {score!r}")
        ann["score"] = score
    if attrs:
        ann["attributes"] = to_jsonable(attrs, f"item {item.id!r} box {box.ann_id} attributes")
    return ann


def write(dataset: Dataset, out: Path, *, save_media: bool = True) -> None:
    """Write ``dataset`` as COCO instances into the empty directory ``out``.

    With ``save_media`` images are copied to ``images/<subset>/<id><ext>`` and ``file_name``
    is ``<id><ext>``; without it ``file_name`` is the absolute path of the source image
    (``<id><ext>``, with nothing copied, for an item without one). Reading such a file gives
    ids relative to the directory common to all absolute paths of a subset.

    Raises:
        OtxNldError: duplicate annotation ids in a subset (COCO tools index annotations by
            id and would silently drop boxes), or a subset name with a path separator.
        DatasetError: ``save_media`` and an image file is missing.
    """
    out = Path(out)
    (out / ANNOTATIONS_DIR).mkdir(parents=True, exist_ok=True)
    categories = [{"id": index + 1, "name": name, "supercategory": ""}
                  for index, name in enumerate(dataset.labels)]
    info = to_jsonable(dataset.infos, "dataset infos")
    for subset in dataset.subsets:
        if "/" in subset or "\\" in subset:
            raise OtxNldError(f"subset name {subset!r} cannot be part of a file name")
        items = list(dataset.subset(subset))
        images, annotations = [], []
        seen_ann: dict[int, str] = {}
        for item, image_id in zip(items, _image_ids(items), strict=True):
            if not save_media and item.image_path is not None:
                file_name = str(item.image_path.absolute())
            else:
                file_name = f"{check_item_id(item)}{media_ext(item)}"
                if save_media:
                    export_media(item, out / IMAGES_DIR / subset / file_name)
            images.append({"id": image_id, "width": item.width, "height": item.height, "file_name": file_name,
                           "license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0})
            for box in item.boxes:
                if box.ann_id in seen_ann:
                    raise OtxNldError(f"subset {subset!r}: annotation id {box.ann_id} is used by items "
                                      f"{seen_ann[box.ann_id]!r} and {item.id!r}; COCO needs unique ids "
                                      "(reindex the annotations first)")
                seen_ann[box.ann_id] = item.id
                annotations.append(_annotation(box, image_id, item))
        dump_json(out / ANNOTATIONS_DIR / f"{FILE_PREFIX}{subset}.json",
                  {"info": info, "licenses": [], "categories": categories, "images": images,
                   "annotations": annotations})

