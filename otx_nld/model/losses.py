"""Loss containers and the per-annotation reduction used for loss-dynamics tracking."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class AnnotationLosses:
    """Per-GT-box losses of one training step, one row per box that got >= 1 positive anchor.

    Each value is the mean, over the box's positive anchors (all FPN levels), of the unreduced
    per-anchor value: ``cls`` focal loss summed over classes, ``bbox`` GIoU loss x centerness
    target x bbox loss weight (2.0), ``centerness`` BCE, and ``margin``, the largest other-class
    logit minus the labelled class's logit (the negative of the margin whose area under the
    training curve, AUM, Pleiss et al. 2020, separates mislabelled samples: positive where the
    model prefers another class, whatever it thinks of the box's objectness). A box without
    positive anchors has no row (it is not reported as a zero loss). All tensors are detached,
    shape ``[P]``.
    """

    ann_ids: Tensor  # [P] int64, the boxes' ``ann_ids`` from the targets
    batch_index: Tensor  # [P] int64, index of the box's image in the batch
    cls: Tensor  # [P]
    bbox: Tensor  # [P]
    centerness: Tensor  # [P]
    margin: Tensor  # [P]
    num_pos: Tensor  # [P] int64, positive anchors the mean was taken over

    def __len__(self) -> int:
        return int(self.ann_ids.numel())

    def cpu(self) -> AnnotationLosses:
        """A copy with every tensor on the CPU."""
        return AnnotationLosses(*(t.cpu() for t in self._tensors()))

    def columns(self) -> dict[str, np.ndarray]:
        """The tracked values as numpy arrays by name (``cls``, ``bbox``, ``centerness``,
        ``margin``): what :meth:`LossDynamicsTracker.record
        <otx_nld.training.tracking.LossDynamicsTracker.record>` takes."""
        return {name: getattr(self, name).detach().cpu().numpy()
                for name in ("cls", "bbox", "centerness", "margin")}

    def _tensors(self) -> tuple[Tensor, ...]:
        return (self.ann_ids, self.batch_index, self.cls, self.bbox, self.centerness, self.margin, self.num_pos)


@dataclass
class ATSSLosses:
    """Output of a training step.

    ``loss`` (what to backpropagate) is ``cls + bbox + centerness``, each already normalised and
    weighted:

    - ``cls``: sigmoid focal loss (alpha 0.25, gamma 2) over all anchors and classes / max(num_pos, 1);
    - ``bbox``: 2.0 x sum(GIoU loss x centerness target) / sum(centerness target), over positives;
    - ``centerness``: sum of BCE-with-logits over positives / max(num_pos, 1).

    ``per_annotation`` is None when tracking is off.
    """

    loss: Tensor
    cls: Tensor
    bbox: Tensor
    centerness: Tensor
    num_pos: Tensor  # scalar int64, positive anchors in the batch
    per_annotation: AnnotationLosses | None = None


def centerness_targets(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """FCOS/ATSS centerness of each anchor centre inside its GT box.

    ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` with l, t, r, b the distances from the
    anchor centre to the GT's sides. Only meaningful for centres inside the box (positives).

    Args:
        anchors: ``[P, 4]`` xyxy.
        gt_boxes: ``[P, 4]`` xyxy, the GT each anchor is assigned to.

    Returns:
        ``[P]`` in [0, 1].
    """
    cx = (anchors[:, 0] + anchors[:, 2]) / 2
    cy = (anchors[:, 1] + anchors[:, 3]) / 2
    left_right = torch.stack([cx - gt_boxes[:, 0], gt_boxes[:, 2] - cx], dim=1)  # [P, 2]
    top_bottom = torch.stack([cy - gt_boxes[:, 1], gt_boxes[:, 3] - cy], dim=1)  # [P, 2]
    ratio = (left_right.min(dim=1).values / left_right.max(dim=1).values) * (
        top_bottom.min(dim=1).values / top_bottom.max(dim=1).values
    )
    return ratio.clamp(min=0).sqrt()


def per_annotation_mean(
    gt_index: Tensor,
    num_gts: int,
    values: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean of per-anchor values over each GT's positive anchors (one ``index_add``, no loop).

    Args:
        gt_index: ``[P]`` int64, batch-wide GT index of each positive anchor.
        num_gts: number of GT boxes in the batch.
        values: ``[P, K]`` per-anchor values (K loss kinds).

    Returns:
        ``(keep [G] bool, means [G_kept, K], counts [G_kept])``; ``keep`` marks GTs with >= 1 positive.
    """
    counts = torch.bincount(gt_index, minlength=num_gts)  # [G]
    sums = values.new_zeros((num_gts, values.shape[1])).index_add_(0, gt_index, values)  # [G, K]
    keep = counts > 0
    kept_counts = counts[keep]
    return keep, sums[keep] / kept_counts[:, None].to(values.dtype), kept_counts
