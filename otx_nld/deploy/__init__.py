"""Deployment: export to OpenVINO IR / ONNX (postprocessing in the graph), NNCF INT8 quantization,
one predictor interface for PyTorch and OpenVINO, and a speed/size/accuracy benchmark.

Heavy imports (torch, openvino, nncf) happen inside the submodules, on first use.
"""

from __future__ import annotations

_LAZY = {
    "export_checkpoint": "otx_nld.deploy.export",
    "quantize_ir": "otx_nld.deploy.quantize",
    "load_predictor": "otx_nld.deploy.inference",
    "OpenVINOPredictor": "otx_nld.deploy.inference",
    "TorchPredictor": "otx_nld.deploy.inference",
    "Predictor": "otx_nld.deploy.inference",
    "run_benchmark": "otx_nld.deploy.benchmark",
    "ModelMetadata": "otx_nld.deploy.metadata",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'otx_nld.deploy' has no attribute {name!r}")


__all__ = ["ModelMetadata", "OpenVINOPredictor", "Predictor", "TorchPredictor", "export_checkpoint",
           "load_predictor", "quantize_ir", "run_benchmark"]
