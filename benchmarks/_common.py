"""Shared helpers for benchmark scripts: result files and a cached built-in dice dataset."""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch

from otx_nld.data.dataset import Dataset
from otx_nld.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def dice_split(cache: Path, images: int = 250, seed: int = 0) -> Dataset:
    """The built-in dice set split 0.5/0.2/0.3 and reindexed, generated once into ``cache``."""
    from otx_nld.data.synthetic_dice import generate_dice_dataset
    from otx_nld.data.transforms import random_split, reindex_annotations

    raw = cache / f"d6-dice-{images}-{seed}"
    if not raw.exists():
        generate_dice_dataset(raw, num_images=images, seed=seed)
    splits = (("train", 0.5), ("val", 0.2), ("test", 0.3))
    return reindex_annotations(random_split(Dataset.import_from(raw, "yolo"), splits, seed=seed))


def environment() -> dict[str, Any]:
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine()}


def write_results(name: str, results: dict[str, Any], table: str) -> Path:
    """``results/<name>.json`` and ``results/<name>.md``, written atomically."""
    atomic_write_json(RESULTS / f"{name}.json", {**results, "environment": environment()})
    atomic_write_text(RESULTS / f"{name}.md", table.rstrip() + "\n")
    return RESULTS / f"{name}.json"
