"""How well per-box scores find synthetic label noise: precision/recall@k, AP and AUROC.

Given every scored box's score (higher = more likely noisy) and the :class:`NoiseTruth`
manifest of the noise that was injected, :func:`evaluate_scores` ranks the boxes and measures
the ranking overall and per noise kind:

- overall: positives are the changed boxes among the scored ones, negatives every other
  scored box;
- per kind: positives are that kind's changed boxes among the scored ones, negatives the
  clean boxes; boxes changed by other kinds are left out of that kind's numbers.

``drop`` changes are boxes removed from the training data, so no per-box loss exists for them:
they are reported as not scoreable (a count), never silently ignored. Changed boxes of other
kinds that have no score (e.g. a box that never got a positive anchor) are counted as
``unscored``; they are not in the ranking, so recall counts only scored positives.

Ranking: highest score first; exact ties are broken by ``(subset, item_id, ann_id)``, the
order :class:`~otx_nld.analysis.loss_dynamics.LossDynamicsAnalyzer` lists candidates in, so
precision@k is what a reviewer of the top-k candidate list sees. AP and AUROC do not depend on
that order: AP groups tied scores into one threshold (as ``sklearn.metrics.
average_precision_score``), AUROC counts a tied positive/negative pair as half (as
``roc_auc_score``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from otx_nld.data.noise import NOISE_KINDS, NoiseTruth

__all__ = ["DEFAULT_KS", "NOT_SCOREABLE_KINDS", "NoiseDetectionMetrics", "RankingMetrics",
           "average_precision", "auroc", "evaluate_scores"]

BoxKey = tuple[str, str, int]
DEFAULT_KS = (10, 20, 50, 100)
"""Fixed cut-offs always reported, besides the number of scored positives."""
NOT_SCOREABLE_KINDS = ("drop",)
"""Noise kinds whose boxes are not in the training data, so per-box scores cannot find them."""
NOT_SCOREABLE_REASON = "box removed from the training data: not scoreable by per-box scores"


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of ``scores`` for binary ``labels``: sum over score thresholds of
    (recall increase) x precision, tied scores forming one threshold. NaN without positives."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    # The last position of each run of equal scores is one threshold.
    ends = np.flatnonzero(np.r_[np.diff(scores) != 0, True])
    tp = np.cumsum(labels)[ends]
    precision = tp / (ends + 1)
    recall_gain = np.diff(np.r_[0, tp]) / positives
    return float(np.sum(recall_gain * precision))


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random
    negative (ties count half), via the Mann-Whitney rank sum. NaN without both classes."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ordered = np.sort(scores)
    # Average 1-based rank of each score, ties sharing the mean of their ranks.
    ranks = (np.searchsorted(ordered, scores, "left") + np.searchsorted(ordered, scores, "right") + 1) / 2
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


@dataclass(frozen=True)
class RankingMetrics:
    """One ranking's quality against one set of positives.

    Attributes:
        positives, negatives: how many boxes of each class the ranking holds.
        precision_at, recall_at: k -> precision / recall of the top k (k clipped to the ranking
            length; precision divides by the clipped k).
        r_precision: precision at k = ``positives`` (which equals recall there); NaN without
            positives.
        average_precision, auroc: NaN when undefined (no positives, or no negatives for AUROC).
    """

    positives: int
    negatives: int
    precision_at: Mapping[int, float]
    recall_at: Mapping[int, float]
    r_precision: float
    average_precision: float
    auroc: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN as ``None``, k as string keys)."""
        return {
            "positives": self.positives, "negatives": self.negatives,
            "precision_at": {str(k): _json_float(v) for k, v in self.precision_at.items()},
            "recall_at": {str(k): _json_float(v) for k, v in self.recall_at.items()},
            "r_precision": _json_float(self.r_precision),
            "average_precision": _json_float(self.average_precision), "auroc": _json_float(self.auroc),
        }


def rank_metrics(labels: np.ndarray, scores: np.ndarray, ks: Iterable[int]) -> RankingMetrics:
    """:class:`RankingMetrics` of boxes already in rank order (``labels[i]``: box i is positive)."""
    labels = np.asarray(labels, dtype=bool)
    n = labels.size
    positives = int(labels.sum())
    hits = np.r_[0, np.cumsum(labels)]  # hits[k] = positives among the top k

    def precision(k: int) -> float:
        k = min(k, n)
        return float(hits[k] / k) if k else float("nan")

    def recall(k: int) -> float:
        return float(hits[min(k, n)] / positives) if positives else float("nan")

    ks = sorted(set(int(k) for k in ks))
    return RankingMetrics(
        positives=positives, negatives=n - positives,
        precision_at=MappingProxyType({k: precision(k) for k in ks}),
        recall_at=MappingProxyType({k: recall(k) for k in ks}),
        r_precision=precision(positives) if positives else float("nan"),
        average_precision=average_precision(labels, scores), auroc=auroc(labels, scores),
    )


@dataclass(frozen=True)
class NoiseDetectionMetrics:
    """Scores vs the noise truth, overall and per kind.

    Attributes:
        num_scored: boxes with a score.
        ks: the cut-offs of ``precision_at``/``recall_at``.
        overall: every scored changed box (all kinds) against every other scored box.
        per_kind: kind -> that kind's scored boxes against the clean ones (only kinds with a
            scored box).
        changes: kind -> number of changes in the truth.
        not_scoreable: kind -> changes that per-box scores cannot find by construction
            (``drop``: the box is not in the training data).
        unscored: kind -> changed boxes that could have a score but have none (not in the
            scores given, e.g. never matched during training or another subset).
    """

    num_scored: int
    ks: tuple[int, ...]
    overall: RankingMetrics
    per_kind: Mapping[str, RankingMetrics]
    changes: Mapping[str, int]
    not_scoreable: Mapping[str, int]
    unscored: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_scored": self.num_scored, "ks": list(self.ks), "overall": self.overall.as_dict(),
            "per_kind": {kind: m.as_dict() for kind, m in self.per_kind.items()},
            "changes": dict(self.changes), "not_scoreable": dict(self.not_scoreable),
            "not_scoreable_reason": {kind: NOT_SCOREABLE_REASON for kind in self.not_scoreable},
            "unscored": dict(self.unscored),
        }


def _scores_mapping(scores: Any) -> Mapping[BoxKey, float]:
    # A ScoreTable (or anything with by_key) is accepted as is, to spare callers a step.
    return scores.by_key() if hasattr(scores, "by_key") else scores


def evaluate_scores(scores: Mapping[BoxKey, float] | Any, truth: NoiseTruth,
                    ks: Sequence[int] | None = None) -> NoiseDetectionMetrics:
    """Measure how well ``scores`` rank the changed boxes of ``truth`` first.

    Args:
        scores: ``{(item_id, subset, ann_id): score}`` for every scored box (higher = noisier),
            or a :class:`~otx_nld.analysis.loss_dynamics.ScoreTable`.
        truth: the manifest written when the noise was injected.
        ks: cut-offs for precision/recall@k; by default the number of scored changed boxes
            plus :data:`DEFAULT_KS`.

    Raises:
        ValueError: a non-finite score, or a k below 1.
    """
    scores = _scores_mapping(scores)
    keys = sorted(scores, key=lambda key: (key[1], key[0], key[2]))  # tie order: (subset, item, ann)
    values = np.fromiter((scores[k] for k in keys), dtype=np.float64, count=len(keys))
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite")
    order = np.argsort(-values, kind="stable")  # stable: ties stay in key order
    keys = [keys[i] for i in order.tolist()]
    values = values[order]
    scored = set(keys)

    kind_of: dict[BoxKey, str] = {}
    changes = {kind: 0 for kind in NOISE_KINDS}
    not_scoreable = {kind: 0 for kind in NOT_SCOREABLE_KINDS}
    unscored = {kind: 0 for kind in NOISE_KINDS if kind not in NOT_SCOREABLE_KINDS}
    for change in truth.changes:
        key = (change.item_id, change.subset, change.ann_id)
        changes[change.kind] += 1
        if change.kind in NOT_SCOREABLE_KINDS:
            not_scoreable[change.kind] += 1
        elif key in scored:
            kind_of[key] = change.kind
        else:
            unscored[change.kind] += 1
    # A dropped box's key that does have a score (statistics of another training set) is
    # neither clean nor a findable positive: it is left out everywhere.
    dropped = truth.keys("drop")
    box_kind = np.array([kind_of.get(k, "drop" if k in dropped else "") for k in keys], dtype=object)

    positives = len(kind_of)
    ks = tuple(sorted({positives, *DEFAULT_KS} - {0})) if ks is None else tuple(sorted(set(ks)))
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be >= 1, got {list(ks)}")

    usable = box_kind != "drop"
    overall = rank_metrics((box_kind != "")[usable], values[usable], ks)
    clean = box_kind == ""
    per_kind = {}
    for kind in NOISE_KINDS:
        is_kind = box_kind == kind
        if is_kind.any():
            keep = is_kind | clean
            per_kind[kind] = rank_metrics(is_kind[keep], values[keep], ks)
    return NoiseDetectionMetrics(
        num_scored=len(keys), ks=ks, overall=overall, per_kind=MappingProxyType(per_kind),
        changes=MappingProxyType(changes), not_scoreable=MappingProxyType(not_scoreable),
        unscored=MappingProxyType(unscored),
    )
