"""ATSS detector with per-annotation loss tracking.

::

    from otx_nld.model import ATSS
    model = ATSS(num_classes=6, backbone="cpu_plain", fpn_channels=64, num_convs=2)
    out = model(images, targets)          # training: ATSSLosses
    out.loss.backward()
    rows = out.per_annotation             # ann_ids, batch_index, cls, bbox, centerness, margin [P]
    model.eval(); dets = model(images)    # [{"boxes", "scores", "labels"}] per image
"""

from otx_nld.model.anchors import AnchorGenerator
from otx_nld.model.assigner import ATSSAssigner
from otx_nld.model.atss import ATSS, ATSSExportWrapper, RawOutputs
from otx_nld.model.backbones import BACKBONES, Backbone, BackboneFPN, build_backbone
from otx_nld.model.head import ATSSClassificationHead, ATSSHead, ATSSRegressionHead, HeadOutputs
from otx_nld.model.losses import AnnotationLosses, ATSSLosses

__all__ = [
    "ATSS",
    "BACKBONES",
    "ATSSAssigner",
    "ATSSClassificationHead",
    "ATSSExportWrapper",
    "ATSSHead",
    "ATSSLosses",
    "ATSSRegressionHead",
    "AnchorGenerator",
    "AnnotationLosses",
    "Backbone",
    "BackboneFPN",
    "HeadOutputs",
    "RawOutputs",
    "build_backbone",
]
