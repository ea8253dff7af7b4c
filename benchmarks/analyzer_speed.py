"""Loss-dynamics analyzer speed: ours (vectorized) vs Datumaro 1.11.1's (a pandas Series per box).

For each size, a synthetic training run is written once into a cache: ``B`` boxes (10 per
image, batch 8) observed in each of ``--obs`` epochs (one observation per box per epoch, as in
a real run where every box gets a positive anchor), as our Parquet stats plus their Datumaro
export made by :func:`otx_nld.training.tracking.export_datumaro`. Then:

- ours: load time (from the Datumaro export and from Parquet) and analysis time
  (``LossDynamicsAnalyzer(stats, "cls")`` + ``get_top_k_cands(k)``, median of repeats);
- Datumaro's, in its own venv (a subprocess): ``Dataset.import_from`` timed apart from the
  analysis (``LossDynamicsAnalyzer(stats, tracking_loss_type="cls")`` + ``get_top_k_cands(k)``);
- both top-k lists must be equal (ids and order, metrics within 1e-9 relative).

Datumaro's analyzer builds a dense boxes x distinct-iterations DataFrame, so its memory grows
with boxes x iterations; sizes above ``--datumaro-max-boxes`` are not run through it, and the
result says why (with the size that frame would have). Target: analysis >= 100x faster.

    .venv/bin/python -m benchmarks.analyzer_speed [--sizes 2000,10000,100000] [--obs 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._common import write_results
from otx_nld.analysis.loss_dynamics import LossDynamicsAnalyzer, LossStats
from otx_nld.data.dataset import Box, Dataset, Item
from otx_nld.training.tracking import STATS_SCHEMA, export_datumaro

BOXES_PER_ITEM = 10
BATCH_SIZE = 8
LABELS = tuple(f"class_{i}" for i in range(6))
TARGET_RATIO = 100.0
CHUNK_ROWS = 1 << 20

DATUMARO_SCRIPT = """
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import datumaro as dm
path, loss_type, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
stats = dm.Dataset.import_from(path, "datumaro")
num_boxes = sum(len(item.annotations) for item in stats)
imported = time.perf_counter()
analyzer = dm.LossDynamicsAnalyzer(stats, tracking_loss_type=loss_type)
cands = analyzer.get_top_k_cands(k)
done = time.perf_counter()
print(json.dumps({"import_s": imported - start, "analyze_s": done - imported, "boxes": num_boxes,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "top_k": [[c.id, c.subset, c.ann_id, c.label_id, c.metric] for c in cands]}))
"""


def synthetic_run(cache: Path, num_boxes: int, obs: int, seed: int = 0) -> tuple[Path, Path]:
    """``(stats_dir, datumaro_dir)`` of a synthetic run, generated once into ``cache``."""
    root = cache / f"analyzer-speed-{num_boxes}x{obs}-seed{seed}"
    stats_dir, nld_dir, done = root / "stats", root / "noisy_label_detection", root / ".complete"
    if done.is_file():
        return stats_dir, nld_dir
    rng = np.random.default_rng(seed)
    num_items = -(-num_boxes // BOXES_PER_ITEM)
    items, ann_id = [], 1
    box_item, box_label = np.empty(num_boxes, np.int64), rng.integers(len(LABELS), size=num_boxes)
    for i in range(num_items):
        boxes = []
        for k in range(min(BOXES_PER_ITEM, num_boxes - i * BOXES_PER_ITEM)):
            boxes.append(Box(10.0 + 60 * k, 20.0, 40.0, 50.0, int(box_label[ann_id - 1]), ann_id))
            box_item[ann_id - 1] = i
            ann_id += 1
        items.append(Item(f"img_{i:06d}", "train", None, 640, 480, tuple(boxes)))
    train = Dataset(tuple(items), LABELS)

    # Each epoch visits the items in a new random order, BATCH_SIZE per iteration; every box
    # of an item is observed at its item's iteration. Losses: lognormal, quantized to 1/128
    # (exact in float32 and short in JSON), a few boxes much higher (the "noisy" ones).
    iters_per_epoch = -(-num_items // BATCH_SIZE)
    item_boxes = np.argsort(box_item, kind="stable")  # boxes grouped by item, in item order
    first_box = np.searchsorted(box_item[item_boxes], np.arange(num_items))
    n_boxes_of = np.diff(np.r_[first_box, num_boxes])
    loud = rng.uniform(size=num_boxes) < 0.01
    item_names = np.array([item.id for item in items], dtype=object)
    stats_dir.mkdir(parents=True, exist_ok=True)
    columns: dict[str, list[np.ndarray]] = {name: [] for name in STATS_SCHEMA.names}
    buffered, part = 0, 0
    for epoch in range(obs):
        order = rng.permutation(num_items)
        item_iter = np.empty(num_items, np.int64)
        item_iter[order] = epoch * iters_per_epoch + np.arange(num_items) // BATCH_SIZE
        counts = n_boxes_of[order]
        rows_item = np.repeat(order, counts)
        n = rows_item.size
        within = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
        boxes = item_boxes[first_box[rows_item] + within]
        scale = np.where(loud[boxes], 4.0, 1.0) * (1.0 - 0.5 * epoch / obs)
        losses = {t: np.round(rng.lognormal(-1.5, 0.5, n) * scale * 128) / 128 for t in ("cls", "bbox", "centerness")}
        columns["iteration"].append(item_iter[rows_item])
        columns["epoch"].append(np.full(n, epoch))
        columns["item_id"].append(item_names[rows_item])
        columns["subset"].append(np.full(n, "train", dtype=object))
        columns["ann_id"].append(boxes + 1)
        columns["label_id"].append(box_label[boxes])
        for t, v in losses.items():
            columns[t].append(v)
        buffered += n
        if buffered >= CHUNK_ROWS or epoch == obs - 1:
            table = pa.table({name: pa.array(np.concatenate(columns[name]), type=STATS_SCHEMA.field(name).type)
                              for name in STATS_SCHEMA.names}, schema=STATS_SCHEMA)
            pq.write_table(table, stats_dir / f"part-{part:06d}.parquet")
            part += 1
            columns = {name: [] for name in STATS_SCHEMA.names}
            buffered = 0
    export_datumaro(stats_dir, train, nld_dir)
    done.touch()
    return stats_dir, nld_dir


def time_ours(stats_dir: Path, nld_dir: Path, top_k: int, repeats: int) -> dict:
    start = time.perf_counter()
    stats = LossStats.from_datumaro(nld_dir)
    load_datumaro = time.perf_counter() - start
    start = time.perf_counter()
    parquet = LossStats.from_stats_dir(stats_dir)
    load_parquet = time.perf_counter() - start
    assert parquet.keys() == stats.keys()
    times, cands = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        cands = LossDynamicsAnalyzer(stats, "cls").get_top_k_cands(top_k)
        times.append(time.perf_counter() - start)
    return {"load_datumaro_s": load_datumaro, "load_parquet_s": load_parquet, "analyze_s": statistics.median(times),
            "analyze_runs_s": times, "boxes": stats.num_boxes, "rows": stats.num_rows,
            "iterations": int(np.unique(stats.iteration).size),
            "top_k": [[c.item_id, c.subset, c.ann_id, c.label_id, c.metric] for c in cands]}


def time_datumaro(nld_dir: Path, top_k: int, timeout: float) -> dict:
    from tests.datumaro_env import run_datumaro

    proc = run_datumaro(DATUMARO_SCRIPT, nld_dir, "cls", top_k, timeout=timeout)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_top_k(ours: list, theirs: list) -> bool:
    return (len(ours) == len(theirs) and all(o[:4] == t[:4] for o, t in zip(ours, theirs))
            and all(abs(o[4] - t[4]) <= 1e-9 * max(abs(t[4]), 1e-300) for o, t in zip(ours, theirs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000,100000", help="comma-separated numbers of boxes")
    parser.add_argument("--obs", type=int, default=100, help="observations (epochs) per box")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of our analyzer (median)")
    parser.add_argument("--datumaro-max-boxes", type=int, default=20000,
                        help="larger sizes are not run through Datumaro (its dense frame needs too much memory)")
    parser.add_argument("--datumaro-timeout", type=float, default=1200)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "otx-nld-bench")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    runs = []
    for size in sizes:
        start = time.perf_counter()
        stats_dir, nld_dir = synthetic_run(args.cache, size, args.obs)
        print(f"{size} boxes x {args.obs} obs: data ready in {time.perf_counter() - start:.1f} s ({nld_dir})", flush=True)
        ours = time_ours(stats_dir, nld_dir, args.top_k, args.repeats)
        run = {"boxes": size, "obs_per_box": args.obs, "rows": ours["rows"], "iterations": ours["iterations"],
               "export_mb": sum(p.stat().st_size for p in (nld_dir / "annotations").iterdir()) / 2**20,
               "ours": {k: v for k, v in ours.items() if k != "top_k"}}
        dense_gb = size * ours["iterations"] * 8 / 2**30
        if size <= args.datumaro_max_boxes:
            theirs = time_datumaro(nld_dir, args.top_k, args.datumaro_timeout)
            run["datumaro"] = {k: v for k, v in theirs.items() if k != "top_k"}
            run["same_top_k"] = same_top_k(ours["top_k"], theirs["top_k"])
            run["speedup_analyze"] = theirs["analyze_s"] / ours["analyze_s"]
            run["speedup_load_plus_analyze"] = ((theirs["import_s"] + theirs["analyze_s"])
                                                / (ours["load_datumaro_s"] + ours["analyze_s"]))
        else:
            run["datumaro"] = {"skipped": f"not run: its boxes x iterations float64 frame alone would be "
                                          f"{dense_gb:.0f} GiB ({size} x {ours['iterations']})"}
        runs.append(run)
        print(json.dumps(run, indent=1), flush=True)

    measured = [r for r in runs if "speedup_analyze" in r]
    results = {"target_speedup": TARGET_RATIO, "top_k": args.top_k, "loss_type": "cls", "runs": runs,
               "meets_target": bool(measured) and all(r["speedup_analyze"] >= TARGET_RATIO for r in measured),
               "all_top_k_equal": all(r["same_top_k"] for r in measured)}
    lines = ["| boxes | rows | iterations | export MB | ours load dm / parquet (s) | ours analyze (s) "
             "| Datumaro import (s) | Datumaro analyze (s) | Datumaro peak RSS (GiB) | speedup analyze "
             "| speedup load+analyze | same top-k |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        o, d = r["ours"], r["datumaro"]
        if "skipped" in d:
            theirs = f"| - | {d['skipped']} | - | - | - | - |"
        else:
            theirs = (f"| {d['import_s']:.1f} | {d['analyze_s']:.2f} | {d['peak_rss_mb'] / 1024:.1f} "
                      f"| {r['speedup_analyze']:.0f}x "
                      f"| {r['speedup_load_plus_analyze']:.1f}x | {'yes' if r['same_top_k'] else 'NO'} |")
        lines.append(f"| {r['boxes']} | {r['rows']} | {r['iterations']} | {r['export_mb']:.0f} "
                     f"| {o['load_datumaro_s']:.2f} / {o['load_parquet_s']:.2f} | {o['analyze_s']:.4f} {theirs}")
    table = "\n".join(lines)
    path = write_results("analyzer_speed", results, table)
    print(table)
    print(f"analysis speedup target >= {TARGET_RATIO:.0f}x: {'met' if results['meets_target'] else 'NOT met'}; "
          f"top-k equal: {results['all_top_k_equal']} -> {path}")


if __name__ == "__main__":
    main()
