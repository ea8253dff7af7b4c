"""Render dataset items with their boxes into one PNG grid ("contact sheet").

Used to eyeball a dataset and, above all, to review noisy-label candidates: pass the
candidates' annotation ids as ``ann_ids`` and only their items are shown, with those boxes
highlighted (thick, coloured, labelled ``name #ann_id``) and every other box of the item
dimmed (a thin grey outline without text), so the context stays visible but does not
compete with the candidates.

Layout, in pixels (``n`` items, ``c = min(columns, n)`` columns, ``r = ceil(n / c)`` rows)::

    width  = c * thumb_size + (c + 1) * GAP
    height = TITLE_HEIGHT (only with a title) + r * (HEADER_HEIGHT + thumb_size) + (r + 1) * GAP

Each tile is a ``thumb_size`` square holding the image scaled to fit (aspect kept, small
images enlarged) under a header with the item id and subset.
"""

from __future__ import annotations

import colorsys
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from otx_nld.data.dataset import Box, Dataset, Item
from otx_nld.errors import DatasetError, OtxNldError
from otx_nld.io import atomic_write_bytes

__all__ = ["DEFAULT_MAX_ITEMS", "GAP", "HEADER_HEIGHT", "TITLE_HEIGHT", "ItemRef", "render_gallery"]

DEFAULT_MAX_ITEMS = 100
"""Largest number of items one gallery renders unless ``max_items`` says otherwise."""
GAP = 8
"""Pixels between tiles and around the grid."""
HEADER_HEIGHT = 20
"""Pixels of the title strip above each tile's image."""
TITLE_HEIGHT = 32
"""Pixels of the gallery title strip, when there is a title."""

ItemRef = str | tuple[str, str]
"""An item id, or a ``(subset, item id)`` pair when ids repeat across subsets."""

_Font = ImageFont.ImageFont | ImageFont.FreeTypeFont

_BACKGROUND = (245, 245, 245)
_TILE_BACKGROUND = (40, 40, 40)
_DIM = (170, 170, 170)
# Tableau-like colours: distinct and legible on photos. Labels beyond them get colours
# spread around the hue circle by the golden ratio.
_PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (255, 215, 0),
)


def _label_colour(label: int) -> tuple[int, int, int]:
    if label < len(_PALETTE):
        return _PALETTE[label]
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return (int(r * 255), int(g * 255), int(b * 255))


def _font(size: int) -> _Font:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed-size bitmap font
        return ImageFont.load_default()


def _describe(refs: Sequence[object], limit: int = 10) -> str:
    shown = ", ".join(repr(r) for r in refs[:limit])
    return shown + (f" and {len(refs) - limit} more" if len(refs) > limit else "")


def _resolve_items(dataset: Dataset, refs: Iterable[ItemRef]) -> list[Item]:
    """The items ``refs`` name, in the order given, without repeats."""
    by_key = {item.key: item for item in dataset.items}
    by_id: dict[str, list[Item]] = {}
    for item in dataset.items:
        by_id.setdefault(item.id, []).append(item)
    found: dict[tuple[str, str], Item] = {}
    unknown: list[object] = []
    ambiguous: list[str] = []
    for ref in refs:
        if isinstance(ref, str):
            matches = by_id.get(ref, [])
            if not matches:
                unknown.append(ref)
            elif len(matches) > 1:
                ambiguous.append(ref)
            else:
                found.setdefault(matches[0].key, matches[0])
        elif isinstance(ref, tuple) and len(ref) == 2 and all(isinstance(v, str) for v in ref):
            item = by_key.get((ref[0], ref[1]))
            if item is None:
                unknown.append(ref)
            else:
                found.setdefault(item.key, item)
        else:
            raise OtxNldError(f"items must be item ids or (subset, item id) pairs, got {ref!r}")
    if unknown:
        raise OtxNldError(f"unknown item(s): {_describe(unknown)}")
    if ambiguous:
        raise OtxNldError(f"item id(s) in several subsets, pass (subset, id) pairs: {_describe(ambiguous)}")
    return list(found.values())


def _load_image(item: Item, size: tuple[int, int] | None = None) -> Image.Image:
    """The item's image in RGB; ``size`` lets JPEG decoding downscale cheaply to at least it."""
    path = item.image_path
    if path is None:
        raise DatasetError(None, f"item {item.id!r} (subset {item.subset!r}) has no image file")
    if not path.is_file():
        raise DatasetError(path, f"image file not found (item {item.id!r}, subset {item.subset!r})")
    try:
        with Image.open(path) as im:
            if size is not None:
                im.draft("RGB", size)  # JPEG only: decode at 1/2, 1/4, 1/8 scale when still >= size
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(path, f"cannot read image: {e}") from e


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: _Font, width: int) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _draw_label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour: tuple[int, int, int],
                font: _Font, bounds: tuple[int, int, int, int]) -> None:
    """Text on a filled box in the label colour, above the box corner (inside when no room)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 4, bottom - top + 3
    x = min(max(xy[0], bounds[0]), bounds[2] - tw)
    y = xy[1] - th if xy[1] - th >= bounds[1] else xy[1]
    y = min(y, bounds[3] - th)
    draw.rectangle((x, y, x + tw, y + th), fill=colour)
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    draw.text((x + 2 - left, y + 1 - top), text, fill=(0, 0, 0) if luma > 140 else (255, 255, 255), font=font)


def _render_tile(item: Item, labels: Sequence[str], thumb: int, highlight: set[int] | None,
                 show_ann_ids: bool) -> Image.Image:
    tile = Image.new("RGB", (thumb, HEADER_HEIGHT + thumb), _BACKGROUND)
    draw = ImageDraw.Draw(tile)
    header_font = _font(13)
    title = _fit_text(draw, f"{item.id}  [{item.subset}]", header_font, thumb - 4)
    draw.text((2, 3), title, fill=(20, 20, 20), font=header_font)

    # Boxes are in the item's pixel coordinates: scale by the item size (the image is resized
    # to it), so a file whose real size differs from the recorded one still lines up.
    scale = thumb / max(item.width, item.height)
    w, h = max(1, round(item.width * scale)), max(1, round(item.height * scale))
    image = _load_image(item, (w, h))
    ox, oy = (thumb - w) // 2, HEADER_HEIGHT + (thumb - h) // 2
    draw.rectangle((0, HEADER_HEIGHT, thumb - 1, HEADER_HEIGHT + thumb - 1), fill=_TILE_BACKGROUND)
    tile.paste(image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0), (ox, oy))

    bounds = (ox, oy, ox + w, oy + h)
    label_font = _font(max(10, min(14, thumb // 26)))

    def corners(box: Box) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = box.xyxy
        return (min(max(ox + x1 * scale, ox), ox + w - 1), min(max(oy + y1 * scale, oy), oy + h - 1),
                min(max(ox + x2 * scale, ox), ox + w - 1), min(max(oy + y2 * scale, oy), oy + h - 1))

    # Dimmed boxes first, so that highlighted ones are drawn over them.
    chosen = item.boxes if highlight is None else [b for b in item.boxes if b.ann_id in highlight]
    if highlight is not None:
        for box in item.boxes:
            if box.ann_id not in highlight:
                draw.rectangle(corners(box), outline=_DIM, width=1)
    for box in chosen:
        colour = _label_colour(box.label)
        rect = corners(box)
        draw.rectangle(rect, outline=colour, width=2 if highlight is None else 3)
        text = labels[box.label] if box.label < len(labels) else str(box.label)
        if show_ann_ids or highlight is not None:
            text += f" #{box.ann_id}"
        _draw_label(draw, (rect[0], rect[1]), text, colour, label_font, bounds)
    return tile


def render_gallery(dataset: Dataset, out_png: str | Path, items: Iterable[ItemRef] | None = None,
                   ann_ids: Iterable[int] | None = None, columns: int = 4, thumb_size: int = 320,
                   title: str | None = None, *, max_items: int = DEFAULT_MAX_ITEMS,
                   show_ann_ids: bool = False) -> Path:
    """Draw items with their boxes and label names into a PNG grid, written atomically.

    Args:
        dataset: the dataset; items need readable image files.
        out_png: output PNG path (parent directories are created).
        items: item ids or ``(subset, id)`` pairs, drawn in this order. Default: every item,
            or, with ``ann_ids``, the items holding those annotations (in dataset order).
        ann_ids: annotation ids to highlight; the other boxes of the shown items are drawn
            dimmed and unlabelled. Default: every box drawn normally.
        columns: tiles per row (fewer when there are fewer items).
        thumb_size: side of each tile's square image area, in pixels.
        title: optional title drawn above the grid.
        max_items: refuse to draw more items than this (a full dataset makes an unusably
            large PNG); pass ``items`` or raise it.
        show_ann_ids: also print ``#ann_id`` after the label of unhighlighted galleries.

    Returns:
        ``out_png`` as a ``Path``.

    Raises:
        otx_nld.errors.OtxNldError: unknown or ambiguous item ids, unknown annotation ids,
            nothing to draw, more than ``max_items`` items, or bad layout arguments.
        otx_nld.errors.DatasetError: an item's image file is missing or unreadable (naming it).
    """
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise OtxNldError(f"columns must be a positive integer, got {columns!r}")
    if isinstance(thumb_size, bool) or not isinstance(thumb_size, int) or not 32 <= thumb_size <= 4096:
        raise OtxNldError(f"thumb_size must be an integer in [32, 4096], got {thumb_size!r}")
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
        raise OtxNldError(f"max_items must be a positive integer, got {max_items!r}")

    highlight: set[int] | None = None
    if ann_ids is not None:
        highlight = set()
        for ann_id in ann_ids:
            if isinstance(ann_id, bool) or not isinstance(ann_id, int):
                raise OtxNldError(f"annotation ids must be integers, got {ann_id!r}")
            highlight.add(ann_id)
        known = {box.ann_id for _, box in dataset.iter_boxes()}
        missing = sorted(highlight - known)
        if missing:
            raise OtxNldError(f"unknown annotation id(s): {_describe(missing)}")

    if items is not None:
        if isinstance(items, str):
            items = [items]  # a lone id, not its characters
        chosen = _resolve_items(dataset, items)
    elif highlight is not None:
        chosen = [item for item in dataset.items if any(b.ann_id in highlight for b in item.boxes)]
    else:
        chosen = list(dataset.items)
    if not chosen:
        raise OtxNldError("nothing to draw: no items selected")
    if len(chosen) > max_items:
        raise OtxNldError(f"{len(chosen)} items selected, more than max_items={max_items}; "
                          "pass items= to choose some or raise max_items")
    # Fail on a missing image before spending time on the others.
    for item in chosen:
        if item.image_path is None or not item.image_path.is_file():
            _load_image(item)

    cols = min(columns, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    top = TITLE_HEIGHT if title else 0
    width = cols * thumb_size + (cols + 1) * GAP
    height = top + rows * (HEADER_HEIGHT + thumb_size) + (rows + 1) * GAP
    sheet = Image.new("RGB", (width, height), _BACKGROUND)
    if title:
        draw = ImageDraw.Draw(sheet)
        font = _font(18)
        draw.text((GAP, (TITLE_HEIGHT + GAP - 18) // 2), _fit_text(draw, title, font, width - 2 * GAP),
                  fill=(0, 0, 0), font=font)
    for k, item in enumerate(chosen):
        r, c = divmod(k, cols)
        tile = _render_tile(item, dataset.labels, thumb_size, highlight, show_ann_ids)
        sheet.paste(tile, (GAP + c * (thumb_size + GAP), top + GAP + r * (HEADER_HEIGHT + thumb_size + GAP)))

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    out = Path(out_png)
    atomic_write_bytes(out, buf.getvalue())
    return out
