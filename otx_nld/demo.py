"""The main job: the noisy-label-detection tutorial end to end on the built-in dice dataset.

Steps (each output under ``OUT/``):

1. ``d6-dice/``: generate the six-sided dice dataset (YOLO loose layout, like the tutorial's);
2. ``d6-dice-split/``: split train/val/test = 0.5/0.2/0.3 and give every box a unique id;
3. ``d6-dice-noisy/``: flip the labels of N training boxes, truth in ``noise_truth.json``;
4. ``noisy_boxes.png``: a gallery of the flipped boxes.
"""

from __future__ import annotations

from pathlib import Path

from otx_nld.data.dataset import Dataset
from otx_nld.data.noise import TRUTH_FILENAME, NoiseSpec, synthesize_noise
from otx_nld.data.synthetic_dice import generate_dice_dataset
from otx_nld.data.transforms import random_split, reindex_annotations
from otx_nld.io import atomic_output_dir

DEMO_SPLITS = (("train", 0.5), ("val", 0.2), ("test", 0.3))


def run_demo(out: str | Path, images: int = 250, seed: int = 0, flips: int = 4, overwrite: bool = False) -> Path:
    """Run the demo into ``out`` (created atomically) and print what a user needs to see."""
    from otx_nld.analysis.gallery import render_gallery

    out = Path(out)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        print(f"[1/4] generating {images} dice images")
        generate_dice_dataset(tmp / "d6-dice", num_images=images, seed=seed, progress=True)
        dataset = Dataset.import_from(tmp / "d6-dice", format="yolo")

        print("[2/4] splitting train:0.5, val:0.2, test:0.3 and reindexing annotations")
        dataset = reindex_annotations(random_split(dataset, DEMO_SPLITS, seed=seed))
        dataset.export(tmp / "d6-dice-split", format="datumaro")
        print(dataset.counts_table())

        print(f"[3/4] flipping the labels of {flips} training boxes")
        noisy, truth = synthesize_noise(dataset, NoiseSpec(flip=flips), subset="train", seed=seed)
        noisy.export(tmp / "d6-dice-noisy", format="datumaro")
        truth.save(tmp / "d6-dice-noisy" / TRUTH_FILENAME)
        for change in truth.changes:
            print(f"  {change.item_id} box {change.ann_id}: {change.original.label} -> {change.noisy.label}")

        print("[4/4] drawing the flipped boxes")
        if truth.changes:
            render_gallery(noisy, tmp / "noisy_boxes.png", items=[c.item_id for c in truth.changes],
                           ann_ids=[c.ann_id for c in truth.changes], title="synthesized noisy labels")
    print(f"done: {out}")
    return out
