"""The stats writer: per-annotation training losses streamed to disk as Parquet chunks.

Every training iteration, the ATSS loss yields for each ground-truth box with at least one
positive anchor its cls / bbox / centerness loss and its class margin (see
:class:`~otx_nld.model.losses.AnnotationLosses`). :class:`LossDynamicsTracker` buffers these
rows and writes a Parquet file every ``chunk_rows`` rows, so memory is bounded by one chunk,
not by dataset size x iterations. The stats directory reads with pandas or polars directly
(``pandas.read_parquet(stats_dir)``), or with :func:`read_stats`.

Row schema: ``iteration, epoch, item_id, subset, ann_id, label_id, cls, bbox, centerness, margin``
(stats written before ``margin`` existed lack that column and still read).

:func:`export_datumaro` turns the stats into the tutorial's Datumaro layout (the input of
Datumaro 1.11's ``LossDynamicsAnalyzer``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from otx_nld.data.dataset import Dataset, Item
from otx_nld.errors import DatasetError, OtxNldError
from otx_nld.io import atomic_output_dir, atomic_write_json

LOSS_TYPES = ("cls", "bbox", "centerness")
"""The tracked losses: every stats directory has them."""
TRACKED_TYPES = (*LOSS_TYPES, "margin")
"""Every tracked value, in column order: :data:`LOSS_TYPES` and ``margin`` (optional when
reading). :meth:`AnnotationLosses.columns <otx_nld.model.losses.AnnotationLosses.columns>` yields
exactly these; kept here, not imported from the model, so reading stats needs no torch."""
STATS_SCHEMA = pa.schema([
    ("iteration", pa.int64()), ("epoch", pa.int32()), ("item_id", pa.string()), ("subset", pa.string()),
    ("ann_id", pa.int64()), ("label_id", pa.int32()),
    *((name, pa.float32()) for name in TRACKED_TYPES),
])
OPTIONAL_COLUMNS = ("margin",)
DATUMARO_INFOS = {"purpose": "noisy_label_detection", "task": "OTX-Det"}
NEVER_MATCHED_FILENAME = "never_matched.json"
_CHUNK_RE = re.compile(r"^part-(\d{6})\.parquet$")


def chunk_files(stats_dir: str | Path) -> list[Path]:
    """The stats chunks of ``stats_dir`` in write order."""
    stats_dir = Path(stats_dir)
    if not stats_dir.is_dir():
        return []
    return sorted(p for p in stats_dir.iterdir() if _CHUNK_RE.match(p.name))


class LossDynamicsTracker:
    """Collects per-annotation losses and streams them to ``stats_dir`` in Parquet chunks.

    Args:
        stats_dir: directory for ``part-NNNNNN.parquet`` chunks (created).
        dataset: the training items; maps each ann id to its item id, subset and label.
        chunk_rows: rows held in memory before a chunk is written.
        resume_chunks: when resuming, the number of chunks the checkpoint saw; later chunks
            (written after that checkpoint by an interrupted run) are deleted, so the stream
            has no duplicate and no missing iteration.
    """

    def __init__(self, stats_dir: str | Path, dataset: Dataset, chunk_rows: int = 65536,
                 resume_chunks: int | None = None):
        self.stats_dir = Path(stats_dir)
        self.chunk_rows = chunk_rows
        self.stats_dir.mkdir(parents=True, exist_ok=True)
        existing = chunk_files(self.stats_dir)
        if resume_chunks is None and existing:
            raise OtxNldError(f"{self.stats_dir}: stats from an earlier run are there; resume it or use a new output")
        for stale in existing[resume_chunks or 0:]:
            stale.unlink()
        self.num_chunks = min(len(existing), resume_chunks or 0)
        ann_ids = np.array([box.ann_id for _, box in dataset.iter_boxes()], dtype=np.int64)
        if len(np.unique(ann_ids)) != len(ann_ids):
            raise OtxNldError("loss tracking needs unique annotation ids; reindex the dataset first")
        # Sorted ann ids + parallel arrays: a vectorized ann id -> (item, subset, label) lookup.
        order = np.argsort(ann_ids)
        self._ann_ids = ann_ids[order]
        owners = [(item, box.label) for item, box in dataset.iter_boxes()]
        self._item_ids = np.array([owners[i][0].id for i in order], dtype=object)
        self._subsets = np.array([owners[i][0].subset for i in order], dtype=object)
        self._labels = np.array([owners[i][1] for i in order], dtype=np.int32)
        self._buffer: list[dict[str, np.ndarray]] = []
        self._buffered_rows = 0

    def record(self, iteration: int, epoch: int, ann_ids: Sequence[int] | np.ndarray,
               values: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        """Add the rows of one iteration (one per box with a positive anchor).

        Args:
            values: one array per :data:`TRACKED_TYPES` name, parallel to ``ann_ids``
                (:meth:`AnnotationLosses.columns <otx_nld.model.losses.AnnotationLosses.columns>`).
        """
        ann_ids = np.asarray(ann_ids, dtype=np.int64)
        if set(values) != set(TRACKED_TYPES):
            raise ValueError(f"tracked values must be exactly {list(TRACKED_TYPES)}, got {sorted(values)}")
        columns = {name: np.asarray(values[name], np.float32) for name in TRACKED_TYPES}
        for name, column in columns.items():
            if column.shape != ann_ids.shape:
                raise ValueError(f"{name}: {column.shape[0] if column.ndim else 'a scalar'} values for "
                                 f"{ann_ids.size} ann ids")
        if ann_ids.size == 0:
            return
        pos = np.searchsorted(self._ann_ids, ann_ids)
        pos = np.minimum(pos, len(self._ann_ids) - 1)
        unknown = self._ann_ids[pos] != ann_ids
        if unknown.any():
            raise ValueError(f"ann ids not in the training dataset: {ann_ids[unknown][:5].tolist()}")
        self._buffer.append({
            "iteration": np.full(ann_ids.shape, iteration, np.int64),
            "epoch": np.full(ann_ids.shape, epoch, np.int32),
            "item_id": self._item_ids[pos], "subset": self._subsets[pos],
            "ann_id": ann_ids, "label_id": self._labels[pos], **columns,
        })
        self._buffered_rows += ann_ids.size
        if self._buffered_rows >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one chunk (atomically); no-op when empty."""
        if not self._buffer:
            return
        columns = {name: np.concatenate([b[name] for b in self._buffer]) for name in STATS_SCHEMA.names}
        table = pa.table({name: pa.array(columns[name], type=STATS_SCHEMA.field(name).type)
                          for name in STATS_SCHEMA.names}, schema=STATS_SCHEMA)
        path = self.stats_dir / f"part-{self.num_chunks:06d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        self.num_chunks += 1
        self._buffer.clear()
        self._buffered_rows = 0

    def close(self) -> None:
        self.flush()


def read_stats(stats_dir: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """All rows of a stats directory as one Arrow table, in write order."""
    files = chunk_files(stats_dir)
    if not files:
        raise DatasetError(stats_dir, "no loss statistics (part-*.parquet) found")
    tables = []
    for path in files:
        try:
            tables.append(pq.read_table(path, columns=list(columns) if columns else None))
        except (pa.ArrowInvalid, OSError) as e:
            raise DatasetError(path, f"unreadable stats chunk: {e}") from None
    return pa.concat_tables(tables)


def export_datumaro(stats_dir: str | Path, dataset: Dataset, out: str | Path, overwrite: bool = True) -> Path:
    """Write the tutorial's Datumaro layout of the loss statistics to ``out``.

    Each training box that got at least one row becomes a bbox with its ann id and attributes
    ``iters``, ``loss_dynamics_cls``, ``loss_dynamics_bbox``, ``loss_dynamics_centerness`` and
    (when tracked) ``loss_dynamics_margin`` (lists in iteration order); infos are
    ``{"purpose": "noisy_label_detection", "task": "OTX-Det"}``. Images are referenced, not copied. Boxes with no row in the whole run are
    left out of the export (Datumaro's analyzer fails on empty series) and listed in
    ``out/never_matched.json``.
    """
    from otx_nld.data.formats import get_format

    table = read_stats(stats_dir)
    ann_ids = table.column("ann_id").to_numpy()
    iters = table.column("iteration").to_numpy()
    order = np.lexsort((iters, ann_ids))  # by ann id, then iteration
    ann_ids, iters = ann_ids[order], iters[order]
    tracked = [t for t in TRACKED_TYPES if t in table.column_names]
    losses = {t: table.column(t).to_numpy()[order].astype(np.float64) for t in tracked}
    unique, starts = np.unique(ann_ids, return_index=True)
    bounds = dict(zip(unique.tolist(), zip(starts.tolist(), [*starts[1:].tolist(), len(ann_ids)])))

    items: list[Item] = []
    never_matched = []
    for item in dataset.items:
        boxes = []
        for box in item.boxes:
            span = bounds.get(box.ann_id)
            if span is None:
                never_matched.append({"item_id": item.id, "subset": item.subset, "ann_id": box.ann_id,
                                      "label_id": box.label, "bbox": list(box.xywh)})
                continue
            lo, hi = span
            attributes = {"iters": iters[lo:hi].tolist()}
            attributes.update({f"loss_dynamics_{t}": losses[t][lo:hi].tolist() for t in tracked})
            boxes.append(box.replace(attributes={**box.attributes, **attributes}))
        items.append(item.replace(boxes=tuple(boxes)))
    stats = Dataset(tuple(items), dataset.labels, DATUMARO_INFOS)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        get_format("datumaro").write(stats, tmp, save_media=False)
        atomic_write_json(tmp / NEVER_MATCHED_FILENAME, {"count": len(never_matched), "boxes": never_matched})
    return Path(out)


def load_never_matched(out: str | Path) -> list[dict]:
    """The boxes :func:`export_datumaro` listed as never matched."""
    path = Path(out) / NEVER_MATCHED_FILENAME
    try:
        return json.loads(path.read_text())["boxes"]
    except FileNotFoundError:
        raise DatasetError(path, "file does not exist") from None
