"""Noisy-label-detection quality on the built-in dice set, over several noise seeds.

Protocols (noise on the train subset of the 250-image dice set split 0.5/0.2/0.3):

- ``tutorial``: 4 flipped labels, top-4 candidates (the tutorial reached 75% precision);
- ``mixed``: flip, shift and spawn at 5% of the training boxes each.

For every protocol and seed the script trains ``atss_cpu`` with loss tracking (skipped when
the run is already complete in ``--work``; resumed when it was interrupted), then scores every
box with each analyzer score and measures precision@k, recall@k, AP and AUROC per noise kind
against the truth manifest. Results: ``benchmarks/results/nld_quality.{json,md}``.

    .venv/bin/python -m benchmarks.nld_quality --seeds 5            # trains 10 runs: hours on 2 cores
    .venv/bin/python -m benchmarks.nld_quality --phase analyze      # re-score existing runs only
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks._common import dice_split
from otx_nld.data.dataset import Dataset
from otx_nld.data.noise import TRUTH_FILENAME, NoiseSpec, NoiseTruth, synthesize_noise

PROTOCOLS = {
    "tutorial": NoiseSpec(flip=4),
    "mixed": NoiseSpec(flip_rate=0.05, shift_rate=0.05, spawn_rate=0.05),
}


def prepare(work: Path, protocol: str, seed: int, cache: Path) -> Path:
    """The noisy dataset (Datumaro, with noise_truth.json) for one protocol and seed."""
    data = work / f"{protocol}-{seed}" / "data"
    if not (data / TRUTH_FILENAME).exists():
        noisy, truth = synthesize_noise(dice_split(cache), PROTOCOLS[protocol], subset="train", seed=seed)
        noisy.export(data, format="datumaro", overwrite=True)
        truth.save(data / TRUTH_FILENAME)
    return data


def train_run(work: Path, protocol: str, seed: int, cache: Path, overrides: list[str]) -> Path:
    """Train (or finish) the run of one protocol and seed; returns the run directory."""
    from otx_nld.training.trainer import train

    data = prepare(work, protocol, seed, cache)
    run = work / f"{protocol}-{seed}" / "run"
    if (run / "noisy_label_detection" / "annotations" / "train.json").exists():
        return run
    last = run / "checkpoints" / "last.pt"
    train("atss_cpu", train_data=data, val_data=data, output=run, overrides=overrides,
          resume=last if last.exists() else None)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--protocols", default="tutorial,mixed")
    parser.add_argument("--phase", choices=["all", "train", "analyze"], default="all")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "otx-nld-nld-quality")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "otx-nld-bench")
    parser.add_argument("--set", action="append", default=[], help="recipe override for training")
    args = parser.parse_args()
    protocols = args.protocols.split(",")
    if args.phase in ("all", "train"):
        for seed in range(args.seeds):
            for protocol in protocols:
                print(f"== {protocol} seed {seed}")
                train_run(args.work, protocol, seed, args.cache, args.set)


if __name__ == "__main__":
    main()
