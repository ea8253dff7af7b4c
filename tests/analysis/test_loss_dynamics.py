"""LossStats loading (Parquet, Datumaro export, errors), the vectorized analyzer vs plain-Python
references, alternative scores, plots, and the real Datumaro 1.11.1 analyzer's ranking."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from otx_nld.analysis.loss_dynamics import (SCORES, LossDynamicsAnalyzer, LossStats, NoisyLabelCandidate,
                                            ema_by_group)
from otx_nld.data.dataset import Dataset
from otx_nld.errors import ConfigError, DatasetError
from otx_nld.training.tracking import LOSS_TYPES, TRACKED_TYPES, LossDynamicsTracker, export_datumaro
from tests.datumaro_env import run_datumaro
from tests.factories import make_dataset


def reference_ema(values: list[float], alpha: float) -> float:
    """Datumaro's score in plain Python: EMA from 0, one step per value, the last value."""
    ema = 0.0
    for x in values:
        ema = (1 - alpha) * ema + alpha * x
    return ema


def hand_stats(rows: list[tuple[str, str, int, int, int, float, float, float]],
               labels: tuple[str, ...] = ("cat", "dog")) -> LossStats:
    """Stats from rows ``(item_id, subset, ann_id, label_id, iteration, cls, bbox, centerness)``."""
    cols = list(zip(*rows))
    return LossStats.from_arrays(cols[0], cols[1], cols[2], cols[3], cols[4],
                                 {"cls": cols[5], "bbox": cols[6], "centerness": cols[7]}, labels)


# A few boxes with different numbers of observations, rows deliberately shuffled.
HAND_LOSSES = {
    ("b", "train", 2, 0): [(0, 0.5, 0.1, 0.6), (3, 0.7, 0.2, 0.6), (5, 0.9, 0.1, 0.6)],
    ("a", "train", 1, 1): [(1, 0.2, 0.9, 0.6), (2, 0.2, 0.8, 0.7)],
    ("a", "train", 3, 0): [(0, 0.1, 0.1, 0.6), (1, 0.1, 0.1, 0.6), (2, 0.1, 0.1, 0.6), (3, 0.1, 0.1, 0.6),
                           (4, 0.1, 0.2, 0.6)],
    ("c", "val", 7, 1): [(4, 3.0, 0.0, 0.5)],
}


@pytest.fixture
def hand() -> LossStats:
    rows = [(i, s, a, lab, *obs) for (i, s, a, lab), seq in HAND_LOSSES.items() for obs in seq]
    rng = np.random.default_rng(0)
    return hand_stats([rows[k] for k in rng.permutation(len(rows))])


def test_from_arrays_groups_and_sorts_boxes(hand):
    assert hand.keys() == [("a", "train", 1), ("a", "train", 3), ("b", "train", 2), ("c", "val", 7)]
    assert hand.counts.tolist() == [2, 5, 3, 1]
    assert hand.iteration.tolist() == [1, 2, 0, 1, 2, 3, 4, 0, 3, 5, 4]
    assert hand.label_id.tolist() == [1, 0, 0, 1]
    assert hand.losses["cls"][hand.starts[2]:hand.starts[3]].tolist() == [0.5, 0.7, 0.9]


@pytest.mark.parametrize("alpha", [0.001, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("loss_type", ["cls", "bbox", "centerness", "cls+bbox", ("bbox", "centerness")])
def test_ema_matches_plain_python(hand, alpha, loss_type):
    analyzer = LossDynamicsAnalyzer(hand, loss_type, alpha=alpha)
    types = loss_type.split("+") if isinstance(loss_type, str) else loss_type
    for (item_id, subset, ann_id, _), seq in HAND_LOSSES.items():
        values = [sum(obs[1 + LOSS_TYPES.index(t)] for t in types) for obs in sorted(seq)]
        b = hand.box_index((item_id, subset, ann_id))
        assert math.isclose(analyzer.box_scores[b], reference_ema(values, alpha), rel_tol=1e-12)
    assert analyzer.tracking_loss_type == "+".join(types)


def test_ema_by_group_matches_pandas_bitwise():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 300, 50)
    values = rng.uniform(0, 2, counts.sum())
    values[5] = 0.0  # a value equal to the running EMA: pandas skips that update
    starts = np.r_[0, np.cumsum(counts)]
    ours = ema_by_group(values, starts, 0.001)
    for g in range(counts.size):
        x = values[starts[g]:starts[g + 1]]
        expected = pd.Series([0.0, *x]).ewm(alpha=0.001, adjust=False).mean().to_numpy()[1:]
        np.testing.assert_array_equal(ours[starts[g]:starts[g + 1]], expected)


def test_top_k_order_ties_and_candidates(hand):
    analyzer = LossDynamicsAnalyzer(hand, "centerness", alpha=1.0, score="final")
    # final centerness: a/1 -> 0.7, a/3 -> 0.6, b/2 -> 0.6, c/7 -> 0.5; a/3 and b/2 tie.
    cands = analyzer.get_top_k_cands(3)
    assert [c.key for c in cands] == [("a", "train", 1), ("a", "train", 3), ("b", "train", 2)]
    assert cands[0] == NoisyLabelCandidate("a", "train", 1, 1, 0.7) and cands[0].id == "a"
    assert len(analyzer.get_top_k_cands(100)) == 4 and analyzer.get_top_k_cands(0) == []
    table = analyzer.scores()
    assert table.ann_id.tolist() == [1, 3, 2, 7] and table.label.tolist() == ["dog", "cat", "cat", "dog"]
    assert table.by_key()[("c", "val", 7)] == 0.5
    assert table.rows()[0] == {"item_id": "a", "subset": "train", "ann_id": 1, "label_id": 1, "label": "dog",
                               "score": 0.7, "num_obs": 2}
    assert list(table.to_pandas().columns) == list(table.COLUMNS)
    with pytest.raises(ConfigError, match="top_k"):
        analyzer.get_top_k_cands(-1)


def test_alternative_scores(hand):
    def score(name, loss="cls", **options):
        a = LossDynamicsAnalyzer(hand, loss, score=name, score_options=options)
        return dict(zip(hand.keys(), a.box_scores.tolist()))

    a1, a3, b2, c7 = hand.keys()
    assert set(SCORES) == {"ema", "mean", "late_mean", "label_norm", "rank_avg", "rank_max", "final"}
    mean = score("mean")
    assert mean[a1] == pytest.approx(0.2) and mean[b2] == pytest.approx(0.7) and mean[c7] == 3.0
    assert score("final")[b2] == 0.9
    # Run iterations 0..5: the late half is iteration >= 2.5 -> b2 has 0.7, 0.9; a1 has none
    # (falls back to its last loss), a3 has iterations 3, 4.
    late = score("late_mean")
    assert late[b2] == pytest.approx(0.8) and late[a1] == pytest.approx(0.2) and late[a3] == pytest.approx(0.1)
    assert score("late_mean", fraction=1.0) == pytest.approx(mean)
    with pytest.raises(ConfigError, match="fraction"):
        score("late_mean", fraction=0)
    # label_norm: label 0 box means a3 0.1, b2 0.7 (median 0.4); label 1: a1 0.2, c7 3.0 (median 1.6).
    norm = score("label_norm")
    assert norm[b2] == pytest.approx(0.7 / 0.4) and norm[a1] == pytest.approx(0.2 / 1.6)
    # rank_avg: per type, the percentile rank of the box mean (ties share their mean rank).
    ranks = score("rank_avg")
    cls_rank = {a1: 2 / 4, a3: 1 / 4, b2: 3 / 4, c7: 4 / 4}
    bbox_rank = {a1: 4 / 4, a3: 2 / 4, b2: 3 / 4, c7: 1 / 4}  # means .85 .12 .1333 0
    cen_rank = {a1: 4 / 4, a3: 2.5 / 4, b2: 2.5 / 4, c7: 1 / 4}  # means .65 .6 .6 .5: a tie shares rank 2.5
    for key in hand.keys():
        assert ranks[key] == pytest.approx((cls_rank[key] + bbox_rank[key] + cen_rank[key]) / 3)
    assert score("rank_avg", types=("cls",)) == pytest.approx(cls_rank)
    with pytest.raises(ConfigError, match="rank_avg"):
        score("rank_avg", types=("nope",))
    # rank_max over the combination's types (fraction 1: late mean == mean, same ranks as above).
    union = score("rank_max", "cls+bbox", fraction=1.0)
    for key in hand.keys():
        assert union[key] == pytest.approx(max(cls_rank[key], bbox_rank[key]))
    single = score("rank_max", "cls")  # one type: the late_mean ranking, as percentiles
    assert sorted(hand.keys(), key=single.get) == sorted(hand.keys(), key=late.get)
    with pytest.raises(ConfigError, match="rank_max: fraction"):
        score("rank_max", fraction=2)


def test_label_norm_needs_non_negative_values():
    signed = hand_stats([("a", "train", 1, 0, 0, -0.5, 0.1, 0.1), ("b", "train", 2, 0, 0, 0.5, 0.1, 0.1)])
    with pytest.raises(ConfigError, match="label_norm: needs non-negative"):
        LossDynamicsAnalyzer(signed, "cls", score="label_norm")


def test_custom_score_function_and_bad_options(hand):
    analyzer = LossDynamicsAnalyzer(hand, score=lambda a: -a.stats.ann_id.astype(float))
    assert [c.ann_id for c in analyzer.get_top_k_cands(4)] == [1, 2, 3, 7]
    with pytest.raises(ConfigError, match="unknown 'nope'"):
        LossDynamicsAnalyzer(hand, score="nope")
    with pytest.raises(ConfigError, match=r"\['bbox_refine'\] not in the statistics"):
        LossDynamicsAnalyzer(hand, "cls+bbox_refine")
    for bad in ("cls+cls", "", ("cls", "")):
        with pytest.raises(ConfigError, match="tracking_loss_type"):
            LossDynamicsAnalyzer(hand, bad)
    for alpha in (0, 1.5, True):
        with pytest.raises(ConfigError, match="alpha"):
            LossDynamicsAnalyzer(hand, alpha=alpha)
    with pytest.raises(ValueError, match="non-finite"):
        LossDynamicsAnalyzer(hand, score=lambda a: np.full(a.stats.num_boxes, np.nan))


def test_ema_curves_and_mean_curve(hand):
    analyzer = LossDynamicsAnalyzer(hand, "cls", alpha=0.5)
    curves = analyzer.ema_curves([("b", "train", 2), ("a", "train", 1)])
    assert curves.iterations.tolist() == [0, 1, 2, 3, 4, 5]
    b2 = [0.25, np.nan, np.nan, 0.475, np.nan, 0.6875]
    np.testing.assert_allclose(curves.values[0], b2)
    np.testing.assert_allclose(curves.values[1], [np.nan, 0.1, 0.15, np.nan, np.nan, np.nan])
    filled = analyzer.ema_curves([("b", "train", 2), ("a", "train", 1)], fill="ffill")
    np.testing.assert_allclose(filled.values[0], [0.25, 0.25, 0.25, 0.475, 0.475, 0.6875])
    np.testing.assert_allclose(filled.values[1], [np.nan, 0.1, 0.15, 0.15, 0.15, 0.15])
    assert analyzer.ema_curves().values.shape == (4, 6)
    # Mean at iteration 4: boxes a/3 (5th obs) and c/7 (1st obs: 1.5).
    iters, mean = analyzer.mean_ema_curve()
    a3_at_4 = 0.1 * (1 - 0.5 ** 5)
    assert iters.tolist() == [0, 1, 2, 3, 4, 5] and mean[4] == pytest.approx((a3_at_4 + 1.5) / 2)
    iters, mean = analyzer.mean_ema_curve(label_id=1)
    assert iters.tolist() == [1, 2, 4] and mean.tolist() == pytest.approx([0.1, 0.15, 1.5])
    with pytest.raises(KeyError, match="no loss statistics"):
        analyzer.ema_curves([("zz", "train", 1)])
    with pytest.raises(ConfigError, match="fill"):
        analyzer.ema_curves(fill="zero")


def test_plot_modes(hand):
    analyzer = LossDynamicsAnalyzer(hand, "cls")
    cands = analyzer.get_top_k_cands(3)  # ~alpha x loss sum: c/7 (dog), b/2 (cat), a/3 (cat)
    fig = analyzer.plot_ema_loss_dynamics(cands, mode="mean")
    (ax,) = fig.axes
    assert len(ax.lines) == 4 and ax.lines[0].get_linestyle() == "--" and ax.lines[0].get_color() == "k"
    assert ax.get_xlabel() == "Training iterations" and ax.get_ylabel() == "EMA training loss dynamics"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["mean", "id=c, ann_id=7, label=dog", "id=b, ann_id=2, label=cat", "id=a, ann_id=3, label=cat"]
    assert tuple(fig.get_size_inches()) == (4, 3)

    fig = analyzer.plot_ema_loss_dynamics(cands, mode="label_mean", mean_plot_color="r", figsize=(3, 2))
    assert len(fig.axes) == 2 and tuple(fig.get_size_inches()) == (6, 2)
    cat, dog = fig.axes
    assert [len(cat.lines), len(dog.lines)] == [3, 2]
    assert "(cat)" in cat.get_title() and "(dog)" in dog.get_title()
    assert cat.lines[0].get_color() == "r"
    np.testing.assert_array_equal(cat.lines[1].get_xdata(), [0, 3, 5])
    fig.savefig(Path("/dev/null"), format="png")  # renders without pyplot
    with pytest.raises(ConfigError, match="mode"):
        analyzer.plot_ema_loss_dynamics(cands, mode="median")


# -- loading our own files ----------------------------------------------------------------


@pytest.fixture
def train(tmp_path) -> Dataset:
    ds = make_dataset(6, 3, image_dir=tmp_path / "images")
    return ds.with_items(i.replace(subset="train") for i in ds)


def _track(train: Dataset, stats_dir: Path, iterations: int = 12, skip: set[int] = frozenset(),
           loud: dict[str, int] | None = None, seed: int = 0) -> None:
    """Rows for every box in most iterations (some boxes miss some), ``loud`` boxes high."""
    rng = np.random.default_rng(seed)
    tracker = LossDynamicsTracker(stats_dir, train, chunk_rows=17)
    ids = np.array([b.ann_id for _, b in train.iter_boxes() if b.ann_id not in skip])
    for it in range(iterations):
        present = ids[rng.uniform(size=ids.size) < 0.8]
        losses = {t: rng.uniform(0.1, 0.3, present.size) for t in TRACKED_TYPES}
        for t, ann_id in (loud or {}).items():
            losses[t][present == ann_id] = 2.0
        tracker.record(it, it // 3, present, losses)
    tracker.close()


def test_load_parquet_and_datumaro_export_agree(train, tmp_path):
    run = tmp_path / "run"
    _track(train, run / "stats", skip={5})
    (run / "run.json").write_text(json.dumps({"labels": list(train.labels)}))
    export_datumaro(run / "stats", train, run / "noisy_label_detection")

    parquet = LossStats.load(run)
    assert parquet.source == run / "stats" and parquet.labels == train.labels and parquet.epoch is not None
    datumaro = LossStats.load(run / "noisy_label_detection")
    assert datumaro.epoch is None and datumaro.labels == train.labels
    assert LossStats.load(run / "stats").keys() == parquet.keys()
    assert parquet.keys() == datumaro.keys() and len(parquet.keys()) == train.num_boxes - 1
    assert ("img_001", "train", 5) not in parquet.keys()
    np.testing.assert_array_equal(parquet.iteration, datumaro.iteration)
    np.testing.assert_array_equal(parquet.label_id, datumaro.label_id)
    assert set(parquet.losses) == set(datumaro.losses) == set(TRACKED_TYPES)
    for t in TRACKED_TYPES:
        np.testing.assert_array_equal(parquet.losses[t], datumaro.losses[t])
    owner = {b.ann_id: (i.id, b.label) for i, b in train.iter_boxes()}
    assert all(owner[a] == (i, lab) for i, a, lab in zip(parquet.item_id, parquet.ann_id, parquet.label_id))
    # Without run.json the Parquet loader names labels generically.
    (run / "run.json").unlink()
    assert LossStats.load(run).labels[0] == "label_0"
    # With only the export, a run directory falls back to it.
    for part in (run / "stats").iterdir():
        part.unlink()
    assert LossStats.load(run).source == run / "noisy_label_detection"


def _write_export(tmp_path: Path, boxes_attrs: list[dict], infos: dict | None = None) -> Path:
    ds = make_dataset(1, len(boxes_attrs), subset="train")
    item = ds.items[0]
    boxes = tuple(b.replace(attributes=a) for b, a in zip(item.boxes, boxes_attrs))
    ds = Dataset((item.replace(boxes=boxes),), ds.labels,
                 {"purpose": "noisy_label_detection", "task": "OTX-Det"} if infos is None else infos)
    return ds.export(tmp_path / "export", "datumaro", save_media=False, overwrite=True)


def _attrs(iters, cls=None, **more):
    return {"iters": iters, "loss_dynamics_cls": cls if cls is not None else [0.1] * len(iters), **more}


def test_datumaro_export_errors_name_path_and_problem(tmp_path):
    ok = _attrs([0, 1])
    cases = [
        ([ok], {}, "infos has no 'purpose'"),
        ([ok], {"purpose": "training"}, "has purpose 'training'"),
        ([ok], {"purpose": "noisy_label_detection", "task": "OTX-MultiClassCls"}, "task 'OTX-MultiClassCls'"),
        ([ok, {"note": 1}], None, r"item 'img_000' box 2: no loss attributes"),
        ([ok, {"iters": [0]}], None, "box 2: no loss attributes"),
        ([ok, _attrs([0, 1, 2], [0.1])], None, r"box 2: 'loss_dynamics_cls' has 1 values but 'iters' has 3"),
        ([ok, {**ok, "loss_dynamics_bbox": [0.1, 0.1]}], None, "loss types .* differ"),
        ([ok, _attrs([0, 0])], None, "box 2: two observations in iteration 0"),
        ([ok, _attrs([0, 1], ["x", 0.1])], None, "'loss_dynamics_cls' holds a non-numeric value 'x'"),
        ([ok, _attrs([0, 1.5])], None, "integer iteration"),
        ([_attrs([])], None, "no boxes with loss statistics"),
    ]
    for attrs, infos, message in cases:
        path = _write_export(tmp_path, attrs, infos)
        with pytest.raises(DatasetError, match=message) as err:
            LossStats.load(path)
        assert str(path) in str(err.value)


def test_datumaro_export_unobserved_and_unsorted(tmp_path):
    path = _write_export(tmp_path, [_attrs([5, 1, 3], [0.5, 0.1, 0.3]), _attrs([])])
    stats = LossStats.from_datumaro(path)
    assert stats.unobserved == (("img_000", "train", 2),) and stats.num_boxes == 1
    assert stats.iteration.tolist() == [1, 3, 5] and stats.losses["cls"].tolist() == [0.1, 0.3, 0.5]


def test_stats_dir_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        LossStats.load(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no loss statistics here"):
        LossStats.load(tmp_path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "stats").mkdir()
    pq.write_table(pa.table({"iteration": [0]}), tmp_path / "stats" / "part-000000.parquet")
    with pytest.raises(DatasetError, match=r"stats: loss statistics lack columns \['epoch'"):
        LossStats.load(tmp_path / "stats")
    rows = [("a", "train", 1, 0, 0, 0.1, 0.1, 0.1), ("a", "train", 1, 1, 1, 0.1, 0.1, 0.1)]
    with pytest.raises(DatasetError, match="box 1: rows with labels 0 and 1"):
        hand_stats(rows)
    with pytest.raises(DatasetError, match="box 1: two rows for iteration 0"):
        hand_stats([rows[0], rows[0]])
    with pytest.raises(DatasetError, match="1 cls loss values are not finite"):
        hand_stats([("a", "train", 1, 0, 0, float("nan"), 0.1, 0.1)])


def test_stats_written_before_margin_still_load(train, tmp_path):
    import pyarrow.parquet as pq

    _track(train, tmp_path / "stats")
    for part in (tmp_path / "stats").iterdir():
        pq.write_table(pq.read_table(part).drop_columns(["margin"]), part)
    stats = LossStats.load(tmp_path / "stats")
    assert set(stats.losses) == set(LOSS_TYPES)
    with pytest.raises(ConfigError, match="margin"):
        LossDynamicsAnalyzer(stats, "margin")
    assert len(LossDynamicsAnalyzer(stats, "cls").get_top_k_cands(3)) == 3


def test_run80_like_real_run_if_present():
    """On the real clean run's stats (when this machine has them), both sources agree."""
    run = Path("/tmp/run80")
    if not (run / "stats").is_dir() or not (run / "noisy_label_detection").is_dir():
        pytest.skip("no real run at /tmp/run80")
    a = LossDynamicsAnalyzer(LossStats.from_stats_dir(run / "stats"), "cls")
    b = LossDynamicsAnalyzer(LossStats.from_datumaro(run / "noisy_label_detection"), "cls")
    np.testing.assert_array_equal(a.box_scores, b.box_scores)


# -- the real Datumaro 1.11.1 ---------------------------------------------------------------

DATUMARO_TOP_K = """
import json, sys, warnings
warnings.simplefilter("ignore")
import datumaro as dm
stats = dm.Dataset.import_from(sys.argv[1], "datumaro")
result = {}
for t in ("cls", "bbox", "centerness"):
    for alpha in (0.001, 0.05, 0.9):
        analyzer = dm.LossDynamicsAnalyzer(stats, alpha=alpha, tracking_loss_type=t)
        for k in (1, 3, 10, 10000):
            result[f"{t} {alpha} {k}"] = [[c.id, c.subset, c.ann_id, c.label_id, c.metric]
                                          for c in analyzer.get_top_k_cands(k)]
print(json.dumps(result))
"""


@pytest.mark.slow
def test_ranking_equals_real_datumaro(tmp_path):
    ds = make_dataset(15, 4, image_dir=tmp_path / "images")
    train = ds.with_items(i.replace(subset="train") for i in ds)
    _track(train, tmp_path / "stats", iterations=40, skip={7}, loud={"cls": 4, "bbox": 11, "centerness": 15})
    out = export_datumaro(tmp_path / "stats", train, tmp_path / "nld")
    expected = json.loads(run_datumaro(DATUMARO_TOP_K, out).stdout.strip().splitlines()[-1])
    stats = LossStats.from_datumaro(out)
    parquet = LossStats.from_stats_dir(tmp_path / "stats")
    for name, theirs in expected.items():
        loss_type, alpha, k = name.split()
        for source in (stats, parquet):
            ours = LossDynamicsAnalyzer(source, loss_type, alpha=float(alpha)).get_top_k_cands(int(k))
            assert [(c.item_id, c.subset, c.ann_id, c.label_id) for c in ours] == [tuple(t[:4]) for t in theirs], name
            for c, t in zip(ours, theirs):
                assert math.isclose(c.metric, t[4], rel_tol=1e-9), (name, c, t)
        assert len(theirs) == min(int(k), train.num_boxes - 1)
