"""NNCF post-training INT8 quantization of an exported IR.

Calibration images go through the training preprocessing (``DetectionDataset`` without
augmentation: letterbox, pad, ``(x - mean) / std``, RGB). Only the network is quantized: every
node that is not a convolution or an ancestor of one - the head's reshapes, the learnable box
scales, sigmoid, score threshold, top-k, box decoding against the anchors, clipping and the NMS
(inside an ``If``) - is put in NNCF's ``ignored_scope`` and stays in full precision. (NNCF alone
already skips the weight-free nodes right before ``NonMaxSuppression``/``TopK``, but without the
ignored scope it puts FakeQuantize on the box-decoding arithmetic, ``Multiply``/``Add``/``Exp``,
which costs box accuracy and no speed.)

With ``max_accuracy_drop``, ``nncf.quantize_with_accuracy_control`` reverts layers to float until the
INT8 model's mAP@0.5 (higher is better, in [0, 1]) on the validation subset is at most that much
below the FP32 model's (absolute drop: 0.01 = one mAP point).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from otx_nld.errors import ConfigError, OtxNldError

log = logging.getLogger(__name__)

IR_NAME = "model.xml"
REPORT_NAME = "quantization.json"


@dataclass
class QuantizeResult:
    out_dir: Path
    model_path: Path
    calibration_images: int
    ignored_nodes: int
    fake_quantize_nodes: int
    report: dict[str, Any] = field(default_factory=dict)


def postprocessing_nodes(ov_model) -> list[str]:
    """Friendly names of the nodes after the network: neither a ``Convolution`` nor an ancestor
    of one (parameters, constants and results excluded)."""
    ops = ov_model.get_ordered_ops()
    network: set[str] = set()
    stack = [op for op in ops if op.get_type_name() == "Convolution"]
    if not stack:
        raise OtxNldError("the model has no convolution: nothing to quantize")
    while stack:
        node = stack.pop()
        name = node.get_friendly_name()
        if name in network:
            continue
        network.add(name)
        stack.extend(i.get_source_output().get_node() for i in node.inputs())
    return [op.get_friendly_name() for op in ops
            if op.get_friendly_name() not in network and op.get_type_name() not in ("Parameter", "Constant", "Result")]


def count_ops(ov_model, type_name: str) -> int:
    return sum(op.get_type_name() == type_name for op in ov_model.get_ordered_ops())


def _calibration_indices(count: int, samples: int, seed: int) -> list[int]:
    if count <= samples:
        return list(range(count))
    return sorted(np.random.default_rng(seed).choice(count, samples, replace=False).tolist())


def _data_config(metadata):
    from otx_nld.recipe import DataConfig

    return DataConfig(input_size=tuple(metadata.input_size), mean=tuple(metadata.mean), std=tuple(metadata.std))


def _load_subset(dataset, name: str, role: str, labels: tuple[str, ...], data_path):
    from otx_nld.training.trainer import select_subset

    subset = select_subset(dataset, name, role)
    if subset.labels != labels:
        raise OtxNldError(f"{data_path}: labels {list(subset.labels)} differ from the model's {list(labels)}")
    if not len(subset):
        raise OtxNldError(f"{data_path}: the {role} subset {name!r} has no items")
    return subset


def _map50_fn(subset, metadata):
    """``validation_fn(compiled_model, indices) -> mAP@0.5`` over those items of ``subset``."""
    from otx_nld.data.loader import DetectionDataset
    from otx_nld.deploy.inference import to_image_pixels
    from otx_nld.training.evaluate import coco_map

    images = DetectionDataset(subset, _data_config(metadata))

    def validate(compiled, indices) -> float:
        predictions, items = {}, []
        for i in indices:
            x, _, meta = images[int(i)]
            result = compiled(x[None].numpy())
            boxes, scores, labels = (result[compiled.outputs[k]] for k in range(3))
            predictions[(meta.subset, meta.item_id)] = to_image_pixels(boxes, scores, labels, meta.scale,
                                                                      meta.orig_size)
            items.append(subset.items[int(i)])
        value = coco_map(subset.with_items(items), predictions).map50
        return 0.0 if math.isnan(value) else float(value)  # an item without boxes scores nan

    return images, validate


def _run_nncf(nncf, ov_model, calibration, subset_size, scope, max_accuracy_drop, dataset, val_subset, metadata,
              data, report, progress):
    from tqdm import tqdm

    preset = nncf.QuantizationPreset.MIXED
    if max_accuracy_drop is None:
        return nncf.quantize(ov_model, calibration, subset_size=subset_size, preset=preset, ignored_scope=scope)
    val = _load_subset(dataset, val_subset, "validation", metadata.labels, data)
    val_images, validate = _map50_fn(val, metadata)
    for i in tqdm(range(len(val_images)), desc="validation images", disable=not progress, leave=False):
        val_images[i]
    validation = nncf.Dataset(list(range(len(val_images))), lambda i: val_images[i][0][None].numpy())
    report.update(accuracy_control={"metric": "mAP@0.5", "validation_subset": val_subset,
                                    "validation_images": len(val_images), "max_drop": max_accuracy_drop})
    return nncf.quantize_with_accuracy_control(
        ov_model, calibration, validation, validate, max_drop=max_accuracy_drop, drop_type=nncf.DropType.ABSOLUTE,
        preset=preset, subset_size=subset_size, ignored_scope=scope)


def quantize_ir(model_path: str | Path, data: str | Path, output: str | Path, subset: str = "train",
                samples: int = 300, max_accuracy_drop: float | None = None, val_subset: str = "val",
                seed: int = 0, overwrite: bool = False, progress: bool = True) -> QuantizeResult:
    """Quantize the IR ``model_path`` to INT8 into the directory ``output`` (built atomically).

    Args:
        data: a dataset with the model's labels; ``subset`` gives the calibration images (a
            dataset with one subset is used whole).
        samples: calibration images (a seeded random sample when the subset has more).
        max_accuracy_drop: use accuracy control with this absolute mAP@0.5 drop (0.01 = 1 point)
            measured on ``val_subset``.
    """
    import nncf
    import openvino as ov
    from tqdm import tqdm

    from otx_nld.data.dataset import Dataset
    from otx_nld.data.loader import DetectionDataset
    from otx_nld.deploy.export import check_output_dir
    from otx_nld.deploy.inference import read_openvino_model
    from otx_nld.deploy.metadata import write_rt_info
    from otx_nld.io import atomic_output_dir, atomic_write_json

    if samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {samples}")
    if max_accuracy_drop is not None and not 0 <= max_accuracy_drop <= 1:
        raise ConfigError(f"--max-accuracy-drop is an absolute mAP@0.5 drop in [0, 1], got {max_accuracy_drop:g}")
    model_path = Path(model_path)
    if model_path.suffix.lower() == ".onnx":
        raise OtxNldError(f"{model_path}: optimize takes an OpenVINO IR (.xml); export with --format openvino")
    check_output_dir(output, overwrite)
    ov_model, metadata, model_path = read_openvino_model(model_path)
    if metadata.precision == "INT8" or count_ops(ov_model, "FakeQuantize"):
        raise OtxNldError(f"{model_path}: the model is already quantized (INT8)")
    dataset = Dataset.import_from(data)
    calib_subset = _load_subset(dataset, subset, "calibration", metadata.labels, data)

    calib_images = DetectionDataset(calib_subset, _data_config(metadata))
    indices = _calibration_indices(len(calib_images), samples, seed)
    for i in tqdm(indices, desc="calibration images", disable=not progress, leave=False):
        calib_images[i]  # decode (and cache) every image now: a bad file fails before NNCF starts

    def transform(i: int) -> np.ndarray:
        return calib_images[i][0][None].numpy()

    calibration = nncf.Dataset(indices, transform)
    ignored = postprocessing_nodes(ov_model)
    scope = nncf.IgnoredScope(names=ignored)
    report: dict[str, Any] = {
        "source": str(model_path), "data": str(data), "subset": subset, "calibration_images": len(indices),
        "nncf": nncf.__version__, "preset": "mixed", "ignored_postprocessing_nodes": len(ignored)}
    nncf_log = logging.getLogger("nncf")
    nncf_level = nncf_log.level
    if not log.isEnabledFor(logging.DEBUG):
        nncf_log.setLevel(logging.WARNING)  # NNCF logs one INFO line per node it leaves alone
    try:
        quantized = _run_nncf(nncf, ov_model, calibration, len(indices), scope, max_accuracy_drop, dataset,
                              val_subset, metadata, data, report, progress)
    finally:
        nncf_log.setLevel(nncf_level)
    fake_quantize = count_ops(quantized, "FakeQuantize")
    if not fake_quantize:  # pragma: no cover - accuracy control may revert everything
        raise OtxNldError("quantization left no INT8 operation (accuracy control reverted every layer); "
                          "allow a larger --max-accuracy-drop")
    report["fake_quantize_nodes"] = fake_quantize
    calibration_note = (f"nncf {nncf.__version__} post-training INT8, preset mixed, {len(indices)} calibration "
                        f"images of subset {subset!r}; {len(ignored)} postprocessing nodes kept in float")
    extra = dict(metadata.extra)
    extra.update(quantization=calibration_note, source_precision=metadata.precision)
    if max_accuracy_drop is not None:
        extra["max_accuracy_drop"] = f"{max_accuracy_drop:g}"
    write_rt_info(quantized, metadata.replace(precision="INT8", extra=extra))
    output = Path(output)
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        # FP32 for what stays float (anchors, decoding constants); quantized weights are int8 anyway.
        ov.save_model(quantized, str(tmp / IR_NAME), compress_to_fp16=False)
        atomic_write_json(tmp / REPORT_NAME, report)
    log.debug("quantized %s: %d FakeQuantize, %d ignored nodes", model_path, fake_quantize, len(ignored))
    return QuantizeResult(output, output / IR_NAME, len(indices), len(ignored), fake_quantize, report)
