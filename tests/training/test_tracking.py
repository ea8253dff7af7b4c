"""The stats writer: bounded chunks, readable with pandas, Datumaro export for the real Datumaro."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from otx_nld.errors import DatasetError, OtxNldError
from otx_nld.training.tracking import (DATUMARO_INFOS, LOSS_TYPES, TRACKED_TYPES, LossDynamicsTracker, chunk_files,
                                       export_datumaro, load_never_matched, read_stats)
from tests.datumaro_env import run_datumaro
from tests.factories import make_dataset


@pytest.fixture
def train(tmp_path):
    ds = make_dataset(6, 3, image_dir=tmp_path / "images")
    return ds.with_items(i.replace(subset="train") for i in ds)


def _fill(tracker, train, iterations, skip=(), loud=None):
    """Every box gets a row each iteration except ann ids in ``skip``; ``loud`` maps
    loss type -> ann id whose loss of that type is high."""
    rng = np.random.default_rng(0)
    ids = np.array([b.ann_id for _, b in train.iter_boxes() if b.ann_id not in skip])
    for it in range(iterations):
        losses = {t: rng.uniform(0.1, 0.3, len(ids)) for t in TRACKED_TYPES}
        for t, ann_id in (loud or {}).items():
            losses[t][ids == ann_id] = 2.0
        tracker.record(it, it // 5, ids, losses)
    return ids


def test_chunks_bound_memory_and_read_with_pandas(train, tmp_path):
    tracker = LossDynamicsTracker(tmp_path / "stats", train, chunk_rows=40)
    ids = _fill(tracker, train, 20)
    assert tracker._buffered_rows < 40 + len(ids)
    tracker.close()
    sizes = [pq.read_metadata(f).num_rows for f in chunk_files(tmp_path / "stats")]
    assert len(sizes) > 1 and sum(sizes) == 20 * len(ids)
    # A chunk is written once 40 rows are buffered: at most one iteration's rows beyond that.
    assert all(40 <= n < 40 + len(ids) for n in sizes[:-1]) and sizes[-1] < 40 + len(ids)
    frame = pd.read_parquet(tmp_path / "stats")
    assert len(frame) == 20 * len(ids)
    assert set(frame["iteration"]) == set(range(20))
    owner = {b.ann_id: (i.id, i.subset, b.label) for i, b in train.iter_boxes()}
    assert all(owner[r.ann_id] == (r.item_id, r.subset, r.label_id) for r in frame.itertuples())
    assert read_stats(tmp_path / "stats").num_rows == len(frame)


def test_record_rejects_unknown_ann_ids_and_old_stats(train, tmp_path):
    tracker = LossDynamicsTracker(tmp_path / "stats", train)
    with pytest.raises(ValueError, match="not in the training dataset"):
        tracker.record(0, 0, [99999], dict.fromkeys(TRACKED_TYPES, [0.1]))
    with pytest.raises(ValueError, match="exactly"):
        tracker.record(0, 0, [1], dict.fromkeys(LOSS_TYPES, [0.1]))  # no margin
    with pytest.raises(ValueError, match="2 values for 1 ann ids"):
        tracker.record(0, 0, [1], {**dict.fromkeys(LOSS_TYPES, [0.1]), "margin": [0.1, 0.2]})
    tracker.record(0, 0, [1], dict.fromkeys(TRACKED_TYPES, [0.1]))
    tracker.close()
    with pytest.raises(OtxNldError, match="earlier run"):
        LossDynamicsTracker(tmp_path / "stats", train)
    with pytest.raises(DatasetError, match="no loss statistics"):
        read_stats(tmp_path / "empty")


def test_datumaro_export_and_never_matched(train, tmp_path):
    tracker = LossDynamicsTracker(tmp_path / "stats", train, chunk_rows=7)
    _fill(tracker, train, 6, skip={2, 9})
    tracker.close()
    out = export_datumaro(tmp_path / "stats", train, tmp_path / "nld")
    data = json.loads((out / "annotations" / "train.json").read_text())
    assert data["infos"] == DATUMARO_INFOS
    boxes = {a["id"]: a for item in data["items"] for a in item["annotations"]}
    assert set(boxes) == {b.ann_id for _, b in train.iter_boxes()} - {2, 9}
    for ann in boxes.values():
        assert ann["attributes"]["iters"] == list(range(6))
        for t in TRACKED_TYPES:
            assert len(ann["attributes"][f"loss_dynamics_{t}"]) == 6
    assert {b["ann_id"] for b in load_never_matched(out)} == {2, 9}
    assert {i["id"] for i in data["items"]} == {i.id for i in train}


@pytest.mark.slow
def test_real_datumaro_loss_dynamics_analyzer_reads_our_export(train, tmp_path):
    tracker = LossDynamicsTracker(tmp_path / "stats", train)
    _fill(tracker, train, 30, loud={"cls": 4, "bbox": 11, "centerness": 15})
    tracker.close()
    out = export_datumaro(tmp_path / "stats", train, tmp_path / "nld")
    script = """
import json, sys
import datumaro as dm
stats = dm.Dataset.import_from(sys.argv[1], "datumaro")
result = {}
for t in ("cls", "bbox", "centerness"):
    analyzer = dm.LossDynamicsAnalyzer(stats, tracking_loss_type=t)
    cands = analyzer.get_top_k_cands(3)
    result[t] = [[c.id, c.subset, c.ann_id, c.metric] for c in cands]
fig = analyzer.plot_ema_loss_dynamics(cands, mode="mean")
print(json.dumps(result))
"""
    result = json.loads(run_datumaro(script, out).stdout.strip().splitlines()[-1])
    owner = {b.ann_id: i.id for i, b in train.iter_boxes()}
    for loss_type, ann_id in (("cls", 4), ("bbox", 11), ("centerness", 15)):
        top = result[loss_type][0]
        assert top[2] == ann_id and top[0] == owner[ann_id] and top[1] == "train"
        metrics = [c[3] for c in result[loss_type]]
        assert metrics == sorted(metrics, reverse=True)
