"""What an exported model carries besides its graph: ``model_info`` metadata.

The OpenVINO IR keeps it as ``rt_info`` under ``model_info/<key>`` (the OTX convention); the ONNX
file keeps the same keys as ``metadata_props``. Every value is stored as a string:

=======================  ===========================================================================
key                      value
=======================  ===========================================================================
format                   ``otx-nld-atss`` (a model without it is not ours and is refused)
format_version           ``1``
model_type / task        ``ATSS`` / ``detection``
labels                   JSON list of label names, index = label id (names may contain spaces)
input_size               ``"H W"``: the static network input, height then width
color_order              ``RGB`` (``reverse_input_channels`` ``False``: feed RGB, as in training)
mean_values              ``"R G B"`` on the 0-255 scale; the input is ``(pixel - mean) / scale``
scale_values             ``"R G B"`` (the recipe's std)
resize_type              ``letterbox``: aspect kept, scale ``min(H/h, W/w)``, bilinear antialiased
                         resize, then padded right and bottom (image at the top-left corner)
pad_value                ``0`` (the raw pixel value of the padding, before normalisation)
confidence_threshold     minimal class probability of a candidate (the recipe's score_thresh)
iou_threshold            class-aware NMS IoU
detections_per_image     the most boxes the graph returns (K <= this)
output_layout            see :data:`OUTPUT_LAYOUT`
recipe                   the training recipe's name
precision                ``FP32``, ``FP16`` (weights) or ``INT8`` (after ``otx-nld optimize``)
=======================  ===========================================================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from otx_nld.errors import DatasetError

FORMAT = "otx-nld-atss"
FORMAT_VERSION = "1"
RT_INFO_SECTION = "model_info"
INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "labels")
OUTPUT_LAYOUT = ("boxes [K,4] f32 xyxy in network-input pixels; scores [K] f32, highest first; "
                 "labels [K] i64 label ids; K <= detections_per_image, dynamic, 0 when nothing is found")
REQUIRED_KEYS = ("format", "labels", "input_size", "mean_values", "scale_values", "resize_type",
                 "confidence_threshold", "iou_threshold")


@dataclass(frozen=True)
class ModelMetadata:
    """The parsed ``model_info`` of an exported model."""

    labels: tuple[str, ...]
    input_size: tuple[int, int]  # height, width
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    confidence_threshold: float
    iou_threshold: float
    detections_per_image: int = 100
    recipe: str = "unnamed"
    precision: str = "FP32"
    color_order: str = "RGB"
    resize_type: str = "letterbox"
    pad_value: float = 0.0
    extra: Mapping[str, str] = field(default_factory=dict, compare=False)

    def to_strings(self) -> dict[str, str]:
        """All keys as the strings stored in the model (``extra`` included, ours win)."""
        from otx_nld import __version__

        return {**dict(self.extra),
                "format": FORMAT, "format_version": FORMAT_VERSION, "model_type": "ATSS", "task": "detection",
                "labels": json.dumps(list(self.labels), ensure_ascii=False),
                "input_size": f"{self.input_size[0]} {self.input_size[1]}",
                "color_order": self.color_order, "reverse_input_channels": "False",
                "mean_values": " ".join(f"{v:g}" for v in self.mean),
                "scale_values": " ".join(f"{v:g}" for v in self.std),
                "resize_type": self.resize_type, "pad_value": f"{self.pad_value:g}",
                "confidence_threshold": f"{self.confidence_threshold:g}",
                "iou_threshold": f"{self.iou_threshold:g}",
                "detections_per_image": str(self.detections_per_image),
                "output_layout": OUTPUT_LAYOUT, "recipe": self.recipe, "precision": self.precision,
                "otx_nld_version": __version__}

    def replace(self, **changes) -> ModelMetadata:
        from dataclasses import replace

        return replace(self, **changes)


def metadata_from_recipe(recipe, labels: tuple[str, ...], precision: str = "FP32") -> ModelMetadata:
    return ModelMetadata(labels=tuple(labels), input_size=tuple(recipe.data.input_size), mean=tuple(recipe.data.mean),
                         std=tuple(recipe.data.std), confidence_threshold=recipe.model.score_thresh,
                         iou_threshold=recipe.model.nms_thresh,
                         detections_per_image=recipe.model.detections_per_img, recipe=recipe.name,
                         precision=precision)


def parse_metadata(values: Mapping[str, str], path: str | Path | None) -> ModelMetadata:
    """Validate stored strings into :class:`ModelMetadata`; problems are a DatasetError naming ``path``."""
    if values.get("format") != FORMAT:
        raise DatasetError(path, f"not an otx-nld model: no {RT_INFO_SECTION}/format = {FORMAT!r} metadata "
                           "(export it with `otx-nld export`)")
    missing = [k for k in REQUIRED_KEYS if k not in values]
    if missing:
        raise DatasetError(path, f"model metadata is missing {', '.join(RT_INFO_SECTION + '/' + k for k in missing)}")
    try:
        labels = json.loads(values["labels"])
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ValueError("labels must be a non-empty JSON list of strings")
        height, width = (int(v) for v in values["input_size"].split())
        mean = tuple(float(v) for v in values["mean_values"].split())
        std = tuple(float(v) for v in values["scale_values"].split())
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError("mean_values and scale_values need 3 values (scale > 0)")
        if values.get("color_order", "RGB") != "RGB":
            raise ValueError(f"unsupported color_order {values['color_order']!r}")
        if values["resize_type"] != "letterbox":
            raise ValueError(f"unsupported resize_type {values['resize_type']!r}")
        return ModelMetadata(
            labels=tuple(labels), input_size=(height, width), mean=mean, std=std,
            confidence_threshold=float(values["confidence_threshold"]),
            iou_threshold=float(values["iou_threshold"]),
            detections_per_image=int(values.get("detections_per_image", 100)),
            recipe=values.get("recipe", "unnamed"), precision=values.get("precision", "FP32"),
            pad_value=float(values.get("pad_value", 0)),
            extra={k: v for k, v in values.items()})
    except (ValueError, json.JSONDecodeError) as e:
        raise DatasetError(path, f"invalid model metadata: {e}") from None


def read_rt_info(model, path: str | Path | None) -> ModelMetadata:
    """The metadata of an ``openvino.Model`` (read from ``path``)."""
    values: dict[str, str] = {}
    if model.has_rt_info([RT_INFO_SECTION]):
        section = model.get_rt_info([RT_INFO_SECTION])
        try:
            keys = list(section.astype(dict).keys())
        except Exception:  # noqa: BLE001 - an rt_info value that is not a section
            keys = []
        for key in keys:
            values[key] = model.get_rt_info([RT_INFO_SECTION, key]).astype(str)
    return parse_metadata(values, path)


def write_rt_info(model, metadata: ModelMetadata) -> None:
    for key, value in metadata.to_strings().items():
        model.set_rt_info(value, [RT_INFO_SECTION, key])
