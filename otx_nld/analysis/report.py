"""Noisy-label review report: rank the boxes of a run, measure against the truth, write it all down.

:func:`analyze` is the whole job of ``otx-nld analyze`` (and of the demo): load the loss
statistics (a run directory, its ``stats/`` or a Datumaro export), score every box with a
:class:`~otx_nld.analysis.loss_dynamics.LossDynamicsAnalyzer`, take the top-k candidates,
optionally measure them against a :class:`~otx_nld.data.noise.NoiseTruth`, and write one
output directory atomically::

    report.html          self-contained review page (every image embedded as a data URI)
    candidates.csv       the top-k boxes: rank, ids, label, score (+ truth columns)
    candidates.json      the same, with the analysis settings
    ema_mean.png         EMA curves of the top candidates vs the dataset mean (tutorial plot)
    ema_label_mean.png   the same per label, vs each label's mean
    gallery.png          the candidates' images, suspect boxes highlighted (needs the images)
    metrics.json         evaluate_scores(...).as_dict() plus the tutorial's two numbers (with truth)

Images: the boxes are looked up, by ``(subset, item id)`` and ann id, in ``data`` (any dataset
directory) or by default in the run's ``noisy_label_detection/`` export, whose items reference
the training images by absolute path. When no image can be found the report is still written,
without crops and gallery, and says so.

The tutorial's two numbers: ``Accuracy`` is the share of the top-k candidates that are changed
boxes of the truth and ``Recall`` the share of the truth's scoreable changes (every kind but
``drop``, whose boxes are not in the training data) among the top k. The tutorial matches item
ids; here a candidate matches only the changed box itself, ``(item_id, subset, ann_id)``, which
is stricter (a clean box in an image with a changed one is not a hit).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from otx_nld.errors import ConfigError, DatasetError, OtxNldError

if TYPE_CHECKING:
    from otx_nld.analysis.loss_dynamics import LossDynamicsAnalyzer, LossStats, NoisyLabelCandidate
    from otx_nld.analysis.metrics import NoiseDetectionMetrics
    from otx_nld.data.dataset import Box, Dataset, Item
    from otx_nld.data.noise import NoiseChange, NoiseTruth

__all__ = ["DEFAULT_SCORE", "DEFAULT_TOP_K", "AnalysisResult", "ReportRow", "analyze", "format_summary"]

DEFAULT_SCORE = "late_mean"
"""Score used when none is given (a name of :data:`otx_nld.analysis.loss_dynamics.SCORES`).

Measured on the built-in dice set (benchmarks/nld_quality.py, atss_cpu, 120 epochs, cls loss):
over 5 noise seeds of the tutorial protocol (4 flips, top-4), ``late_mean`` found 80% of the
flips in the top 4 with AP 0.913 / AUROC 0.999, against 80% / 0.841 / 0.997 for the tutorial's
``ema``; in the mixed protocol (flip, shift, spawn at 5% each, 2 seeds) it reached AUROC 0.995
/ 0.958 / 0.998 on the three kinds. ``late_mean`` on ``margin`` ranks flips alone slightly
better (85%, AP 0.922) but misses shifts and spawns (AUROC 0.76 / 0.95), so the default stays
on ``cls``, which sees all three. The tutorial's ``ema`` stays available with ``score="ema"``."""
DEFAULT_LOSS = "cls"
DEFAULT_ALPHA = 0.001
DEFAULT_TOP_K = 20
"""Candidates listed without a truth; with one, the default is its number of scoreable changes."""
PLOT_CANDIDATES = 10
"""Top candidates drawn in the two EMA plots (more make the legends unreadable)."""
GALLERY_MAX_ITEMS = 48
"""Items drawn in gallery.png at most (the candidates' images, best first)."""
CROP_SIZE = (168, 128)
"""Bounding size of a crop thumbnail in the report, pixels."""
SPARK_SIZE = (2.0, 0.7)
"""Sparkline figure size in inches (rendered at 2x for sharp display)."""
SPARK_BINS = 80
"""Points of a sparkline curve at most (longer curves are averaged in iteration bins)."""
PRINT_ROWS = 20
"""Rows of the top-k table printed on the terminal (all are in the files)."""

OUTPUT_FILES = {
    "report": "report.html", "csv": "candidates.csv", "json": "candidates.json",
    "ema_mean": "ema_mean.png", "ema_label_mean": "ema_label_mean.png", "gallery": "gallery.png",
    "metrics": "metrics.json",
}
CSV_COLUMNS = ("rank", "item_id", "subset", "ann_id", "label_id", "label", "score", "num_obs")
TRUTH_COLUMNS = ("is_noisy", "noise_kind", "original_label")


@dataclass(frozen=True)
class ReportRow:
    """One top-k candidate as listed in the report.

    ``is_noisy``, ``noise_kind`` and ``original_label`` are ``None`` without a truth;
    with one, ``noise_kind`` is ``""`` for a clean box and ``original_label`` is the label
    before a ``flip`` (else ``""``).
    """

    rank: int
    item_id: str
    subset: str
    ann_id: int
    label_id: int
    label: str
    score: float
    num_obs: int
    is_noisy: bool | None = None
    noise_kind: str | None = None
    original_label: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.item_id, self.subset, self.ann_id)

    def as_dict(self, with_truth: bool) -> dict[str, Any]:
        row = {name: getattr(self, name) for name in CSV_COLUMNS}
        if with_truth:
            row.update({name: getattr(self, name) for name in TRUTH_COLUMNS})
        return row


@dataclass(frozen=True)
class AnalysisResult:
    """What :func:`analyze` found and wrote.

    Attributes:
        out_dir: the output directory.
        source: where the statistics were read from.
        tracking_loss_type, score, alpha, top_k: the analysis settings used.
        candidates: the top-k boxes, best first.
        metrics: the ranking of all boxes against the truth (``None`` without one).
        accuracy, recall: the tutorial's two numbers as fractions (``None`` without a truth):
            changed boxes among the top k / k, and / the truth's scoreable changes.
        num_boxes, num_observations, num_iterations: what the statistics hold.
        never_matched: training boxes without any loss observation (``None`` if unknown).
        crops: candidates shown with an image crop.
        paths: output name (``report``, ``csv``, ...) -> file written.
        notes: things the reader should know (missing images, unscored changes, ...).
        seconds: time taken.
    """

    out_dir: Path
    source: Path | None
    tracking_loss_type: str
    score: str
    alpha: float
    top_k: int
    candidates: tuple[ReportRow, ...]
    metrics: NoiseDetectionMetrics | None
    accuracy: float | None
    recall: float | None
    num_boxes: int
    num_observations: int
    num_iterations: int
    never_matched: int | None
    crops: int
    paths: Mapping[str, Path] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    seconds: float = 0.0


# -- inputs ---------------------------------------------------------------------------------


def _check_settings(loss: str, score: str, alpha: float, top_k: int | None) -> tuple[str, ...]:
    from otx_nld.analysis.loss_dynamics import SCORES, parse_loss_types

    loss_types = parse_loss_types(loss)
    if not isinstance(score, str) or score not in SCORES:
        raise ConfigError(f"score: unknown {score!r} (known: {', '.join(SCORES)})")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise ConfigError(f"alpha must be in (0, 1], got {alpha!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    return loss_types


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Fail early (before any work) the way atomic_output_dir would fail at the end."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OtxNldError(f"{out_dir}: output path exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise OtxNldError(f"{out_dir}: output directory is not empty (use --overwrite to replace it)")


def _export_dir(stats: LossStats) -> Path | None:
    """The run's Datumaro export beside (or being) the statistics' source, if any."""
    from otx_nld.analysis.loss_dynamics import DATUMARO_DIRNAME, STATS_DIRNAME

    src = stats.source
    if src is None:
        return None
    candidates = [src] if (src / "annotations").is_dir() else []
    if src.name == STATS_DIRNAME:
        candidates.append(src.parent / DATUMARO_DIRNAME)
    candidates.append(src / DATUMARO_DIRNAME)
    return next((c for c in candidates if (c / "annotations").is_dir()), None)


def _never_matched(stats: LossStats, export: Path | None) -> int | None:
    """Training boxes with no loss observation: the export's list, plus boxes with empty loss
    lists in a Datumaro source; ``None`` when neither is known."""
    from otx_nld.training.tracking import NEVER_MATCHED_FILENAME

    count = None
    if export is not None:
        try:
            count = len(json.loads((export / NEVER_MATCHED_FILENAME).read_text(encoding="utf-8"))["boxes"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if stats.source is not None and (stats.source / "annotations").is_dir():
        count = (count or 0) + len(stats.unobserved)
    return count


class _BoxFinder:
    """Finds a candidate's item and box (and image) in the dataset holding the images."""

    def __init__(self, dataset: Dataset | None):
        self.dataset = dataset
        self.by_key: dict[tuple[str, str], Item] = {}
        self.by_id: dict[str, list[Item]] = {}
        if dataset is not None:
            for item in dataset.items:
                self.by_key[item.key] = item
                self.by_id.setdefault(item.id, []).append(item)

    def find(self, item_id: str, subset: str, ann_id: int) -> tuple[Item, Box] | None:
        item = self.by_key.get((subset, item_id))
        if item is None:
            same_id = self.by_id.get(item_id, [])
            item = same_id[0] if len(same_id) == 1 else None  # e.g. a dataset without subsets
        if item is None:
            return None
        box = next((b for b in item.boxes if b.ann_id == ann_id), None)
        return None if box is None else (item, box)


# -- images ---------------------------------------------------------------------------------


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _render_crop(item: Item, box: Box, label: str, label_id: int) -> bytes | None:
    """A JPEG of the box with some context around it, the box drawn and labelled.

    Other boxes of the item inside the crop are drawn thin and grey. ``None`` when the image
    cannot be read.
    """
    from PIL import Image, ImageDraw, UnidentifiedImageError

    from otx_nld.analysis.gallery import _DIM, _draw_label, _font, _label_colour

    path = item.image_path
    if path is None or not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except (UnidentifiedImageError, OSError):
        return None
    # Box coordinates are in the item's recorded size; follow the file's real size.
    sx, sy = image.width / item.width, image.height / item.height
    x1, y1, x2, y2 = box.xyxy
    x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy
    margin = max(0.6 * max(x2 - x1, y2 - y1), 16.0)
    left, top = max(0, math.floor(x1 - margin)), max(0, math.floor(y1 - margin))
    right, bottom = min(image.width, math.ceil(x2 + margin)), min(image.height, math.ceil(y2 + margin))
    if right - left < 2 or bottom - top < 2:
        return None
    crop = image.crop((left, top, right, bottom))
    scale = min(CROP_SIZE[0] / crop.width, CROP_SIZE[1] / crop.height, 4.0)
    size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    crop = crop.resize(size, Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(crop)

    def place(bx1: float, by1: float, bx2: float, by2: float) -> tuple[float, float, float, float]:
        return ((bx1 - left) * scale, (by1 - top) * scale, (bx2 - left) * scale, (by2 - top) * scale)

    for other in item.boxes:
        if other.ann_id == box.ann_id:
            continue
        ox1, oy1, ox2, oy2 = other.xyxy
        r = place(ox1 * sx, oy1 * sy, ox2 * sx, oy2 * sy)
        if r[2] > 0 and r[3] > 0 and r[0] < size[0] and r[1] < size[1]:
            draw.rectangle(r, outline=_DIM, width=1)
    rect = place(x1, y1, x2, y2)
    colour = _label_colour(label_id)
    # A dark halo keeps the box visible on backgrounds of its own colour.
    draw.rectangle((rect[0] - 1, rect[1] - 1, rect[2] + 1, rect[3] + 1), outline=(20, 20, 20), width=4)
    draw.rectangle(rect, outline=colour, width=2)
    _draw_label(draw, (rect[0], rect[1]), label, colour, _font(12), (0, 0, size[0], size[1]))
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def _wrap_titles(fig: Any) -> None:
    """Break the analyzer's long panel titles in two lines so side-by-side panels do not overlap."""
    for ax in fig.axes:
        title = ax.get_title()
        if " with the average" in title:
            ax.set_title(title.replace(" with the average", "\nwith the average"), fontsize=10)


def _figure_png(fig: Any, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _binned(xs: np.ndarray, ys: np.ndarray, bins: int = SPARK_BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(xs, ys)`` averaged within ``bins`` equal iteration ranges when there are more points.

    The label mean curve averages different boxes at each iteration and is jagged; a sparkline
    only needs its trend.
    """
    if xs.size <= bins:
        return xs, ys
    edges = np.linspace(xs[0], xs[-1], bins + 1)
    which = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, bins - 1)
    n = np.bincount(which, minlength=bins)
    keep = n > 0
    return ((np.bincount(which, xs, bins)[keep] / n[keep]), (np.bincount(which, ys, bins)[keep] / n[keep]))


class _Sparklines:
    """Small PNGs: a box's EMA curve (solid) against its label's mean EMA curve (dashed)."""

    def __init__(self, analyzer: LossDynamicsAnalyzer):
        self.analyzer = analyzer
        self.means: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def render(self, cand: NoisyLabelCandidate, xs: np.ndarray, ys: np.ndarray) -> bytes:
        from matplotlib.figure import Figure

        from otx_nld.analysis.gallery import _label_colour

        if cand.label_id not in self.means:
            self.means[cand.label_id] = self.analyzer.mean_ema_curve(cand.label_id)
        mx, my = _binned(*self.means[cand.label_id])
        xs, ys = _binned(xs, ys)
        fig = Figure(figsize=SPARK_SIZE)
        ax = fig.add_axes((0.01, 0.04, 0.98, 0.92))
        ax.plot(mx, my, color="#777777", linestyle="--", linewidth=1.0)
        ax.plot(xs, ys, color=tuple(c / 255 for c in _label_colour(cand.label_id)), linewidth=1.6)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("#dddddd")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=200)
        return buf.getvalue()


# -- output ---------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _truth_text(row: ReportRow) -> str:
    if row.is_noisy is None:
        return ""
    if not row.is_noisy:
        return "clean"
    if row.noise_kind == "flip" and row.original_label:
        return f"flip (was {row.original_label})"
    return row.noise_kind or "noisy"


def _csv_text(rows: Sequence[ReportRow], with_truth: bool) -> str:
    buf = io.StringIO()
    columns = CSV_COLUMNS + (TRUTH_COLUMNS if with_truth else ())
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        d = row.as_dict(with_truth)
        d["score"] = repr(row.score)
        if with_truth:
            d["is_noisy"] = int(bool(row.is_noisy))
        writer.writerow(d)
    return buf.getvalue()


_CSS = """
:root { --fg:#1d2330; --muted:#5b6474; --line:#e2e6ee; --bg:#f6f7fa; --accent:#2f5fd0;
        --bad:#c62828; --badbg:#fdecea; --ok:#2e7d32; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1240px; margin:0 auto; padding:24px 28px 48px; }
h1 { font-size:24px; margin:0 0 4px; }
h2 { font-size:18px; margin:32px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
.sub { color:var(--muted); margin:0 0 18px; word-break:break-all; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 18px; }
.facts { display:grid; grid-template-columns:repeat(auto-fill, minmax(170px, 1fr)); gap:10px 18px; }
.facts div { display:flex; flex-direction:column; }
.facts .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.facts .v { font-size:16px; font-weight:600; word-break:break-all; }
.notes { margin:12px 0 0; padding-left:20px; color:#7a4b00; }
.headline { font-size:20px; font-weight:600; margin:0 0 10px; }
.headline small { font-size:13px; font-weight:400; color:var(--muted); }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:middle; }
th { background:#eef1f7; font-size:12px; text-transform:uppercase; letter-spacing:.03em; color:#3a4252; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tbody tr:nth-child(even) { background:#fafbfd; }
tr.noisy td { background:var(--badbg); }
tr.noisy td:first-child { box-shadow:inset 4px 0 0 var(--bad); }
.id { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:13px;
      word-break:break-all; }
.tag { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; }
.tag.bad { background:var(--bad); color:#fff; }
.tag.ok { background:#e6f2e7; color:var(--ok); }
th.cropcol { width:190px; } th.sparkcol { width:220px; }
.crop { display:block; border-radius:4px; background:#222; margin:0 auto; }
.spark { display:block; width:200px; height:70px; margin:0 auto; }
.nocrop { color:var(--muted); font-size:12px; }
.legend { color:var(--muted); font-size:12px; margin:6px 0 8px; }
.legend .solid, .legend .dash { display:inline-block; width:22px; vertical-align:middle;
                                 margin:0 4px 0 10px; }
.legend .solid { border-top:2px solid #1d2330; margin-left:0; }
.legend .dash { border-top:2px dashed #777; }
figure { margin:0 0 18px; background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px; }
figure img { max-width:100%; height:auto; display:block; margin:0 auto; }
figure .grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(360px, 1fr)); gap:12px;
               align-items:start; }
figcaption { color:var(--muted); font-size:13px; margin-top:6px; }
footer { margin-top:32px; color:var(--muted); font-size:12px; }
"""


def _html_report(*, title: str, facts: Sequence[tuple[str, str]], notes: Sequence[str],
                 rows: Sequence[ReportRow], crops: Sequence[bytes | None], sparks: Sequence[bytes],
                 metrics: NoiseDetectionMetrics | None, truth_summary: dict[str, Any] | None,
                 top_k: int, plots: Sequence[tuple[str, Sequence[bytes]]], files: Sequence[str]) -> str:
    e = html.escape
    out: list[str] = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body><main>",
        "<h1>Noisy label candidates</h1>",
        f'<p class="sub">{e(title)}</p>',
        '<section class="card"><div class="facts">',
    ]
    for key, value in facts:
        out.append(f'<div><span class="k">{e(key)}</span><span class="v">{e(value)}</span></div>')
    out.append("</div>")
    if notes:
        out.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    out.append("</section>")

    if metrics is not None and truth_summary is not None:
        out.append("<h2>Against the noise truth</h2>")
        out.append(f'<p class="headline">Accuracy = {_pct(truth_summary["accuracy"])} and '
                   f'Recall = {_pct(truth_summary["recall"])} '
                   f'<small>({truth_summary["hits"]} of the top {top_k} candidates are changed boxes; '
                   f'{truth_summary["scoreable_changes"]} scoreable changes in the truth; matched per box '
                   f'(item id, subset, ann id), not per item as in the tutorial)</small></p>')
        out.append(f'<table><thead><tr><th>noise kind</th><th class="num">changes</th>'
                   f'<th class="num">scored</th><th class="num">precision@{top_k}</th>'
                   f'<th class="num">recall@{top_k}</th><th class="num">R-precision</th>'
                   f'<th class="num">AP</th><th class="num">AUROC</th></tr></thead><tbody>')
        ranked = [("all kinds", metrics.overall, sum(metrics.changes.values())),
                  *((kind, m, metrics.changes.get(kind, 0)) for kind, m in metrics.per_kind.items())]
        k = top_k
        for name, m, changes in ranked:
            out.append(f"<tr><td>{e(name)}</td><td class='num'>{changes}</td>"
                       f"<td class='num'>{m.positives}</td>"
                       f"<td class='num'>{_pct(m.precision_at.get(k))}</td>"
                       f"<td class='num'>{_pct(m.recall_at.get(k))}</td>"
                       f"<td class='num'>{_pct(m.r_precision)}</td>"
                       f"<td class='num'>{_fmt(m.average_precision)}</td>"
                       f"<td class='num'>{_fmt(m.auroc)}</td></tr>")
        out.append("</tbody></table>")
        extra = []
        for kind, n in metrics.not_scoreable.items():
            if n:
                extra.append(f"{n} {kind} change(s) not scoreable: the box was removed from the training "
                             f"data, so it has no loss (not counted in recall).")
        for kind, n in metrics.unscored.items():
            if n:
                extra.append(f"{n} {kind} change(s) unscored: the box has no loss statistics "
                             f"(never matched an anchor, or not in these statistics).")
        extra.append(f"Per-kind rows rank that kind's boxes against the {metrics.overall.negatives} clean "
                     f"scored boxes; {metrics.num_scored} boxes scored in all.")
        out.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in extra) + "</ul>")

    with_truth = bool(rows) and rows[0].is_noisy is not None
    out.append(f"<h2>Top {len(rows)} candidates</h2>")
    out.append('<p class="legend"><span class="solid"></span>the box\'s EMA loss (in its label\'s colour)'
               '<span class="dash"></span>mean EMA loss of its label, over the training iterations. '
               'Higher score = more likely mislabelled.</p>')
    out.append("<table><thead><tr><th class='num'>#</th><th class='cropcol'>box</th>"
               "<th class='sparkcol'>EMA loss</th><th>item</th>"
               "<th>subset</th><th class='num'>ann id</th><th>label</th><th class='num'>score</th>"
               "<th class='num'>obs</th>" + ("<th>truth</th>" if with_truth else "") + "</tr></thead><tbody>")
    for row, crop, spark in zip(rows, crops, sparks):
        cls = ' class="noisy"' if row.is_noisy else ""
        crop_html = (f'<img class="crop" alt="crop of box {row.ann_id}" '
                     f'src="{_data_uri(crop, "image/jpeg")}">'
                     if crop is not None else '<span class="nocrop">no image</span>')
        truth_html = ""
        if with_truth:
            text = _truth_text(row)
            truth_html = f'<td><span class="tag {"bad" if row.is_noisy else "ok"}">{e(text)}</span></td>'
        out.append(f"<tr{cls}><td class='num'>{row.rank}</td><td>{crop_html}</td>"
                   f'<td><img class="spark" alt="EMA curve" src="{_data_uri(spark, "image/png")}"></td>'
                   f'<td class="id">{e(row.item_id)}</td><td>{e(row.subset)}</td>'
                   f"<td class='num'>{row.ann_id}</td><td>{e(row.label)}</td>"
                   f"<td class='num'>{row.score:#.4g}</td><td class='num'>{row.num_obs}</td>"
                   f"{truth_html}</tr>")
    out.append("</tbody></table>")

    if plots:
        out.append("<h2>EMA loss dynamics</h2>")
        for caption, pngs in plots:
            images = "".join(f'<img alt="{e(caption)}" src="{_data_uri(png, "image/png")}">' for png in pngs)
            grid = '<div class="grid">' + images + "</div>" if len(pngs) > 1 else images
            out.append(f"<figure>{grid}<figcaption>{e(caption)}</figcaption></figure>")
    out.append(f"<footer>Written by otx-nld analyze on "
               f"{e(datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}. "
               f"Files beside this report: {e(', '.join(files))}.</footer>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


# -- the job --------------------------------------------------------------------------------


def _note(progress: bool, message: str) -> None:
    if progress:
        print(f"analyze: {message}", file=sys.stderr, flush=True)


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _candidate_rows(analyzer: LossDynamicsAnalyzer, top_k: int, truth: NoiseTruth | None,
                    scoreable: Mapping[tuple[str, str, int], NoiseChange]) -> list[ReportRow]:
    table = analyzer.scores()
    rows = []
    for i in range(min(top_k, len(table))):
        key = (table.item_id[i], table.subset[i], int(table.ann_id[i]))
        truth_fields: dict[str, Any] = {}
        if truth is not None:
            change = scoreable.get(key)
            flipped = change is not None and change.kind == "flip" and change.original is not None
            truth_fields = {"is_noisy": change is not None, "noise_kind": change.kind if change else "",
                            "original_label": change.original.label if flipped else ""}
        rows.append(ReportRow(i + 1, key[0], key[1], key[2], int(table.label_id[i]), str(table.label[i]),
                              float(table.score[i]), int(table.num_obs[i]), **truth_fields))
    return rows


_Figures = list[tuple[str, list[bytes]]]
"""Figures of the page: ``(caption, PNGs shown side by side)``."""


def _ema_plots(analyzer: LossDynamicsAnalyzer,
               plotted: Sequence[NoisyLabelCandidate]) -> tuple[dict[str, bytes], _Figures]:
    """The two tutorial plots as PNG files, and the figures the page shows (caption, PNGs)."""
    if not plotted:
        return {}, []
    files = {"ema_mean": _figure_png(analyzer.plot_ema_loss_dynamics(plotted, mode="mean", figsize=(8, 4.5)))}
    fig = analyzer.plot_ema_loss_dynamics(plotted, mode="label_mean", figsize=(5, 3.8))
    _wrap_titles(fig)
    files["ema_label_mean"] = _figure_png(fig)
    # The page shows one panel per label in a grid: the file's single row of panels would
    # shrink to unreadable on a page.
    by_label: dict[int, list[NoisyLabelCandidate]] = {}
    for cand in plotted:
        by_label.setdefault(cand.label_id, []).append(cand)
    panels = []
    for label_id in sorted(by_label):
        fig = analyzer.plot_ema_loss_dynamics(by_label[label_id], mode="label_mean", figsize=(5, 3.8))
        _wrap_titles(fig)
        panels.append(_figure_png(fig, dpi=80))
    n = len(plotted)
    return files, [(f"EMA loss of the top {n} candidates vs the dataset mean (ema_mean.png)",
                    [files["ema_mean"]]),
                   (f"The top {n} candidates vs the mean of their label (ema_label_mean.png)", panels)]


def analyze(stats_path: str | Path, out_dir: str | Path, loss: str = DEFAULT_LOSS,
            score: str = DEFAULT_SCORE, alpha: float = DEFAULT_ALPHA, top_k: int | None = None,
            truth: str | Path | NoiseTruth | None = None, data: str | Path | None = None,
            overwrite: bool = False, progress: bool = False) -> AnalysisResult:
    """Rank noisy-label candidates from loss statistics and write a review report.

    Args:
        stats_path: a run directory, its ``stats/`` Parquet directory or a Datumaro export
            (anything :meth:`LossStats.load` reads).
        out_dir: output directory, written atomically (see the module docstring for its files).
        loss: tracked loss type, ``cls``, ``bbox``, ``centerness`` or a ``+`` combination.
        score: a name of :data:`otx_nld.analysis.loss_dynamics.SCORES`.
        alpha: EMA smoothing factor in (0, 1].
        top_k: candidates to list; default :data:`DEFAULT_TOP_K`, or with a truth the number of
            its scoreable changes (the tutorial's choice: k = number of injected errors).
        truth: a ``noise_truth.json`` (or a loaded :class:`NoiseTruth`) to measure against.
        data: a dataset directory holding the images (any format ``Dataset.import_from``
            reads); default: the run's ``noisy_label_detection/`` export.
        overwrite: replace a non-empty ``out_dir``.
        progress: print what is being done to stderr.

    Raises:
        ConfigError: unknown loss type or score, bad alpha or top_k.
        DatasetError: missing or invalid statistics, truth or data.
        OtxNldError: ``out_dir`` exists and is not empty (without ``overwrite``).

    Every input is read and checked before anything is written: on error nothing is created.
    """
    from otx_nld.analysis.loss_dynamics import LossDynamicsAnalyzer, LossStats
    from otx_nld.analysis.metrics import DEFAULT_KS, NOT_SCOREABLE_KINDS, evaluate_scores
    from otx_nld.data.dataset import Dataset
    from otx_nld.data.noise import NoiseTruth
    from otx_nld.io import atomic_output_dir, atomic_write_bytes, atomic_write_json, atomic_write_text

    start = time.perf_counter()
    out_dir = Path(out_dir)
    _check_settings(loss, score, alpha, top_k)
    _check_out_dir(out_dir, overwrite)
    if truth is not None and not isinstance(truth, NoiseTruth):
        truth = NoiseTruth.load(truth)
    if data is not None:
        data = Path(data)
        if not data.exists():
            raise DatasetError(data, "data directory does not exist")
    _note(progress, f"loading statistics from {stats_path}")
    stats = LossStats.load(stats_path)
    analyzer = LossDynamicsAnalyzer(stats, loss, alpha=alpha, score=score)
    image_data = Dataset.import_from(data) if data is not None else None

    notes: list[str] = []
    export = _export_dir(stats)
    if image_data is None and export is not None:
        try:
            image_data = Dataset.import_from(export, "datumaro")
        except OtxNldError as err:
            notes.append(f"could not read the run's export for the images ({err})")
    never_matched = _never_matched(stats, export)

    # Candidates, and how they fare against the truth.
    scoreable: dict[tuple[str, str, int], NoiseChange] = {}
    if truth is not None:
        scoreable = {(c.item_id, c.subset, c.ann_id): c for c in truth.changes
                     if c.kind not in NOT_SCOREABLE_KINDS}
    if top_k is None:
        top_k = len(scoreable) or DEFAULT_TOP_K
    rows = _candidate_rows(analyzer, top_k, truth, scoreable)
    cands = analyzer.get_top_k_cands(top_k)
    metrics = truth_summary = None
    accuracy = recall = None
    if truth is not None:
        table = analyzer.scores()
        scored_keys = table.by_key()
        scored_changes = sum(1 for key in scoreable if key in scored_keys)
        metrics = evaluate_scores(table, truth, ks=sorted({top_k, *DEFAULT_KS, scored_changes} - {0}))
        hits = sum(1 for r in rows if r.is_noisy)
        accuracy = hits / len(rows)
        recall = _nan_to_none(hits / len(scoreable) if scoreable else math.nan)
        truth_summary = {"accuracy": accuracy, "recall": recall, "hits": hits, "top_k": top_k,
                         "candidates": len(rows), "scoreable_changes": len(scoreable),
                         "matching": "per box: (item_id, subset, ann_id)"}

    # Pictures: crops, sparklines, the two EMA plots.
    _note(progress, f"rendering {len(rows)} crops and curves")
    finder = _BoxFinder(image_data)
    found = [finder.find(*r.key) for r in rows]
    crops = [_render_crop(hit[0], hit[1], r.label, r.label_id) if hit else None
             for r, hit in zip(rows, found)]
    n_crops = sum(c is not None for c in crops)
    if n_crops == 0:
        where = (f"in {data}" if data is not None else f"via {export}" if export is not None
                 else "(no noisy_label_detection/ export beside the statistics)")
        notes.append(f"candidate images not found {where}: no crops and no gallery "
                     "(--data DIR names the dataset holding the images)")
    elif n_crops < len(rows):
        notes.append(f"{len(rows) - n_crops} of {len(rows)} candidates have no crop (image or box not found)")
    sparkline = _Sparklines(analyzer)
    curves = analyzer.ema_curves(cands)
    sparks = [sparkline.render(cand, curves.iterations[~np.isnan(v)], v[~np.isnan(v)])
              for cand, v in zip(cands, curves.values)]
    plot_files, plots = _ema_plots(analyzer, cands[:PLOT_CANDIDATES])

    # The gallery: the candidates' items whose image exists, best first.
    gallery_items: list[tuple[str, str]] = []
    gallery_anns: list[int] = []
    for hit, crop in zip(found, crops):
        if hit is None or crop is None:
            continue
        if hit[0].key not in gallery_items and len(gallery_items) < GALLERY_MAX_ITEMS:
            gallery_items.append(hit[0].key)
        if hit[0].key in gallery_items:
            gallery_anns.append(hit[1].ann_id)

    with_truth = truth is not None
    settings = {"source": str(stats.source) if stats.source else str(stats_path),
                "tracking_loss_type": analyzer.tracking_loss_type, "score": score, "alpha": float(alpha),
                "top_k": top_k}
    counts = {"boxes": stats.num_boxes, "observations": stats.num_rows,
              "iterations": int(np.unique(stats.iteration).size), "never_matched": never_matched}
    facts = [("loss", analyzer.tracking_loss_type), ("score", score), ("alpha", f"{alpha:g}"),
             ("top k", str(top_k)), ("boxes scored", f"{counts['boxes']:,}"),
             ("observations", f"{counts['observations']:,}"),
             ("iterations", f"{counts['iterations']:,} "
                            f"({int(stats.iteration.min()):,}–{int(stats.iteration.max()):,})"),
             ("never matched", "unknown" if never_matched is None else f"{never_matched:,}"),
             ("labels", str(len(stats.labels)))]
    if truth is not None:
        changed = ", ".join(f"{n} {k}" for k, n in truth.counts().items() if n)
        facts.append(("truth changes", changed or "none"))

    _note(progress, f"writing {out_dir}")
    written: dict[str, Path] = {}
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        def put(name: str) -> Path:
            written[name] = out_dir / OUTPUT_FILES[name]
            return tmp / OUTPUT_FILES[name]

        if gallery_items:
            from otx_nld.analysis.gallery import render_gallery

            assert image_data is not None
            wanted = set(gallery_items)
            shown = image_data.with_items(i for i in image_data.items if i.key in wanted)
            render_gallery(shown, put("gallery"), items=gallery_items, ann_ids=gallery_anns, columns=4,
                           thumb_size=256, max_items=GALLERY_MAX_ITEMS,
                           title=f"Top {len(rows)} noisy-label candidates "
                                 f"({score} on {analyzer.tracking_loss_type})")
        for name, png in plot_files.items():
            atomic_write_bytes(put(name), png)
        atomic_write_text(put("csv"), _csv_text(rows, with_truth))
        atomic_write_json(put("json"), {**settings, "counts": counts,
                                        **({"truth": truth_summary} if truth_summary else {}),
                                        "candidates": [r.as_dict(with_truth) for r in rows]})
        if metrics is not None:
            atomic_write_json(put("metrics"), {**settings, "tutorial": truth_summary, **metrics.as_dict()})
        files = sorted(p.name for p in written.values())
        atomic_write_text(put("report"), _html_report(
            title=f"Source: {settings['source']}", facts=facts, notes=notes, rows=rows, crops=crops,
            sparks=sparks, metrics=metrics, truth_summary=truth_summary, top_k=top_k, plots=plots,
            files=files))
    return AnalysisResult(
        out_dir=out_dir, source=stats.source, tracking_loss_type=analyzer.tracking_loss_type, score=score,
        alpha=float(alpha), top_k=top_k, candidates=tuple(rows), metrics=metrics, accuracy=accuracy,
        recall=recall, num_boxes=counts["boxes"], num_observations=counts["observations"],
        num_iterations=counts["iterations"], never_matched=never_matched, crops=n_crops,
        paths=dict(written), notes=tuple(notes), seconds=time.perf_counter() - start)


def format_summary(result: AnalysisResult, max_rows: int = PRINT_ROWS) -> str:
    """The terminal summary: counts, the top-k table (short), the tutorial's two numbers and
    AP/AUROC per noise kind when there is a truth, notes, and where the report is."""
    lines = [f"{result.num_boxes} boxes, {result.num_observations} observations, {result.num_iterations} "
             f"iterations; score {result.score} on {result.tracking_loss_type} (alpha {result.alpha:g})"]
    rows = result.candidates
    with_truth = result.metrics is not None
    header = ["rank", "score", "label", "item (subset)", "ann_id"] + (["truth"] if with_truth else [])
    table = [[str(r.rank), f"{r.score:#.4g}", r.label, f"{r.item_id} ({r.subset})", str(r.ann_id)]
             + ([_truth_text(r)] if with_truth else []) for r in rows[:max_rows]]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(header)]
    lines.append(f"top {len(rows)} candidates:")
    for cells in [header, *table]:
        lines.append("  " + "  ".join(c.ljust(w) if i in (2, 3, 5) else c.rjust(w)
                                      for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
    if len(rows) > max_rows:
        lines.append(f"  ... {len(rows) - max_rows} more in {result.paths.get('csv', 'candidates.csv')}")
    m = result.metrics
    if m is not None:
        k = result.top_k
        lines.append(f"Accuracy = {_pct(result.accuracy)} and Recall = {_pct(result.recall)}")
        lines.append(f"  (top {k} candidates vs the truth's scoreable changes; matched per box, "
                     "not per item)")
        lines.append(f"  {'kind':<10} {'changes':>7} {'scored':>6} {f'P@{k}':>7} {f'R@{k}':>7} {'AP':>6} "
                     f"{'AUROC':>6}")
        for kind, km in [("all", m.overall), *m.per_kind.items()]:
            changes = sum(m.changes.values()) if kind == "all" else m.changes.get(kind, 0)
            lines.append(f"  {kind:<10} {changes:>7} {km.positives:>6} {_pct(km.precision_at.get(k)):>7} "
                         f"{_pct(km.recall_at.get(k)):>7} {_fmt(km.average_precision):>6} "
                         f"{_fmt(km.auroc):>6}")
        for kind, n in m.not_scoreable.items():
            if n:
                lines.append(f"  {n} {kind} change(s) not scoreable (boxes removed from the training data)")
        for kind, n in m.unscored.items():
            if n:
                lines.append(f"  {n} {kind} change(s) unscored (no loss statistics: never matched, "
                             "or not in these statistics)")
    for note in result.notes:
        lines.append(f"note: {note}")
    lines.append(f"report: {result.paths.get('report')} ({result.seconds:.1f} s)")
    return "\n".join(lines)
