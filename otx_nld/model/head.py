"""ATSS head: classification tower, box tower (deltas + centerness), and the losses."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from otx_nld.errors import ConfigError
from otx_nld.model.losses import AnnotationLosses, ATSSLosses, centerness_targets, per_annotation_mean

# dw/dh clamp of the box coder, as in mmdet and torchvision: exp(4.135) ~ 62.5x the anchor side.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def default_box_coder() -> BoxCoder:
    """Delta coder with weights (10, 10, 5, 5), i.e. mmdet's stds (0.1, 0.1, 0.2, 0.2)."""
    return BoxCoder(weights=(10.0, 10.0, 5.0, 5.0), bbox_xform_clip=BBOX_XFORM_CLIP)


def class_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Largest other-class logit minus the labelled class's logit, per row.

    Args:
        logits: ``[P, C]`` classification logits of positive anchors.
        labels: ``[P]`` int64, the label each anchor is trained towards.

    Returns:
        ``[P]``; > 0 where the model scores another class above the label. With one class
        there is no other class: the margin is then against a logit of 0 (probability 0.5).
    """
    labelled = logits.gather(1, labels[:, None]).squeeze(1)  # [P]
    if logits.shape[1] == 1:
        return -labelled
    others = logits.scatter(1, labels[:, None], float("-inf")).max(dim=1).values  # [P]
    return others - labelled


class HeadOutputs(NamedTuple):
    """Raw head outputs, all levels concatenated (finest first)."""

    cls_logits: Tensor  # [N, HWA, C]
    bbox_deltas: Tensor  # [N, HWA, 4]
    centerness: Tensor  # [N, HWA] logits


class Scale(nn.Module):
    """A learnable scalar multiplier (one per FPN level on the box deltas, as in ATSS/FCOS)."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _tower(channels: int, num_convs: int, norm_groups: int) -> nn.Sequential:
    if channels % norm_groups != 0:
        raise ConfigError(f"model.norm_groups: {norm_groups} does not divide head channels {channels}")
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(norm_groups, channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def _init_normal(module: nn.Module, std: float = 0.01) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=std)
            nn.init.constant_(m.bias, 0.0)


def _flatten(x: Tensor, last: int) -> Tensor:
    """``[N, A * last, H, W]`` -> ``[N, HWA, last]``."""
    n, _, h, w = x.shape
    return x.view(n, -1, last, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, last)


class ATSSClassificationHead(nn.Module):
    """Classification tower + logits, shared across levels.

    Args:
        in_channels: FPN channels.
        num_anchors: anchors per location.
        num_classes: foreground classes (no background class; sigmoid per class).
        num_convs: tower depth.
        norm_groups: GroupNorm groups.
        prior_probability: initial foreground probability (bias init), keeps the focal loss of
            the many easy negatives from swamping the first iterations.
        focal_alpha, focal_gamma: focal loss parameters.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_convs: int = 4,
        norm_groups: int = 32,
        prior_probability: float = 0.01,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.conv = _tower(in_channels, num_convs, norm_groups)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        _init_normal(self)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))

    def forward(self, x: list[Tensor]) -> Tensor:
        """Per-level features -> ``[N, HWA, C]`` logits."""
        return torch.cat([_flatten(self.cls_logits(self.conv(f)), self.num_classes) for f in x], dim=1)

    def compute_loss(self, cls_logits: Tensor, cls_targets: Tensor) -> Tensor:
        """Unreduced focal loss per anchor, summed over classes.

        Args:
            cls_logits: ``[N, HWA, C]``.
            cls_targets: ``[N, HWA, C]`` one-hot (all zeros for background).

        Returns:
            ``[N, HWA]``.
        """
        loss = sigmoid_focal_loss(
            cls_logits, cls_targets, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none"
        )  # [N, HWA, C]
        return loss.sum(dim=-1)


class ATSSRegressionHead(nn.Module):
    """Box tower giving box deltas (times a learnable per-level scale) and centerness logits.

    Args:
        in_channels: FPN channels.
        num_anchors: anchors per location.
        num_levels: FPN levels (one :class:`Scale` each).
        num_convs: tower depth.
        norm_groups: GroupNorm groups.
        box_coder: delta coder used to decode predictions for the GIoU loss.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_levels: int = 5,
        num_convs: int = 4,
        norm_groups: int = 32,
        box_coder: BoxCoder | None = None,
    ) -> None:
        super().__init__()
        self.conv = _tower(in_channels, num_convs, norm_groups)
        self.bbox_reg = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        self.bbox_ctrness = nn.Conv2d(in_channels, num_anchors, 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)])
        self.box_coder = box_coder if box_coder is not None else default_box_coder()
        _init_normal(self)

    def forward(self, x: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Per-level features -> (``[N, HWA, 4]`` deltas, ``[N, HWA]`` centerness logits)."""
        if len(x) != len(self.scales):
            raise ValueError(f"got {len(x)} feature maps for {len(self.scales)} levels")
        deltas, ctrness = [], []
        for features, scale in zip(x, self.scales):
            t = self.conv(features)
            deltas.append(_flatten(scale(self.bbox_reg(t)), 4))  # [N, HWA, 4]
            ctrness.append(_flatten(self.bbox_ctrness(t), 1).squeeze(-1))  # [N, HWA]
        return torch.cat(deltas, dim=1), torch.cat(ctrness, dim=1)

    def compute_loss(
        self, bbox_deltas: Tensor, ctr_logits: Tensor, anchors: Tensor, gt_boxes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Unreduced losses of the positive anchors.

        Args:
            bbox_deltas: ``[P, 4]`` predicted deltas.
            ctr_logits: ``[P]`` centerness logits.
            anchors: ``[P, 4]`` the positive anchors.
            gt_boxes: ``[P, 4]`` their assigned GT boxes.

        Returns:
            ``(giou [P], centerness_bce [P], centerness_target [P])``; GIoU is not yet weighted.
        """
        pred_boxes = self.box_coder.decode_single(bbox_deltas, anchors)  # [P, 4]
        giou = generalized_box_iou_loss(pred_boxes, gt_boxes, reduction="none")  # [P]
        ctr_target = centerness_targets(anchors, gt_boxes)  # [P]
        ctr_bce = F.binary_cross_entropy_with_logits(ctr_logits, ctr_target, reduction="none")  # [P]
        return giou, ctr_bce, ctr_target


class ATSSHead(nn.Module):
    """Classification and regression heads plus the combined ATSS loss.

    Args:
        in_channels: FPN channels.
        num_anchors: anchors per location (1 for ATSS).
        num_classes: foreground classes.
        num_levels: FPN levels.
        num_convs: depth of each tower.
        norm_groups: GroupNorm groups.
        box_coder: delta coder (default weights (10, 10, 5, 5), clamp log(1000/16)).
        bbox_loss_weight: GIoU loss weight (2.0 in ATSS).
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_levels: int = 5,
        num_convs: int = 4,
        norm_groups: int = 32,
        box_coder: BoxCoder | None = None,
        bbox_loss_weight: float = 2.0,
    ) -> None:
        super().__init__()
        self.classification_head = ATSSClassificationHead(
            in_channels, num_anchors, num_classes, num_convs=num_convs, norm_groups=norm_groups
        )
        self.regression_head = ATSSRegressionHead(
            in_channels,
            num_anchors,
            num_levels,
            num_convs=num_convs,
            norm_groups=norm_groups,
            box_coder=box_coder,
        )
        self.bbox_loss_weight = bbox_loss_weight

    @property
    def box_coder(self) -> BoxCoder:
        return self.regression_head.box_coder

    def forward(self, x: list[Tensor]) -> HeadOutputs:
        cls_logits = self.classification_head(x)
        bbox_deltas, centerness = self.regression_head(x)
        return HeadOutputs(cls_logits, bbox_deltas, centerness)

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: HeadOutputs,
        anchors: Tensor,
        matched_idxs: list[Tensor],
        track_annotations: bool = True,
    ) -> ATSSLosses:
        """Training losses, and per-annotation losses when ``track_annotations``.

        Args:
            targets: per image ``boxes [M, 4]`` xyxy, ``labels [M]`` in [0, C), and (when
                tracking) ``ann_ids [M]``.
            head_outputs: outputs of :meth:`forward`.
            anchors: ``[HWA, 4]`` anchors (same for every image of the batch).
            matched_idxs: per image ``[HWA]`` assigned GT index or -1.
            track_annotations: also compute :class:`AnnotationLosses`. The training loss and its
                gradients do not depend on this flag.
        """
        cls_logits = head_outputs.cls_logits.float()  # [N, HWA, C]
        bbox_deltas = head_outputs.bbox_deltas.float()  # [N, HWA, 4]
        ctr_logits = head_outputs.centerness.float()  # [N, HWA]
        device = cls_logits.device

        # Number the GT boxes across the batch so one index addresses any box of any image.
        num_gts = torch.tensor([len(t["boxes"]) for t in targets], device=device)  # [N]
        offsets = torch.cumsum(num_gts, 0) - num_gts  # [N]
        all_boxes = torch.cat([t["boxes"].reshape(-1, 4) for t in targets])  # [G, 4]
        all_boxes = all_boxes.to(device=device, dtype=torch.float32)
        all_labels = torch.cat([t["labels"] for t in targets]).to(device=device, dtype=torch.int64)  # [G]

        matched = torch.stack(matched_idxs)  # [N, HWA]
        foreground = matched >= 0  # [N, HWA]
        pos_gt = (matched + offsets[:, None])[foreground]  # [P] batch-wide GT index
        num_pos = foreground.sum()
        normalizer = num_pos.clamp(min=1).to(torch.float32)

        # Classification over all anchors: one-hot targets, background rows all zero.
        cls_targets = torch.zeros_like(cls_logits)  # [N, HWA, C]
        cls_targets[foreground, all_labels[pos_gt]] = 1.0
        cls_per_anchor = self.classification_head.compute_loss(cls_logits, cls_targets)  # [N, HWA]

        # Regression and centerness on positives only.
        pos_anchors = anchors[None].expand(len(targets), -1, -1)[foreground]  # [P, 4]
        giou, ctr_bce, ctr_target = self.regression_head.compute_loss(
            bbox_deltas[foreground], ctr_logits[foreground], pos_anchors, all_boxes[pos_gt]
        )
        bbox_per_anchor = self.bbox_loss_weight * giou * ctr_target  # [P]

        loss_cls = cls_per_anchor.sum() / normalizer
        # GIoU is weighted by the centerness target, so it is normalised by that weight's sum.
        loss_bbox = bbox_per_anchor.sum() / ctr_target.sum().clamp(min=1e-6)
        loss_ctr = ctr_bce.sum() / normalizer

        per_annotation = None
        if track_annotations:
            per_annotation = self._per_annotation(
                targets, pos_gt, int(num_gts.sum()), cls_per_anchor[foreground], bbox_per_anchor, ctr_bce,
                class_margin(cls_logits[foreground], all_labels[pos_gt]),
            )
        return ATSSLosses(
            loss=loss_cls + loss_bbox + loss_ctr,
            cls=loss_cls,
            bbox=loss_bbox,
            centerness=loss_ctr,
            num_pos=num_pos,
            per_annotation=per_annotation,
        )

    @staticmethod
    def _per_annotation(
        targets: list[dict[str, Tensor]],
        pos_gt: Tensor,
        total_gts: int,
        cls_pos: Tensor,
        bbox_pos: Tensor,
        ctr_pos: Tensor,
        margin_pos: Tensor,
    ) -> AnnotationLosses:
        if any("ann_ids" not in t for t in targets):
            raise ValueError("track_annotations needs 'ann_ids' in every target dict")
        device = pos_gt.device
        values = torch.stack([cls_pos, bbox_pos, ctr_pos, margin_pos], dim=1).detach()  # [P, 4]
        keep, means, counts = per_annotation_mean(pos_gt, total_gts, values)
        ann_ids = torch.cat([t["ann_ids"] for t in targets]).to(device=device, dtype=torch.int64)  # [G]
        batch_index = torch.repeat_interleave(
            torch.arange(len(targets), device=device),
            torch.tensor([len(t["boxes"]) for t in targets], device=device),
        )  # [G]
        return AnnotationLosses(
            ann_ids=ann_ids[keep],
            batch_index=batch_index[keep],
            cls=means[:, 0],
            bbox=means[:, 1],
            centerness=means[:, 2],
            margin=means[:, 3],
            num_pos=counts,
        )
