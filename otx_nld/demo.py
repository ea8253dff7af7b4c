"""The main job: the noisy-label-detection tutorial end to end on the built-in dice dataset.

Steps (each output under ``OUT/``, each written atomically when its step completes):

1. ``d6-dice/``: generate the six-sided dice dataset (YOLO loose layout, like the tutorial's);
2. ``d6-dice-split/``: split train/val/test = 0.5/0.2/0.3 and give every box a unique id;
3. ``d6-dice-noisy/``: flip the labels of N training boxes, truth in ``noise_truth.json``,
   and ``noisy_boxes.png``, a gallery of them;
4. ``run/``: train ATSS (``atss_cpu``) on the noisy train subset, validating on val, with
   per-annotation loss tracking (``run/stats``, ``run/noisy_label_detection``);
5. ``run/test_metrics.json``: COCO mAP of the trained model on the test subset;
6. ``report/``: rank the suspect boxes from their loss dynamics (top N), measure against the
   truth, write the HTML report, and print the tutorial's accuracy and recall;
7. ``deploy/``: export the model to OpenVINO IR (``fp32/``), quantize it to INT8 with NNCF
   (``int8/``), and benchmark PyTorch vs OpenVINO FP32 vs INT8 on the test subset
   (``benchmark.json``/``.md``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from otx_nld.data.dataset import Dataset
from otx_nld.data.noise import TRUTH_FILENAME, NoiseSpec, synthesize_noise
from otx_nld.data.synthetic_dice import generate_dice_dataset
from otx_nld.data.transforms import random_split, reindex_annotations
from otx_nld.errors import OtxNldError

DEMO_SPLITS = (("train", 0.5), ("val", 0.2), ("test", 0.3))
STEPS = 7


def _step(n: int, text: str) -> None:
    print(f"[{n}/{STEPS}] {text}", flush=True)


def run_demo(out: str | Path, images: int = 250, seed: int = 0, flips: int = 4, recipe: str = "atss_cpu",
             overrides: tuple[str, ...] | list[str] = (), overwrite: bool = False) -> dict:
    """Run the demo into ``out``; returns the headline numbers (also printed).

    Args:
        out: output directory; must be empty or absent unless ``overwrite``.
        images: dice images to generate.
        seed: seed of the generator, the split and the noise (training uses the recipe's).
        flips: training labels to flip; also the number of candidates reviewed (top-k).
        recipe: training recipe (name or file).
        overrides: ``section.key=value`` recipe overrides.
    """
    from otx_nld.analysis.gallery import render_gallery
    from otx_nld.analysis.report import analyze, format_summary
    from otx_nld.deploy.benchmark import markdown_table, run_benchmark, write_benchmark
    from otx_nld.deploy.export import export_checkpoint
    from otx_nld.deploy.quantize import quantize_ir
    from otx_nld.io import atomic_write_json
    from otx_nld.recipe import load_recipe
    from otx_nld.training.trainer import Trainer, evaluate_model, model_from_checkpoint

    if flips < 1:
        raise OtxNldError("demo: --flip must be at least 1 (the demo looks for flipped labels)")
    resolved = load_recipe(recipe, overrides)  # fail on a bad recipe before any work
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise OtxNldError(f"{out}: output directory is not empty (use --overwrite to replace it)")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True, exist_ok=True)

    _step(1, f"generating {images} dice images -> {out / 'd6-dice'}")
    generate_dice_dataset(out / "d6-dice", num_images=images, seed=seed, progress=True)
    dataset = Dataset.import_from(out / "d6-dice", format="yolo")

    _step(2, "splitting train:0.5, val:0.2, test:0.3 and reindexing annotations")
    dataset = reindex_annotations(random_split(dataset, DEMO_SPLITS, seed=seed))
    dataset.export(out / "d6-dice-split", format="datumaro")
    print(dataset.counts_table())

    _step(3, f"flipping the labels of {flips} training boxes -> {out / 'd6-dice-noisy'}")
    noisy, truth = synthesize_noise(dataset, NoiseSpec(flip=flips), subset="train", seed=seed)
    noisy_dir = noisy.export(out / "d6-dice-noisy", format="datumaro")
    truth.save(noisy_dir / TRUTH_FILENAME)
    for change in truth.changes:
        print(f"  {change.item_id} box {change.ann_id}: {change.original.label} -> {change.noisy.label}")
    noisy = Dataset.import_from(noisy_dir, format="datumaro")  # images now under OUT, not the generator's
    render_gallery(noisy, out / "noisy_boxes.png", items=[c.item_id for c in truth.changes],
                   ann_ids=[c.ann_id for c in truth.changes], title="synthesized noisy labels")

    _step(4, f"training {resolved.name} with loss tracking -> {out / 'run'}")
    result = Trainer(resolved, noisy.subset("train"), out / "run", val_data=noisy.subset("val")).fit()

    _step(5, "evaluating on the test subset")
    model, _, _ = model_from_checkpoint(out / "run" / "checkpoints" / "best.pt")
    test = evaluate_model(model, resolved, noisy.subset("test"))
    atomic_write_json(out / "run" / "test_metrics.json", {"subset": "test", **test.as_dict()})
    print(f"  test mAP@0.5 {test.map50:.3f}, mAP@[.5:.95] {test.map:.3f} ({test.num_images} images)")

    _step(6, f"finding the noisy labels: top-{flips} candidates from the loss dynamics -> {out / 'report'}")
    analysis = analyze(out / "run", out / "report", top_k=flips, truth=truth)
    print(format_summary(analysis))

    _step(7, f"exporting to OpenVINO, quantizing to INT8, benchmarking -> {out / 'deploy'}")
    exported = export_checkpoint(out / "run" / "checkpoints" / "best.pt", out / "deploy" / "fp32")
    int8 = quantize_ir(exported.files["openvino"], noisy_dir, out / "deploy" / "int8", subset="train",
                       progress=True)
    bench = run_benchmark([out / "run" / "checkpoints" / "best.pt", exported.files["openvino"], int8.model_path],
                          noisy_dir, subset="test", progress=True)
    write_benchmark(bench, out / "deploy" / "benchmark.json")
    print(markdown_table(bench), end="")

    summary = {"test_map50": test.map50, "test_map": test.map, "best_val_map50": result.best_map50,
               "accuracy": analysis.accuracy, "recall": analysis.recall, "top_k": flips,
               "score": analysis.score, "loss": analysis.tracking_loss_type,
               "benchmark": str(out / "deploy" / "benchmark.json")}
    atomic_write_json(out / "summary.json", summary)
    print(f"done: {out} (open {out / 'report' / 'report.html'})")
    return summary
