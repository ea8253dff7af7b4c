"""ATSS label assignment (Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free
Detection via Adaptive Training Sample Selection", CVPR 2020; mmdet ``ATSSAssigner``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou


class ATSSAssigner:
    """Assigns each anchor to at most one ground-truth box.

    For every GT box:

    1. candidates: on each level, the ``topk`` anchors whose centres are nearest (L2) to the GT
       centre;
    2. IoU threshold: mean + std (unbiased) of the candidates' IoUs with the GT;
    3. a candidate is positive if its IoU >= threshold and its centre lies strictly inside the
       GT (min of l, t, r, b > ``center_eps`` pixels).

    An anchor positive for several GTs goes to the one it overlaps most. A GT can end up with no
    positive anchor (a tiny box between anchor centres, or another GT wins every shared anchor);
    that is not an error. The work is vectorised over GTs; the only loop is over the (five)
    levels, whose top-k must stay separate.

    Args:
        topk: candidates per level per GT.
        center_eps: minimal distance (pixels) of a positive anchor's centre from the GT border.
    """

    def __init__(self, topk: int = 9, center_eps: float = 0.01) -> None:
        self.topk = topk
        self.center_eps = center_eps

    @torch.no_grad()
    def __call__(self, anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor) -> Tensor:
        """Assign anchors of one image.

        Args:
            anchors: ``[A, 4]`` xyxy, all levels concatenated, finest first.
            num_anchors_per_level: anchors on each level (sums to A).
            gt_boxes: ``[G, 4]`` xyxy ground-truth boxes of the image (G may be 0).

        Returns:
            ``[A]`` int64: index of the assigned GT, or -1 for background.
        """
        num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
        matched = torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)
        if num_gt == 0 or num_anchors == 0:
            return matched
        gt_boxes = gt_boxes.to(anchors.dtype)

        ious = box_iou(anchors, gt_boxes)  # [A, G]
        anchor_ctr = (anchors[:, :2] + anchors[:, 2:]) / 2  # [A, 2]
        gt_ctr = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # [G, 2]
        # Squared distance ranks the same as L2 and skips a sqrt.
        dist = (anchor_ctr[:, None, :] - gt_ctr[None, :, :]).pow(2).sum(-1)  # [A, G]

        candidates = []
        start = 0
        for n in num_anchors_per_level:
            k = min(self.topk, n)
            if k > 0:
                _, idx = dist[start : start + n].topk(k, dim=0, largest=False)  # [k, G]
                candidates.append(idx + start)
            start += n
        cand = torch.cat(candidates, dim=0)  # [K, G]
        gt_idx = torch.arange(num_gt, device=anchors.device).expand_as(cand)  # [K, G]

        cand_ious = ious[cand, gt_idx]  # [K, G]
        if cand.shape[0] > 1:
            threshold = cand_ious.mean(0) + cand_ious.std(0)  # [G], std unbiased as in mmdet
        else:  # a single candidate has no spread (unbiased std would be NaN)
            threshold = cand_ious[0]
        is_pos = cand_ious >= threshold[None, :]  # [K, G]

        ctr = anchor_ctr[cand]  # [K, G, 2]
        ltrb = torch.stack(
            [
                ctr[..., 0] - gt_boxes[:, 0],
                ctr[..., 1] - gt_boxes[:, 1],
                gt_boxes[:, 2] - ctr[..., 0],
                gt_boxes[:, 3] - ctr[..., 1],
            ],
            dim=-1,
        )  # [K, G, 4]
        is_pos &= ltrb.min(dim=-1).values > self.center_eps

        # Keep each positive pair's IoU, -inf elsewhere, then let each anchor take its best GT.
        # Candidate indices are unique per GT column (levels are disjoint), so no pair is lost.
        pos_iou = torch.full_like(ious, float("-inf"))  # [A, G]
        pos_anchor, pos_gt = cand[is_pos], gt_idx[is_pos]
        pos_iou[pos_anchor, pos_gt] = ious[pos_anchor, pos_gt]
        best_iou, best_gt = pos_iou.max(dim=1)  # [A]
        return torch.where(best_iou > float("-inf"), best_gt, matched)
