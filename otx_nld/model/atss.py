"""ATSS detector: backbone -> FPN (P3..P7) -> shared head, with per-annotation loss tracking.

Structure follows torchvision's ``detection/fcos.py``: the parts (backbone, anchor generator,
assigner, head, box coder) are constructor arguments with defaults. Training returns
:class:`ATSSLosses`; evaluation returns one ``{"boxes", "scores", "labels"}`` dict per image.
:meth:`ATSS.forward_raw` and :meth:`ATSS.postprocess` are pure tensor code so that
:class:`ATSSExportWrapper` (batch 1, static size) traces decoding and NMS into one graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms, clip_boxes_to_image

from otx_nld.errors import ConfigError
from otx_nld.model.anchors import AnchorGenerator
from otx_nld.model.assigner import ATSSAssigner
from otx_nld.model.backbones import Backbone, BackboneFPN, build_backbone
from otx_nld.model.head import ATSSHead, HeadOutputs
from otx_nld.model.losses import ATSSLosses

__all__ = ["ATSS", "ATSSExportWrapper", "RawOutputs"]


class RawOutputs(NamedTuple):
    """Everything :meth:`ATSS.postprocess` and :meth:`ATSS.compute_loss` need."""

    head: HeadOutputs
    anchors: Tensor  # [HWA, 4] xyxy, all levels, finest first
    num_anchors_per_level: list[int]
    image_size: tuple[int, int]  # (height, width) of the input tensor


class ATSS(nn.Module):
    """ATSS object detector.

    Args:
        num_classes: foreground classes; labels are ``0..num_classes-1``.
        backbone: a name from :data:`~otx_nld.model.backbones.BACKBONES` or a
            :class:`~otx_nld.model.backbones.Backbone` (C3..C5); an FPN is put on top.
        backbone_weights: local state dict for a named backbone (nothing is downloaded).
        fpn_channels: channels of the FPN and the head.
        num_convs: conv layers per head tower.
        norm_groups: GroupNorm groups in the head towers.
        anchor_generator: default: strides (8, 16, 32, 64, 128), one anchor of side 8 x stride.
        assigner: default: :class:`ATSSAssigner` with topk 9.
        head: default: :class:`ATSSHead` built from the arguments above.
        box_coder: default: weights (10, 10, 5, 5), clamp log(1000/16); used only when ``head``
            is None (the head owns the coder).
        score_thresh: minimal class probability for a detection candidate.
        nms_thresh: IoU of the class-aware NMS.
        detections_per_img: detections kept per image after NMS.
        topk_candidates: candidates kept per level before NMS.
        track_annotations: compute per-annotation losses in training.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str | Backbone = "cpu_plain",
        backbone_weights: str | Path | None = None,
        fpn_channels: int = 64,
        num_convs: int = 4,
        norm_groups: int = 32,
        anchor_generator: AnchorGenerator | None = None,
        assigner: ATSSAssigner | None = None,
        head: ATSSHead | None = None,
        box_coder: BoxCoder | None = None,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        detections_per_img: int = 100,
        topk_candidates: int = 1000,
        track_annotations: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"model.num_classes must be >= 1, got {num_classes}")
        if isinstance(backbone, str):
            backbone = build_backbone(backbone, weights_path=backbone_weights)
        self.features = BackboneFPN(backbone, fpn_channels)
        self.anchor_generator = anchor_generator if anchor_generator is not None else AnchorGenerator()
        num_levels = len(self.anchor_generator.strides)
        if num_levels != 5:
            # The FPN gives exactly P3..P7.
            raise ConfigError(f"anchor strides: need 5 levels (P3..P7), got {num_levels}")
        self.assigner = assigner if assigner is not None else ATSSAssigner()
        if head is None:
            head = ATSSHead(
                fpn_channels,
                num_anchors=1,
                num_classes=num_classes,
                num_levels=num_levels,
                num_convs=num_convs,
                norm_groups=norm_groups,
                box_coder=box_coder,
            )
        self.head = head
        self.num_classes = num_classes
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates
        self.track_annotations = track_annotations

    def forward(
        self, images: Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> ATSSLosses | list[dict[str, Tensor]]:
        """Train step losses (training mode) or detections (eval mode).

        Args:
            images: ``[N, 3, H, W]`` already normalised, one size for the batch.
            targets: training only; per image ``boxes [M, 4]`` xyxy pixels (float),
                ``labels [M]`` int64, ``ann_ids [M]`` int64.

        Returns:
            training: :class:`ATSSLosses`; eval: per image ``boxes [K, 4]``, ``scores [K]``,
            ``labels [K]`` with K <= ``detections_per_img``, highest score first.
        """
        raw = self.forward_raw(images)
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            if len(targets) != images.shape[0]:
                raise ValueError(f"got {len(targets)} targets for {images.shape[0]} images")
            return self.compute_loss(raw, targets)
        return self.postprocess(raw)

    def forward_raw(self, images: Tensor) -> RawOutputs:
        """Backbone, FPN and head; no assignment, decoding or NMS."""
        features = self.features(images)  # P3..P7
        head_outputs = self.head(features)
        grid_sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        anchors_per_level = self.anchor_generator(grid_sizes, device=images.device)
        return RawOutputs(
            head=head_outputs,
            anchors=torch.cat(anchors_per_level),  # [HWA, 4]
            num_anchors_per_level=[len(a) for a in anchors_per_level],
            image_size=(int(images.shape[-2]), int(images.shape[-1])),
        )

    def compute_loss(self, raw: RawOutputs, targets: list[dict[str, Tensor]]) -> ATSSLosses:
        """Assign anchors per image, then compute the losses (see :meth:`ATSSHead.compute_loss`)."""
        matched_idxs = [
            self.assigner(raw.anchors, raw.num_anchors_per_level, t["boxes"].reshape(-1, 4).to(raw.anchors))
            for t in targets
        ]
        return self.head.compute_loss(
            targets, raw.head, raw.anchors, matched_idxs, track_annotations=self.track_annotations
        )

    def postprocess(self, raw: RawOutputs) -> list[dict[str, Tensor]]:
        """Decode, threshold, top-k per level, class-aware NMS, keep the best ``detections_per_img``.

        Per level, candidates are (anchor, class) pairs with ``sigmoid(cls) > score_thresh``,
        ranked by ``sigmoid(cls) * sigmoid(centerness)``; the final score is the square root of
        that product (so it stays a probability-like number in [0, 1]).
        """
        cls_levels = raw.head.cls_logits.split(raw.num_anchors_per_level, dim=1)
        delta_levels = raw.head.bbox_deltas.split(raw.num_anchors_per_level, dim=1)
        ctr_levels = raw.head.centerness.split(raw.num_anchors_per_level, dim=1)
        anchor_levels = raw.anchors.split(raw.num_anchors_per_level)
        box_coder = self.head.box_coder
        num_images = raw.head.cls_logits.shape[0]

        detections: list[dict[str, Tensor]] = []
        for i in range(num_images):
            image_boxes, image_scores, image_labels = [], [], []
            for cls_l, delta_l, ctr_l, anchors_l in zip(cls_levels, delta_levels, ctr_levels, anchor_levels):
                cls_prob = torch.sigmoid(cls_l[i])  # [HWA, C]
                num_classes = cls_prob.shape[1]
                ranking = cls_prob * torch.sigmoid(ctr_l[i])[:, None]  # [HWA, C]
                # Mask instead of filter before top-k: k then depends only on the input size,
                # so a traced graph has one fixed-size TopK per level.
                ranking = torch.where(cls_prob > self.score_thresh, ranking, -1.0).flatten()  # [HWA * C]
                k = min(self.topk_candidates, ranking.numel())
                top, idx = ranking.topk(k)
                keep = top >= 0
                top, idx = top[keep], idx[keep]
                anchor_idx = torch.div(idx, num_classes, rounding_mode="floor")
                labels = idx % num_classes
                boxes = box_coder.decode_single(delta_l[i][anchor_idx].float(), anchors_l[anchor_idx])
                image_boxes.append(clip_boxes_to_image(boxes, raw.image_size))
                image_scores.append(torch.sqrt(top))
                image_labels.append(labels)
            boxes = torch.cat(image_boxes)  # [K, 4]
            scores = torch.cat(image_scores)  # [K]
            labels = torch.cat(image_labels)  # [K]
            keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
            detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return detections


class ATSSExportWrapper(nn.Module):
    """Batch-1 inference graph for tracing: ``images [1, 3, H, W]`` -> ``(boxes [K, 4], scores [K],
    labels [K])``, decoding and NMS included. Trace it at the deployment size; sizes are static."""

    def __init__(self, model: ATSS) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        det = self.model.postprocess(self.model.forward_raw(images))[0]
        return det["boxes"], det["scores"], det["labels"]
