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
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks._common import dice_split, write_results
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


# (name, score, loss types, options): the candidates compared. "datumaro_ema" is the real
# Datumaro 1.11.1 analyzer (tutorial score), run in its own venv on the Datumaro export.
SCORE_CONFIGS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("ema_cls (tutorial)", "ema", "cls", {}),
    ("final_cls (final epoch)", "final", "cls", {}),
    ("mean_cls", "mean", "cls", {}),
    ("late_mean_cls", "late_mean", "cls", {}),
    ("label_norm_cls", "label_norm", "cls", {}),
    ("mean_bbox", "mean", "bbox", {}),
    ("mean_cls+bbox", "mean", "cls+bbox", {}),
    ("late_mean_cls+bbox", "late_mean", "cls+bbox", {}),
    ("label_norm_cls+bbox", "label_norm", "cls+bbox", {}),
    ("mean_cls+bbox+centerness", "mean", "cls+bbox+centerness", {}),
    ("rank_avg", "rank_avg", "cls", {}),
    ("mean_margin (AUM)", "mean", "margin", {}),
    ("late_mean_margin", "late_mean", "margin", {}),
    ("rank_avg_cls+margin", "rank_avg", "cls", {"types": ("cls", "margin")}),
    ("rank_max_cls+bbox", "rank_max", "cls+bbox", {}),
    ("rank_max_margin+bbox", "rank_max", "margin+bbox", {}),
]

_DATUMARO_SCRIPT = """
import json, sys
import datumaro as dm
stats = dm.Dataset.import_from(sys.argv[1], "datumaro")
analyzer = dm.LossDynamicsAnalyzer(stats, tracking_loss_type="cls")
print(json.dumps([[c.id, c.subset, c.ann_id, c.metric] for c in analyzer.get_top_k_cands(len(stats) * 100)]))
"""


def datumaro_scores(run: Path) -> dict[tuple[str, str, int], float]:
    """Every box's score from the real Datumaro 1.11.1 analyzer (EMA of cls, alpha 0.001)."""
    from tests.datumaro_env import run_datumaro

    rows = json.loads(run_datumaro(_DATUMARO_SCRIPT, run / "noisy_label_detection").stdout.strip().splitlines()[-1])
    return {(item_id, subset, int(ann_id)): float(metric) for item_id, subset, ann_id, metric in rows}


def analyze_run(run: Path, truth: NoiseTruth, with_datumaro: bool) -> dict[str, dict[str, Any]]:
    """Metrics of every score config on one run."""
    from otx_nld.analysis.loss_dynamics import LossDynamicsAnalyzer, LossStats, parse_loss_types
    from otx_nld.analysis.metrics import evaluate_scores

    stats = LossStats.load(run)
    found = {}
    positives = len(truth.changes) - truth.counts()["drop"]
    for name, score, loss, options in SCORE_CONFIGS:
        if not set(parse_loss_types(loss)) | set(options.get("types", ())) <= set(stats.losses):
            continue  # e.g. margin, in runs tracked before it existed
        analyzer = LossDynamicsAnalyzer(stats, tracking_loss_type=loss, score=score, score_options=options)
        found[name] = evaluate_scores(analyzer.scores(), truth, ks=[positives]).as_dict()
    if with_datumaro:
        found["datumaro_ema_cls (real Datumaro 1.11.1)"] = evaluate_scores(datumaro_scores(run), truth,
                                                                            ks=[positives]).as_dict()
    return found


def _summary(per_run: list[dict[str, Any]], protocol: str) -> dict[str, dict[str, float]]:
    """Mean over seeds of the headline numbers of every score."""
    table: dict[str, dict[str, float]] = {}
    for name in [n for n in per_run[0] if all(n in run for run in per_run)]:
        rows = [run[name] for run in per_run]
        k = str(rows[0]["overall"]["positives"])
        entry = {"precision_at_positives": statistics.mean(r["overall"]["precision_at"][k] for r in rows),
                 "ap": statistics.mean(r["overall"]["average_precision"] for r in rows),
                 "auroc": statistics.mean(r["overall"]["auroc"] for r in rows)}
        if protocol == "mixed":
            for kind in ("flip", "shift", "spawn"):
                entry[f"auroc_{kind}"] = statistics.mean(r["per_kind"][kind]["auroc"] for r in rows)
                entry[f"ap_{kind}"] = statistics.mean(r["per_kind"][kind]["average_precision"] for r in rows)
        table[name] = entry
    return table


def _markdown(summary: dict[str, dict[str, dict[str, float]]], seeds: dict[str, int], epochs: dict[str, str]) -> str:
    lines = ["Noisy-label detection on the built-in dice set (atss_cpu); mean over noise seeds.", ""]
    if "tutorial" in summary:
        lines += [f"### tutorial protocol: 4 flipped labels, top-4 ({seeds['tutorial']} seeds, "
                  f"{epochs['tutorial']})", "",
                  "| score | precision@4 (= recall@4) | AP | AUROC |", "|---|---|---|---|"]
        for name, e in summary["tutorial"].items():
            lines.append(f"| {name} | {e['precision_at_positives']:.3f} | {e['ap']:.3f} | {e['auroc']:.3f} |")
        lines.append("")
    if "mixed" in summary:
        lines += [f"### mixed protocol: flip, shift, spawn at 5% of training boxes each ({seeds['mixed']} seeds, "
                  f"{epochs['mixed']})", "",
                  "| score | precision@P | AP | AUROC flip | AUROC shift | AUROC spawn | AP flip | AP shift | AP spawn |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, e in summary["mixed"].items():
            lines.append(f"| {name} | {e['precision_at_positives']:.3f} | {e['ap']:.3f} | {e['auroc_flip']:.3f} | "
                         f"{e['auroc_shift']:.3f} | {e['auroc_spawn']:.3f} | {e['ap_flip']:.3f} | "
                         f"{e['ap_shift']:.3f} | {e['ap_spawn']:.3f} |")
    return "\n".join(lines)


def _seed_list(text: str) -> list[int]:
    """``"5"`` -> seeds 0..4; ``"0,2"`` -> seeds 0 and 2; ``"3,"`` -> seed 3 alone."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a comma list of seeds, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("no seeds given")
    return list(range(values[0])) if "," not in text else values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=_seed_list, default=_seed_list("5"),
                        help="number of noise seeds (0..N-1) or a comma list of seeds, e.g. 0,2")
    parser.add_argument("--protocols", default="tutorial,mixed")
    parser.add_argument("--phase", choices=["all", "train", "analyze"], default="all")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "otx-nld-nld-quality")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "otx-nld-bench")
    parser.add_argument("--set", action="append", default=[], help="recipe override for training")
    parser.add_argument("--no-datumaro", action="store_true", help="skip the real Datumaro analyzer")
    args = parser.parse_args()
    protocols = args.protocols.split(",")
    if args.phase in ("all", "train"):
        for seed in args.seeds:
            for protocol in protocols:
                print(f"== {protocol} seed {seed}")
                train_run(args.work, protocol, seed, args.cache, args.set)
    if args.phase in ("all", "analyze"):
        results: dict[str, Any] = {"protocols": {}, "overrides": args.set}
        summary, seeds, epochs = {}, {}, {}
        for protocol in protocols:
            per_run = []
            for seed in args.seeds:
                run = args.work / f"{protocol}-{seed}" / "run"
                if not (run / "noisy_label_detection" / "annotations" / "train.json").exists():
                    continue
                truth = NoiseTruth.load(args.work / f"{protocol}-{seed}" / "data" / TRUTH_FILENAME)
                print(f"analyzing {protocol} seed {seed}")
                per_run.append({"seed": seed, **analyze_run(run, truth, with_datumaro=not args.no_datumaro)})
            if per_run:
                seeds[protocol] = len(per_run)
                trained = sorted({yaml.safe_load((args.work / f"{protocol}-{r['seed']}" / "run" / "recipe.yaml")
                                                 .read_text())["train"]["epochs"] for r in per_run})
                epochs[protocol] = f"{'/'.join(map(str, trained))} epochs"
                scores_only = [{k: v for k, v in r.items() if k != "seed"} for r in per_run]
                summary[protocol] = _summary(scores_only, protocol)
                results["protocols"][protocol] = {"seeds": [r["seed"] for r in per_run], "runs": per_run,
                                                  "summary": summary[protocol]}
        table = _markdown(summary, seeds, epochs)
        write_results("nld_quality", results, table)
        print(table)


if __name__ == "__main__":
    main()
