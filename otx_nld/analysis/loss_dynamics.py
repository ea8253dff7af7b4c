"""Per-annotation training loss dynamics: load them, score every box, rank noisy-label candidates.

This generalizes the analyzer of the Datumaro + OpenVINO Training Extensions tutorial
(Datumaro 1.11's ``LossDynamicsAnalyzer``) and reproduces its ``ema`` score exactly, but
columnar and vectorized: the statistics are a few flat numpy arrays (:class:`LossStats`),
rows grouped by box and sorted by iteration, and every score is a handful of array operations
over all boxes at once instead of one pandas Series per box.

Sources (:meth:`LossStats.load` detects which):

- our Parquet stats directory (``<run>/stats/part-*.parquet``, see
  :mod:`otx_nld.training.tracking`);
- the tutorial's Datumaro layout (``<run>/noisy_label_detection/``: infos ``purpose:
  noisy_label_detection``, per box ``iters`` and ``loss_dynamics_<type>`` lists), read with
  our own Datumaro reader.

Scores (:data:`SCORES`, chosen by name; higher = more likely a noisy label):

- ``ema`` -- the tutorial's: EMA of the box's losses, one step per observation, starting
  from 0, taken at the box's last observation;
- ``mean`` -- mean loss over all the box's observations;
- ``late_mean`` -- mean over the observations in the last ``fraction`` (default 50%) of the
  run's iterations;
- ``label_norm`` -- the box's mean loss divided by the median box mean of its label;
- ``rank_avg`` -- average over cls, bbox and centerness of the percentile rank of the box's
  mean loss of that type;
- ``rank_max`` -- the highest, over the tracked types of a combination (``cls+bbox``), of
  the percentile rank of the box's ``late_mean`` of that type;
- ``final`` -- the loss at the box's last observation.

Every score works on any tracked type. Besides the losses, our runs track ``margin`` (largest
other-class logit minus the labelled class's logit, see
:class:`~otx_nld.model.losses.AnnotationLosses`): its ``mean`` is the negative of the
area under the margin (AUM, Pleiss et al. 2020).

Box order and ties: boxes are kept sorted by ``(subset, item_id, ann_id)`` (Python string
order for the ids). Rankings put higher scores first and break exact ties by that box order,
so a ranking never depends on the source format or on row order.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from otx_nld.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from otx_nld.data.dataset import Dataset

__all__ = [
    "DEFAULT_LOSS_TYPES", "EmaCurves", "LossDynamicsAnalyzer", "LossStats", "NoisyLabelCandidate",
    "SCORES", "ScoreTable", "ema_by_group",
]

BoxKey = tuple[str, str, int]
"""``(item_id, subset, ann_id)``: what identifies a box (the NoiseTruth key)."""

DEFAULT_LOSS_TYPES = ("cls", "bbox", "centerness")
NLD_PURPOSE = "noisy_label_detection"
DETECTION_TASK = "OTX-Det"
LOSS_PREFIX = "loss_dynamics_"
ITERS_KEY = "iters"
STATS_DIRNAME = "stats"
DATUMARO_DIRNAME = "noisy_label_detection"
RUN_INFO = "run.json"


# -- statistics -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LossStats:
    """Per-annotation loss statistics as flat arrays (one row = one box in one iteration).

    Rows are grouped by box (box ``b`` owns rows ``starts[b]:starts[b + 1]``) and sorted by
    iteration within a box; boxes are sorted by ``(subset, item_id, ann_id)``. Construct with
    :meth:`load`, :meth:`from_stats_dir`, :meth:`from_datumaro` or :meth:`from_arrays`; the
    constructor itself only checks that the arrays are consistent.

    Attributes:
        box: ``(R,)`` int64, the row's box index (non-decreasing).
        iteration: ``(R,)`` int64, the training iteration of the row (increasing per box).
        losses: tracked type -> ``(R,)`` float64 (``cls``, ``bbox``, ``centerness`` and, since it
            is tracked, ``margin`` for our runs; whatever ``loss_dynamics_<type>`` a Datumaro
            export holds).
        item_id, subset: ``(B,)`` object arrays of str.
        ann_id: ``(B,)`` int64.
        label_id: ``(B,)`` int64, index into ``labels``.
        labels: label names.
        epoch: ``(R,)`` int64 when the source records epochs (Parquet), else ``None``.
        unobserved: boxes of the source without any observation (empty loss lists); they
            cannot be scored and are not among the ``B`` boxes.
        source: where the statistics were read from, for messages.
    """

    box: np.ndarray
    iteration: np.ndarray
    losses: Mapping[str, np.ndarray]
    item_id: np.ndarray
    subset: np.ndarray
    ann_id: np.ndarray
    label_id: np.ndarray
    labels: tuple[str, ...]
    epoch: np.ndarray | None = None
    unobserved: tuple[BoxKey, ...] = ()
    source: Path | None = None
    starts: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rows, boxes = self.box.shape[0], self.item_id.shape[0]
        where = self.source
        for name in ("iteration", *(["epoch"] if self.epoch is not None else [])):
            if getattr(self, name).shape != (rows,):
                raise DatasetError(where, f"loss statistics: {name} has {getattr(self, name).shape[0]} rows, "
                                          f"box index has {rows}")
        for name, values in self.losses.items():
            if values.shape != (rows,):
                raise DatasetError(where, f"loss statistics: {name} losses have {values.shape[0]} rows, "
                                          f"box index has {rows}")
        for name in ("subset", "ann_id", "label_id"):
            if getattr(self, name).shape != (boxes,):
                raise DatasetError(where, f"loss statistics: {name} has {getattr(self, name).shape[0]} "
                                          f"boxes, item_id has {boxes}")
        if not self.losses:
            raise DatasetError(where, "loss statistics: no loss types")
        if rows and (self.box[0] < 0 or np.any(np.diff(self.box) < 0)):
            raise DatasetError(where, "loss statistics: rows are not grouped by box")
        counts = np.bincount(self.box, minlength=boxes) if rows else np.zeros(boxes, np.int64)
        if counts.shape[0] != boxes:
            raise DatasetError(where, f"loss statistics: rows name box {counts.shape[0] - 1}, "
                                      f"there are {boxes}")
        if np.any(counts == 0):
            raise DatasetError(where, "loss statistics: a box without rows (list it in unobserved instead)")
        same_box = np.diff(self.box) == 0
        if np.any(same_box & (np.diff(self.iteration) <= 0)):
            raise DatasetError(where, "loss statistics: rows of a box are not in increasing iteration order")
        if np.any(self.label_id < 0) or np.any(self.label_id >= len(self.labels)):
            raise DatasetError(where, f"loss statistics: label ids outside 0..{len(self.labels) - 1}")
        object.__setattr__(self, "losses", MappingProxyType(dict(self.losses)))
        starts = np.zeros(boxes + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        object.__setattr__(self, "starts", starts)

    # -- shape --------------------------------------------------------------------------

    @property
    def num_boxes(self) -> int:
        return int(self.item_id.shape[0])

    @property
    def num_rows(self) -> int:
        return int(self.box.shape[0])

    @property
    def counts(self) -> np.ndarray:
        """``(B,)`` number of observations of each box."""
        return np.diff(self.starts)

    @property
    def last_rows(self) -> np.ndarray:
        """``(B,)`` row index of each box's last observation."""
        return self.starts[1:] - 1

    @property
    def loss_types(self) -> tuple[str, ...]:
        return tuple(self.losses)

    def keys(self) -> list[BoxKey]:
        """``(item_id, subset, ann_id)`` of every box, in box order."""
        return list(zip(self.item_id.tolist(), self.subset.tolist(), self.ann_id.tolist()))

    @cached_property
    def _index(self) -> dict[BoxKey, int]:
        return {key: i for i, key in enumerate(self.keys())}

    def box_index(self, key: BoxKey) -> int:
        """The box index of ``(item_id, subset, ann_id)``; ``KeyError`` when it has no statistics."""
        try:
            return self._index[(key[0], key[1], int(key[2]))]
        except KeyError:
            raise KeyError(f"no loss statistics for item {key[0]!r} (subset {key[1]!r}) "
                           f"box {key[2]}") from None

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_arrays(cls, item_id: Sequence[str] | np.ndarray, subset: Sequence[str] | np.ndarray,
                    ann_id: Sequence[int] | np.ndarray, label_id: Sequence[int] | np.ndarray,
                    iteration: Sequence[int] | np.ndarray, losses: Mapping[str, Sequence[float] | np.ndarray],
                    labels: Sequence[str], epoch: Sequence[int] | np.ndarray | None = None,
                    source: str | Path | None = None) -> LossStats:
        """Build from per-row columns in any row order (the Parquet schema, as arrays).

        Raises:
            DatasetError: a box with two labels, two rows in one iteration, or a non-finite loss.
        """
        item_rank, item_values = _factorize(item_id)
        subset_rank, subset_values = _factorize(subset)
        return cls._from_codes(item_rank, item_values, subset_rank, subset_values, ann_id, label_id,
                               iteration, losses, labels, epoch, Path(source) if source is not None else None)

    @classmethod
    def _from_codes(cls, item_rank: np.ndarray, item_values: np.ndarray, subset_rank: np.ndarray,
                    subset_values: np.ndarray, ann_id: Any, label_id: Any, iteration: Any,
                    losses: Mapping[str, Any], labels: Sequence[str], epoch: Any,
                    source: Path | None) -> LossStats:
        """Per-row columns with strings given as ranks into their sorted distinct values."""
        ann_id = np.asarray(ann_id, dtype=np.int64)
        label_id = np.asarray(label_id, dtype=np.int64)
        iteration = np.asarray(iteration, dtype=np.int64)
        rows = iteration.shape[0]
        columns = {"item_id": item_rank, "subset": subset_rank, "ann_id": ann_id, "label_id": label_id,
                   **losses, **({"epoch": epoch} if epoch is not None else {})}
        for name, column in columns.items():
            if np.shape(column) != (rows,):
                raise DatasetError(source, f"loss statistics: column {name} has shape {np.shape(column)}, "
                                           f"iteration has {rows} rows")
        if rows == 0:
            raise DatasetError(source, "loss statistics have no rows")
        # One lexsort groups rows by box in (subset, item_id, ann_id) order and sorts each
        # box's rows by iteration.
        order = np.lexsort((iteration, ann_id, item_rank, subset_rank))
        s, i, a = subset_rank[order], item_rank[order], ann_id[order]
        new_box = np.ones(rows, bool)
        new_box[1:] = (s[1:] != s[:-1]) | (i[1:] != i[:-1]) | (a[1:] != a[:-1])
        box = np.cumsum(new_box) - 1
        first = np.flatnonzero(new_box)
        box_item = item_values[i[first]]
        box_subset = subset_values[s[first]]
        box_ann = a[first]
        iteration = iteration[order]
        row_labels = label_id[order]
        box_labels = row_labels[first]
        bad = np.flatnonzero(row_labels != box_labels[box])
        if bad.size:
            b = box[bad[0]]
            raise DatasetError(source, f"subset {box_subset[b]!r} item {box_item[b]!r} box {box_ann[b]}: "
                                       f"rows with labels {box_labels[b]} and {row_labels[bad[0]]}")
        dup = np.flatnonzero((np.diff(box) == 0) & (np.diff(iteration) == 0))
        if dup.size:
            b = box[dup[0]]
            raise DatasetError(source, f"subset {box_subset[b]!r} item {box_item[b]!r} box {box_ann[b]}: "
                                       f"two rows for iteration {iteration[dup[0]]}")
        sorted_losses = {t: _finite(source, t, np.asarray(v, dtype=np.float64)[order])
                         for t, v in losses.items()}
        return cls(box=box.astype(np.int64), iteration=iteration, losses=sorted_losses, item_id=box_item,
                   subset=box_subset, ann_id=box_ann, label_id=box_labels, labels=tuple(labels),
                   epoch=np.asarray(epoch, dtype=np.int64)[order] if epoch is not None else None,
                   source=source)

    @classmethod
    def from_stats_dir(cls, path: str | Path, labels: Sequence[str] | None = None) -> LossStats:
        """Read our Parquet stats directory (``part-*.parquet`` chunks).

        Args:
            labels: label names. By default those of ``run.json`` beside the stats directory
                (what the trainer writes), else ``label_0``, ``label_1``, ...

        Raises:
            DatasetError: no chunks, unreadable chunk, missing column, inconsistent rows.
        """
        import pyarrow.compute as pc

        from otx_nld.training.tracking import OPTIONAL_COLUMNS, STATS_SCHEMA, TRACKED_TYPES, read_stats

        path = Path(path)
        table = read_stats(path)
        missing = [name for name in STATS_SCHEMA.names
                   if name not in table.column_names and name not in OPTIONAL_COLUMNS]
        if missing:
            raise DatasetError(path, f"loss statistics lack columns {missing} "
                                     f"(expected {STATS_SCHEMA.names})")
        if table.num_rows == 0:
            raise DatasetError(path, "loss statistics have no rows")

        def codes(name: str) -> tuple[np.ndarray, np.ndarray]:
            # Dictionary-encode in Arrow (fast), then rank the few distinct strings in Python.
            encoded = pc.dictionary_encode(table.column(name)).combine_chunks()
            ranks, values = _factorize(np.asarray(encoded.dictionary.to_pylist(), dtype=object))
            return ranks[encoded.indices.to_numpy(zero_copy_only=False)], values

        label_id = table.column("label_id").to_numpy()
        if labels is None:
            labels = _run_labels(path.parent) or tuple(f"label_{i}" for i in range(int(label_id.max()) + 1))
        return cls._from_codes(*codes("item_id"), *codes("subset"), table.column("ann_id").to_numpy(),
                               label_id, table.column("iteration").to_numpy(),
                               {t: table.column(t).to_numpy() for t in TRACKED_TYPES if t in table.column_names},
                               labels,
                               table.column("epoch").to_numpy(), path)

    @classmethod
    def from_dataset(cls, dataset: Dataset, source: str | Path | None = None) -> LossStats:
        """Read the tutorial's layout from a loaded :class:`~otx_nld.data.dataset.Dataset`.

        Every box needs an ``iters`` list and ``loss_dynamics_<type>`` lists of the same length
        (the same types on every box). Boxes whose lists are empty are listed in
        :attr:`unobserved`. Lists not in iteration order are sorted by iteration (Datumaro's
        analyzer would step its EMA through them in list order; our exports are sorted).

        Raises:
            DatasetError: naming ``source`` and the problem (infos purpose, task, a box without
                loss attributes, lengths that differ, non-numeric or non-finite values).
        """
        source = Path(source) if source is not None else None
        purpose = dataset.infos.get("purpose")
        if purpose != NLD_PURPOSE:
            problem = "has no 'purpose'" if purpose is None else f"has purpose {purpose!r}"
            raise DatasetError(source, f"not loss statistics: dataset infos {problem}, "
                                       f"expected purpose {NLD_PURPOSE!r}")
        task = dataset.infos.get("task")
        if task is not None and task != DETECTION_TASK:
            raise DatasetError(source, f"task {task!r} is not supported, only {DETECTION_TASK!r} (detection)")

        loss_types: tuple[str, ...] | None = None
        keys: list[BoxKey] = []
        label_ids: list[int] = []
        counts: list[int] = []
        iters_lists: list[list[Any]] = []
        loss_lists: dict[str, list[list[Any]]] = {}
        unobserved: list[BoxKey] = []
        for item, box in dataset.iter_boxes():
            attrs = box.attributes
            where = f"subset {item.subset!r} item {item.id!r} box {box.ann_id}"
            types = tuple(sorted(k[len(LOSS_PREFIX):] for k in attrs if k.startswith(LOSS_PREFIX)))
            if ITERS_KEY not in attrs or not types:
                raise DatasetError(source, f"{where}: no loss attributes (needs '{ITERS_KEY}' and "
                                           f"'{LOSS_PREFIX}<type>' lists)")
            if loss_types is None:
                loss_types = types
                loss_lists = {t: [] for t in types}
            elif types != loss_types:
                raise DatasetError(source, f"{where}: loss types {list(types)} differ from the other boxes' "
                                           f"{list(loss_types)}")
            iters = attrs[ITERS_KEY]
            if not isinstance(iters, (list, tuple)):
                raise DatasetError(source, f"{where}: '{ITERS_KEY}' must be a list")
            for t in types:
                values = attrs[LOSS_PREFIX + t]
                if not isinstance(values, (list, tuple)):
                    raise DatasetError(source, f"{where}: '{LOSS_PREFIX}{t}' must be a list")
                if len(values) != len(iters):
                    raise DatasetError(source, f"{where}: '{LOSS_PREFIX}{t}' has {len(values)} values but "
                                               f"'{ITERS_KEY}' has {len(iters)}")
            key = (item.id, item.subset, box.ann_id)
            if not iters:
                unobserved.append(key)
                continue
            keys.append(key)
            label_ids.append(box.label)
            counts.append(len(iters))
            iters_lists.append(iters)
            for t in types:
                loss_lists[t].append(attrs[LOSS_PREFIX + t])
        if not keys or loss_types is None:
            raise DatasetError(source, "no boxes with loss statistics")

        total = sum(counts)
        iteration = _flat_numbers(source, ITERS_KEY, iters_lists, total)
        if np.any(iteration != np.floor(iteration)):
            raise DatasetError(source, f"'{ITERS_KEY}' must hold integer iteration numbers")
        losses = {t: _flat_numbers(source, LOSS_PREFIX + t, loss_lists[t], total) for t in loss_types}
        # Sort boxes by (subset, item_id, ann_id) like from_arrays; rows keep their box's order
        # and are sorted by iteration within each box afterwards (only when not already).
        order = sorted(range(len(keys)), key=lambda i: (keys[i][1], keys[i][0], keys[i][2]))
        count_arr = np.asarray(counts, np.int64)
        old_starts = np.concatenate([[0], np.cumsum(count_arr)[:-1]])
        sorted_counts = count_arr[order]
        box = np.repeat(np.arange(len(keys), dtype=np.int64), sorted_counts)
        new_starts = np.concatenate([[0], np.cumsum(sorted_counts)[:-1]])
        rows = np.arange(total, dtype=np.int64) + np.repeat(old_starts[order] - new_starts, sorted_counts)
        iteration = iteration[rows].astype(np.int64)
        if np.any((np.diff(box) == 0) & (np.diff(iteration) <= 0)):
            # Lists not in iteration order: sort each box's rows (the box order stays).
            by_iteration = np.lexsort((iteration, box))
            rows, iteration = rows[by_iteration], iteration[by_iteration]
            dup = np.flatnonzero((np.diff(box) == 0) & (np.diff(iteration) == 0))
            if dup.size:
                k = keys[order[box[dup[0]]]]
                raise DatasetError(source, f"subset {k[1]!r} item {k[0]!r} box {k[2]}: two observations in "
                                           f"iteration {iteration[dup[0]]}")
        keys_sorted = [keys[i] for i in order]
        for a, b in zip(keys_sorted, keys_sorted[1:]):
            if a == b:
                raise DatasetError(source, f"subset {a[1]!r} item {a[0]!r}: two boxes with id {a[2]}")
        return cls(box=box, iteration=iteration, losses={t: v[rows] for t, v in losses.items()},
                   item_id=np.asarray([k[0] for k in keys_sorted], dtype=object),
                   subset=np.asarray([k[1] for k in keys_sorted], dtype=object),
                   ann_id=np.asarray([k[2] for k in keys_sorted], dtype=np.int64),
                   label_id=np.asarray(label_ids, dtype=np.int64)[order], labels=dataset.labels,
                   unobserved=tuple(unobserved), source=source)

    @classmethod
    def from_datumaro(cls, path: str | Path) -> LossStats:
        """Read the tutorial's Datumaro layout (e.g. ``<run>/noisy_label_detection``).

        Raises:
            DatasetError: see :meth:`from_dataset`; also any error of the Datumaro reader.
        """
        from otx_nld.data.dataset import Dataset

        path = Path(path)
        return cls.from_dataset(Dataset.import_from(path, "datumaro"), source=path)

    @classmethod
    def load(cls, path: str | Path) -> LossStats:
        """Read loss statistics from a run directory, a stats directory or a Datumaro export.

        A run directory's Parquet ``stats/`` is preferred (it is faster and has epochs); its
        ``noisy_label_detection/`` export is used when there are no Parquet chunks.

        Raises:
            DatasetError: the path holds none of these, or what it holds is invalid.
        """
        from otx_nld.training.tracking import chunk_files

        path = Path(path)
        if not path.exists():
            raise DatasetError(path, "does not exist")
        if chunk_files(path):
            return cls.from_stats_dir(path)
        if (path / "annotations").is_dir():
            return cls.from_datumaro(path)
        if chunk_files(path / STATS_DIRNAME):
            return cls.from_stats_dir(path / STATS_DIRNAME)
        if (path / DATUMARO_DIRNAME / "annotations").is_dir():
            return cls.from_datumaro(path / DATUMARO_DIRNAME)
        raise DatasetError(path, "no loss statistics here: expected part-*.parquet chunks, a Datumaro export "
                                 f"(annotations/), or a run directory with {STATS_DIRNAME}/ or "
                                 f"{DATUMARO_DIRNAME}/")


def _factorize(values: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rank of each value among the distinct values, the sorted distinct values)``."""
    distinct, inverse = np.unique(np.asarray(values, dtype=object), return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), distinct


def _finite(source: Path | None, name: str, values: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(values)
    if bad.any():
        raise DatasetError(source, f"{int(bad.sum())} {name} loss values are not finite (NaN or inf)")
    return values


def _flat_numbers(source: Path | None, name: str, lists: list[list[Any]], total: int) -> np.ndarray:
    """All values of ``lists`` as one float64 array, checked to be finite numbers."""
    try:
        values = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.float64, count=total)
    except (TypeError, ValueError):
        bad = next(v for v in itertools.chain.from_iterable(lists)
                   if isinstance(v, bool) or not isinstance(v, (int, float)))
        raise DatasetError(source, f"'{name}' holds a non-numeric value {bad!r}") from None
    return _finite(source, name, values)


def _run_labels(run_dir: Path) -> tuple[str, ...] | None:
    """Label names from the trainer's ``run.json``, when there is one."""
    try:
        labels = json.loads((run_dir / RUN_INFO).read_text(encoding="utf-8")).get("labels")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels):
        return tuple(labels)
    return None


# -- EMA ----------------------------------------------------------------------------------


def _pandas_ewm_weights(alpha: float) -> tuple[float, float]:
    """The (new, old) weights pandas' ``ewm(alpha=..., adjust=False)`` really uses.

    pandas turns ``alpha`` into a centre of mass and back (``com = (1 - alpha) / alpha``,
    ``alpha' = 1 / (1 + com)``), which can move it by an ulp; using the same round trip makes
    our EMA bit-identical to Datumaro's, so even near-ties rank the same.
    """
    com = (1.0 - alpha) / alpha
    new = 1.0 / (1.0 + com)
    return new, 1.0 - new


def ema_by_group(values: np.ndarray, starts: np.ndarray, alpha: float) -> np.ndarray:
    """Per-row EMA of ``values`` within each group ``starts[g]:starts[g + 1]`` (groups non-empty).

    ``y_0 = 0``, ``y_n = ((1 - a) y_{n-1} + a x_n) / ((1 - a) + a)`` for the group's n-th row,
    which is pandas' ``Series([0, *x]).ewm(alpha=a, adjust=False).mean()[1:]`` step for step
    (including its skip of the update when ``x_n`` equals ``y_{n-1}``). The recursion is the
    numerically stable form (no growing powers of ``1 - a`` as in the closed form).

    Vectorized over groups: step ``j`` updates the ``j``-th row of every group that has one.
    Groups are ordered by size (largest first), so the groups still active at step ``j`` are a
    prefix; the loop runs ``max group size`` times and touches each row once.
    """
    values = np.asarray(values, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.int64)
    out = np.empty_like(values)
    counts = np.diff(starts)
    if values.size == 0:
        return out
    by_size = np.argsort(-counts, kind="stable")
    sizes = counts[by_size]
    first = starts[:-1][by_size]
    # active[j]: groups with more than j rows (sizes are non-increasing, so a prefix).
    active = np.searchsorted(-sizes, -np.arange(int(sizes[0])), side="left")
    new_wt, old_wt = _pandas_ewm_weights(alpha)
    norm = old_wt + new_wt
    ema = np.zeros(len(counts))
    for j, n in enumerate(active.tolist()):
        rows = first[:n] + j
        x = values[rows]
        prev = ema[:n]
        step = np.where(prev != x, (old_wt * prev + new_wt * x) / norm, prev)
        ema[:n] = step
        out[rows] = step
    return out


# -- scores -------------------------------------------------------------------------------


def _group_mean(analyzer: LossDynamicsAnalyzer, values: np.ndarray) -> np.ndarray:
    stats = analyzer.stats
    return np.add.reduceat(values, stats.starts[:-1]) / stats.counts


def score_ema(analyzer: LossDynamicsAnalyzer) -> np.ndarray:
    """The tutorial's score: the EMA (``alpha``) at the box's last observation."""
    return analyzer.ema_rows[analyzer.stats.last_rows]


def score_mean(analyzer: LossDynamicsAnalyzer) -> np.ndarray:
    """Mean tracked loss over all the box's observations."""
    return _group_mean(analyzer, analyzer.loss)


def score_late_mean(analyzer: LossDynamicsAnalyzer, fraction: float = 0.5) -> np.ndarray:
    """Mean tracked loss over the observations in the last ``fraction`` of the run's iterations.

    The window is ``iteration >= last - fraction * (last - first)`` over the whole run (late in
    training the model fits clean boxes; noisy ones stay hard). A box without an observation in
    the window scores its last observation's loss.
    """
    return _late_mean(analyzer.stats, analyzer.loss, fraction, "late_mean")


def _late_mean(stats: LossStats, values: np.ndarray, fraction: float, score: str) -> np.ndarray:
    if isinstance(fraction, bool) or not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ConfigError(f"{score}: fraction must be in (0, 1], got {fraction!r}")
    first, last = int(stats.iteration.min()), int(stats.iteration.max())
    late = stats.iteration >= last - fraction * (last - first)
    n = np.bincount(stats.box, weights=late, minlength=stats.num_boxes)
    total = np.bincount(stats.box, weights=np.where(late, values, 0.0), minlength=stats.num_boxes)
    fallback = values[stats.last_rows]
    return np.where(n > 0, total / np.maximum(n, 1), fallback)


def score_label_norm(analyzer: LossDynamicsAnalyzer) -> np.ndarray:
    """The box's mean loss divided by the median of its label's box means.

    A ratio to the median rather than a z-score: some classes are simply harder (higher loss
    for every box), which this removes; the median is robust to the noisy boxes themselves and
    a ratio needs no spread estimate, which is unstable for labels with few boxes. A label whose
    median is 0 divides by the smallest positive float instead.
    """
    if np.any(analyzer.loss < 0):
        raise ConfigError(f"label_norm: needs non-negative values, {analyzer.tracking_loss_type!r} has "
                          "negative ones (the margin is a signed logit difference); use mean or late_mean")
    means = score_mean(analyzer)
    labels = analyzer.stats.label_id
    medians = np.zeros(len(analyzer.stats.labels))
    for label in np.unique(labels).tolist():  # a loop over classes, not boxes
        medians[label] = np.median(means[labels == label])
    return means / np.maximum(medians[labels], np.finfo(np.float64).tiny)


def _percentile_rank(values: np.ndarray) -> np.ndarray:
    """Average rank (ties share their mean rank) divided by the count: in (0, 1]."""
    ordered = np.sort(values)
    lo = np.searchsorted(ordered, values, side="left")
    hi = np.searchsorted(ordered, values, side="right")
    return (lo + hi + 1) / 2 / values.size


def score_rank_avg(analyzer: LossDynamicsAnalyzer,
                   types: Sequence[str] = DEFAULT_LOSS_TYPES) -> np.ndarray:
    """Average over ``types`` (default cls, bbox, centerness; independent of the tracked type)
    of the percentile rank of the box's mean loss of that type.

    Ranks make the loss types comparable whatever their scales: a box that is unusual in
    several of them (a shifted box: bbox and centerness) rises.
    """
    stats = analyzer.stats
    missing = [t for t in types if t not in stats.losses]
    if missing or not types:
        raise ConfigError(f"rank_avg: loss types {missing or list(types)} not in the statistics "
                          f"(available: {list(stats.losses)})")
    return np.mean([_percentile_rank(_group_mean(analyzer, stats.losses[t])) for t in types], axis=0)


def score_rank_max(analyzer: LossDynamicsAnalyzer, fraction: float = 0.5) -> np.ndarray:
    """For each tracked type of the combination (``cls+bbox`` -> cls and bbox, not their sum),
    the percentile rank of the box's :func:`late_mean <score_late_mean>` of that type; the
    score is the highest of them.

    A union of detectors: a box extreme in any one type ranks high (a flipped label in
    ``cls``, a shifted box in ``bbox``), where a sum lets the type with the larger scale
    dominate and an average dilutes a signal that shows in one type only.
    """
    stats = analyzer.stats
    return np.max([_percentile_rank(_late_mean(stats, stats.losses[t], fraction, "rank_max"))
                   for t in analyzer.loss_types], axis=0)


def score_final(analyzer: LossDynamicsAnalyzer) -> np.ndarray:
    """The tracked loss at the box's last observation (its last epoch's loss when, as usual,
    a box is observed once per epoch)."""
    return analyzer.loss[analyzer.stats.last_rows]


ScoreFunction = Callable[..., np.ndarray]
SCORES: Mapping[str, ScoreFunction] = MappingProxyType({
    "ema": score_ema,
    "mean": score_mean,
    "late_mean": score_late_mean,
    "label_norm": score_label_norm,
    "rank_avg": score_rank_avg,
    "rank_max": score_rank_max,
    "final": score_final,
})
"""Score name -> ``function(analyzer, **score_options) -> (B,) float64`` (higher = noisier)."""


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoisyLabelCandidate:
    """A box ranked as a likely noisy label (like Datumaro's, with ``item_id`` for ``id``).

    Unlike Datumaro's, candidates compare equal only when all fields are equal and have no
    ordering; rank lists are already sorted.
    """

    item_id: str
    subset: str
    ann_id: int
    label_id: int
    metric: float

    @property
    def id(self) -> str:
        """Datumaro's name for the item id."""
        return self.item_id

    @property
    def key(self) -> BoxKey:
        return (self.item_id, self.subset, self.ann_id)


@dataclass(frozen=True, eq=False)
class ScoreTable:
    """Every box's score, ranked high to low (ties by ``(subset, item_id, ann_id)``).

    Columns are ``(B,)`` numpy arrays; :meth:`by_key` gives the mapping
    :func:`otx_nld.analysis.metrics.evaluate_scores` takes, :meth:`to_pandas` a DataFrame.
    """

    item_id: np.ndarray
    subset: np.ndarray
    ann_id: np.ndarray
    label_id: np.ndarray
    label: np.ndarray
    score: np.ndarray
    num_obs: np.ndarray
    score_name: str
    tracking_loss_type: str

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "item_id", "subset", "ann_id", "label_id", "label", "score", "num_obs")

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def by_key(self) -> dict[BoxKey, float]:
        """``{(item_id, subset, ann_id): score}``."""
        return dict(zip(zip(self.item_id.tolist(), self.subset.tolist(), self.ann_id.tolist()),
                        self.score.tolist()))

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per box, in rank order."""
        columns = {name: getattr(self, name).tolist() for name in self.COLUMNS}
        return [dict(zip(self.COLUMNS, values)) for values in zip(*columns.values())]

    def to_pandas(self) -> pd.DataFrame:
        """The table as a pandas DataFrame (pandas is imported only here)."""
        import pandas as pd

        return pd.DataFrame({name: getattr(self, name) for name in self.COLUMNS})


@dataclass(frozen=True, eq=False)
class EmaCurves:
    """EMA curves of some boxes on a shared iteration axis.

    Attributes:
        iterations: ``(T,)`` sorted iterations at which any box of the statistics was observed.
        values: ``(N, T)`` the EMA of box ``n`` after iteration ``iterations[t]``; NaN where the
            box has no observation at that iteration (``fill="nan"``), or the last EMA value
            carried forward (``fill="ffill"``: the EMA only steps on observations, so between
            two it is constant) and NaN before the first observation.
        keys: the ``N`` boxes' ``(item_id, subset, ann_id)``.
    """

    iterations: np.ndarray
    values: np.ndarray
    keys: tuple[BoxKey, ...]


# -- the analyzer -------------------------------------------------------------------------


def parse_loss_types(tracking_loss_type: str | Sequence[str]) -> tuple[str, ...]:
    """``"cls"``, ``"cls+bbox"`` or ``("cls", "bbox")`` -> ``("cls", "bbox")``."""
    parts = tracking_loss_type.split("+") if isinstance(tracking_loss_type, str) else list(tracking_loss_type)
    parts = [p.strip() for p in parts]
    if not parts or any(not isinstance(p, str) or not p for p in parts) or len(set(parts)) != len(parts):
        raise ConfigError(f"tracking_loss_type: expected a loss type or distinct types joined by '+', "
                          f"got {tracking_loss_type!r}")
    return tuple(parts)


class LossDynamicsAnalyzer:
    """Scores every box from its loss dynamics and ranks noisy-label candidates.

    Args:
        stats: :class:`LossStats`, or a path for :meth:`LossStats.load`.
        tracking_loss_type: ``cls``, ``bbox``, ``centerness`` (any type of the statistics), or a
            combination (``"cls+bbox"`` or a tuple): the per-observation sum of those losses.
        alpha: the EMA smoothing factor, in (0, 1]; 0.001 as in the tutorial.
        score: a name of :data:`SCORES` (``ema`` by default: the tutorial's score) or a
            function ``(analyzer, **score_options) -> (B,) scores``.
        score_options: keyword arguments of the score function (e.g. ``{"fraction": 0.3}``
            for ``late_mean``).

    Raises:
        ConfigError: unknown loss type, score or bad alpha.
    """

    def __init__(self, stats: LossStats | str | Path, tracking_loss_type: str | Sequence[str] = "cls",
                 alpha: float = 0.001, score: str | ScoreFunction = "ema",
                 score_options: Mapping[str, Any] | None = None) -> None:
        self.stats = stats if isinstance(stats, LossStats) else LossStats.load(stats)
        self.loss_types = parse_loss_types(tracking_loss_type)
        unknown = [t for t in self.loss_types if t not in self.stats.losses]
        if unknown:
            raise ConfigError(f"tracking_loss_type: {unknown} not in the statistics "
                              f"(available: {list(self.stats.losses)})")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
            raise ConfigError(f"alpha must be in (0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        if isinstance(score, str):
            if score not in SCORES:
                raise ConfigError(f"score: unknown {score!r} (known: {', '.join(SCORES)})")
            self.score_name, score_fn = score, SCORES[score]
        else:
            self.score_name, score_fn = getattr(score, "__name__", "custom"), score
        loss = self.stats.losses[self.loss_types[0]]
        for t in self.loss_types[1:]:
            loss = loss + self.stats.losses[t]
        self.loss: np.ndarray = loss
        """``(R,)`` the tracked loss of every row (the sum for a combination)."""
        scores = score_fn(self, **dict(score_options or {}))
        self.box_scores: np.ndarray = np.asarray(scores, dtype=np.float64)
        """``(B,)`` every box's score, in box order."""
        if self.box_scores.shape != (self.stats.num_boxes,):
            raise ValueError(f"score {self.score_name!r} returned shape {self.box_scores.shape}, "
                             f"expected ({self.stats.num_boxes},)")
        if not np.all(np.isfinite(self.box_scores)):
            raise ValueError(f"score {self.score_name!r} returned non-finite values")
        # Highest first; lexsort's stability puts equal scores in box order.
        self.ranking: np.ndarray = np.lexsort((np.arange(self.stats.num_boxes), -self.box_scores))
        """Box indices, best candidate first."""

    @property
    def tracking_loss_type(self) -> str:
        return "+".join(self.loss_types)

    @cached_property
    def ema_rows(self) -> np.ndarray:
        """``(R,)`` each row's EMA of the tracked loss (computed on first use)."""
        return ema_by_group(self.loss, self.stats.starts, self.alpha)

    # -- ranking ------------------------------------------------------------------------

    def get_top_k_cands(self, top_k: int) -> list[NoisyLabelCandidate]:
        """The ``top_k`` highest-scoring boxes, highest first (all boxes if fewer)."""
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
            raise ConfigError(f"top_k must be a non-negative integer, got {top_k!r}")
        stats = self.stats
        return [NoisyLabelCandidate(stats.item_id[b], stats.subset[b], int(stats.ann_id[b]),
                                    int(stats.label_id[b]), float(self.box_scores[b]))
                for b in self.ranking[:top_k].tolist()]

    def scores(self) -> ScoreTable:
        """All boxes' scores, ranked high to low."""
        stats, r = self.stats, self.ranking
        label_names = np.asarray(stats.labels, dtype=object)
        return ScoreTable(item_id=stats.item_id[r], subset=stats.subset[r], ann_id=stats.ann_id[r],
                          label_id=stats.label_id[r], label=label_names[stats.label_id[r]],
                          score=self.box_scores[r],
                          num_obs=stats.counts[r], score_name=self.score_name,
                          tracking_loss_type=self.tracking_loss_type)

    # -- curves -------------------------------------------------------------------------

    @cached_property
    def _iteration_axis(self) -> tuple[np.ndarray, np.ndarray]:
        iterations, code = np.unique(self.stats.iteration, return_inverse=True)
        return iterations, code.reshape(-1)

    def _resolve(self, boxes: Iterable[NoisyLabelCandidate | BoxKey] | None) -> np.ndarray:
        if boxes is None:
            return np.arange(self.stats.num_boxes)
        return np.asarray([self.stats.box_index(_candidate_key(box)) for box in boxes], dtype=np.int64)

    def ema_curves(self, boxes: Iterable[NoisyLabelCandidate | BoxKey | Any] | None = None,
                   fill: Literal["nan", "ffill"] = "nan") -> EmaCurves:
        """Per-box EMA against iteration, aligned on the run's iteration axis.

        Args:
            boxes: candidates (ours or Datumaro-like, with ``id``) or ``(item_id, subset,
                ann_id)`` keys; ``None`` for all boxes
                (an ``N x T`` float64 matrix: mind the memory for big runs).
            fill: ``"nan"`` (as Datumaro's ``ema_dataframe``) or ``"ffill"``; see
                :class:`EmaCurves`.
        """
        if fill not in ("nan", "ffill"):
            raise ConfigError(f"fill must be 'nan' or 'ffill', got {fill!r}")
        stats = self.stats
        chosen = self._resolve(boxes)
        iterations, code = self._iteration_axis
        values = np.full((chosen.size, iterations.size), np.nan)
        counts = stats.counts[chosen]
        rows = (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
                + np.repeat(stats.starts[chosen], counts))
        values[np.repeat(np.arange(chosen.size), counts), code[rows]] = self.ema_rows[rows]
        if fill == "ffill" and values.size:
            last_seen = np.where(np.isnan(values), 0, np.arange(iterations.size))
            np.maximum.accumulate(last_seen, axis=1, out=last_seen)
            values = np.take_along_axis(values, last_seen, axis=1)
        keys = tuple((stats.item_id[b], stats.subset[b], int(stats.ann_id[b])) for b in chosen.tolist())
        return EmaCurves(iterations, values, keys)

    def mean_ema_curve(self, label_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(iterations, mean EMA)`` over the boxes (of ``label_id``) observed at each iteration.

        As Datumaro's ``mean_loss_dyns``: at each iteration, the mean of the EMA values of the
        boxes observed then (boxes not observed are skipped, not carried forward). Iterations
        where no such box was observed are left out.
        """
        iterations, code = self._iteration_axis
        mask = slice(None) if label_id is None else self.stats.label_id[self.stats.box] == label_id
        n = np.bincount(code[mask], minlength=iterations.size)
        total = np.bincount(code[mask], weights=self.ema_rows[mask], minlength=iterations.size)
        seen = n > 0
        return iterations[seen], total[seen] / n[seen]

    def plot_ema_loss_dynamics(self, candidates: Sequence[NoisyLabelCandidate], mode: str = "mean",
                               mean_plot_style: str = "--", mean_plot_color: str = "k",
                               figsize: tuple[float, float] = (4, 3), **kwargs: Any) -> Figure:
        """EMA loss curves of ``candidates`` against the mean curve, as Datumaro draws them.

        ``mode="mean"``: one panel, the dataset-mean EMA curve plus one curve per candidate;
        ``mode="label_mean"``: one panel per candidate label (sorted by label id), with that
        label's mean curve and its candidates. Each panel is ``figsize`` big; ``kwargs`` go to
        the candidates' ``plot`` calls. Returns a matplotlib ``Figure`` not attached to pyplot
        (no global state; save it with ``fig.savefig``).
        """
        from matplotlib.figure import Figure

        if mode == "mean":
            groups: dict[int | None, list[NoisyLabelCandidate]] = {None: list(candidates)}
        elif mode == "label_mean":
            groups = {}
            for cand in candidates:
                groups.setdefault(cand.label_id, []).append(cand)
        else:
            raise ConfigError(f'mode={mode!r} is not allowed, it should be "mean" or "label_mean"')
        label_ids = sorted(groups, key=lambda k: -1 if k is None else k)
        n_cols = max(len(label_ids), 1)
        fig = Figure(figsize=(n_cols * figsize[0], figsize[1]))
        axes = fig.subplots(1, n_cols, squeeze=False)[0]
        labels = self.stats.labels
        for ax, label_id in zip(axes, label_ids):
            xs, ys = self.mean_ema_curve(label_id)
            ax.plot(xs, ys, color=mean_plot_color, linestyle=mean_plot_style, label="mean")
            cands = groups[label_id]
            curves = self.ema_curves(cands)
            for cand, (item_id, _, ann_id), row in zip(cands, curves.keys, curves.values):
                seen = ~np.isnan(row)
                ax.plot(curves.iterations[seen], row[seen],
                        label=f"id={item_id}, ann_id={ann_id}, label={labels[cand.label_id]}", **kwargs)
            ax.set_xlabel("Training iterations")
            ax.set_ylabel("EMA training loss dynamics")
            ax.set_title("Compare the candidates with the average of dataset" if label_id is None
                         else f"Compare the candidates with the average of ({labels[label_id]})")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fancybox=True, shadow=True, ncol=1)
        return fig


def _candidate_key(box: Any) -> BoxKey:
    """A key from a ``(item_id, subset, ann_id)`` tuple or a Datumaro-like candidate object."""
    if isinstance(box, tuple) and len(box) == 3:
        return (box[0], box[1], int(box[2]))
    item_id = getattr(box, "item_id", None) or getattr(box, "id", None)
    if item_id is None or not hasattr(box, "subset") or not hasattr(box, "ann_id"):
        raise TypeError(f"expected a candidate or an (item_id, subset, ann_id) tuple, got {box!r}")
    return (item_id, box.subset, int(box.ann_id))

