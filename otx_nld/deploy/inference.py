"""One predictor interface for a PyTorch checkpoint and an exported OpenVINO model.

Both do exactly the training pipeline's preprocessing (:class:`~otx_nld.data.loader.DetectionDataset`
without augmentation): RGB, letterbox to the model's input size (aspect kept, bilinear antialiased
resize, padded right and bottom with 0), ``(pixel - mean) / std``; then the detector with its
decoding and NMS; then the letterbox undone, so boxes come back in the original image's pixels
(xyxy, clipped to the image) as :class:`~otx_nld.training.evaluate.Prediction`.

:class:`OpenVINOPredictor` reads everything it needs from the model's ``model_info`` metadata
(:mod:`otx_nld.deploy.metadata`) and runs synchronously (:meth:`Predictor.predict`, one infer
request) or asynchronously (:meth:`Predictor.predict_many`, an ``AsyncInferQueue`` whose size the
plugin picks by default). ``precision="f32"`` (default) sets ``INFERENCE_PRECISION_HINT=f32`` so that
the float parts of the graph run in f32 even on CPUs where OpenVINO would pick bf16; INT8 layers
of a quantized model stay INT8.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from otx_nld.data.loader import letterbox_scale
from otx_nld.deploy.metadata import ModelMetadata, metadata_from_recipe, parse_metadata, read_rt_info
from otx_nld.errors import DatasetError, OtxNldError
from otx_nld.training.evaluate import DetectionMetrics, Prediction, coco_map

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
PRECISIONS = ("f32", "auto")

ImageLike = str | Path | Image.Image | np.ndarray | torch.Tensor


# -- images ---------------------------------------------------------------------------------


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as an RGB ``uint8 [3, H, W]`` tensor; a missing or undecodable file is a
    :class:`DatasetError` naming it (as :func:`otx_nld.data.loader.load_image`)."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    path = Path(path)
    try:
        with Image.open(path) as im:
            return pil_to_tensor(im.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(path, "image file does not exist") from None
    except IsADirectoryError:
        raise DatasetError(path, "is a directory, not an image file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(path, f"cannot decode image: {e}") from None


def as_image_tensor(image: ImageLike) -> torch.Tensor:
    """``uint8 [3, H, W]`` RGB from a path, a PIL image, an ``H x W x 3`` RGB array or a tensor."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_tensor(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise OtxNldError(f"expected an H x W x 3 uint8 RGB array, got {image.dtype} {list(image.shape)}")
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise OtxNldError(f"expected a uint8 [3, H, W] tensor, got {image.dtype} {list(image.shape)}")
        return image
    raise TypeError(f"unsupported image type {type(image).__name__}")


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files from files and directories (a directory: its image files, sorted, not recursive)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise DatasetError(p, f"directory has no image files ({', '.join(IMAGE_EXTENSIONS)})")
            found.extend(files)
        elif p.exists():
            found.append(p)
        else:
            raise DatasetError(p, "image file does not exist")
    return found


# -- pre- and postprocessing ----------------------------------------------------------------


def preprocess(image: torch.Tensor, metadata: ModelMetadata) -> tuple[np.ndarray, float]:
    """``(network input [1, 3, H, W] float32, letterbox scale)`` for a ``uint8 [3, h, w]`` image.

    The same operations, in the same order, as ``DetectionDataset`` (resize with antialias,
    pad right/bottom, then normalise), so that a deployed model sees what it was trained on.
    """
    from torchvision.transforms.v2 import functional as F

    size = metadata.input_size
    height, width = image.shape[-2:]
    scale = letterbox_scale(height, width, size)
    new_h, new_w = min(round(height * scale), size[0]), min(round(width * scale), size[1])
    if (new_h, new_w) != (height, width):
        image = F.resize(image, [new_h, new_w], antialias=True)
    if new_w < size[1] or new_h < size[0]:
        image = F.pad(image, [0, 0, size[1] - new_w, size[0] - new_h], fill=_fill(metadata.pad_value))
    mean = torch.tensor(metadata.mean).view(3, 1, 1)
    std = torch.tensor(metadata.std).view(3, 1, 1)
    pixels = (image.float() - mean) / std
    return pixels[None].numpy(), scale


def _fill(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def to_image_pixels(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, scale: float,
                    orig_size: tuple[int, int]) -> Prediction:
    """Undo the letterbox: network-input boxes -> boxes in the ``(height, width)`` original image."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / np.float32(scale)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, orig_size[1])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, orig_size[0])
    return Prediction(boxes, np.asarray(scores, dtype=np.float32).reshape(-1),
                      np.asarray(labels).astype(np.int64).reshape(-1))


# -- predictors -----------------------------------------------------------------------------


class Predictor:
    """Common interface: ``predict(image) -> Prediction`` in the image's pixels.

    Subclasses implement :meth:`infer` (one preprocessed input -> raw boxes, scores, labels in
    network-input pixels) and may override :meth:`infer_many` (several inputs, possibly
    concurrently).
    """

    kind = "base"
    path: Path
    metadata: ModelMetadata

    @property
    def labels(self) -> tuple[str, ...]:
        return self.metadata.labels

    @property
    def name(self) -> str:
        return f"{self.kind} {self.metadata.precision}"

    def size_bytes(self) -> int:
        raise NotImplementedError

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def infer_many(self, inputs: Iterable[np.ndarray], progress: bool = False,
                   total: int | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return [self.infer(x) for x in tqdm(inputs, total=total, desc="infer", disable=not progress, leave=False)]

    def preprocess(self, image: ImageLike) -> tuple[np.ndarray, float, tuple[int, int]]:
        tensor = as_image_tensor(image)
        inputs, scale = preprocess(tensor, self.metadata)
        return inputs, scale, (int(tensor.shape[-2]), int(tensor.shape[-1]))

    def predict(self, image: ImageLike) -> Prediction:
        """Detections for one image (synchronous, batch 1)."""
        inputs, scale, orig_size = self.preprocess(image)
        return to_image_pixels(*self.infer(inputs), scale, orig_size)

    def predict_many(self, images: Iterable[ImageLike], progress: bool = False, asynchronous: bool = True,
                     total: int | None = None, with_sizes: bool = False) -> list:
        """Detections for several images (decoded lazily, one at a time).

        ``asynchronous`` runs them through the OpenVINO async queue (the PyTorch predictor is
        always sequential). A bad image raises and returns nothing. With ``with_sizes``, each
        element is ``(Prediction, (height, width))``.
        """
        sizes: list[tuple[float, tuple[int, int]]] = []
        if total is None and isinstance(images, Sequence):
            total = len(images)

        def inputs():
            for image in images:
                x, scale, orig_size = self.preprocess(image)
                sizes.append((scale, orig_size))
                yield x

        if asynchronous:
            raw = self.infer_many(inputs(), progress=progress, total=total)
        else:
            raw = Predictor.infer_many(self, inputs(), progress=progress, total=total)
        predictions = [to_image_pixels(*r, scale, orig) for r, (scale, orig) in zip(raw, sizes)]
        return list(zip(predictions, (orig for _, orig in sizes))) if with_sizes else predictions

    def predict_dataset(self, dataset, progress: bool = False) -> dict[tuple[str, str], Prediction]:
        """Predictions keyed by ``(subset, item id)``, synchronous, in the items' pixels."""
        from otx_nld.data.loader import load_image

        predictions = {}
        for item in tqdm(dataset.items, desc="predict", disable=not progress, leave=False):
            image = load_image(item)
            if (image.height, image.width) != (item.height, item.width):
                raise DatasetError(item.image_path, f"image is {image.width}x{image.height} but the annotation "
                                   f"says {item.width}x{item.height}")
            predictions[item.key] = self.predict(image)
        return predictions

    def evaluate(self, dataset, progress: bool = False) -> DetectionMetrics:
        if dataset.labels != self.labels:
            raise OtxNldError(f"dataset labels {list(dataset.labels)} differ from the model's {list(self.labels)}")
        return coco_map(dataset, self.predict_dataset(dataset, progress))


class TorchPredictor(Predictor):
    """Eager PyTorch inference from an otx-nld checkpoint (``.pt``)."""

    kind = "pytorch"

    def __init__(self, checkpoint: str | Path):
        from otx_nld.training.trainer import model_from_checkpoint

        self.path = Path(checkpoint)
        self.model, self.recipe, labels = model_from_checkpoint(self.path)
        self.metadata = metadata_from_recipe(self.recipe, labels)

    @property
    def name(self) -> str:
        return "PyTorch eager FP32"

    def size_bytes(self) -> int:
        """The serialized weights (the checkpoint also holds optimizer state, not counted)."""
        buffer = io.BytesIO()
        torch.save(self.model.state_dict(), buffer)
        return buffer.tell()

    @torch.no_grad()
    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        det = self.model(torch.from_numpy(inputs))[0]
        return det["boxes"].numpy(), det["scores"].numpy(), det["labels"].numpy()

    @torch.no_grad()
    def infer_batch(self, inputs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Several preprocessed inputs ``[N, 3, H, W]`` in one forward pass."""
        return [(d["boxes"].numpy(), d["scores"].numpy(), d["labels"].numpy())
                for d in self.model(torch.from_numpy(inputs))]


def read_openvino_model(path: str | Path, core=None):
    """``(openvino.Model, ModelMetadata, path)`` of an exported model, checked: the file exists and
    reads, carries our ``model_info`` and has one ``[1, 3, H, W]`` input and three outputs.

    ``path`` may be ``model.xml``, ``model.onnx`` or an export directory holding ``model.xml``.
    """
    import openvino as ov

    path = Path(path)
    if path.is_dir() and (path / "model.xml").is_file():
        path = path / "model.xml"
    if not path.is_file():
        raise DatasetError(path, "model file does not exist")
    core = core or ov.Core()
    try:
        model = core.read_model(str(path))
    except Exception as e:  # noqa: BLE001 - RuntimeError for a missing .bin, a corrupt or foreign file
        raise _ov_error(path, e) from None
    metadata = _onnx_metadata(path) if path.suffix.lower() == ".onnx" else read_rt_info(model, path)
    inputs, outputs = model.inputs, model.outputs
    shape = inputs[0].get_partial_shape() if len(inputs) == 1 else None
    expected = [1, 3, *metadata.input_size]
    if shape is None or shape.is_dynamic or list(shape.to_shape()) != expected:
        raise DatasetError(path, f"model input is {[str(i.get_partial_shape()) for i in inputs]}, "
                           f"expected one input {expected} (from its metadata)")
    if len(outputs) != 3:
        raise DatasetError(path, f"model has {len(outputs)} outputs, expected 3 (boxes, scores, labels)")
    return model, metadata, path


def _ov_error(path: Path, error: Exception) -> DatasetError:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    # OpenVINO's messages start with a source location; the last lines say what is wrong.
    detail = next((line for line in reversed(lines) if not line.startswith(("Check ", "Exception from"))),
                  lines[-1] if lines else type(error).__name__)
    return DatasetError(path, f"cannot read OpenVINO model: {detail}")


class OpenVINOPredictor(Predictor):
    """OpenVINO runtime inference of an exported model (``.xml`` IR, or ``.onnx`` with our metadata).

    Args:
        path: ``model.xml`` (or an export directory holding one, or ``model.onnx``).
        device: OpenVINO device, ``CPU`` by default.
        performance_hint: ``LATENCY`` (one stream, sync use) or ``THROUGHPUT`` (several streams for
            :meth:`predict_many`).
        precision: ``f32`` forces ``INFERENCE_PRECISION_HINT=f32`` (accuracy, parity); ``auto``
            lets the plugin choose (bf16 on CPUs that have it).
        num_requests: infer requests of the async queue; 0 = the plugin's optimal number.
    """

    kind = "openvino"

    def __init__(self, path: str | Path, device: str = "CPU", performance_hint: str = "LATENCY",
                 precision: str = "f32", num_requests: int = 0, config: dict[str, Any] | None = None):
        import openvino as ov

        if performance_hint not in PERFORMANCE_HINTS:
            raise OtxNldError(f"performance hint must be one of {', '.join(PERFORMANCE_HINTS)}, "
                              f"got {performance_hint!r}")
        if precision not in PRECISIONS:
            raise OtxNldError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.core = ov.Core()
        self.model, self.metadata, self.path = read_openvino_model(path, self.core)
        self.performance_hint = performance_hint
        self.precision = precision
        self.num_requests = num_requests
        self.device = device
        options: dict[str, Any] = {"PERFORMANCE_HINT": performance_hint}
        if precision == "f32":
            options["INFERENCE_PRECISION_HINT"] = "f32"
        options.update(config or {})
        try:
            self.compiled = self.core.compile_model(self.model, device, options)
        except Exception as e:  # noqa: BLE001 - the plugin raises RuntimeError subclasses
            raise OtxNldError(f"{path}: OpenVINO cannot compile the model for {device}: {e}") from None
        self._request = self.compiled.create_infer_request()

    @property
    def name(self) -> str:
        return f"OpenVINO {self.metadata.precision}"

    def size_bytes(self) -> int:
        files = [self.path]
        if self.path.suffix.lower() == ".xml":
            files.append(self.path.with_suffix(".bin"))
        return sum(f.stat().st_size for f in files if f.is_file())

    def infer(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._request.infer({0: inputs})
        return tuple(self._request.get_output_tensor(i).data.copy() for i in range(3))  # type: ignore[return-value]

    def infer_many(self, inputs: Iterable[np.ndarray], progress: bool = False,
                   total: int | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        import openvino as ov

        results: dict[int, tuple[np.ndarray, ...]] = {}
        bar = tqdm(total=total, desc="infer", disable=not progress, leave=False)

        def done(request, index: int) -> None:  # copies: the request's tensors are reused
            results[index] = tuple(request.get_output_tensor(i).data.copy() for i in range(3))
            bar.update(1)

        queue = ov.AsyncInferQueue(self.compiled, self.num_requests)
        queue.set_callback(done)
        count = 0
        try:
            for count, x in enumerate(inputs, start=1):
                queue.start_async({0: x}, userdata=count - 1)
        finally:
            queue.wait_all()
            bar.close()
        if len(results) != count:  # pragma: no cover - a failed request
            raise OtxNldError(f"{self.path}: {count - len(results)} asynchronous requests failed")
        return [results[i] for i in range(count)]  # type: ignore[misc]


def _onnx_metadata(path: Path) -> ModelMetadata:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf or I/O errors
        raise DatasetError(path, f"cannot read ONNX model: {e}") from None
    return parse_metadata({p.key: p.value for p in proto.metadata_props}, path)


def load_predictor(path: str | Path, **openvino_options: Any) -> Predictor:
    """A :class:`TorchPredictor` for ``.pt``/``.pth``, an :class:`OpenVINOPredictor` for ``.xml``,
    ``.onnx`` or an export directory."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return TorchPredictor(path)
    if suffix in (".xml", ".onnx") or path.is_dir():
        return OpenVINOPredictor(path, **openvino_options)
    if not path.exists():
        raise DatasetError(path, "model file does not exist")
    raise DatasetError(path, "unknown model type: expected a checkpoint (.pt), an OpenVINO IR (.xml) or ONNX (.onnx)")
