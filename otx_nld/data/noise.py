"""Synthetic label noise with a truth manifest.

Four error kinds, following Schubert et al. (WACV 2024), applied to one subset:

- ``flip``: the box's class changes to a different class (the tutorial's case);
- ``shift``: the box is moved and resized so its IoU with the original lies in [0.4, 0.7);
- ``drop``: the box is removed (a missing label);
- ``spawn``: a spurious box (label and size copied from a box of another image) is added
  where it overlaps no real box.

Flip, shift and drop touch disjoint boxes. Every change is listed in a :class:`NoiseTruth`,
saved as ``noise_truth.json`` beside the noisy dataset, so analyses can be scored against it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from otx_nld.data.dataset import Box, Dataset, Item
from otx_nld.errors import ConfigError, DatasetError
from otx_nld.io import atomic_write_json

NoiseKind = Literal["flip", "shift", "drop", "spawn"]
NOISE_KINDS: tuple[NoiseKind, ...] = ("flip", "shift", "drop", "spawn")
SHIFT_IOU_RANGE = (0.4, 0.7)
TRUTH_FORMAT = "otx-nld-noise-truth"
TRUTH_FILENAME = "noise_truth.json"

_MAX_TRIES = 200
_MIN_SHIFTED_SIZE = 2.0  # px: a shifted box must stay a box, not a sliver


@dataclass(frozen=True)
class NoiseSpec:
    """How much noise of each kind: an absolute count, or a rate of the subset's boxes.

    For each kind give at most one of ``<kind>`` (count) and ``<kind>_rate``; a rate is turned
    into ``round(rate * number of boxes in the subset)``.
    """

    flip: int | None = None
    shift: int | None = None
    drop: int | None = None
    spawn: int | None = None
    flip_rate: float | None = None
    shift_rate: float | None = None
    drop_rate: float | None = None
    spawn_rate: float | None = None

    def __post_init__(self) -> None:
        for kind in NOISE_KINDS:
            count, rate = getattr(self, kind), getattr(self, f"{kind}_rate")
            if count is not None and rate is not None:
                raise ConfigError(f"noise: give either {kind} or {kind}_rate, not both")
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
                raise ConfigError(f"noise: {kind} must be a non-negative integer, got {count!r}")
            if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                     or not math.isfinite(rate) or not 0 <= rate <= 1):
                raise ConfigError(f"noise: {kind}_rate must be in [0, 1], got {rate!r}")

    def counts(self, num_boxes: int) -> dict[str, int]:
        """The number of changes of each kind for a subset with ``num_boxes`` boxes."""
        result = {}
        for kind in NOISE_KINDS:
            count, rate = getattr(self, kind), getattr(self, f"{kind}_rate")
            result[kind] = count if count is not None else round((rate or 0.0) * num_boxes)
        return result

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class BoxRecord:
    """A box as written in the truth manifest."""

    label_id: int
    label: str
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels

    def as_dict(self) -> dict[str, Any]:
        return {"label_id": self.label_id, "label": self.label, "bbox": list(self.bbox)}

    @classmethod
    def of(cls, box: Box, labels: tuple[str, ...]) -> BoxRecord:
        return cls(box.label, labels[box.label], box.xywh)


@dataclass(frozen=True)
class NoiseChange:
    """One synthesized error.

    ``original`` is ``None`` for ``spawn`` (the box did not exist); ``noisy`` is ``None`` for
    ``drop`` (the box no longer exists). ``source`` names the box a spawned one was copied from.
    """

    item_id: str
    subset: str
    ann_id: int
    kind: NoiseKind
    original: BoxRecord | None
    noisy: BoxRecord | None
    source: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "item_id": self.item_id, "subset": self.subset, "ann_id": self.ann_id, "kind": self.kind,
            "original": self.original.as_dict() if self.original else None,
            "noisy": self.noisy.as_dict() if self.noisy else None,
        }
        if self.source is not None:
            row["source"] = self.source
        return row


@dataclass(frozen=True)
class NoiseTruth:
    """The manifest of all synthesized changes (``noise_truth.json``)."""

    subset: str
    seed: int
    spec: dict[str, Any]
    num_boxes_before: int
    changes: tuple[NoiseChange, ...] = field(default_factory=tuple)

    def counts(self) -> dict[str, int]:
        return {kind: sum(c.kind == kind for c in self.changes) for kind in NOISE_KINDS}

    def keys(self, kind: NoiseKind | None = None) -> set[tuple[str, str, int]]:
        """``(item_id, subset, ann_id)`` of the changed boxes (optionally of one kind)."""
        return {(c.item_id, c.subset, c.ann_id) for c in self.changes if kind is None or c.kind == kind}

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": TRUTH_FORMAT, "version": 1, "subset": self.subset, "seed": self.seed,
            "spec": self.spec, "num_boxes_before": self.num_boxes_before, "counts": self.counts(),
            "changes": [c.as_dict() for c in self.changes],
        }

    def save(self, path: str | Path) -> Path:
        atomic_write_json(path, self.as_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> NoiseTruth:
        """Read a manifest written by :meth:`save`; errors name the file and the problem."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(path, "truth manifest does not exist") from None
        except json.JSONDecodeError as e:
            raise DatasetError(path, f"invalid JSON: {e.msg}", line=e.lineno) from None
        if not isinstance(data, dict) or data.get("format") != TRUTH_FORMAT:
            raise DatasetError(path, f"not an otx-nld noise truth manifest (expected format {TRUTH_FORMAT!r})")
        try:
            changes = tuple(_change_from_dict(row) for row in data["changes"])
            return cls(str(data["subset"]), int(data["seed"]), dict(data.get("spec", {})),
                       int(data["num_boxes_before"]), changes)
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(path, f"malformed truth manifest: {type(e).__name__}: {e}") from None


def _record_from_dict(row: dict[str, Any] | None) -> BoxRecord | None:
    if row is None:
        return None
    x, y, w, h = (float(v) for v in row["bbox"])
    return BoxRecord(int(row["label_id"]), str(row["label"]), (x, y, w, h))


def _change_from_dict(row: dict[str, Any]) -> NoiseChange:
    kind = row["kind"]
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}")
    return NoiseChange(str(row["item_id"]), str(row["subset"]), int(row["ann_id"]), kind,
                       _record_from_dict(row["original"]), _record_from_dict(row["noisy"]), row.get("source"))


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _shifted_box(box: Box, item: Item, rng: np.random.Generator) -> Box | None:
    """``box`` moved and resized inside the image with IoU in [0.4, 0.7), or None if not found."""
    lo, hi = SHIFT_IOU_RANGE
    for _ in range(_MAX_TRIES):
        scale_w, scale_h = np.exp(rng.uniform(-0.35, 0.35, size=2))
        w, h = box.w * scale_w, box.h * scale_h
        cx = box.x + box.w / 2 + rng.uniform(-0.6, 0.6) * box.w
        cy = box.y + box.h / 2 + rng.uniform(-0.6, 0.6) * box.h
        x1, y1 = cx - w / 2, cy - h / 2
        candidate = (x1, y1, x1 + w, y1 + h)
        if (w < _MIN_SHIFTED_SIZE or h < _MIN_SHIFTED_SIZE or x1 < 0 or y1 < 0
                or candidate[2] > item.width or candidate[3] > item.height):
            continue
        if lo <= box_iou(candidate, box.xyxy) < hi:
            return box.replace(x=float(x1), y=float(y1), w=float(w), h=float(h))
    return None


def _spawn_box(source: Box, item: Item, occupied: list[tuple[float, float, float, float]],
               ann_id: int, rng: np.random.Generator) -> Box | None:
    """A copy of ``source``'s size and label placed in ``item`` over no occupied area."""
    if source.w > item.width or source.h > item.height:
        return None
    for _ in range(_MAX_TRIES):
        x = rng.uniform(0, item.width - source.w)
        y = rng.uniform(0, item.height - source.h)
        candidate = (x, y, x + source.w, y + source.h)
        if not any(_overlaps(candidate, other) for other in occupied):
            return Box(float(x), float(y), source.w, source.h, source.label, ann_id)
    return None


def synthesize_noise(dataset: Dataset, spec: NoiseSpec, subset: str | None = "train",
                     seed: int = 0) -> tuple[Dataset, NoiseTruth]:
    """Inject label noise into one subset and return the noisy dataset and its truth.

    Args:
        dataset: the clean dataset; ann ids must be unique (see ``reindex_annotations``).
        spec: how many changes of each kind.
        subset: the subset to corrupt; ``None`` means the dataset must have a single subset.
        seed: the same seed, dataset and spec give the same changes.

    Raises:
        ConfigError: the subset does not exist, ann ids repeat, too few boxes or labels for the
            requested changes, or no valid placement could be found.
    """
    if subset is None:
        if len(dataset.subsets) != 1:
            raise ConfigError(f"noise: the dataset has subsets {list(dataset.subsets)}; choose one with subset=")
        subset = dataset.subsets[0]
    if subset not in dataset.subsets:
        raise ConfigError(f"noise: no subset {subset!r} (subsets: {', '.join(dataset.subsets)})")
    if not dataset.has_unique_ann_ids():
        raise ConfigError("noise: annotation ids are not unique; reindex the dataset first "
                          "(otx-nld data split reindexes, or Dataset.reindex_annotations())")
    rng = np.random.default_rng(seed)
    labels = dataset.labels
    items = list(dataset.items)
    target = [i for i, item in enumerate(items) if item.subset == subset]
    pool = [(i, j) for i in target for j in range(len(items[i].boxes))]
    counts = spec.counts(len(pool))
    if counts["flip"] and len(labels) < 2:
        raise ConfigError("noise: flipping labels needs at least 2 labels")
    needed = counts["flip"] + counts["shift"] + counts["drop"]
    if needed > len(pool):
        raise ConfigError(f"noise: {needed} flips/shifts/drops requested but subset {subset!r} "
                          f"has only {len(pool)} boxes")
    order = [pool[k] for k in rng.permutation(len(pool))]

    changes: list[NoiseChange] = []
    new_boxes: dict[int, list[Box | None]] = {i: list(items[i].boxes) for i in target}

    for i, j in order[:counts["flip"]]:
        box = items[i].boxes[j]
        new_label = int(rng.choice([k for k in range(len(labels)) if k != box.label]))
        noisy = box.replace(label=new_label)
        new_boxes[i][j] = noisy
        changes.append(NoiseChange(items[i].id, subset, box.ann_id, "flip",
                                   BoxRecord.of(box, labels), BoxRecord.of(noisy, labels)))

    rest = iter(order[counts["flip"]:])
    shifted = 0
    dropped_candidates: list[tuple[int, int]] = []
    for i, j in rest:
        if shifted == counts["shift"]:
            dropped_candidates.append((i, j))
            break
        box = items[i].boxes[j]
        noisy = _shifted_box(box, items[i], rng)
        if noisy is None:  # box too large to move inside the image; leave it for drop
            dropped_candidates.append((i, j))
            continue
        new_boxes[i][j] = noisy
        shifted += 1
        changes.append(NoiseChange(items[i].id, subset, box.ann_id, "shift",
                                   BoxRecord.of(box, labels), BoxRecord.of(noisy, labels)))
    if shifted < counts["shift"]:
        raise ConfigError(f"noise: could only shift {shifted} of {counts['shift']} boxes inside their images")
    dropped_candidates.extend(rest)
    if len(dropped_candidates) < counts["drop"]:
        raise ConfigError(f"noise: not enough boxes left to drop {counts['drop']}")
    for i, j in dropped_candidates[:counts["drop"]]:
        box = items[i].boxes[j]
        new_boxes[i][j] = None
        changes.append(NoiseChange(items[i].id, subset, box.ann_id, "drop", BoxRecord.of(box, labels), None))

    if counts["spawn"]:
        sources = [(i, j) for i, j in pool]
        if not sources or len(target) < 2:
            raise ConfigError("noise: spawning needs a subset with at least 2 images and 1 box")
        # Spawned boxes must not overlap any real box, including dropped ones (the object is
        # still in the picture) or boxes spawned earlier.
        occupied = {i: [b.xyxy for b in items[i].boxes] for i in target}
        next_ann_id = max((b.ann_id for _, b in dataset.iter_boxes()), default=0) + 1
        spawned, attempts = 0, 0
        while spawned < counts["spawn"]:
            attempts += 1
            if attempts > _MAX_TRIES * max(counts["spawn"], 1):
                raise ConfigError(f"noise: could only place {spawned} of {counts['spawn']} spawned boxes "
                                  "without overlapping real boxes")
            si, sj = sources[int(rng.integers(len(sources)))]
            ti = target[int(rng.integers(len(target)))]
            if ti == si:
                continue
            source = items[si].boxes[sj]
            box = _spawn_box(source, items[ti], occupied[ti], next_ann_id, rng)
            if box is None:
                continue
            occupied[ti].append(box.xyxy)
            new_boxes[ti].append(box)
            changes.append(NoiseChange(items[ti].id, subset, box.ann_id, "spawn", None, BoxRecord.of(box, labels),
                                       source={"item_id": items[si].id, "subset": subset, "ann_id": source.ann_id}))
            next_ann_id += 1
            spawned += 1

    for i in target:
        items[i] = items[i].replace(boxes=tuple(b for b in new_boxes[i] if b is not None))
    truth = NoiseTruth(subset, seed, spec.as_dict(), len(pool), tuple(changes))
    return dataset.with_items(items), truth
