"""Recipe-driven ATSS training with per-annotation loss tracking.

A run directory ``OUT`` holds::

    recipe.yaml               the resolved recipe (every key, defaults included)
    run.json                  labels, data sources, versions
    metrics.jsonl             one JSON line per epoch: losses, lr, validation mAP, timings
    curves.png                training loss and validation mAP per epoch
    checkpoints/last.pt       after every epoch (model, optimizer, RNG, stats position)
    checkpoints/best.pt       the best validation mAP@0.5 so far (last.pt without validation)
    stats/part-*.parquet      per-annotation losses, streamed (see tracking.py)
    noisy_label_detection/    the stats in the tutorial's Datumaro layout (at the end)

Runs are deterministic for a seed: every epoch re-seeds the shuffling and augmentation RNGs
from ``(seed, epoch)``, so ``--resume`` from ``last.pt`` continues exactly where the run
stopped, and the stats stream continues without duplicate or missing iterations.
"""

from __future__ import annotations

import io
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from otx_nld.data.dataset import Dataset
from otx_nld.data.loader import DetectionDataset, make_loader
from otx_nld.errors import DatasetError, OtxNldError
from otx_nld.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from otx_nld.recipe import Recipe, recipe_from_dict
from otx_nld.training.evaluate import DetectionMetrics, coco_map, predictions_from_tensors
from otx_nld.training.tracking import LossDynamicsTracker, export_datumaro

CHECKPOINT_FORMAT = "otx-nld-atss-checkpoint"


def build_model(recipe: Recipe, num_classes: int, load_backbone_weights: bool = True):
    """The ATSS model a recipe describes (random init unless ``model.weights`` is set)."""
    from otx_nld.model import ATSS
    from otx_nld.model.assigner import ATSSAssigner

    m = recipe.model
    return ATSS(num_classes, backbone=m.backbone, backbone_weights=m.weights if load_backbone_weights else None,
                fpn_channels=m.fpn_channels, num_convs=m.head_convs, norm_groups=m.norm_groups,
                assigner=ATSSAssigner(topk=m.topk_candidates), score_thresh=m.score_thresh,
                nms_thresh=m.nms_thresh, detections_per_img=m.detections_per_img,
                topk_candidates=m.pre_nms_top_n, track_annotations=recipe.tracking.enabled)


def lr_at(recipe: Recipe, iteration: int, total_iterations: int) -> float:
    """Learning rate at ``iteration``: linear warmup, then the schedule's policy."""
    base = recipe.optimizer.lr
    s = recipe.schedule
    if iteration < s.warmup_iters:
        return base * (s.warmup_ratio + (1 - s.warmup_ratio) * iteration / s.warmup_iters)
    if s.policy == "constant":
        return base
    progress = min(1.0, iteration / max(total_iterations, 1))
    if s.policy == "step":
        return base * s.gamma ** sum(progress >= m for m in s.milestones)
    span = max(total_iterations - s.warmup_iters, 1)
    t = min(1.0, (iteration - s.warmup_iters) / span)
    return base * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def build_optimizer(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = recipe.optimizer
    # No weight decay on norms and biases (standard for detection heads with GroupNorm).
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
    return torch.optim.AdamW(groups, lr=o.lr)


def select_subset(dataset: Dataset, name: str, role: str) -> Dataset:
    """The ``name`` subset; a dataset with one subset is used whole (as the tutorial does)."""
    if name in dataset.subsets:
        return dataset.subset(name)
    if len(dataset.subsets) == 1:
        return dataset
    raise OtxNldError(f"{role} data has no {name!r} subset (subsets: {', '.join(dataset.subsets)})")


@dataclass
class TrainResult:
    out_dir: Path
    epochs: int
    iterations: int
    best_epoch: int | None
    best_map50: float | None
    final_metrics: dict[str, Any] = field(default_factory=dict)
    stats_dir: Path | None = None
    datumaro_dir: Path | None = None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an otx-nld checkpoint safely (``weights_only=True``); bad files name the path."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "checkpoint does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for corrupt or foreign files
        raise DatasetError(path, f"cannot read checkpoint: {type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DatasetError(path, "not an otx-nld checkpoint")
    return ckpt


def model_from_checkpoint(path: str | Path):
    """``(model in eval mode, recipe, labels)`` from a checkpoint file."""
    ckpt = load_checkpoint(path)
    recipe = recipe_from_dict(ckpt["recipe"], source=str(path))
    model = build_model(recipe, len(ckpt["labels"]), load_backbone_weights=False)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, recipe, tuple(ckpt["labels"])


@torch.no_grad()
def predict_dataset(model, recipe: Recipe, dataset: Dataset, batch_size: int = 8, progress: bool = False) -> dict:
    """Predictions of ``model`` for every item, in the items' own pixel coordinates."""
    was_training = model.training
    model.eval()
    loader = make_loader(DetectionDataset(dataset, recipe.data), batch_size, shuffle=False)
    predictions = {}
    for images, _, metas in tqdm(loader, desc="predict", disable=not progress, leave=False):
        outputs = model(images)
        for out, meta in zip(outputs, metas):
            boxes = out["boxes"] / meta.scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, meta.orig_size[1])
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, meta.orig_size[0])
            predictions.update(predictions_from_tensors([(meta.subset, meta.item_id)],
                                                        [{**out, "boxes": boxes}]))
    model.train(was_training)
    return predictions


def evaluate_model(model, recipe: Recipe, dataset: Dataset, progress: bool = False) -> DetectionMetrics:
    return coco_map(dataset, predict_dataset(model, recipe, dataset, recipe.train.batch_size, progress))


class Trainer:
    """Trains one recipe on one dataset into ``out_dir`` (see the module docstring)."""

    def __init__(self, recipe: Recipe, train_data: Dataset, out_dir: str | Path, val_data: Dataset | None = None,
                 resume: str | Path | None = None, progress: bool = True):
        self.recipe = recipe
        self.train_data = train_data
        self.val_data = val_data
        self.out_dir = Path(out_dir)
        self.progress = progress
        if not train_data.num_boxes:
            raise OtxNldError("training data has no boxes")
        if not train_data.has_unique_ann_ids():
            raise OtxNldError("training data: annotation ids are not unique; run `otx-nld data split` "
                              "or Dataset.reindex_annotations() first")
        if val_data is not None and val_data.labels != train_data.labels:
            raise OtxNldError(f"validation labels {list(val_data.labels)} differ from training labels "
                              f"{list(train_data.labels)}")
        self.resume_state = load_checkpoint(resume) if resume else None
        if self.resume_state is not None:
            if tuple(self.resume_state["labels"]) != train_data.labels:
                raise OtxNldError(f"{resume}: checkpoint labels differ from the training data's")
        elif (self.out_dir / "checkpoints" / "last.pt").exists():
            raise OtxNldError(f"{self.out_dir}: holds an earlier run; pass --resume "
                              f"{self.out_dir / 'checkpoints' / 'last.pt'} or choose another output")

    # -- helpers --------------------------------------------------------------------------

    def _seed_epoch(self, epoch: int) -> None:
        seed = self.recipe.train.seed
        torch.manual_seed(seed * 100_003 + epoch)

    def _save_checkpoint(self, name: str, model, optimizer, epoch: int, iteration: int,
                         tracker: LossDynamicsTracker | None, best: tuple[int | None, float | None]) -> None:
        state = {
            "format": CHECKPOINT_FORMAT, "version": 1,
            "recipe": self.recipe.to_dict(), "labels": list(self.train_data.labels),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": epoch, "iteration": iteration,
            "stats_chunks": tracker.num_chunks if tracker is not None else 0,
            "best_epoch": best[0], "best_map50": best[1],
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.out_dir / "checkpoints" / name, buffer.getvalue())

    def _write_curves(self, history: list[dict[str, Any]]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [h["epoch"] + 1 for h in history]  # 1-based, as the progress lines print them
        fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 3.6))
        for key, style in (("loss", "-"), ("loss_cls", "--"), ("loss_bbox", "--"), ("loss_centerness", ":")):
            ax_loss.plot(epochs, [h[key] for h in history], style, label=key)
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("training loss")
        ax_loss.legend(fontsize=8)
        val = [(h["epoch"] + 1, h["val_map50"], h["val_map"]) for h in history if h.get("val_map50") is not None]
        if val:
            ax_map.plot([v[0] for v in val], [v[1] for v in val], "o-", label="mAP@0.5")
            ax_map.plot([v[0] for v in val], [v[2] for v in val], "s-", label="mAP@[.5:.95]")
            ax_map.set_ylim(0, 1)
            ax_map.legend(fontsize=8)
        else:
            ax_map.text(0.5, 0.5, "no validation data", ha="center", va="center")
        ax_map.set_xlabel("epoch")
        ax_map.set_ylabel("validation mAP")
        fig.suptitle(f"{self.recipe.name}: {self.out_dir.name}", fontsize=10)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        atomic_write_bytes(self.out_dir / "curves.png", buffer.getvalue())

    # -- the run --------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train for the recipe's epochs (or the rest of them when resuming).

        ``train.threads`` applies to this run only: torch's thread count is restored after it
        (a later step of the same process, e.g. the demo's benchmark, gets all cores again).
        """
        previous_threads = torch.get_num_threads()
        if self.recipe.train.threads:
            torch.set_num_threads(self.recipe.train.threads)
        try:
            return self._fit()
        finally:
            torch.set_num_threads(previous_threads)

    def _fit(self) -> TrainResult:
        r = self.recipe
        self.out_dir.mkdir(parents=True, exist_ok=True)
        r.save(self.out_dir / "recipe.yaml")
        atomic_write_json(self.out_dir / "run.json", {
            "labels": list(self.train_data.labels), "train_items": len(self.train_data),
            "train_boxes": self.train_data.num_boxes,
            "val_items": len(self.val_data) if self.val_data is not None else 0,
            "torch": torch.__version__, "python": platform.python_version()})

        torch.manual_seed(r.train.seed)
        model = build_model(r, len(self.train_data.labels))
        optimizer = build_optimizer(r, model)
        start_epoch, iteration = 0, 0
        best: tuple[int | None, float | None] = (None, None)
        history: list[dict[str, Any]] = []
        metrics_path = self.out_dir / "metrics.jsonl"
        if self.resume_state is not None:
            model.load_state_dict(self.resume_state["model"])
            optimizer.load_state_dict(self.resume_state["optimizer"])
            start_epoch = self.resume_state["epoch"] + 1
            iteration = self.resume_state["iteration"]
            best = (self.resume_state["best_epoch"], self.resume_state["best_map50"])
            if metrics_path.exists():  # keep the epochs the checkpoint has seen, drop later ones
                history = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
                history = [h for h in history if h["epoch"] < start_epoch]

        tracker = None
        if r.tracking.enabled:
            tracker = LossDynamicsTracker(
                self.out_dir / "stats", self.train_data, r.tracking.chunk_rows,
                resume_chunks=self.resume_state["stats_chunks"] if self.resume_state is not None else None)

        train_set = DetectionDataset(self.train_data, r.data, r.augment)
        iters_per_epoch = math.ceil(len(train_set) / r.train.batch_size)
        total = iters_per_epoch * r.train.epochs
        bar = tqdm(total=total, initial=iteration, desc="train", unit="it", disable=not self.progress,
                   dynamic_ncols=True)
        model.train()
        for epoch in range(start_epoch, r.train.epochs):
            self._seed_epoch(epoch)
            loader = make_loader(train_set, r.train.batch_size, shuffle=True, seed=r.train.seed * 100_003 + epoch,
                                 num_workers=r.data.num_workers)
            sums = {"loss": 0.0, "loss_cls": 0.0, "loss_bbox": 0.0, "loss_centerness": 0.0}
            steps, started = 0, time.perf_counter()
            for images, targets, _ in loader:
                lr = lr_at(r, iteration, total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                losses = model(images, targets)
                if not torch.isfinite(losses.loss):
                    raise OtxNldError(f"training diverged at iteration {iteration} (loss {losses.loss.item()}); "
                                      "lower optimizer.lr or raise schedule.warmup_iters")
                optimizer.zero_grad(set_to_none=True)
                losses.loss.backward()
                if r.optimizer.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), r.optimizer.grad_clip)
                optimizer.step()
                if tracker is not None and losses.per_annotation is not None:
                    pa = losses.per_annotation
                    tracker.record(iteration, epoch, pa.ann_ids.numpy(), pa.columns())
                for key, value in (("loss", losses.loss), ("loss_cls", losses.cls), ("loss_bbox", losses.bbox),
                                   ("loss_centerness", losses.centerness)):
                    sums[key] += value.detach().item()
                steps += 1
                iteration += 1
                bar.update(1)
                bar.set_postfix(epoch=f"{epoch + 1}/{r.train.epochs}", loss=f"{losses.loss.detach().item():.3f}",
                                lr=f"{lr:.2g}")
            record: dict[str, Any] = {"epoch": epoch, "iteration": iteration, "lr": lr,
                                      **{k: v / max(steps, 1) for k, v in sums.items()},
                                      "train_seconds": round(time.perf_counter() - started, 2),
                                      "images_per_second": round(len(train_set) / (time.perf_counter() - started), 2)}
            last_epoch = epoch == r.train.epochs - 1
            interval = r.train.eval_interval
            if self.val_data is not None and len(self.val_data) and (last_epoch or (interval and (epoch + 1) % interval == 0)):
                metrics = evaluate_model(model, r, self.val_data)
                record.update(val_map=metrics.map, val_map50=metrics.map50, val_map75=metrics.map75)
                if best[1] is None or metrics.map50 > best[1]:
                    best = (epoch, metrics.map50)
                    record["best"] = True
            history.append(record)
            atomic_write_text(metrics_path, "".join(json.dumps(h) + "\n" for h in history))
            if tracker is not None:
                tracker.flush()  # the checkpoint records the stats position: no duplicates on resume
            self._save_checkpoint("last.pt", model, optimizer, epoch, iteration, tracker, best)
            if record.get("best") or (self.val_data is None and last_epoch):
                self._save_checkpoint("best.pt", model, optimizer, epoch, iteration, tracker, best)
            self._write_curves(history)
            if self.progress:
                val = f", val mAP@0.5 {record['val_map50']:.3f}" if "val_map50" in record else ""
                bar.write(f"epoch {epoch + 1}/{r.train.epochs}: loss {record['loss']:.4f}{val}")
        bar.close()

        result = TrainResult(self.out_dir, r.train.epochs, iteration, best[0], best[1],
                             history[-1] if history else {})
        if tracker is not None:
            tracker.close()
            result.stats_dir = tracker.stats_dir
            if r.tracking.export_datumaro:
                result.datumaro_dir = export_datumaro(tracker.stats_dir, self.train_data,
                                                      self.out_dir / "noisy_label_detection")
        return result


def load_training_data(path: str | Path | Dataset, subset: str, role: str) -> Dataset:
    if isinstance(path, Dataset):
        return select_subset(path, subset, role)
    return select_subset(Dataset.import_from(path), subset, role)


def train(recipe: Recipe | str | Path, train_data: str | Path | Dataset, output: str | Path,
          val_data: str | Path | Dataset | None = None, overrides: list[str] | tuple[str, ...] = (),
          resume: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train ATSS from a recipe; the Python twin of ``otx-nld train``.

    Args:
        recipe: a :class:`Recipe`, a recipe file, or a built-in recipe name (``atss_cpu``).
        train_data: a dataset directory or :class:`Dataset`; its ``train`` subset is used (or
            the whole dataset when it has a single subset).
        output: the run directory.
        val_data: optional; its ``val`` subset (or its only subset) is used for validation.
        overrides: ``section.key=value`` strings, as ``--set``.
        resume: a checkpoint (``OUT/checkpoints/last.pt``) to continue from.
    """
    from otx_nld.recipe import load_recipe

    if isinstance(recipe, Recipe):
        recipe = recipe.override(overrides) if overrides else recipe
    else:
        recipe = load_recipe(recipe, overrides)
    train_set = load_training_data(train_data, "train", "training")
    val_set = load_training_data(val_data, "val", "validation") if val_data is not None else None
    return Trainer(recipe, train_set, output, val_set, resume=resume, progress=progress).fit()
