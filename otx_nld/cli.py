"""The ``otx-nld`` command line.

Every user error (bad file, bad value) ends with one ``otx-nld: error: ...`` line on stderr and
exit code 2; outputs are written atomically, so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from otx_nld.errors import ConfigError, OtxNldError

log = logging.getLogger("otx_nld")

EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1], got {value:g}")
    return value


def _format_name(text: str) -> str:
    from otx_nld.data.formats import FORMATS

    if text not in FORMATS:
        raise argparse.ArgumentTypeError(f"unknown format {text!r} (choose from {', '.join(FORMATS)})")
    return text


# -- data commands -------------------------------------------------------------------------


def _load(args: argparse.Namespace):
    from otx_nld.data.dataset import Dataset

    def report(error) -> None:
        print(f"otx-nld: skipped: {error}", file=sys.stderr)

    return Dataset.import_from(args.src, getattr(args, "src_format", None),
                               skip_invalid=getattr(args, "skip_invalid", False), on_skip=report)


def _export(dataset, args: argparse.Namespace) -> None:
    dataset.export(args.out, args.to, save_media=not args.no_media, overwrite=args.overwrite)


def _print_counts(dataset, title: str | None = None) -> None:
    if title:
        print(title)
    print(dataset.counts_table())


def cmd_synth_dice(args: argparse.Namespace) -> int:
    from otx_nld.data.synthetic_dice import generate_dice_dataset

    out = generate_dice_dataset(args.out, num_images=args.images, seed=args.seed,
                                overwrite=args.overwrite, progress=True)
    print(f"wrote {args.images} images of six-sided dice to {out} (YOLO loose layout)")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    dataset = _load(args)
    _export(dataset, args)
    print(f"converted {len(dataset)} items, {dataset.num_boxes} boxes to {args.to} at {args.out}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from otx_nld.data.transforms import parse_splits, random_split, reindex_annotations

    splits = parse_splits(args.splits)
    dataset = reindex_annotations(random_split(_load(args), splits, seed=args.seed), start=args.start_id)
    _export(dataset, args)
    _print_counts(dataset, f"split into {', '.join(n for n, _ in splits)} (seed {args.seed}) at {args.out}:")
    return 0


def cmd_noise(args: argparse.Namespace) -> int:
    from otx_nld.data.noise import TRUTH_FILENAME, NoiseSpec, synthesize_noise
    from otx_nld.io import atomic_output_dir

    spec = NoiseSpec(flip=args.flip, shift=args.shift, drop=args.drop, spawn=args.spawn,
                     flip_rate=args.flip_rate, shift_rate=args.shift_rate, drop_rate=args.drop_rate,
                     spawn_rate=args.spawn_rate)
    dataset = _load(args)
    noisy, truth = synthesize_noise(dataset, spec, subset=args.subset, seed=args.seed)
    if not truth.changes:
        raise ConfigError("noise: no change requested (give --flip, --shift-rate, --drop-rate or --spawn-rate ...)")
    from otx_nld.data.formats import get_format

    fmt = get_format(args.to)
    with atomic_output_dir(args.out, overwrite=args.overwrite) as tmp:
        fmt.write(noisy, tmp, save_media=not args.no_media)
        truth.save(tmp / TRUTH_FILENAME)
    counts = ", ".join(f"{n} {kind}" for kind, n in truth.counts().items() if n)
    print(f"noisy dataset at {args.out}: {counts} in subset {truth.subset!r} "
          f"({len(truth.changes)} of {truth.num_boxes_before} boxes); truth in {Path(args.out) / TRUTH_FILENAME}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from otx_nld.data.formats import detect_format

    fmt = args.src_format or detect_format(args.src)
    dataset = _load(args)
    if args.json:
        print(json.dumps({"format": fmt, "labels": list(dataset.labels), "infos": dict(dataset.infos),
                          "unique_ann_ids": dataset.has_unique_ann_ids(), "subsets": dataset.counts()}, indent=2))
        return 0
    print(f"{args.src}: format {fmt}, {len(dataset)} items, {dataset.num_boxes} boxes, "
          f"{len(dataset.labels)} labels ({', '.join(dataset.labels)})")
    if not dataset.has_unique_ann_ids():
        print("note: annotation ids are not unique; `otx-nld data split` (or reindex) makes them unique")
    _print_counts(dataset)
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from otx_nld.analysis.gallery import render_gallery

    dataset = _load(args)
    if args.subset:
        dataset = dataset.subset(args.subset)
    out = render_gallery(dataset, args.output, items=args.items or None, ann_ids=args.ann_ids or None,
                         columns=args.columns)
    print(f"wrote {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from otx_nld.training.trainer import train

    result = train(args.recipe, args.train_data, args.output, val_data=args.val_data, overrides=args.set,
                   resume=args.resume)
    best = f", best val mAP@0.5 {result.best_map50:.3f} (epoch {result.best_epoch + 1})" \
        if result.best_map50 is not None else ""
    print(f"trained {result.epochs} epochs ({result.iterations} iterations){best}; run in {result.out_dir}")
    if result.datumaro_dir is not None:
        print(f"loss statistics: {result.stats_dir} (Parquet), {result.datumaro_dir} (Datumaro)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from otx_nld.data.dataset import Dataset
    from otx_nld.io import atomic_write_json
    from otx_nld.training.trainer import evaluate_model, model_from_checkpoint, select_subset

    if _is_exported_model(args.checkpoint):  # OpenVINO IR (or ONNX) from `otx-nld export`/`optimize`
        from otx_nld.deploy.inference import OpenVINOPredictor

        predictor = OpenVINOPredictor(args.checkpoint)
        labels = predictor.labels
    else:
        model, recipe, labels = model_from_checkpoint(args.checkpoint)
    dataset = select_subset(Dataset.import_from(args.data), args.subset, "evaluation")
    if dataset.labels != labels:
        raise OtxNldError(f"{args.data}: labels {list(dataset.labels)} differ from the model's {list(labels)}")
    if _is_exported_model(args.checkpoint):
        metrics = predictor.evaluate(dataset, progress=True)
    else:
        metrics = evaluate_model(model, recipe, dataset, progress=True)
    report = {"checkpoint": str(args.checkpoint), "data": str(args.data), "subset": args.subset,
              **metrics.as_dict()}
    if args.output:
        atomic_write_json(args.output, report)
    print(f"{args.subset}: {metrics.num_images} images, {metrics.num_boxes} boxes: "
          f"mAP {metrics.map:.4f}, mAP@0.5 {metrics.map50:.4f}, mAP@0.75 {metrics.map75:.4f}")
    for name, ap in metrics.per_class_ap50.items():
        print(f"  {name:<16} AP@0.5 {ap:.4f}  AP {metrics.per_class_ap[name]:.4f}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from otx_nld.demo import run_demo

    run_demo(args.output, images=args.images, seed=args.seed, flips=args.flip, recipe=args.recipe,
             overrides=args.set, overwrite=args.overwrite)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from otx_nld.analysis.report import DEFAULT_SCORE, analyze, format_summary

    result = analyze(args.stats, args.output, loss=args.loss, score=args.score or DEFAULT_SCORE,
                     alpha=args.alpha, top_k=args.top_k, truth=args.truth, data=args.data,
                     overwrite=args.overwrite, progress=True)
    print(format_summary(result))
    return 0


# -- deployment commands -------------------------------------------------------------------


def _is_exported_model(path: Path) -> bool:
    return Path(path).suffix.lower() in (".xml", ".onnx")


def cmd_export(args: argparse.Namespace) -> int:
    from otx_nld.deploy.export import export_checkpoint, parse_formats

    result = export_checkpoint(args.checkpoint, args.output, parse_formats(args.format), fp16=args.fp16,
                               overwrite=args.overwrite)
    meta = result.metadata
    height, width = meta.input_size
    files = ", ".join(f"{p.name} ({fmt}{', ' + meta.precision if fmt == 'openvino' else ''})"
                      for fmt, p in result.files.items())
    print(f"exported {args.checkpoint} to {result.out_dir}: {files}")
    print(f"input image [1,3,{height},{width}] (letterboxed RGB, (x - mean) / std); outputs boxes [K,4] "
          f"xyxy in input pixels, scores [K], labels [K] (K <= {meta.detections_per_image}, NMS inside)")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from otx_nld.deploy.quantize import quantize_ir

    result = quantize_ir(args.model, args.data, args.output, subset=args.subset, samples=args.samples,
                         max_accuracy_drop=args.max_accuracy_drop, val_subset=args.val_subset,
                         overwrite=args.overwrite, progress=True)
    control = f", accuracy control: max mAP@0.5 drop {args.max_accuracy_drop:g}" \
        if args.max_accuracy_drop is not None else ""
    print(f"INT8 model at {result.model_path}: {result.fake_quantize_nodes} FakeQuantize, "
          f"{result.calibration_images} calibration images, {result.ignored_nodes} postprocessing nodes kept "
          f"in float{control}")
    return 0


_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128))


def _draw(path: Path, prediction, labels, min_score: float, out: Path) -> None:
    from PIL import Image, ImageDraw

    with Image.open(path) as im:
        image = im.convert("RGB")
    draw = ImageDraw.Draw(image)
    for box, score, label in zip(prediction.boxes.tolist(), prediction.scores.tolist(),
                                 prediction.labels.tolist()):
        if score < min_score:
            continue
        color = _PALETTE[int(label) % len(_PALETTE)]
        draw.rectangle(box, outline=color, width=2)
        draw.text((box[0] + 2, box[1] + 1), f"{labels[int(label)]} {score:.2f}", fill=color)
    image.save(out)


def cmd_infer(args: argparse.Namespace) -> int:
    import contextlib

    from otx_nld.deploy.export import check_output_dir
    from otx_nld.deploy.inference import collect_images, load_predictor
    from otx_nld.io import atomic_output_dir, atomic_write_json

    images = collect_images(args.images)
    if args.vis:
        check_output_dir(args.vis, args.overwrite)
    asynchronous = args.mode == "async"
    options = {} if not _is_exported_model(args.model) and not Path(args.model).is_dir() else \
        {"device": args.device, "performance_hint": args.hint or ("THROUGHPUT" if asynchronous else "LATENCY")}
    predictor = load_predictor(args.model, **options)
    # Every image is decoded and predicted before anything is written.
    results = predictor.predict_many(images, progress=True, asynchronous=asynchronous, with_sizes=True)
    records = [{"image": str(path), "width": width, "height": height, "detections": [
        {"box": [round(v, 2) for v in box], "score": round(score, 5), "label": label,
         "label_name": predictor.labels[label]}
        for box, score, label in zip(pred.boxes.tolist(), pred.scores.tolist(), pred.labels.tolist())]}
        for path, (pred, (height, width)) in zip(images, results)]
    with (atomic_output_dir(args.vis, overwrite=args.overwrite) if args.vis else contextlib.nullcontext()) as vis:
        if vis is not None:
            names: set[str] = set()
            for path, (pred, _) in zip(images, results):
                name, n = f"{path.stem}.png", 1
                while name in names:
                    name, n = f"{path.stem}_{n}.png", n + 1
                names.add(name)
                _draw(path, pred, predictor.labels, args.vis_score, vis / name)
        atomic_write_json(args.output, {
            "model": str(args.model), "runtime": predictor.kind, "precision": predictor.metadata.precision,
            "labels": list(predictor.labels), "box_format": "xyxy, original image pixels", "images": records})
    boxes = sum(len(r["detections"]) for r in records)
    vis_note = f"; drawings (score >= {args.vis_score:g}) in {args.vis}" if args.vis else ""
    print(f"{len(records)} images, {boxes} detections ({predictor.name}) -> {args.output}{vis_note}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from otx_nld.deploy.benchmark import markdown_table, run_benchmark, write_benchmark

    results = run_benchmark(args.models, args.data, subset=args.subset, warmup=args.warmup, repeats=args.repeats,
                            throughput_images=args.throughput_images, threads=args.threads, progress=True)
    print(markdown_table(results), end="")
    if args.output:
        json_path, md_path = write_benchmark(results, args.output)
        print(f"wrote {json_path} and {md_path}")
    return 0


# -- parser --------------------------------------------------------------------------------


def _add_src(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", type=Path, help="dataset directory")
    p.add_argument("--from", dest="src_format", type=_format_name, default=None,
                   help="input format (default: detected)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip invalid annotations (each skip is reported) instead of failing")


def _add_out(p: argparse.ArgumentParser, default_format: str | None) -> None:
    p.add_argument("out", type=Path, help="output directory (created atomically)")
    if default_format is None:
        p.add_argument("--to", type=_format_name, required=True, help="output format")
    else:
        p.add_argument("--to", type=_format_name, default=default_format,
                       help=f"output format (default: {default_format})")
    p.add_argument("--no-media", action="store_true",
                   help="do not copy images; reference the source images by absolute path")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")


def build_parser() -> argparse.ArgumentParser:
    from otx_nld import __version__

    parser = argparse.ArgumentParser(prog="otx-nld", description="Find noisy labels in detection datasets from training "
                     "loss dynamics, and deploy the detector with OpenVINO.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the tutorial end to end on the built-in dice dataset: "
                               "generate, split, flip labels, train with tracking, find the flips")
    demo.add_argument("-o", "--output", type=Path, default=Path("outputs/demo"), help="output directory")
    demo.add_argument("--images", type=_positive_int, default=250, help="number of dice images (default 250)")
    demo.add_argument("--flip", type=_positive_int, default=4,
                      help="training labels to flip, also the top-k reviewed (default 4)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the dataset, split and noise")
    demo.add_argument("--recipe", default="atss_cpu", help="training recipe (default atss_cpu)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a recipe key, e.g. --set train.epochs=20 (repeatable)")
    demo.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    demo.set_defaults(func=cmd_demo)

    p = commands.add_parser("train", help="train ATSS from a recipe, tracking per-annotation losses")
    p.add_argument("recipe", help="recipe file or built-in name (atss_cpu, test_tiny, ...)")
    p.add_argument("--train-data", type=Path, required=True, help="dataset dir; its train subset is used")
    p.add_argument("--val-data", type=Path, default=None, help="dataset dir; its val subset is used")
    p.add_argument("-o", "--output", type=Path, required=True, help="run directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set optimizer.lr=0.02 (repeatable)")
    p.add_argument("--resume", type=Path, default=None, metavar="CKPT", help="continue from OUT/checkpoints/last.pt")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("eval", help="COCO mAP of a trained model on a dataset subset")
    p.add_argument("checkpoint", type=Path, help="checkpoint (.pt) or exported OpenVINO IR (.xml)")
    p.add_argument("--data", type=Path, required=True, help="dataset directory")
    p.add_argument("--subset", default="test", help="subset to evaluate (default test)")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the metrics as JSON here")
    p.set_defaults(func=cmd_eval)

    p = commands.add_parser(
        "analyze", help="rank noisy-label candidates from a run's loss dynamics; write an HTML report",
        description="Score every training box from its per-annotation loss dynamics, list the top-k "
                    "noisy-label candidates and write report.html (self-contained), candidates.csv/.json, "
                    "ema_mean.png, ema_label_mean.png, gallery.png and, with --truth, metrics.json. With "
                    "--truth it prints the tutorial's 'Accuracy = X% and Recall = Y%': the share of the "
                    "top-k candidates that are changed boxes, and the share of the truth's scoreable changes "
                    "(all but drops) found in the top k. Unlike the tutorial, which intersects item ids, a "
                    "candidate counts only when it is the changed box itself (item id, subset, ann id); "
                    "AP and AUROC per noise kind are printed too.")
    p.add_argument("stats", type=Path, metavar="STATS",
                   help="run directory, its stats/ directory, or a Datumaro noisy_label_detection export")
    p.add_argument("-o", "--output", type=Path, required=True, help="report directory (written atomically)")
    p.add_argument("--loss", default="cls", metavar="TYPE",
                   help="tracked value: cls, bbox, centerness, margin (class margin) or a sum like "
                        "cls+bbox (default cls)")
    p.add_argument("--score", default=None, metavar="NAME",
                   help="box score: ema (the tutorial's), mean, late_mean, label_norm, rank_avg, rank_max, final "
                        "(default: the recommended one, otx_nld.analysis.report.DEFAULT_SCORE; the "
                        "summary names the score used)")
    p.add_argument("--alpha", type=float, default=0.001,
                   help="EMA smoothing factor in (0, 1] (default 0.001)")
    p.add_argument("--top-k", type=_positive_int, default=None, metavar="K",
                   help="candidates to list (default 20; with --truth, its number of scoreable changes, "
                        "as the tutorial)")
    p.add_argument("--truth", type=Path, default=None, metavar="FILE",
                   help="noise_truth.json of the training data: measure the ranking against it")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="the training dataset directory, for the images (boxes are matched by item id "
                        "and ann id; default: the run's noisy_label_detection export, which references "
                        "the images by absolute path); without images the report has no crops")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.set_defaults(func=cmd_analyze)

    p = commands.add_parser("export", help="export a checkpoint to OpenVINO IR and/or ONNX (decoding and NMS "
                            "inside the graph)")
    p.add_argument("checkpoint", type=Path, help="checkpoint (.pt)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory (written atomically)")
    p.add_argument("--format", default="openvino", choices=("openvino", "onnx", "both"),
                   help="openvino (model.xml/.bin), onnx (model.onnx) or both (default openvino)")
    p.add_argument("--fp16", action="store_true", help="store the IR's weights as FP16 (default FP32)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("optimize", help="NNCF post-training INT8 quantization of an exported IR")
    p.add_argument("model", type=Path, help="OpenVINO IR (.xml) from `otx-nld export`")
    p.add_argument("--data", type=Path, required=True, help="dataset directory with the model's labels")
    p.add_argument("--subset", default="train", help="calibration subset (default train)")
    p.add_argument("--samples", type=_positive_int, default=300, help="calibration images (default 300)")
    p.add_argument("--max-accuracy-drop", type=_rate, default=None, metavar="X",
                   help="use accuracy control: keep the absolute mAP@0.5 drop on --val-subset <= X "
                        "(0.01 = one point)")
    p.add_argument("--val-subset", default="val", help="validation subset for accuracy control (default val)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.set_defaults(func=cmd_optimize)

    p = commands.add_parser("infer", help="detect objects in images with a checkpoint or an exported model")
    p.add_argument("model", type=Path, help="checkpoint (.pt) or OpenVINO IR (.xml)")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE_OR_DIR",
                   help="image files and/or directories of images (not recursive)")
    p.add_argument("-o", "--output", type=Path, required=True, help="predictions JSON (boxes in image pixels)")
    p.add_argument("--vis", type=Path, default=None, metavar="DIR", help="also draw the detections into DIR")
    p.add_argument("--vis-score", type=_rate, default=0.3, help="minimal score drawn with --vis (default 0.3)")
    p.add_argument("--mode", choices=("sync", "async"), default="async",
                   help="OpenVINO: one request at a time, or an AsyncInferQueue (default async)")
    p.add_argument("--hint", choices=("LATENCY", "THROUGHPUT"), default=None,
                   help="OpenVINO performance hint (default THROUGHPUT for async, LATENCY for sync)")
    p.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --vis directory")
    p.set_defaults(func=cmd_infer)

    p = commands.add_parser("benchmark", help="latency, throughput, size and mAP of checkpoints and IRs")
    p.add_argument("models", type=Path, nargs="+", metavar="MODEL", help="checkpoints (.pt) and/or IRs (.xml)")
    p.add_argument("--data", type=Path, required=True, help="dataset directory")
    p.add_argument("--subset", default="test", help="subset to run on (default test)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="write the results as JSON here and the table beside it (.md)")
    p.add_argument("--warmup", type=_non_negative_int, default=3, help="warm-up inferences (default 3)")
    p.add_argument("--repeats", type=_positive_int, default=1, help="latency passes over the subset (default 1)")
    p.add_argument("--throughput-images", type=_positive_int, default=64,
                   help="inferences in the throughput run, at least the subset (default 64)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads per model: torch intra-op threads and OpenVINO INFERENCE_NUM_THREADS "
                        "(default: all cores)")
    p.set_defaults(func=cmd_benchmark)

    data = commands.add_parser("data", help="dataset tools: synth-dice, convert, split, noise, info, gallery")
    data_cmds = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    p = data_cmds.add_parser("synth-dice", help="generate the built-in six-sided dice dataset (YOLO loose)")
    p.add_argument("out", type=Path)
    p.add_argument("--images", type=_positive_int, default=250, help="number of images (default 250)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    p.set_defaults(func=cmd_synth_dice)

    p = data_cmds.add_parser("convert", help="convert a dataset between formats")
    _add_src(p)
    _add_out(p, default_format=None)
    p.set_defaults(func=cmd_convert)

    p = data_cmds.add_parser("split", help="random split into subsets, then reindex annotation ids")
    _add_src(p)
    _add_out(p, default_format="datumaro")
    p.add_argument("--splits", required=True, help="NAME:RATIO,... summing to 1, e.g. train:0.5,val:0.2,test:0.3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-id", type=int, default=1, help="first annotation id (default 1)")
    p.set_defaults(func=cmd_split)

    p = data_cmds.add_parser("noise", help="inject flip/shift/drop/spawn label noise, write noise_truth.json")
    _add_src(p)
    _add_out(p, default_format="datumaro")
    p.add_argument("--subset", default="train", help="subset to corrupt (default train)")
    p.add_argument("--seed", type=int, default=0)
    for kind, what in (("flip", "change the class of"), ("shift", "move/resize (IoU in [0.4, 0.7)) "),
                       ("drop", "remove"), ("spawn", "add a spurious copy of")):
        group = p.add_mutually_exclusive_group()
        group.add_argument(f"--{kind}", type=_non_negative_int, default=None, metavar="N",
                           help=f"{what} N boxes")
        group.add_argument(f"--{kind}-rate", type=_rate, default=None, metavar="R",
                           help=f"{what} a fraction R of the subset's boxes")
    p.set_defaults(func=cmd_noise)

    p = data_cmds.add_parser("info", help="items and boxes per subset and label")
    _add_src(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = data_cmds.add_parser("gallery", help="draw items with their boxes into a PNG grid")
    _add_src(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="PNG file")
    p.add_argument("--subset", default=None, help="only items of this subset")
    p.add_argument("--items", nargs="+", default=None, metavar="ID", help="item ids to draw")
    p.add_argument("--ann-ids", nargs="+", type=int, default=None, metavar="ANN_ID",
                   help="draw only these boxes (and their items)")
    p.add_argument("--columns", type=_positive_int, default=4)
    p.set_defaults(func=cmd_gallery)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``otx-nld``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except OtxNldError as e:
        print(f"otx-nld: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("otx-nld: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
