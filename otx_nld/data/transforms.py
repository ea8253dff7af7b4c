"""Dataset transforms: subset splitting and annotation re-indexing.

Both are pure functions returning a new :class:`~otx_nld.data.dataset.Dataset`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from otx_nld.data.dataset import Dataset
from otx_nld.errors import ConfigError

_RATIO_TOLERANCE = 1e-6


def parse_splits(text: str) -> list[tuple[str, float]]:
    """Parse ``"train:0.5,val:0.2,test:0.3"`` into ``[("train", 0.5), ...]`` (validated)."""
    splits: list[tuple[str, float]] = []
    for part in text.split(","):
        name, sep, ratio = part.strip().partition(":")
        if not sep or not name.strip() or not ratio.strip():
            raise ConfigError(f"--splits: expected NAME:RATIO pairs separated by commas, got {part.strip()!r}")
        try:
            value = float(ratio)
        except ValueError:
            raise ConfigError(f"--splits: ratio of {name.strip()!r} is not a number: {ratio.strip()!r}") from None
        splits.append((name.strip(), value))
    return validate_splits(splits)


def validate_splits(splits: Sequence[tuple[str, float]] | Mapping[str, float]) -> list[tuple[str, float]]:
    """Check split names are unique and non-empty, ratios in (0, 1] and summing to 1."""
    pairs = list(splits.items()) if isinstance(splits, Mapping) else [tuple(p) for p in splits]
    if not pairs:
        raise ConfigError("splits: at least one NAME:RATIO is needed")
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ConfigError(f"splits: subset names must be unique, got {names}")
    for name, ratio in pairs:
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ConfigError(f"splits: invalid subset name {name!r}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
            raise ConfigError(f"splits: ratio of {name!r} must be a number, got {ratio!r}")
        if not 0 < ratio <= 1:
            raise ConfigError(f"splits: ratio of {name!r} must be in (0, 1], got {ratio:g}")
    total = sum(ratio for _, ratio in pairs)
    if abs(total - 1.0) > _RATIO_TOLERANCE:
        raise ConfigError(f"splits: ratios must sum to 1, got {total:g}")
    return [(name, float(ratio)) for name, ratio in pairs]


def _split_sizes(n: int, ratios: Sequence[float]) -> list[int]:
    """Largest-remainder rounding: sizes sum to ``n`` and each is within 1 of ``ratio * n``."""
    exact = [r * n for r in ratios]
    sizes = [math.floor(x) for x in exact]
    # Give the leftover items to the largest fractional parts; ties go to the earlier split.
    order = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in order[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def random_split(dataset: Dataset, splits: Sequence[tuple[str, float]] | Mapping[str, float],
                 seed: int = 0) -> Dataset:
    """Assign every item to one of the named subsets at random, in the given proportions.

    The assignment depends only on ``seed`` and the set of item keys (not their order in the
    dataset), and every item gets exactly one subset. Subset sizes are the ratios times the
    item count, rounded so they sum to the item count. Existing subsets are replaced; items
    keep their ids, so ids must be unique across the dataset.

    Returns:
        A dataset whose items are ordered by subset (in ``splits`` order), then by id.
    """
    pairs = validate_splits(splits)
    ids = [item.id for item in dataset.items]
    if len(set(ids)) != len(ids):
        raise ConfigError("random_split: item ids repeat across subsets; they must be unique to re-split")
    items = sorted(dataset.items, key=lambda item: item.id)
    order = np.random.default_rng(seed).permutation(len(items))
    sizes = _split_sizes(len(items), [ratio for _, ratio in pairs])
    result = []
    start = 0
    for (name, _), size in zip(pairs, sizes):
        chosen = sorted((items[i] for i in order[start:start + size]), key=lambda item: item.id)
        result.extend(item.replace(subset=name) for item in chosen)
        start += size
    return dataset.with_items(result)


def reindex_annotations(dataset: Dataset, start: int = 1) -> Dataset:
    """Give every box a unique ann id, ``start, start+1, ...`` in dataset order."""
    next_id = start
    items = []
    for item in dataset.items:
        boxes = []
        for box in item.boxes:
            boxes.append(box.replace(ann_id=next_id))
            next_id += 1
        items.append(item.replace(boxes=tuple(boxes)))
    return dataset.with_items(items)
