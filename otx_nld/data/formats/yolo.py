"""YOLO detection datasets, in both layouts that Datumaro/OTX use.

Darknet layout (``yolo``), as Datumaro's ``yolo`` exporter writes it::

    obj.data            classes = 3 / train = data/train.txt / names = data/obj.names / backup = backup/
    obj.names           one label name per line
    train.txt           image paths, one per line: data/obj_train_data/<id>.jpg
    obj_train_data/     <id>.jpg and <id>.txt side by side

Loose layout (``yolo_loose``, the "d6-dice" layout of the Datumaro/OTX tutorial)::

    Annotations/<id>.txt   Annotations/classes.txt   Images/<id>.jpg   obj.names

Each annotation line is ``class cx cy w h`` with the centre and size normalized by the image
size, so reading needs every image's size; it comes from the image header (no decoding).
YOLO stores no annotation ids: the reader numbers boxes 1..N over items sorted by
``(subset, id)`` and lines in file order, and the writers keep the stored box order, so a
YOLO -> YOLO round trip keeps those ids.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from otx_nld.data.dataset import DEFAULT_SUBSET, Box, Dataset, Item
from otx_nld.data.formats._common import (
    IMAGE_EXTENSIONS,
    InvalidReporter,
    SkipHandler,
    build_dataset,
    check_item_id,
    export_media,
    image_size,
    is_image_file,
    media_ext,
    parse_names,
    read_text,
)
from otx_nld.errors import DatasetError, OtxNldError

CONFIG_FILE = "obj.data"
NAMES_FILE = "obj.names"
CLASSES_FILE = "classes.txt"
#: Loose-layout directory names; the capitalised ones are the tutorial's, lower case is common too.
ANNOTATION_DIRS = ("Annotations", "annotations")
IMAGE_DIRS = ("Images", "images")
#: obj.data keys that are not subsets (Datumaro reserves the first three; Darknet uses the others).
RESERVED_KEYS = frozenset({"classes", "names", "backup", "eval", "results"})
#: Darknet configs usually name files relative to the Darknet root, as ``data/<file>``.
DARKNET_PREFIX = "data/"
#: Slack on normalized coordinates, for values rounded when they were written.
EPS = 1e-6

_CONFIG_LINE = re.compile(r"^\s*(\w+)\s*=\s*(.*?)\s*$")
_SUBSET_NAME = re.compile(r"^\w+$")


# -- detection ----------------------------------------------------------------------------


def detect(root: Path) -> bool:
    """Whether ``root`` is a Darknet-layout YOLO dataset (it has ``obj.data``)."""
    return (Path(root) / CONFIG_FILE).is_file()


def detect_loose(root: Path) -> bool:
    """Whether ``root`` is a loose-layout YOLO dataset: ``Annotations/`` and a label names file."""
    root = Path(root)
    if detect(root):
        return False
    ann_dir = _find_dir(root, ANNOTATION_DIRS)
    return ann_dir is not None and bool(_names_files(root, ann_dir))


# -- reading ------------------------------------------------------------------------------


@dataclass
class _RawItem:
    """An item before annotation ids are assigned: boxes are ``(label, x, y, w, h)`` in pixels."""

    subset: str
    id: str
    image_path: Path
    width: int
    height: int
    boxes: list[tuple[int, float, float, float, float]]


def read(root: Path, *, skip_invalid: bool = False, on_skip: SkipHandler | None = None) -> Dataset:
    """Read a YOLO dataset in the Darknet layout if ``obj.data`` exists, else the loose layout.

    Args:
        root: dataset directory.
        skip_invalid: skip invalid annotation lines, passing each error to ``on_skip``,
            instead of raising. Missing names files and missing or unreadable images still raise.
        on_skip: receives each skipped line's :class:`DatasetError`.

    Raises:
        DatasetError: naming the file (and 1-based line) and what is wrong.
    """
    root = Path(root)
    report = InvalidReporter(skip_invalid, on_skip)
    if detect(root):
        labels, raw = _read_darknet(root, report)
    else:
        labels, raw = _read_loose(root, report)
    raw.sort(key=lambda r: (r.subset, r.id))
    items = []
    ann_id = 1
    for r in raw:
        boxes = []
        for label, x, y, w, h in r.boxes:
            boxes.append(Box(x, y, w, h, label, ann_id))
            ann_id += 1
        items.append(Item(r.id, r.subset, r.image_path, r.width, r.height, tuple(boxes)))
    return build_dataset(root, items, labels)


def _find_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


def _names_files(root: Path, ann_dir: Path | None) -> list[Path]:
    candidates = [root / NAMES_FILE, root / CLASSES_FILE]
    if ann_dir is not None:
        candidates.insert(0, ann_dir / CLASSES_FILE)
    return [path for path in candidates if path.is_file()]


def _loose_labels(root: Path, ann_dir: Path) -> tuple[str, ...]:
    files = _names_files(root, ann_dir)
    if not files:
        raise DatasetError(root, f"missing label names file: expected {NAMES_FILE} or "
                                 f"{ann_dir.name}/{CLASSES_FILE}")
    labels = parse_names(files[0])
    for other in files[1:]:
        other_labels = parse_names(other)
        if other_labels != labels:
            raise DatasetError(other, f"label names {list(other_labels)} differ from "
                                      f"{list(labels)} in {files[0]}")
    return labels


def _index_images(img_dir: Path | None) -> dict[str, Path]:
    """Image files under ``img_dir`` by relative path without extension."""
    if img_dir is None:
        return {}
    images: dict[str, Path] = {}
    for path in sorted(img_dir.rglob("*")):
        if not is_image_file(path):
            continue
        key = path.relative_to(img_dir).with_suffix("").as_posix()
        if key in images:
            raise DatasetError(path, f"several images for item {key!r}: {images[key].name} and {path.name}")
        images[key] = path
    return images


def _read_loose(root: Path, report: InvalidReporter) -> tuple[tuple[str, ...], list[_RawItem]]:
    ann_dir = _find_dir(root, ANNOTATION_DIRS)
    if ann_dir is None:
        raise DatasetError(root, f"not a YOLO dataset: found neither {CONFIG_FILE} "
                                 f"nor an {ANNOTATION_DIRS[0]}/ directory")
    labels = _loose_labels(root, ann_dir)
    img_dir = _find_dir(root, IMAGE_DIRS)
    images = _index_images(img_dir)
    ann_files: dict[str, Path] = {}
    for path in sorted(ann_dir.rglob("*.txt")):
        if path == ann_dir / CLASSES_FILE or not path.is_file():
            continue
        key = path.relative_to(ann_dir).with_suffix("").as_posix()
        if key not in images:
            where = img_dir.name if img_dir is not None else IMAGE_DIRS[0]
            extensions = ",".join(IMAGE_EXTENSIONS)
            raise DatasetError(path, f"image missing: no {where}/{key}{{{extensions}}}")
        ann_files[key] = path
    raw = []
    for key, image_path in images.items():
        width, height = image_size(image_path)
        ann_path = ann_files.get(key)
        boxes = _parse_annotation_file(ann_path, len(labels), width, height, report) if ann_path else []
        raw.append(_RawItem(DEFAULT_SUBSET, key, image_path, width, height, boxes))
    return labels, raw


def _parse_config(path: Path) -> dict[str, tuple[str, int]]:
    """``obj.data`` as ``{key: (value, line)}``; ``#`` comments and blank lines are skipped."""
    config: dict[str, tuple[str, int]] = {}
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _CONFIG_LINE.match(line)
        if not match:
            raise DatasetError(path, f"expected 'key = value', got {line.strip()!r}", line=lineno)
        key, value = match.groups()
        if key in config:
            raise DatasetError(path, f"duplicate key {key!r} (first on line {config[key][1]})", line=lineno)
        config[key] = (value, lineno)
    return config


def _resolve(root: Path, value: str) -> Path:
    """A path from a Darknet file: absolute, relative to ``root``, or with Darknet's ``data/`` prefix."""
    value = value.strip().replace("\\", "/")
    path = Path(value)
    if path.is_absolute():
        return path
    if (root / path).exists() or not value.startswith(DARKNET_PREFIX):
        return root / path
    return root / value[len(DARKNET_PREFIX):]


def _darknet_item_id(root: Path, image_path: Path) -> str:
    """Item id of a listed image: its path below ``obj_<subset>_data/``, without extension.

    As in Datumaro, the first directory of a root-relative path is the images directory; an
    image outside ``root`` is named by its file name.
    """
    try:
        parts = image_path.relative_to(root).parts
    except ValueError:
        parts = (image_path.name,)
    rel = PurePosixPath(*parts[1:]) if len(parts) > 1 else PurePosixPath(parts[0])
    return rel.with_suffix("").as_posix()


def _read_darknet(root: Path, report: InvalidReporter) -> tuple[tuple[str, ...], list[_RawItem]]:
    config_path = root / CONFIG_FILE
    config = _parse_config(config_path)
    if "names" in config:
        value, lineno = config["names"]
        names_path = _resolve(root, value)
        if not names_path.is_file():
            raise DatasetError(config_path, f"missing label names file {value!r}", line=lineno)
    else:
        names_path = root / NAMES_FILE
        if not names_path.is_file():
            raise DatasetError(config_path, f"missing label names file: no 'names' key and no {NAMES_FILE}")
    labels = parse_names(names_path)
    if "classes" in config:
        value, lineno = config["classes"]
        if not re.fullmatch(r"\d+", value) or int(value) != len(labels):
            raise DatasetError(config_path, f"classes = {value} does not match the {len(labels)} label names "
                                            f"in {names_path.name}", line=lineno)

    raw = []
    for subset, (value, lineno) in config.items():
        if subset in RESERVED_KEYS:
            continue
        list_path = _resolve(root, value)
        if not list_path.is_file():
            raise DatasetError(config_path, f"missing image list file {value!r} of subset {subset!r}",
                               line=lineno)
        seen: dict[str, int] = {}
        for list_lineno, line in enumerate(read_text(list_path).split("\n"), start=1):
            if not line.strip():
                continue
            image_path = _resolve(root, line)
            if not image_path.is_file():
                raise DatasetError(list_path, f"image missing: {line.strip()!r} does not exist",
                                   line=list_lineno)
            item_id = _darknet_item_id(root, image_path)
            if item_id in seen:
                raise DatasetError(list_path, f"duplicate item {item_id!r} (first on line {seen[item_id]})",
                                   line=list_lineno)
            seen[item_id] = list_lineno
            width, height = image_size(image_path)
            # Darknet finds labels next to the image; a missing label file means no objects.
            ann_path = image_path.with_suffix(".txt")
            boxes = (_parse_annotation_file(ann_path, len(labels), width, height, report)
                     if ann_path.is_file() else [])
            raw.append(_RawItem(subset, item_id, image_path, width, height, boxes))
    return labels, raw


def _parse_annotation_file(path: Path, num_labels: int, width: int, height: int,
                           report: InvalidReporter) -> list[tuple[int, float, float, float, float]]:
    boxes = []
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            label, cx, cy, w, h = _parse_line(fields, num_labels)
        except ValueError as e:
            report(DatasetError(path, str(e), line=lineno))
            continue
        boxes.append((label, (cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height))
    return boxes


def _parse_line(fields: list[str], num_labels: int) -> tuple[int, float, float, float, float]:
    """``(class, cx, cy, w, h)`` of one annotation line; ``ValueError`` says what is wrong."""
    if len(fields) != 5:
        raise ValueError(f"expected 5 values 'class cx cy w h', got {len(fields)}")
    try:
        label = int(fields[0])
    except ValueError:
        raise ValueError(f"class id {fields[0]!r} is not an integer") from None
    if not 0 <= label < num_labels:
        raise ValueError(f"class id {label} is out of range: there are {num_labels} label names")
    values = []
    for name, token in zip(("cx", "cy", "w", "h"), fields[1:], strict=True):
        try:
            value = float(token)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"{name} {token!r} is not a number")
        values.append(value)
    cx, cy, w, h = values
    problem = _normalized_problem(cx, cy, w, h)
    if problem:
        raise ValueError(problem)
    return label, cx, cy, w, h


def _normalized_problem(cx: float, cy: float, w: float, h: float) -> str | None:
    """What makes a normalized box invalid, or ``None``; shared by the reader and the writers."""
    for name, value in (("cx", cx), ("cy", cy), ("w", w), ("h", h)):
        if not -EPS <= value <= 1 + EPS:
            return f"{name}={value:g} is outside [0, 1]"
    for name, value in (("w", w), ("h", h)):
        if value <= 0:
            return f"{name}={value:g} must be positive"
    for axis, c, size in (("horizontally", cx, w), ("vertically", cy, h)):
        if c - size / 2 < -EPS or c + size / 2 > 1 + EPS:
            return f"box extends outside the image {axis} (from {c - size / 2:g} to {c + size / 2:g})"
    return None


# -- writing ------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    # Fixed point, not %g: Datumaro's loose-layout detector only accepts digits and dots.
    text = f"{value:.12f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _annotation_text(item: Item) -> str:
    lines = []
    for box in item.boxes:
        cx = (box.x + box.w / 2) / item.width
        cy = (box.y + box.h / 2) / item.height
        w = box.w / item.width
        h = box.h / item.height
        problem = _normalized_problem(cx, cy, w, h)
        if problem:
            raise OtxNldError(f"item {item.id!r} (subset {item.subset!r}), box {box.ann_id}: cannot write it "
                              f"in YOLO format, {problem}; clip the boxes to the image first")
        lines.append(f"{box.label} {_fmt(cx)} {_fmt(cy)} {_fmt(w)} {_fmt(h)}\n")
    return "".join(lines)


def _names_text(dataset: Dataset) -> str:
    for name in dataset.labels:
        if "\n" in name or name != name.strip():
            raise OtxNldError(f"label name {name!r} cannot be written to a names file "
                              "(newline or surrounding spaces)")
    return "".join(f"{name}\n" for name in dataset.labels)


def write_darknet(dataset: Dataset, out: Path, *, save_media: bool = True) -> None:
    """Write ``dataset`` in the Darknet layout into the empty directory ``out``.

    Subset names are kept as they are (Datumaro renames ``default`` to ``train``; keeping it
    makes our round trips lossless, and Datumaro reads any subset key). Without
    ``save_media`` the image lists still name ``obj_<subset>_data/<id><ext>`` but no image is
    copied, as Datumaro does: YOLO has no place for an absolute source path.

    Raises:
        OtxNldError: a subset name that cannot be an ``obj.data`` key, an item id that cannot
            be a file name, or a box outside its image.
        DatasetError: ``save_media`` and an image file is missing.
    """
    out = Path(out)
    names = _names_text(dataset)
    subset_lists = []
    for subset in dataset.subsets:
        if not _SUBSET_NAME.match(subset) or subset in RESERVED_KEYS:
            raise OtxNldError(f"subset {subset!r} cannot be written in YOLO Darknet format: subset names "
                              f"must be letters, digits or '_' and not one of {sorted(RESERVED_KEYS)}")
        data_dir_name = f"obj_{subset}_data"
        data_dir = out / data_dir_name
        data_dir.mkdir(parents=True, exist_ok=True)
        image_list = []
        for item in dataset.subset(subset):
            rel = check_item_id(item)
            image_name = f"{rel}{media_ext(item)}"
            ann_path = data_dir / f"{rel}.txt"
            ann_path.parent.mkdir(parents=True, exist_ok=True)
            ann_path.write_text(_annotation_text(item), encoding="utf-8")
            if save_media:
                export_media(item, data_dir / image_name)
            image_list.append(f"{DARKNET_PREFIX}{data_dir_name}/{image_name}\n")
        (out / f"{subset}.txt").write_text("".join(image_list), encoding="utf-8")
        subset_lists.append(subset)
    (out / NAMES_FILE).write_text(names, encoding="utf-8")
    config = [f"classes = {len(dataset.labels)}\n"]
    config += [f"{subset} = {DARKNET_PREFIX}{subset}.txt\n" for subset in subset_lists]
    config += [f"names = {DARKNET_PREFIX}{NAMES_FILE}\n", "backup = backup/\n"]
    (out / CONFIG_FILE).write_text("".join(config), encoding="utf-8")


def write_loose(dataset: Dataset, out: Path, *, save_media: bool = True) -> None:
    """Write a one-subset ``dataset`` in the loose layout into the empty directory ``out``.

    Every item gets an annotation file (empty for an item without boxes). The subset name is
    not stored; reading gives ``default``. Without ``save_media`` no image is copied.

    Raises:
        OtxNldError: the dataset has several subsets, or an id or box cannot be written.
        DatasetError: ``save_media`` and an image file is missing.
    """
    out = Path(out)
    if len(dataset.subsets) > 1:
        raise OtxNldError(f"the loose YOLO layout holds one subset, the dataset has {len(dataset.subsets)} "
                          f"({', '.join(dataset.subsets)}); export as 'yolo' (Darknet layout) or 'datumaro'")
    names = _names_text(dataset)
    ann_dir = out / ANNOTATION_DIRS[0]
    img_dir = out / IMAGE_DIRS[0]
    ann_dir.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    for item in dataset:
        rel = check_item_id(item)
        if rel.as_posix() == PurePosixPath(CLASSES_FILE).stem:
            raise OtxNldError(f"item id {item.id!r} clashes with {ANNOTATION_DIRS[0]}/{CLASSES_FILE} "
                              "in the loose YOLO layout; export as 'yolo' or 'datumaro'")
        ann_path = ann_dir / f"{rel}.txt"
        ann_path.parent.mkdir(parents=True, exist_ok=True)
        ann_path.write_text(_annotation_text(item), encoding="utf-8")
        if save_media:
            export_media(item, img_dir / f"{rel}{media_ext(item)}")
    (ann_dir / CLASSES_FILE).write_text(names, encoding="utf-8")
    (out / NAMES_FILE).write_text(names, encoding="utf-8")
