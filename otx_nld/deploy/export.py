"""Export a trained checkpoint to OpenVINO IR and/or ONNX, postprocessing included.

The exported graph is :class:`~otx_nld.model.atss.ATSSExportWrapper` traced at the recipe's
static input size: ``image [1, 3, H, W]`` (letterboxed, normalised RGB, see
:mod:`otx_nld.deploy.metadata`) -> ``boxes [K, 4]`` (f32, xyxy, network-input pixels),
``scores [K]`` (f32, highest first), ``labels [K]`` (i64), K <= ``detections_per_image`` and
dynamic (0 when nothing passes the confidence threshold). Box decoding, the confidence
threshold, the per-level top-k and the class-aware NMS (``NonMaxSuppression``, inside an ``If``
that handles the no-candidate case) are all inside the graph; a caller only undoes the letterbox
(divide by the scale, clip to the image).

The IR comes from ``openvino.convert_model`` on the torch module (TorchScript tracing: the path
on which ``torchvision::nms`` becomes ``NonMaxSuppression``); ONNX comes from the TorchScript
``torch.onnx.export`` (opset 17) and is checked with ``onnx.checker``. IR weights are FP32 unless
``fp16`` (``save_model(compress_to_fp16=...)``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from otx_nld.deploy.metadata import (
    INPUT_NAME,
    OUTPUT_NAMES,
    ModelMetadata,
    metadata_from_recipe,
    write_rt_info,
)
from otx_nld.errors import ConfigError, OtxNldError

FORMATS = ("openvino", "onnx")
IR_NAME = "model.xml"
ONNX_NAME = "model.onnx"
ONNX_OPSET = 17


@dataclass
class ExportResult:
    out_dir: Path
    metadata: ModelMetadata
    files: dict[str, Path] = field(default_factory=dict)  # format -> main file


def check_output_dir(path: str | Path, overwrite: bool) -> None:
    """Fail early (before minutes of work) where ``atomic_output_dir`` would fail at the end."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OtxNldError(f"{path}: output path exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OtxNldError(f"{path}: output directory is not empty (use --overwrite to replace it)")


def parse_formats(text: str) -> tuple[str, ...]:
    """``openvino``, ``onnx`` or ``both``."""
    if text == "both":
        return FORMATS
    if text not in FORMATS:
        raise ConfigError(f"--format: expected openvino, onnx or both, got {text!r}")
    return (text,)


def _wrapper(model):
    from otx_nld.model.atss import ATSSExportWrapper

    return ATSSExportWrapper(model).eval()


def _example_input(metadata: ModelMetadata):
    import torch

    return torch.zeros(1, 3, *metadata.input_size)


def convert_to_openvino(model, metadata: ModelMetadata):
    """An ``openvino.Model`` of ``model`` (an eval-mode ATSS) with named ports and ``model_info``."""
    import openvino as ov
    import torch

    height, width = metadata.input_size
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: the sizes are static on purpose
        ov_model = ov.convert_model(_wrapper(model), example_input=_example_input(metadata),
                                    input=[1, 3, height, width])
    if len(ov_model.outputs) != len(OUTPUT_NAMES):  # pragma: no cover - a changed wrapper
        raise OtxNldError(f"exported graph has {len(ov_model.outputs)} outputs, expected {len(OUTPUT_NAMES)}")
    ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
    for port, name in zip(ov_model.outputs, OUTPUT_NAMES):
        port.get_tensor().set_names({name})
    write_rt_info(ov_model, metadata)
    return ov_model


def export_onnx(model, metadata: ModelMetadata, path: Path) -> Path:
    """Write ``model`` as ONNX (metadata in ``metadata_props``) and run ``onnx.checker`` on it."""
    import onnx
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_wrapper(model), (_example_input(metadata),), str(path), dynamo=False,
                          opset_version=ONNX_OPSET, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes={name: {0: "num_detections"} for name in OUTPUT_NAMES})
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.to_strings().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:  # pragma: no cover - an exporter bug
        raise OtxNldError(f"{path.name}: the exported ONNX model does not pass onnx.checker: {e}") from None
    return path


def save_ir(ov_model, path: Path, fp16: bool = False) -> Path:
    import openvino as ov

    ov.save_model(ov_model, str(path), compress_to_fp16=fp16)
    return path


def export_checkpoint(checkpoint: str | Path, output: str | Path, formats: Sequence[str] = ("openvino",),
                      fp16: bool = False, overwrite: bool = False) -> ExportResult:
    """Export ``checkpoint`` into the directory ``output`` (built atomically).

    Writes ``model.xml``/``model.bin`` (``openvino``) and/or ``model.onnx`` (``onnx``).
    ``fp16`` stores the IR's weights as FP16 (the ONNX file is always FP32).
    """
    from otx_nld.io import atomic_output_dir
    from otx_nld.training.trainer import model_from_checkpoint

    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"export formats: expected some of {', '.join(FORMATS)}, got {list(formats)}")
    if fp16 and "openvino" not in formats:
        raise ConfigError("--fp16 applies to the OpenVINO IR only (add --format openvino or both)")
    check_output_dir(output, overwrite)
    model, recipe, labels = model_from_checkpoint(checkpoint)
    metadata = metadata_from_recipe(recipe, labels, precision="FP16" if fp16 else "FP32")
    output = Path(output)
    result = ExportResult(output, metadata)
    with atomic_output_dir(output, overwrite=overwrite) as tmp:
        if "openvino" in formats:
            save_ir(convert_to_openvino(model, metadata), tmp / IR_NAME, fp16=fp16)
            result.files["openvino"] = output / IR_NAME
        if "onnx" in formats:
            export_onnx(model, metadata.replace(precision="FP32"), tmp / ONNX_NAME)
            result.files["onnx"] = output / ONNX_NAME
    return result
