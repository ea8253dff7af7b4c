"""Dataset formats: one module per format, one flat ``{name: Format}`` table.

Every format module provides three functions:

- ``detect(root: Path) -> bool``: cheap check that ``root`` looks like this format;
- ``read(root: Path, *, skip_invalid: bool, on_skip: Callable[[DatasetError], None]) -> Dataset``;
- ``write(dataset: Dataset, out: Path, *, save_media: bool) -> None``: writes into an empty,
  existing directory ``out`` (the caller makes it atomic).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from otx_nld.data.dataset import Dataset
from otx_nld.data.formats import coco, datumaro, yolo
from otx_nld.errors import DatasetError, OtxNldError
from otx_nld.io import atomic_output_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    detect: Callable[[Path], bool]
    read: Callable[..., Dataset]
    write: Callable[..., None]


FORMATS: dict[str, Format] = {
    "datumaro": Format("datumaro", "Datumaro JSON: annotations/<subset>.json, images/<subset>/",
                       datumaro.detect, datumaro.read, datumaro.write),
    "coco": Format("coco", "COCO instances: annotations/instances_<subset>.json, images/<subset>/",
                   coco.detect, coco.read, coco.write),
    "yolo": Format("yolo", "YOLO, Darknet layout: obj.data, obj.names, obj_<subset>_data/, <subset>.txt "
                   "(import also reads the loose layout)",
                   yolo.detect, yolo.read, yolo.write_darknet),
    "yolo_loose": Format("yolo_loose", "YOLO, loose layout: Annotations/*.txt, Images/*, classes.txt/obj.names",
                         yolo.detect_loose, yolo.read, yolo.write_loose),
}


def _warn_skip(error: DatasetError) -> None:
    log.warning("skipped invalid annotation: %s", error)


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise OtxNldError(f"unknown format {name!r} (known: {', '.join(FORMATS)})") from None


def detect_format(root: str | Path) -> str:
    """The name of the format of the dataset at ``root``.

    Raises:
        DatasetError: ``root`` is not a directory, or matches no format or several.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "dataset directory does not exist" if not root.exists() else "not a directory")
    # yolo_loose and yolo share a reader; report the import format as "yolo" for both.
    found = [name for name, fmt in FORMATS.items() if name != "yolo_loose" and fmt.detect(root)]
    if not found and FORMATS["yolo_loose"].detect(root):
        found = ["yolo"]
    if not found:
        raise DatasetError(root, f"cannot detect the dataset format (known: {', '.join(FORMATS)}); pass a format")
    if len(found) > 1:
        raise DatasetError(root, f"ambiguous dataset format, looks like {' and '.join(found)}; pass a format")
    return found[0]


def import_dataset(path: str | Path, format: str | None = None, *, skip_invalid: bool = False,
                   on_skip: Callable[[DatasetError], None] | None = None) -> Dataset:
    """Read the dataset at ``path`` (see :meth:`Dataset.import_from`)."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(root, "dataset directory does not exist" if not root.exists() else "not a directory")
    fmt = get_format(format or detect_format(root))
    try:
        return fmt.read(root.resolve(), skip_invalid=skip_invalid, on_skip=on_skip or _warn_skip)
    except ValueError as e:
        # The dataclasses' own validation (duplicate items, bad label index, ...) that a reader
        # did not attribute to a line of a file: still name the dataset.
        raise DatasetError(root, f"invalid {fmt.name} dataset: {e}") from None


def export_dataset(dataset: Dataset, path: str | Path, format: str = "datumaro", *, save_media: bool = True,
                   overwrite: bool = False) -> Path:
    """Write ``dataset`` to ``path`` in ``format``; the directory appears only when complete."""
    fmt = get_format(format)
    path = Path(path)
    with atomic_output_dir(path, overwrite=overwrite) as tmp:
        fmt.write(dataset, tmp, save_media=save_media)
    return path
