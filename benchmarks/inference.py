"""Deployment speed and accuracy: PyTorch eager vs OpenVINO FP32 vs OpenVINO INT8 on the dice test split.

From a trained checkpoint (default: the demo's ``outputs/demo/run/checkpoints/best.pt``, an
``atss_cpu`` model), this exports the FP32 IR (``otx-nld export``), quantizes it with NNCF on the
training subset (``otx-nld optimize``), then measures all three in one run with
``otx-nld benchmark`` on the ``test`` subset of the demo's dataset
(``outputs/demo/d6-dice-noisy``): latency p50/p90 (batch 1, sync), throughput (all cores; OpenVINO
async with the THROUGHPUT hint, PyTorch in batches of 8), model size and mAP@0.5. OpenVINO runs
with ``INFERENCE_PRECISION_HINT=f32`` (true FP32; the INT8 model's float parts in f32 too).

Goals: OpenVINO FP32 >= 2x faster than eager PyTorch (p50 latency), INT8 >= 1.5x faster than
FP32, INT8 mAP@0.5 at most 1 point below FP32. Results: ``results/inference.{json,md}``.
Timings depend on what else the machine runs; they are recorded with the CPU load seen.

    .venv/bin/python -m benchmarks.inference [--checkpoint CKPT] [--data DIR] [--samples 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_results
from otx_nld.deploy.benchmark import markdown_table, run_benchmark
from otx_nld.deploy.export import export_checkpoint
from otx_nld.deploy.quantize import quantize_ir
from otx_nld.training.trainer import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = ROOT / "outputs/demo/run/checkpoints/best.pt"
DEFAULT_DATA = ROOT / "outputs/demo/d6-dice-noisy"
GOALS = {"fp32_vs_eager_latency": 2.0, "int8_vs_fp32_latency": 1.5, "int8_map50_drop_max": 0.01}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--subset", default="test")
    parser.add_argument("--samples", type=int, default=300, help="NNCF calibration images (train subset)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="latency passes over the subset")
    parser.add_argument("--throughput-images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per model (torch and OpenVINO); default all cores. On a busy machine "
                             "eager PyTorch's OpenMP threads stall when descheduled: 1 compares fairly there")
    parser.add_argument("--work", type=Path, default=None, help="keep the exported models here (default: temp)")
    parser.add_argument("--note", dest="notes", action="append", default=None, metavar="TEXT",
                        help="a note stored with the results (e.g. what an earlier run measured); repeatable")
    parser.add_argument("--name", default="inference",
                        help="results file name in results/ (e.g. inference_mobilenetv2 for another model)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update results/")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="otx-nld-inference-") as tmp:
        work = args.work or Path(tmp)
        fp32 = export_checkpoint(args.checkpoint, work / "fp32", overwrite=True).files["openvino"]
        int8 = quantize_ir(fp32, args.data, work / "int8", subset="train", samples=args.samples,
                           overwrite=True).model_path
        load_before = os.getloadavg()
        results = run_benchmark([args.checkpoint, fp32, int8], args.data, subset=args.subset, warmup=args.warmup,
                                repeats=args.repeats, throughput_images=args.throughput_images,
                                threads=args.threads)
        load_after = os.getloadavg()

    eager, ov_fp32, ov_int8 = results["models"]
    achieved = {
        "fp32_vs_eager_latency": round(eager["latency_ms_p50"] / ov_fp32["latency_ms_p50"], 3),
        "int8_vs_fp32_latency": round(ov_fp32["latency_ms_p50"] / ov_int8["latency_ms_p50"], 3),
        "fp32_vs_eager_throughput": round(ov_fp32["throughput_fps"] / eager["throughput_fps"], 3),
        "int8_vs_fp32_throughput": round(ov_int8["throughput_fps"] / ov_fp32["throughput_fps"], 3),
        "int8_map50_drop": round(ov_fp32["map50"] - ov_int8["map50"], 4),
        "fp32_map50_vs_eager": round(ov_fp32["map50"] - eager["map50"], 4),
    }
    met = {"fp32_vs_eager_latency": achieved["fp32_vs_eager_latency"] >= GOALS["fp32_vs_eager_latency"],
           "int8_vs_fp32_latency": achieved["int8_vs_fp32_latency"] >= GOALS["int8_vs_fp32_latency"],
           "int8_map50_drop": achieved["int8_map50_drop"] <= GOALS["int8_map50_drop_max"]}
    recipe = load_checkpoint(args.checkpoint)["recipe"]
    results.update(checkpoint=str(args.checkpoint), recipe=recipe["name"],
                   calibration_samples=args.samples, goals=GOALS,
                   notes=args.notes or [],
                   achieved=achieved, goals_met=met,
                   load_average_1min={"before": round(load_before[0], 2), "after": round(load_after[0], 2)})
    recipe_text = f"{recipe['name']}, input {'x'.join(map(str, recipe['data']['input_size']))}"
    title = f"# Inference: PyTorch eager vs OpenVINO FP32 vs INT8 ({recipe_text})\n\n"
    table = title + markdown_table(results) + (
        f"\nOpenVINO FP32 vs eager: p50 {achieved['fp32_vs_eager_latency']:.2f}x (goal >= 2x), throughput "
        f"{achieved['fp32_vs_eager_throughput']:.2f}x; INT8 vs FP32: p50 {achieved['int8_vs_fp32_latency']:.2f}x "
        f"(goal >= 1.5x), throughput {achieved['int8_vs_fp32_throughput']:.2f}x; INT8 mAP@0.5 drop "
        f"{achieved['int8_map50_drop'] * 100:.2f} points (goal <= 1).\n"
        f"Load average (1 min) before/after: {load_before[0]:.2f}/{load_after[0]:.2f} on {os.cpu_count()} CPUs: "
        "with other work running, absolute numbers are pessimistic.\n"
        + "".join(f"\nNote: {note}\n" for note in args.notes or []))
    print(table)
    if not args.no_write:
        print(f"wrote {write_results(args.name, results, table)}")


if __name__ == "__main__":
    main()
