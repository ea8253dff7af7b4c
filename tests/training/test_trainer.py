"""Trainer: determinism, resume continuity of checkpoints and the stats stream, outputs."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from otx_nld.errors import DatasetError, OtxNldError
from otx_nld.recipe import load_recipe
from otx_nld.training.tracking import chunk_files, read_stats
from otx_nld.training.trainer import Trainer, lr_at, model_from_checkpoint
from tests.factories import make_dataset

# Constant lr so that a 2-epoch run resumed to 3 epochs equals a straight 3-epoch run.
OVERRIDES = ["schedule.policy=constant", "schedule.warmup_iters=0", "train.eval_interval=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    ds = make_dataset(10, 3, size=(96, 64), image_dir=root / "images")
    return ds.with_items(item.replace(subset="train") for item in ds)


def _fit(data, out, epochs, resume=None, overrides=()):
    recipe = load_recipe("test_tiny", [*OVERRIDES, f"train.epochs={epochs}", *overrides])
    return Trainer(recipe, data, out, val_data=data, resume=resume, progress=False).fit()


def _rows(out):
    table = read_stats(out / "stats").to_pandas()
    return table.sort_values(["iteration", "ann_id"]).reset_index(drop=True)


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_outputs_and_determinism(data, tmp_path):
    a = _fit(data, tmp_path / "a", 2)
    _fit(data, tmp_path / "b", 2)
    out = tmp_path / "a"
    for name in ("recipe.yaml", "run.json", "metrics.jsonl", "curves.png", "checkpoints/last.pt",
                 "checkpoints/best.pt", "noisy_label_detection/annotations/train.json"):
        assert (out / name).is_file(), name
    assert yaml.safe_load((out / "recipe.yaml").read_text())["train"]["epochs"] == 2
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1] and "val_map50" in history[-1]
    assert a.iterations == 2 * 3  # 10 images, batch 4
    rows_a, rows_b = _rows(out), _rows(tmp_path / "b")
    assert len(rows_a) > 0
    assert list(rows_a.columns) == ["iteration", "epoch", "item_id", "subset", "ann_id", "label_id",
                                    "cls", "bbox", "centerness", "margin"]
    assert rows_a.equals(rows_b)
    labels = {b.ann_id: (i.id, b.label) for i, b in data.iter_boxes()}
    for row in rows_a.itertuples():
        assert labels[row.ann_id] == (row.item_id, row.label_id)
    assert np.isfinite(rows_a[["cls", "bbox", "centerness", "margin"]].to_numpy()).all()
    for key, value in _weights(out / "checkpoints/last.pt").items():
        assert torch.equal(value, _weights(tmp_path / "b" / "checkpoints/last.pt")[key]), key


def test_resume_continues_stats_without_gaps_or_duplicates(data, tmp_path):
    straight = tmp_path / "straight"
    _fit(data, straight, 3)
    resumed = tmp_path / "resumed"
    _fit(data, resumed, 2)
    # An interrupted run may have streamed rows past its last checkpoint: they must go.
    stale = resumed / "stats" / "part-000099.parquet"
    shutil.copy(chunk_files(resumed / "stats")[0], stale)
    with pytest.raises(OtxNldError, match="--resume"):
        _fit(data, resumed, 3)
    _fit(data, resumed, 3, resume=resumed / "checkpoints" / "last.pt")
    assert not stale.exists()
    a, b = _rows(straight), _rows(resumed)
    assert sorted(set(b["iteration"])) == list(range(9))
    assert a[["iteration", "epoch", "item_id", "ann_id"]].equals(b[["iteration", "epoch", "item_id", "ann_id"]])
    np.testing.assert_allclose(a[["cls", "bbox", "centerness"]], b[["cls", "bbox", "centerness"]], rtol=1e-5, atol=1e-6)
    history = [json.loads(line)["epoch"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert history == [0, 1, 2]


def test_checkpoint_round_trip_and_bad_files(data, tmp_path):
    _fit(data, tmp_path / "run", 1)
    model, recipe, labels = model_from_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert labels == data.labels and recipe.name == "test_tiny" and not model.training
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="bad.pt: cannot read checkpoint"):
        model_from_checkpoint(bad)
    torch.save({"something": 1}, bad)
    with pytest.raises(DatasetError, match="not an otx-nld checkpoint"):
        model_from_checkpoint(bad)


def test_training_data_must_have_unique_ann_ids(data, tmp_path):
    clash = data.with_items(i.replace(boxes=tuple(b.replace(ann_id=1) for b in i.boxes)) for i in data)
    with pytest.raises(OtxNldError, match="not unique"):
        Trainer(load_recipe("test_tiny"), clash, tmp_path / "x", progress=False)


@pytest.mark.parametrize(
    ("overrides", "iteration", "expected"),
    [(["schedule.warmup_iters=10", "schedule.warmup_ratio=0.1"], 0, 0.1),
     (["schedule.warmup_iters=10", "schedule.warmup_ratio=0.1"], 5, 0.55),
     (["schedule.warmup_iters=0", "schedule.policy=cosine", "schedule.min_lr_ratio=0.0"], 50, 0.5),
     (["schedule.warmup_iters=0", "schedule.policy=cosine", "schedule.min_lr_ratio=0.1"], 100, 0.1),
     (["schedule.warmup_iters=0", "schedule.policy=step", "schedule.milestones=[0.5, 0.8]"], 60, 0.1),
     (["schedule.warmup_iters=0", "schedule.policy=step", "schedule.milestones=[0.5, 0.8]"], 90, 0.01),
     (["schedule.warmup_iters=0", "schedule.policy=constant"], 99, 1.0)],
)
def test_lr_schedule(overrides, iteration, expected):
    recipe = load_recipe("test_tiny", ["optimizer.lr=1.0", *overrides])
    assert lr_at(recipe, iteration, 100) == pytest.approx(expected)


def test_thread_limit_applies_to_the_run_only(data, tmp_path):
    before = torch.get_num_threads()
    limit = 1 if before != 1 else 2
    _fit(data, tmp_path / "run", 1, overrides=[f"train.threads={limit}"])
    assert torch.get_num_threads() == before
