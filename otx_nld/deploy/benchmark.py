"""Speed, size and accuracy of several deployed forms of one detector, measured in one run.

For each model (a ``.pt`` checkpoint runs eager PyTorch; an ``.xml`` IR runs OpenVINO on CPU with
``INFERENCE_PRECISION_HINT=f32``, so an INT8 IR runs INT8 layers and f32 elsewhere):

* **latency**: batch 1, synchronous (OpenVINO ``PERFORMANCE_HINT=LATENCY``), one inference per
  image of the subset after ``warmup`` runs, ``repeats`` times; p50/p90/mean of the network call
  (postprocessing in the graph or in ``ATSS.postprocess`` included; image decoding and
  letterboxing excluded, done once beforehand);
* **throughput**: images per second over at least ``throughput_images`` inferences using all
  cores: OpenVINO ``PERFORMANCE_HINT=THROUGHPUT`` with an ``AsyncInferQueue`` of the plugin's
  optimal size; PyTorch (which has no async runtime) in batches of ``torch_batch`` images;
* **size**: ``.xml`` + ``.bin`` for an IR; the serialized ``state_dict`` for a checkpoint (which
  also holds optimizer state, not counted);
* **mAP@0.5** and mAP@[.5:.95] of the detections of the first latency pass (COCO, pycocotools).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from otx_nld.errors import OtxNldError


@dataclass
class ModelResult:
    name: str
    path: str
    kind: str  # pytorch | openvino
    precision: str
    size_mb: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_mean: float
    throughput_fps: float
    throughput_mode: str
    map50: float
    map: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _prepare(predictor, dataset, progress: bool):
    from otx_nld.data.loader import load_image

    prepared = []
    for item in tqdm(dataset.items, desc="read images", disable=not progress, leave=False):
        x, scale, orig = predictor.preprocess(load_image(item))
        prepared.append((item.key, x, scale, orig))
    return prepared


def _options(threads: int | None) -> dict[str, Any]:
    return {"performance_hint": "LATENCY", "config": {"INFERENCE_NUM_THREADS": threads} if threads else None}


def benchmark_model(model, dataset, warmup: int = 3, repeats: int = 1, throughput_images: int = 64,
                    torch_batch: int = 8, threads: int | None = None, progress: bool = True) -> ModelResult:
    """Measure one model (a path or a loaded predictor) on ``dataset`` (see the module docstring).

    ``threads`` limits torch's intra-op threads and OpenVINO's ``INFERENCE_NUM_THREADS`` (default: all
    cores). On a machine busy with other work, OpenMP-threaded eager PyTorch can slow down by orders
    of magnitude when its threads are descheduled; one thread each makes a fairer comparison there.
    """
    import torch

    from otx_nld.deploy.inference import Predictor, load_predictor

    predictor = model if isinstance(model, Predictor) else load_predictor(model, **_options(threads))
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _measure(predictor, dataset, warmup, repeats, throughput_images, torch_batch, threads, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _measure(predictor, dataset, warmup, repeats, throughput_images, torch_batch, threads, progress) -> ModelResult:
    from otx_nld.deploy.inference import OpenVINOPredictor, to_image_pixels
    from otx_nld.training.evaluate import coco_map

    path = predictor.path
    if dataset.labels != predictor.labels:
        raise OtxNldError(f"{path}: the model's labels {list(predictor.labels)} differ from the data's "
                          f"{list(dataset.labels)}")
    prepared = _prepare(predictor, dataset, progress)
    inputs = [p[1] for p in prepared]
    for i in range(warmup):
        predictor.infer(inputs[i % len(inputs)])
    times, predictions = [], {}
    for r in range(repeats):
        for key, x, scale, orig in tqdm(prepared, desc=f"latency {predictor.name}", disable=not progress, leave=False):
            start = time.perf_counter()
            raw = predictor.infer(x)
            times.append(time.perf_counter() - start)
            if r == 0:
                predictions[key] = to_image_pixels(*raw, scale, orig)
    metrics = coco_map(dataset, predictions)
    latency = np.asarray(times) * 1000

    stream = (inputs * (-(-throughput_images // len(inputs))))[:max(throughput_images, len(inputs))]
    if isinstance(predictor, OpenVINOPredictor):
        fast = OpenVINOPredictor(predictor.path, performance_hint="THROUGHPUT",
                                 config={"INFERENCE_NUM_THREADS": threads} if threads else None)
        fast.infer_many(stream[:warmup])
        start = time.perf_counter()
        fast.infer_many(stream, progress=progress, total=len(stream))
        elapsed = time.perf_counter() - start
        mode = "async, PERFORMANCE_HINT=THROUGHPUT, AsyncInferQueue(optimal requests)" + \
            (f", INFERENCE_NUM_THREADS={threads}" if threads else "")
    else:
        batches = [np.concatenate(stream[i:i + torch_batch]) for i in range(0, len(stream), torch_batch)]
        predictor.infer_batch(batches[0])
        start = time.perf_counter()
        for batch in tqdm(batches, desc="throughput", disable=not progress, leave=False):
            predictor.infer_batch(batch)
        elapsed = time.perf_counter() - start
        mode = f"eager, batch {torch_batch}, torch threads {_torch_threads()}"
    return ModelResult(
        name=predictor.name, path=str(predictor.path), kind=predictor.kind, precision=predictor.metadata.precision,
        size_mb=round(predictor.size_bytes() / 2**20, 3),
        latency_ms_p50=round(float(np.percentile(latency, 50)), 3),
        latency_ms_p90=round(float(np.percentile(latency, 90)), 3),
        latency_ms_mean=round(float(latency.mean()), 3),
        throughput_fps=round(len(stream) / elapsed, 2), throughput_mode=mode,
        map50=round(metrics.map50, 4), map=round(metrics.map, 4))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def run_benchmark(models: Sequence[str | Path], data: str | Path, subset: str = "test", warmup: int = 3,
                  repeats: int = 1, throughput_images: int = 64, threads: int | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Benchmark every model on the ``subset`` of ``data``; returns a JSON-ready dict."""
    import os

    from otx_nld.data.dataset import Dataset
    from otx_nld.deploy.inference import load_predictor
    from otx_nld.training.trainer import select_subset

    if not models:
        raise OtxNldError("benchmark: give at least one model")
    # Every model and the data are read and checked before the first measurement.
    predictors = [load_predictor(m, **_options(threads)) for m in models]
    dataset = select_subset(Dataset.import_from(data), subset, "benchmark")
    if not len(dataset):
        raise OtxNldError(f"{data}: subset {subset!r} has no items")
    for predictor in predictors:
        if dataset.labels != predictor.labels:
            raise OtxNldError(f"{predictor.path}: the model's labels {list(predictor.labels)} differ from the "
                              f"data's {list(dataset.labels)}")
    results = [benchmark_model(p, dataset, warmup, repeats, throughput_images, threads=threads, progress=progress)
               for p in predictors]
    first = results[0]
    rows = []
    for r in results:
        rows.append({**r.as_dict(),
                     "latency_speedup_vs_first": round(first.latency_ms_p50 / r.latency_ms_p50, 3),
                     "throughput_speedup_vs_first": round(r.throughput_fps / first.throughput_fps, 3),
                     "map50_delta_vs_first": round(r.map50 - first.map50, 4)})
    return {"data": str(data), "subset": subset, "num_images": len(dataset), "num_boxes": dataset.num_boxes,
            "warmup": warmup, "repeats": repeats, "cpu_count": os.cpu_count(), "threads": threads or "all",
            "models": rows}


def _threads_note(results: dict[str, Any]) -> str:
    threads = results.get("threads", "all")
    cores = f"{results['cpu_count']} CPUs"
    return f"all cores ({cores})" if threads == "all" else f"{threads} thread(s) per model ({cores})"


def markdown_table(results: dict[str, Any]) -> str:
    lines = [(f"{results['num_images']} images of subset `{results['subset']}` of `{results['data']}`; "
              f"latency: batch 1, sync; throughput: {_threads_note(results)}."), "",
             ("| model | size MB | latency p50 ms | p90 ms | throughput img/s | mAP@0.5 | mAP | "
              "p50 speed-up | throughput speed-up |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["models"]:
        lines.append(f"| {r['name']} | {r['size_mb']:.2f} | {r['latency_ms_p50']:.2f} | {r['latency_ms_p90']:.2f} | "
                     f"{r['throughput_fps']:.1f} | {r['map50']:.4f} | {r['map']:.4f} | "
                     f"{r['latency_speedup_vs_first']:.2f}x | {r['throughput_speedup_vs_first']:.2f}x |")
    lines.append("")
    lines.append("Speed-ups are relative to the first model. " + "; ".join(
        f"{r['name']}: {r['throughput_mode']}" for r in results["models"]) + ".")
    return "\n".join(lines) + "\n"


def write_benchmark(results: dict[str, Any], path: str | Path) -> tuple[Path, Path]:
    """``path`` (JSON) and ``path`` with ``.md`` (the table), both written atomically."""
    from otx_nld.io import atomic_write_json, atomic_write_text

    path = Path(path)
    md = path.with_suffix(".md")
    atomic_write_json(path, results)
    atomic_write_text(md, markdown_table(results))
    return path, md
