"""Helpers shared by the format modules: strict parsing, image headers, media export, JSON."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

from otx_nld.data.dataset import Dataset, Item
from otx_nld.errors import DatasetError, OtxNldError
from otx_nld.io import copy_media

#: File extensions recognised as images (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: Image extension used for an item that has no source image (the file is never written then).
DEFAULT_IMAGE_EXT = ".jpg"

SkipHandler = Callable[[DatasetError], None]


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a file with an image extension."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


class InvalidReporter:
    """Raises an annotation-level error, or hands it to ``on_skip`` under ``skip_invalid``.

    Only per-annotation problems go through here; structural problems (missing files, bad
    images, broken JSON) are raised directly because nothing sensible can be skipped.
    """

    def __init__(self, skip_invalid: bool, on_skip: SkipHandler | None):
        self.skip_invalid = skip_invalid
        self.on_skip = on_skip

    def __call__(self, error: DatasetError) -> None:
        if not self.skip_invalid:
            raise error
        if self.on_skip is not None:
            self.on_skip(error)


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; a missing or undecodable file is a :class:`DatasetError`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(path, "file does not exist") from None
    except OSError as e:
        raise DatasetError(path, f"cannot read file: {e.strerror or e}") from None
    try:
        # utf-8-sig: files saved by Windows editors often start with a BOM.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatasetError(path, "file is not valid UTF-8 text", line=line) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(path: Path) -> Any:
    """Parse a JSON file; syntax errors name the line (NaN/Infinity are rejected too)."""
    text = read_text(path)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise DatasetError(path, f"invalid JSON: {e.msg} (column {e.colno})", line=e.lineno) from None
    except ValueError as e:
        raise DatasetError(path, f"invalid JSON: {e}") from None


def dump_json(path: Path, obj: Any) -> None:
    """Write ``obj`` (already made JSON-safe with :func:`to_jsonable`) as UTF-8 JSON.

    The caller builds the whole output directory atomically, so a plain write is enough.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, allow_nan=False), encoding="utf-8")


def to_jsonable(value: Any, where: str) -> Any:
    """``value`` converted to plain JSON types (dict/list/str/int/float/bool/None).

    Attributes are free-form, so they may hold read-only mappings, tuples, paths or numpy
    values; JSON has none of those. Non-finite floats are refused because strict JSON parsers
    (Datumaro's orjson among them) cannot read ``NaN``.

    Raises:
        OtxNldError: naming ``where`` when a value cannot be stored in JSON.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OtxNldError(f"{where}: cannot store the non-finite number {value!r} in JSON")
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, sub in value.items():
            if not isinstance(key, str):
                raise OtxNldError(f"{where}: JSON object keys must be strings, got {key!r}")
            out[key] = to_jsonable(sub, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(sub, f"{where}[{i}]") for i, sub in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    # numpy scalars and arrays, without importing numpy here.
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return to_jsonable(tolist(), where)
    raise OtxNldError(f"{where}: cannot store a {type(value).__name__} value in JSON")


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header; the pixels are not decoded.

    Raises:
        DatasetError: the file is missing or not an image PIL can identify.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
    except FileNotFoundError:
        raise DatasetError(path, "image file does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        # PIL raises SyntaxError for some malformed headers (e.g. PNG chunks).
        raise DatasetError(path, f"cannot read image: {e}") from None
    if width <= 0 or height <= 0:
        raise DatasetError(path, f"image has an invalid size {width}x{height}")
    return int(width), int(height)


def check_item_id(item: Item) -> PurePosixPath:
    """The item id as a relative path for output files; refuses ids that would escape ``out``."""
    rel = PurePosixPath(item.id)
    if (rel.is_absolute() or ".." in rel.parts or "\\" in item.id or "\n" in item.id or "\r" in item.id
            or str(rel) != item.id):
        raise OtxNldError(
            f"item {item.id!r} (subset {item.subset!r}): the id cannot be used as a file name "
            "(absolute, '..', backslash, newline or redundant slashes)"
        )
    return rel


def media_ext(item: Item) -> str:
    """Extension of the item's image file, kept on export (bytes are copied, never re-encoded)."""
    if item.image_path is not None and item.image_path.suffix:
        return item.image_path.suffix
    return DEFAULT_IMAGE_EXT


def export_media(item: Item, dst: Path) -> None:
    """Copy the item's image to ``dst`` byte for byte; an item without an image has nothing to copy.

    Raises:
        DatasetError: the item's image file is missing.
    """
    if item.image_path is None:
        return
    if not item.image_path.is_file():
        raise DatasetError(item.image_path, f"image file of item {item.id!r} (subset {item.subset!r}) "
                                            "does not exist, cannot save it")
    copy_media(item.image_path, dst)


def sort_items(items: Iterable[Item]) -> list[Item]:
    """Items in the canonical ``(subset, id)`` order that every reader returns."""
    return sorted(items, key=lambda item: item.key)


def build_dataset(path: Path, items: Iterable[Item], labels: Iterable[str],
                  infos: Mapping[str, Any] | None = None) -> Dataset:
    """A :class:`Dataset`; its own validation errors become a :class:`DatasetError` on ``path``."""
    try:
        return Dataset(tuple(sort_items(items)), tuple(labels), infos or {})
    except ValueError as e:
        raise DatasetError(path, str(e)) from None


SubsetFile = tuple[Path, tuple[str, ...], Mapping[str, Any], list[Item]]


def merge_subset_files(root: Path, parts: Iterable[SubsetFile], what: str = "label categories") -> Dataset:
    """One dataset from per-subset files ``(path, labels, infos, items)`` (COCO, Datumaro).

    Every file must list the same labels, since a box label indexes one shared list. Subset
    files usually repeat the same infos; on a conflict the first file wins.
    """
    labels: tuple[str, ...] = ()
    first: Path | None = None
    infos: dict[str, Any] = {}
    items: list[Item] = []
    for path, file_labels, file_infos, file_items in parts:
        if first is None:
            labels, first = file_labels, path
        elif file_labels != labels:
            raise DatasetError(path, f"{what} {list(file_labels)} differ from {list(labels)} in {first.name}")
        for key, value in file_infos.items():
            infos.setdefault(key, value)
        items.extend(file_items)
    return build_dataset(root, items, labels, infos)


def parse_names(path: Path) -> tuple[str, ...]:
    """Label names from a one-name-per-line file (``obj.names``, ``classes.txt``).

    Blank lines are skipped; names keep inner spaces (``traffic light``).
    """
    names: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in first_line:
            raise DatasetError(path, f"duplicate label name {name!r} (first on line {first_line[name]})",
                               line=lineno)
        first_line[name] = lineno
        names.append(name)
    if not names:
        raise DatasetError(path, "label names file is empty")
    return tuple(names)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_json_box(ann: Any, required: tuple[str, ...]) -> tuple[int, tuple[float, float, float, float]]:
    """``(ann id, (x, y, w, h))`` of a COCO/Datumaro JSON box annotation.

    Checks that ``ann`` is an object with every key of ``required``, an integer ``id`` and a
    ``bbox`` of 4 numbers with positive size; ``ValueError`` says what is wrong.
    """
    if not isinstance(ann, dict):
        raise ValueError("annotation must be a JSON object")
    for key in required:
        if key not in ann:
            raise ValueError(f"missing key {key!r}")
    ann_id = ann["id"]
    if not is_int(ann_id):
        raise ValueError(f"'id' must be an integer, got {ann_id!r}")
    bbox = ann["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
        raise ValueError(f"bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise ValueError(f"bbox width and height must be positive, got w={w:g} h={h:g}")
    return ann_id, (x, y, w, h)


def resolve_image_path(root: Path, subset: str, file_name: str, images_dir: str = "images") -> Path:
    """An image referenced by a COCO/Datumaro file: absolute as given, else the first existing
    of ``<root>/images/<subset>/<file_name>`` and ``<root>/images/<file_name>``.

    A missing file is not an error here (both formats carry image sizes); it matters only to
    exports that copy media, which then name the first path tried.
    """
    if Path(file_name).is_absolute():
        return Path(file_name)
    candidates = [root / images_dir / subset / file_name, root / images_dir / file_name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]
