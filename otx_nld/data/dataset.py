"""The central dataset model: items with boxes, label names and dataset-level infos.

Everything in otx-nld (formats, transforms, noise, training, analysis) reads and writes these
few frozen dataclasses. They validate themselves on construction, so a ``Dataset`` that exists
is a consistent one: every box has a positive size and a label that names a category, and
``(subset, item id)`` pairs are unique. Box coordinates are in pixels, ``x, y`` the top-left
corner, as in COCO and Datumaro.

Transforms never mutate: they return new objects (``dataclasses.replace`` or the ``with_*``
helpers), so a dataset can be shared freely between a loader and an exporter.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_SUBSET = "default"


def _freeze(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Box:
    """An axis-aligned bounding box annotation.

    Attributes:
        x, y: top-left corner in pixels.
        w, h: width and height in pixels, both > 0.
        label: index into :attr:`Dataset.labels`.
        ann_id: integer annotation id; unique across the dataset after
            :func:`otx_nld.data.transforms.reindex_annotations`. Every per-annotation number
            otx-nld produces (loss, score, candidate) is keyed by it.
        attributes: free-form per-box attributes, kept through formats that can hold them.
    """

    x: float
    y: float
    w: float
    h: float
    label: int
    ann_id: int
    attributes: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("x", "y", "w", "h"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"box {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.w <= 0 or self.h <= 0:
            raise ValueError(f"box size must be positive, got w={self.w:g} h={self.h:g}")
        if not _is_int(self.label) or self.label < 0:
            raise ValueError(f"box label must be a non-negative integer, got {self.label!r}")
        if not _is_int(self.ann_id):
            raise ValueError(f"box ann_id must be an integer, got {self.ann_id!r}")
        object.__setattr__(self, "attributes", _freeze(self.attributes))

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` corners in pixels."""
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)

    @property
    def area(self) -> float:
        return self.w * self.h

    @classmethod
    def from_xyxy(cls, x1: float, y1: float, x2: float, y2: float, label: int, ann_id: int,
                  attributes: Mapping[str, Any] | None = None) -> Box:
        return cls(x1, y1, x2 - x1, y2 - y1, label, ann_id, attributes or {})

    def replace(self, **changes: Any) -> Box:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Item:
    """One image and its boxes.

    Attributes:
        id: item id, kept exactly as given by the source (never lowercased or renamed).
        subset: subset name, e.g. ``train``; a dataset without subsets uses ``"default"``.
        image_path: absolute path of the image file, or ``None`` when the source has none.
        width, height: image size in pixels.
        boxes: the item's boxes, in source order.
        attributes: free-form item attributes.
    """

    id: str
    subset: str
    image_path: Path | None
    width: int
    height: int
    boxes: tuple[Box, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"item id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.subset, str) or not self.subset:
            raise ValueError(f"item {self.id!r}: subset must be a non-empty string")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"item {self.id!r}: image {name} must be a positive integer, got {value!r}")
        if self.image_path is not None:
            object.__setattr__(self, "image_path", Path(self.image_path))
        boxes = tuple(self.boxes)
        for box in boxes:
            if not isinstance(box, Box):
                raise ValueError(f"item {self.id!r}: boxes must be Box objects, got {type(box).__name__}")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "attributes", _freeze(self.attributes))

    @property
    def key(self) -> tuple[str, str]:
        """``(subset, id)``: what identifies an item within a dataset."""
        return (self.subset, self.id)

    def replace(self, **changes: Any) -> Item:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Dataset:
    """A detection dataset: items, label names and dataset-level infos.

    Build one from files with :meth:`import_from`, write it with :meth:`export`.

    Attributes:
        items: all items of all subsets, in a stable order.
        labels: label names; a box's ``label`` indexes this tuple.
        infos: dataset-level key/values (Datumaro ``infos``), e.g. the noisy-label-detection
            ``purpose`` of exported loss statistics.
    """

    items: tuple[Item, ...]
    labels: tuple[str, ...]
    infos: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        items = tuple(self.items)
        labels = tuple(self.labels)
        for name in labels:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"label names must be non-empty strings, got {name!r}")
        duplicated = [name for name, n in Counter(labels).items() if n > 1]
        if duplicated:
            raise ValueError(f"duplicate label names: {duplicated}")
        seen: set[tuple[str, str]] = set()
        for item in items:
            if not isinstance(item, Item):
                raise ValueError(f"dataset items must be Item objects, got {type(item).__name__}")
            if item.key in seen:
                raise ValueError(f"duplicate item {item.id!r} in subset {item.subset!r}")
            seen.add(item.key)
            for box in item.boxes:
                if box.label >= len(labels):
                    raise ValueError(
                        f"item {item.id!r}: box {box.ann_id} has label {box.label}, "
                        f"but there are only {len(labels)} labels"
                    )
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "infos", _freeze(self.infos))

    # -- access -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    @property
    def subsets(self) -> tuple[str, ...]:
        """Subset names in order of first appearance."""
        return tuple(dict.fromkeys(item.subset for item in self.items))

    @property
    def num_boxes(self) -> int:
        return sum(len(item.boxes) for item in self.items)

    def subset(self, name: str) -> Dataset:
        """The items of one subset, as a dataset with the same labels and infos."""
        if name not in self.subsets:
            from otx_nld.errors import OtxNldError

            raise OtxNldError(f"no subset {name!r} in dataset (subsets: {', '.join(self.subsets) or 'none'})")
        return self.with_items(item for item in self.items if item.subset == name)

    def get(self, item_id: str, subset: str | None = None) -> Item:
        """The item with this id (and subset, when ids repeat across subsets)."""
        matches = [i for i in self.items if i.id == item_id and (subset is None or i.subset == subset)]
        if not matches:
            raise KeyError(f"no item {item_id!r}" + (f" in subset {subset!r}" if subset else ""))
        if len(matches) > 1:
            raise KeyError(f"item id {item_id!r} is in several subsets; pass subset=")
        return matches[0]

    def iter_boxes(self) -> Iterator[tuple[Item, Box]]:
        """Every ``(item, box)`` pair, in dataset order."""
        for item in self.items:
            for box in item.boxes:
                yield item, box

    def has_unique_ann_ids(self) -> bool:
        ids = [box.ann_id for _, box in self.iter_boxes()]
        return len(ids) == len(set(ids))

    def with_items(self, items: Iterable[Item]) -> Dataset:
        """A dataset with the same labels and infos and other items."""
        return Dataset(tuple(items), self.labels, self.infos)

    def replace(self, **changes: Any) -> Dataset:
        return dataclasses.replace(self, **changes)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per subset: ``items``, ``boxes`` and the box count of every label (zeros kept)."""
        table: dict[str, dict[str, int]] = {}
        for subset in self.subsets:
            row = {"items": 0, "boxes": 0, **{name: 0 for name in self.labels}}
            table[subset] = row
        for item in self.items:
            row = table[item.subset]
            row["items"] += 1
            row["boxes"] += len(item.boxes)
            for box in item.boxes:
                row[self.labels[box.label]] += 1
        return table

    def counts_table(self) -> str:
        """:meth:`counts` as an aligned text table, with a total row when there are subsets."""
        counts = self.counts()
        columns = ["subset", "items", "boxes", *self.labels]
        rows = [[subset, *(str(row[c]) for c in columns[1:])] for subset, row in counts.items()]
        if len(rows) > 1:
            rows.append(["total", *(str(sum(row[c] for row in counts.values())) for c in columns[1:])])
        widths = [max([len(columns[k])] + [len(r[k]) for r in rows]) for k in range(len(columns))]

        def line(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))

        return "\n".join([line(columns), *(line(r) for r in rows)])

    # -- files --------------------------------------------------------------------------

    @classmethod
    def import_from(cls, path: str | Path, format: str | None = None, *, skip_invalid: bool = False,
                    on_skip: Any = None) -> Dataset:
        """Read a dataset from ``path``; ``format=None`` detects it.

        Args:
            path: dataset root directory.
            format: one of :data:`otx_nld.data.formats.FORMATS` (``yolo``, ``yolo_loose``,
                ``coco``, ``datumaro``), or ``None`` to detect.
            skip_invalid: skip invalid annotations (reporting each through ``on_skip``)
                instead of failing on the first one. Structural errors still fail.
            on_skip: ``callable(DatasetError)`` receiving each skipped annotation; defaults to
                a logged warning.

        Raises:
            otx_nld.errors.DatasetError: naming the file (and line) and what is wrong.
        """
        from otx_nld.data.formats import import_dataset

        return import_dataset(path, format, skip_invalid=skip_invalid, on_skip=on_skip)

    def export(self, path: str | Path, format: str = "datumaro", *, save_media: bool = True,
               overwrite: bool = False) -> Path:
        """Write the dataset to the directory ``path`` atomically.

        Args:
            format: ``datumaro`` (keeps everything), ``coco``, ``yolo`` (Darknet layout, one
                ``obj_<subset>_data/`` per subset) or ``yolo_loose`` (one subset).
            save_media: copy image files (byte for byte, never re-encoded) into the output.
                Without it, Datumaro/COCO files reference the source images by absolute path.
            overwrite: replace a non-empty ``path``.
        """
        from otx_nld.data.formats import export_dataset

        return export_dataset(self, path, format, save_media=save_media, overwrite=overwrite)

    # -- transforms (thin wrappers, see otx_nld.data.transforms / noise) --------------------

    def random_split(self, splits: Sequence[tuple[str, float]] | Mapping[str, float], seed: int = 0) -> Dataset:
        from otx_nld.data.transforms import random_split

        return random_split(self, splits, seed=seed)

    def reindex_annotations(self, start: int = 1) -> Dataset:
        from otx_nld.data.transforms import reindex_annotations

        return reindex_annotations(self, start=start)
