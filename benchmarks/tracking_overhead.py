"""Training step time with per-annotation loss tracking on vs off, measured side by side.

Both variants share one model and the same batches; steps alternate on/off so machine noise
hits both alike. A tracked step does everything the trainer does: the per-annotation loss
rows, copying them off the graph and ``LossDynamicsTracker.record`` (Parquet chunks included).
Target: ratio (tracking on / off) <= 1.05.

    .venv/bin/python -m benchmarks.tracking_overhead [--steps 30] [--recipe atss_cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._common import dice_split, write_results
from otx_nld.data.loader import DetectionDataset, make_loader
from otx_nld.recipe import load_recipe
from otx_nld.training.tracking import LossDynamicsTracker
from otx_nld.training.trainer import build_model, build_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="atss_cpu")
    parser.add_argument("--steps", type=int, default=30, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "otx-nld-bench")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    recipe = load_recipe(args.recipe)
    train = dice_split(args.cache).subset("train")
    model = build_model(recipe, len(train.labels))
    optimizer = build_optimizer(recipe, model)
    loader = make_loader(DetectionDataset(train, recipe.data, recipe.augment), recipe.train.batch_size,
                         shuffle=True, seed=0, drop_last=True)
    batches = [b for _, b in zip(range(8), loader)]  # decode/augment once: time the step only
    with tempfile.TemporaryDirectory() as tmp:
        tracker = LossDynamicsTracker(Path(tmp) / "stats", train, chunk_rows=recipe.tracking.chunk_rows)
        times = {True: [], False: []}
        model.train()
        for step in range(args.warmup + args.steps):
            for tracking in (step % 2 == 0, step % 2 != 0):  # alternate which variant goes first
                images, targets, _ = batches[step % len(batches)]
                start = time.perf_counter()
                model.track_annotations = tracking
                losses = model(images, targets)
                optimizer.zero_grad(set_to_none=True)
                losses.loss.backward()
                optimizer.step()
                if tracking:
                    pa = losses.per_annotation
                    tracker.record(step, 0, pa.ann_ids.numpy(), pa.columns())
                if step >= args.warmup:
                    times[tracking].append(time.perf_counter() - start)
        tracker.close()
    on, off = statistics.median(times[True]), statistics.median(times[False])
    ratio = on / off
    results = {"recipe": recipe.name, "batch_size": recipe.train.batch_size, "input_size": list(recipe.data.input_size),
               "steps_per_variant": args.steps, "median_step_s_tracking_on": on, "median_step_s_tracking_off": off,
               "ratio_on_over_off": ratio, "target_ratio": 1.05, "meets_target": ratio <= 1.05}
    table = ("| recipe | batch | step on (s) | step off (s) | ratio on/off | target |\n|---|---|---|---|---|---|\n"
             f"| {recipe.name} | {recipe.train.batch_size} | {on:.4f} | {off:.4f} | {ratio:.3f} | <= 1.05 |")
    path = write_results("tracking_overhead", results, table)
    print(table)
    print(f"tracking overhead ratio {ratio:.3f} (target <= 1.05) -> {path}")


if __name__ == "__main__":
    main()
