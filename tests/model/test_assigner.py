"""ATSS assigner: hand-built cases and a loop-based reference on random boxes."""

from __future__ import annotations

import math
import statistics

import torch

from otx_nld.model.anchors import AnchorGenerator
from otx_nld.model.assigner import ATSSAssigner

STRIDES = (8, 16, 32, 64, 128)


def make_anchors(height: int, width: int) -> tuple[torch.Tensor, list[int]]:
    """Anchors for an input of this size (grids are ceil(size / stride), as the backbones give)."""
    grids = [(math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]
    levels = AnchorGenerator(STRIDES, octave_base_scale=8)(grids)
    return torch.cat(levels), [len(a) for a in levels]


def p3_index(cx: float, cy: float, width: int = 128) -> int:
    """Index of the P3 anchor centred at (cx, cy) (offset 0, stride 8)."""
    grid_w = math.ceil(width / 8)
    return int(cy // 8) * grid_w + int(cx // 8)


def iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def reference_assign(
    anchors: torch.Tensor, per_level: list[int], gts: torch.Tensor, topk: int = 9
) -> list[int]:
    """Plain-loop ATSS, written from the paper's description."""
    A = anchors.tolist()
    G = gts.tolist()
    best: list[tuple[float, int]] = [(-1.0, -1)] * len(A)
    for g, gt in enumerate(G):
        gx, gy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
        cands: list[int] = []
        start = 0
        for n in per_level:
            idx = list(range(start, start + n))
            idx.sort(key=lambda i: ((A[i][0] + A[i][2]) / 2 - gx) ** 2 + ((A[i][1] + A[i][3]) / 2 - gy) ** 2)
            cands += idx[:topk]
            start += n
        ious = [iou(A[i], gt) for i in cands]
        thr = statistics.mean(ious) + statistics.stdev(ious)
        for i, v in zip(cands, ious):
            cx, cy = (A[i][0] + A[i][2]) / 2, (A[i][1] + A[i][3]) / 2
            inside = min(cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy) > 0.01
            if v >= thr and inside and v > best[i][0]:
                best[i] = (v, g)
    return [g for _, g in best]


def positives(matched: torch.Tensor, gt: int) -> set[int]:
    return set((matched == gt).nonzero().flatten().tolist())


def test_single_gt_gets_its_3x3_p3_neighbourhood():
    # 48x48 box centred on the P3 anchor at (32, 32). Its 9 P3 candidates all contain the box
    # (IoU 2304/4096 = 0.5625); coarser levels' candidates have IoU <= 0.14, so mean + std
    # (~0.44) keeps exactly the P3 candidates, all of whose centres are inside the box.
    anchors, per_level = make_anchors(128, 128)
    matched = ATSSAssigner()(anchors, per_level, torch.tensor([[8.0, 8.0, 56.0, 56.0]]))
    expected = {p3_index(x, y) for x in (24, 32, 40) for y in (24, 32, 40)}
    assert positives(matched, 0) == expected
    assert (matched >= 0).sum() == 9


def test_shared_anchor_goes_to_higher_iou_gt():
    anchors, per_level = make_anchors(128, 128)
    gts = torch.tensor([[8.0, 8.0, 56.0, 56.0], [20.0, 20.0, 60.0, 60.0]])  # centres (32,32), (40,40)
    matched = ATSSAssigner()(anchors, per_level, gts)
    shared = {p3_index(x, y) for x in (32, 40) for y in (32, 40)}
    # Both GTs' candidate sets contain these four anchors; box 0 overlaps them more.
    for i in shared:
        assert iou(anchors[i].tolist(), gts[0].tolist()) > iou(anchors[i].tolist(), gts[1].tolist())
        assert matched[i] == 0
    assert positives(matched, 0) == {p3_index(x, y) for x in (24, 32, 40) for y in (24, 32, 40)}
    assert positives(matched, 1) == {p3_index(x, y) for x in (32, 40, 48) for y in (32, 40, 48)} - shared


def test_tiny_box_containing_one_anchor_centre():
    # 4x4 box around the P3 anchor centre (8, 8): only that centre is strictly inside.
    anchors, per_level = make_anchors(128, 128)
    matched = ATSSAssigner()(anchors, per_level, torch.tensor([[6.0, 6.0, 10.0, 10.0]]))
    assert positives(matched, 0) == {p3_index(8, 8)}


def test_gt_without_positive_anchor_is_fine():
    # A 2x2 box strictly between anchor centres: no candidate centre inside it.
    anchors, per_level = make_anchors(128, 128)
    gts = torch.tensor([[9.0, 9.0, 11.0, 11.0], [8.0, 8.0, 56.0, 56.0]])
    matched = ATSSAssigner()(anchors, per_level, gts)
    assert positives(matched, 0) == set()
    assert len(positives(matched, 1)) == 9


def test_no_gts():
    anchors, per_level = make_anchors(64, 96)
    matched = ATSSAssigner()(anchors, per_level, torch.zeros((0, 4)))
    assert matched.shape == (len(anchors),)
    assert matched.dtype == torch.int64
    assert (matched == -1).all()


def test_anchor_centre_on_border_is_not_positive():
    # 16x16 box centred on (32, 32): the 8 neighbouring P3 centres lie exactly on its border.
    anchors, per_level = make_anchors(128, 128)
    matched = ATSSAssigner()(anchors, per_level, torch.tensor([[24.0, 24.0, 40.0, 40.0]]))
    assert positives(matched, 0) == {p3_index(32, 32)}
    # Grown by 0.1 px (> the 0.01 margin) the same neighbours become positive.
    matched = ATSSAssigner()(anchors, per_level, torch.tensor([[23.9, 23.9, 40.1, 40.1]]))
    assert positives(matched, 0) == {p3_index(x, y) for x in (24, 32, 40) for y in (24, 32, 40)}


def test_matches_loop_reference_on_random_boxes():
    gen = torch.Generator().manual_seed(0)
    anchors, per_level = make_anchors(96, 128)
    for _ in range(5):
        n = 6
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([100.0, 70.0])
        wh = 3 + torch.rand(n, 2, generator=gen) * 60
        gts = torch.cat([xy, xy + wh], dim=1)
        matched = ATSSAssigner()(anchors, per_level, gts)
        assert matched.tolist() == reference_assign(anchors, per_level, gts)


def test_small_levels_with_fewer_anchors_than_topk():
    # 64x64 input: P6 has 1 anchor, P7 has 1; candidates per level are capped, no crash.
    anchors, per_level = make_anchors(64, 64)
    assert per_level == [64, 16, 4, 1, 1]
    gts = torch.tensor([[4.0, 4.0, 60.0, 60.0], [10.0, 30.0, 30.0, 50.0]])
    matched = ATSSAssigner()(anchors, per_level, gts)
    assert matched.tolist() == reference_assign(anchors, per_level, gts)
