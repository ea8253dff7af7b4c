"""Ranking metrics against a NoiseTruth: hand-computed cases, ties, per-kind splits, drops."""

from __future__ import annotations

import json

import numpy as np
import pytest

from otx_nld.analysis.loss_dynamics import LossDynamicsAnalyzer, LossStats
from otx_nld.analysis.metrics import DEFAULT_KS, auroc, average_precision, evaluate_scores
from otx_nld.data.noise import BoxRecord, NoiseChange, NoiseTruth

REC = BoxRecord(0, "cat", (0.0, 0.0, 1.0, 1.0))


def truth_of(changes: dict[int, str], item_id: str = "img") -> NoiseTruth:
    """A manifest with ``changes`` {ann_id: kind} on item ``img`` of subset ``train``."""
    return NoiseTruth("train", 0, {}, 100, tuple(
        NoiseChange(item_id, "train", ann_id, kind, None if kind == "spawn" else REC,
                    None if kind == "drop" else REC) for ann_id, kind in changes.items()))


def scores_of(values: dict[int, float]) -> dict[tuple[str, str, int], float]:
    return {("img", "train", ann_id): v for ann_id, v in values.items()}


def test_average_precision_and_auroc_hand_cases():
    labels = np.array([1, 1, 0, 0, 0], bool)
    perfect = np.array([5.0, 4, 3, 2, 1])
    assert average_precision(labels, perfect) == 1.0 and auroc(labels, perfect) == 1.0
    assert auroc(labels, -perfect) == 0.0
    # Ranking P N P N N: AP = (1/1 + 2/3) / 2; AUROC: positive 1 beats 3 negatives, positive 2 beats 2.
    labels = np.array([1, 0, 1, 0, 0], bool)
    assert average_precision(labels, perfect) == pytest.approx((1 + 2 / 3) / 2)
    assert auroc(labels, perfect) == pytest.approx(5 / 6)
    # Ties: all scores equal -> one threshold, precision = prevalence; AUROC 0.5.
    flat = np.ones(5)
    assert average_precision(labels, flat) == pytest.approx(2 / 5) and auroc(labels, flat) == 0.5
    # A tie between the top positive and a negative: AP's first threshold holds both.
    tied = np.array([3.0, 3.0, 2, 1, 0])
    assert average_precision(labels, tied) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert auroc(labels, tied) == pytest.approx((2.5 + 2) / 6)
    assert np.isnan(average_precision(np.zeros(3, bool), np.arange(3.0)))
    assert np.isnan(auroc(np.ones(3, bool), np.arange(3.0)))


def test_agrees_with_scikit_learn_on_random_cases():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.uniform(size=200) < 0.2
        scores = rng.integers(0, 15, 200).astype(float)  # many ties
        assert average_precision(labels, scores) == pytest.approx(sk.average_precision_score(labels, scores))
        assert auroc(labels, scores) == pytest.approx(sk.roc_auc_score(labels, scores))


def test_overall_and_per_kind():
    truth = truth_of({1: "flip", 2: "shift", 3: "flip", 9: "drop", 8: "spawn", 20: "flip"})
    # Ranking: 1 (flip), 5, 2 (shift), 3 (flip), 6, 8 (spawn), 7; flip 20 has no score.
    scores = scores_of({1: 0.9, 5: 0.8, 2: 0.7, 3: 0.6, 6: 0.5, 8: 0.4, 7: 0.3})
    m = evaluate_scores(scores, truth)
    assert m.num_scored == 7 and m.ks == (4, *DEFAULT_KS)
    assert m.changes == {"flip": 3, "shift": 1, "drop": 1, "spawn": 1}
    assert m.not_scoreable == {"drop": 1} and m.unscored == {"flip": 1, "shift": 0, "spawn": 0}
    o = m.overall
    assert (o.positives, o.negatives) == (4, 3)
    assert o.precision_at[4] == 3 / 4 and o.recall_at[4] == 3 / 4 and o.r_precision == 3 / 4
    assert o.precision_at[10] == 4 / 7 and o.recall_at[10] == 1.0  # k clipped to the 7 boxes
    assert o.average_precision == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 6) / 4)
    assert o.auroc == pytest.approx((3 + 2 + 2 + 1) / 12)
    # flip: ranking among flips + clean boxes 5, 6, 7: 1 5 3 6 7 (shift and spawn excluded).
    flip = m.per_kind["flip"]
    assert (flip.positives, flip.negatives) == (2, 3)
    assert flip.average_precision == pytest.approx((1 + 2 / 3) / 2) and flip.auroc == pytest.approx(5 / 6)
    assert flip.r_precision == 0.5
    shift = m.per_kind["shift"]  # 5 2 6 7
    assert shift.precision_at[4] == 1 / 4 and shift.average_precision == 0.5 and shift.auroc == pytest.approx(2 / 3)
    assert m.per_kind["spawn"].auroc == pytest.approx(1 / 3)
    assert set(m.per_kind) == {"flip", "shift", "spawn"}
    data = json.loads(json.dumps(m.as_dict()))
    assert data["not_scoreable"] == {"drop": 1} and "not scoreable" in data["not_scoreable_reason"]["drop"]
    assert data["overall"]["precision_at"]["4"] == 0.75


def test_ties_at_the_cut_off_follow_box_order_and_custom_ks():
    truth = truth_of({2: "flip"})
    m = evaluate_scores(scores_of({1: 1.0, 2: 1.0, 3: 0.0}), truth, ks=[1, 2])
    # 1 and 2 tie; ann 1 comes first in (subset, item_id, ann_id) order.
    assert m.overall.precision_at == {1: 0.0, 2: 0.5} and m.ks == (1, 2)
    assert m.overall.auroc == pytest.approx(0.75)
    with pytest.raises(ValueError, match="ks"):
        evaluate_scores(scores_of({1: 1.0}), truth, ks=[0])
    with pytest.raises(ValueError, match="finite"):
        evaluate_scores(scores_of({1: float("nan")}), truth)


def test_no_noise_and_dropped_keys_with_scores():
    m = evaluate_scores(scores_of({1: 1.0, 2: 0.5}), truth_of({}))
    assert m.overall.positives == 0 and np.isnan(m.overall.average_precision) and m.ks == DEFAULT_KS
    assert m.as_dict()["overall"]["auroc"] is None and m.per_kind == {}
    # A dropped box that (wrongly) has a score is neither positive nor clean.
    m = evaluate_scores(scores_of({1: 1.0, 2: 0.5, 3: 0.1}), truth_of({1: "drop", 3: "flip"}))
    assert (m.overall.positives, m.overall.negatives) == (1, 1) and m.overall.auroc == 0.0


def test_score_table_from_the_analyzer_is_accepted():
    rows = [("img", "train", a, 0, it, loss, 0.1, 0.1) for a, loss in ((1, 0.9), (2, 0.1), (3, 0.2))
            for it in range(3)]
    cols = list(zip(*rows))
    stats = LossStats.from_arrays(cols[0], cols[1], cols[2], cols[3], cols[4],
                                  {"cls": cols[5], "bbox": cols[6], "centerness": cols[7]}, ("cat",))
    table = LossDynamicsAnalyzer(stats, score="mean").scores()
    m = evaluate_scores(table, truth_of({1: "flip"}))
    assert m.overall.average_precision == 1.0 and m.per_kind["flip"].precision_at[1] == 1.0
