"""The review report: files, candidate order, truth columns, metrics, a self-contained HTML page,
graceful handling of missing images, and bad input that writes nothing."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from otx_nld.analysis.report import CSV_COLUMNS, DEFAULT_SCORE, TRUTH_COLUMNS, analyze, format_summary
from otx_nld.data.dataset import Dataset
from otx_nld.data.noise import BoxRecord, NoiseChange, NoiseTruth
from otx_nld.errors import ConfigError, DatasetError, OtxNldError
from otx_nld.training.tracking import TRACKED_TYPES, LossDynamicsTracker, export_datumaro
from tests.factories import make_dataset

WEIRD_ID = 'odd <b>"id"</b> & co'
"""An item id full of HTML metacharacters: the report must escape it."""
LOUD_ANN = 10  # first box of item 3 (3 boxes per item, ids from 1)
SHIFTED_ANN = 4  # first box of item 1: scored but ordinary
UNSEEN_ANN = 7  # first box of item 2: never tracked (never matched)
DROPPED_ANN = 999  # a box removed from the training data


def build_run(root: Path, iterations: int = 15) -> tuple[Path, Path, Dataset]:
    """A small run directory (Parquet stats, Datumaro export, run.json) with one loud box,
    and a noise truth: a flip on the loud box, a shift on an ordinary box, a shift on a box
    never tracked (unscored), a drop (not scoreable). Returns ``(run, truth file, train data)``."""
    ds = make_dataset(8, 3, image_dir=root / "images")
    items = [i.replace(subset="train", id=WEIRD_ID if k == 3 else i.id) for k, i in enumerate(ds.items)]
    train = ds.with_items(items)
    run = root / "run"
    rng = np.random.default_rng(0)
    tracker = LossDynamicsTracker(run / "stats", train, chunk_rows=50)
    ids = np.array([b.ann_id for _, b in train.iter_boxes() if b.ann_id != UNSEEN_ANN])
    for it in range(iterations):
        present = ids[rng.uniform(size=ids.size) < 0.9]
        losses = {t: rng.uniform(0.1, 0.3, present.size) for t in TRACKED_TYPES}
        losses["cls"][present == LOUD_ANN] = 3.0
        tracker.record(it, it // 5, present, losses)
    tracker.close()
    (run / "run.json").write_text(json.dumps({"labels": list(train.labels)}))
    export_datumaro(run / "stats", train, run / "noisy_label_detection")

    boxes = {b.ann_id: (item, b) for item, b in train.iter_boxes()}

    def change(ann_id: int, kind: str) -> NoiseChange:
        item, box = boxes[ann_id]
        noisy = BoxRecord.of(box, train.labels)  # the training data holds the noisy box
        original = noisy
        if kind == "flip":
            label = (box.label + 1) % len(train.labels)
            original = BoxRecord(label, train.labels[label], box.xywh)
        return NoiseChange(item.id, "train", ann_id, kind, original, noisy)

    truth = NoiseTruth("train", 0, {"flip": 1, "shift": 2, "drop": 1}, train.num_boxes + 1, (
        change(LOUD_ANN, "flip"),
        change(SHIFTED_ANN, "shift"), change(UNSEEN_ANN, "shift"),
        NoiseChange("img_000", "train", DROPPED_ANN, "drop", BoxRecord(0, train.labels[0], (1, 1, 5, 5)),
                    None),
    ))
    truth_path = truth.save(root / "noise_truth.json")
    return run, truth_path, train


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Dataset]:
    return build_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def report(setup, tmp_path_factory):
    run, truth, _ = setup
    out = tmp_path_factory.mktemp("out") / "report"
    return analyze(run, out, truth=truth, top_k=5), out


def test_writes_every_file(report):
    result, out = report
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["report.html", "candidates.csv", "candidates.json", "ema_mean.png", "ema_label_mean.png",
         "gallery.png", "metrics.json"])
    assert {k: p.name for k, p in result.paths.items()}["gallery"] == "gallery.png"
    for name in ("ema_mean.png", "ema_label_mean.png", "gallery.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_loud_box_ranks_first_and_is_marked(report, setup):
    result, out = report
    assert result.score == DEFAULT_SCORE and result.tracking_loss_type == "cls" and result.top_k == 5
    first = result.candidates[0]
    assert (first.item_id, first.subset, first.ann_id) == (WEIRD_ID, "train", LOUD_ANN)
    assert first.rank == 1 and first.is_noisy and first.noise_kind == "flip" and first.original_label
    assert [r.rank for r in result.candidates] == [1, 2, 3, 4, 5]
    scores = [r.score for r in result.candidates]
    assert scores == sorted(scores, reverse=True)
    others = [r for r in result.candidates[1:] if r.ann_id != SHIFTED_ANN]
    assert all(not r.is_noisy and r.noise_kind == "" and r.original_label == "" for r in others)
    assert result.num_boxes == setup[2].num_boxes - 1 and result.never_matched == 1
    assert result.crops == 5


def test_csv_and_json_columns(report):
    result, out = report
    with open(out / "candidates.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [*CSV_COLUMNS, *TRUTH_COLUMNS]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    assert (rows[0]["item_id"], rows[0]["ann_id"], rows[0]["is_noisy"], rows[0]["noise_kind"]) == \
        (WEIRD_ID, str(LOUD_ANN), "1", "flip")
    assert float(rows[0]["score"]) == result.candidates[0].score
    data = json.loads((out / "candidates.json").read_text())
    assert data["score"] == DEFAULT_SCORE and data["tracking_loss_type"] == "cls" and data["top_k"] == 5
    assert data["counts"]["never_matched"] == 1
    assert list(data["candidates"][0]) == [*CSV_COLUMNS, *TRUTH_COLUMNS]
    assert data["candidates"][0]["is_noisy"] is True
    assert data["candidates"][1]["label"] in ("cat", "dog", "bird")


def test_metrics_against_truth(report):
    result, out = report
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["not_scoreable"] == {"drop": 1}
    assert metrics["unscored"]["shift"] == 1
    assert set(metrics["per_kind"]) == {"flip", "shift"}
    assert metrics["per_kind"]["flip"]["average_precision"] == 1.0
    assert metrics["per_kind"]["flip"]["precision_at"]["5"] == pytest.approx(0.2)
    # Tutorial numbers, per box: 1 or 2 changed boxes among the top 5; 3 scoreable changes.
    hits = sum(r.is_noisy for r in result.candidates)
    assert metrics["tutorial"]["hits"] == hits and metrics["tutorial"]["scoreable_changes"] == 3
    assert result.accuracy == pytest.approx(hits / 5) and result.recall == pytest.approx(hits / 3)
    text = format_summary(result)
    assert f"Accuracy = {100 * hits / 5:.1f}% and Recall = {100 * hits / 3:.1f}%" in text
    assert "flip" in text and "AUROC" in text and "1 drop change(s) not scoreable" in text
    assert "1 shift change(s) unscored" in text


def test_html_is_self_contained_and_escaped(report):
    result, out = report
    page = (out / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert len([s for s in sources if s.startswith("data:image/jpeg;base64,")]) == 5  # crops
    assert len(sources) >= 5 + 5 + 2  # crops, sparklines, EMA plots
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "url(" not in page
    assert WEIRD_ID not in page and "odd &lt;b&gt;&quot;id&quot;&lt;/b&gt; &amp; co" in page
    assert "Accuracy = " in page and "Recall = " in page and "AUROC" in page
    assert "not scoreable" in page and "unscored" in page
    assert page.count('<tr class="noisy">') == sum(r.is_noisy for r in result.candidates)
    assert f"flip (was {result.candidates[0].original_label})" in page
    assert result.candidates[0].original_label != result.candidates[0].label


def test_default_top_k_with_truth_is_scoreable_changes(setup, tmp_path):
    run, truth, _ = setup
    result = analyze(run, tmp_path / "r", truth=truth)
    assert result.top_k == 3 and len(result.candidates) == 3


def test_datumaro_export_source_and_other_scores(setup, tmp_path):
    run, _, _ = setup
    result = analyze(run / "noisy_label_detection", tmp_path / "r", loss="cls+bbox", score="mean", top_k=3)
    assert result.candidates[0].ann_id == LOUD_ANN and result.tracking_loss_type == "cls+bbox"
    assert result.metrics is None and result.accuracy is None
    assert not (tmp_path / "r" / "metrics.json").exists()
    with open(tmp_path / "r" / "candidates.csv", newline="") as f:
        assert list(next(csv.reader(f))) == list(CSV_COLUMNS)
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "<th>truth</th>" not in page and "Accuracy" not in page


def test_without_images_still_reports(setup, tmp_path):
    run, truth, train = setup
    stats_only = tmp_path / "copy" / "stats"
    shutil.copytree(run / "stats", stats_only)
    result = analyze(stats_only, tmp_path / "r", top_k=2)
    assert result.crops == 0 and "gallery" not in result.paths
    assert any("images not found" in n for n in result.notes)
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "images not found" in page and "data:image/jpeg" not in page and "no image" in page
    assert not (tmp_path / "r" / "gallery.png").exists()
    # --data brings the crops back (any dataset dir holding the images and boxes).
    data = tmp_path / "data"
    train.export(data, "datumaro", save_media=False)
    result = analyze(stats_only, tmp_path / "r2", top_k=2, data=data)
    assert result.crops == 2 and (tmp_path / "r2" / "gallery.png").is_file()


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"stats_path": "{tmp}/missing"}, DatasetError, "does not exist"),
    ({"truth": "{tmp}/bad.json"}, DatasetError, "invalid JSON"),
    ({"truth": "{tmp}/missing.json"}, DatasetError, "does not exist"),
    ({"score": "nope"}, ConfigError, "unknown 'nope'"),
    ({"loss": "nope"}, ConfigError, "not in the statistics"),
    ({"loss": "cls+"}, ConfigError, "tracking_loss_type"),
    ({"alpha": 0.0}, ConfigError, "alpha"),
    ({"top_k": 0}, ConfigError, "top_k"),
    ({"data": "{tmp}/missing"}, DatasetError, "does not exist"),
])
def test_bad_input_writes_nothing(setup, tmp_path, kwargs, error, message):
    run, _, _ = setup
    (tmp_path / "bad.json").write_text("{not json")
    args = {"stats_path": run,
            **{k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in kwargs.items()}}
    out = tmp_path / "out" / "report"
    with pytest.raises(error, match=re.escape(message)):
        analyze(out_dir=out, **args)
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_non_empty_output_needs_overwrite(setup, tmp_path):
    run, _, _ = setup
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OtxNldError, match="not empty"):
        analyze(run, out, top_k=1)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    analyze(run, out, top_k=1, overwrite=True)
    assert (out / "report.html").is_file() and not (out / "keep.txt").exists()
