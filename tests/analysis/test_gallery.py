"""render_gallery: grid size, item/annotation selection, highlighting and errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from otx_nld.analysis.gallery import GAP, HEADER_HEIGHT, TITLE_HEIGHT, render_gallery
from otx_nld.data.dataset import Box, Dataset, Item
from otx_nld.errors import DatasetError, OtxNldError
from tests.factories import make_dataset


def expected_size(n: int, columns: int, thumb: int, title: bool = False) -> tuple[int, int]:
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    return (cols * thumb + (cols + 1) * GAP,
            (TITLE_HEIGHT if title else 0) + rows * (HEADER_HEIGHT + thumb) + (rows + 1) * GAP)


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    return make_dataset(num_items=6, boxes_per_item=3, image_dir=tmp_path / "images")


def flat_dataset(tmp_path: Path) -> Dataset:
    """One grey 200x100 image with two boxes of known labels, for pixel checks."""
    path = tmp_path / "flat.png"
    Image.new("RGB", (200, 100), (128, 128, 128)).save(path)
    boxes = (Box(20, 20, 40, 40, 0, 11), Box(120, 30, 50, 40, 1, 12))
    return Dataset((Item("flat", "train", path, 200, 100, boxes),), ("cat", "dog"))


def test_all_items_grid_size(dataset: Dataset, tmp_path: Path) -> None:
    out = render_gallery(dataset, tmp_path / "out" / "g.png", columns=4, thumb_size=128, title="six items")
    assert out == tmp_path / "out" / "g.png"
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size == expected_size(6, 4, 128, title=True)
    assert [p.name for p in out.parent.iterdir()] == ["g.png"]  # written atomically, no temp left


def test_selected_items_by_id_and_pair(dataset: Dataset, tmp_path: Path) -> None:
    out = render_gallery(dataset, tmp_path / "g.png", items=["img_001", ("default", "img_004")],
                         columns=3, thumb_size=100)
    with Image.open(out) as im:
        assert im.size == expected_size(2, 3, 100)
    out = render_gallery(dataset, tmp_path / "g1.png", items="img_002", thumb_size=64)
    with Image.open(out) as im:
        assert im.size == expected_size(1, 4, 64)


def test_ann_ids_choose_items_and_highlight_only_those_boxes(tmp_path: Path) -> None:
    ds = flat_dataset(tmp_path)
    thumb = 200
    plain = np.asarray(Image.open(render_gallery(ds, tmp_path / "all.png", thumb_size=thumb)).convert("RGB"))
    only = np.asarray(Image.open(render_gallery(ds, tmp_path / "hl.png", ann_ids=[12],
                                                thumb_size=thumb)).convert("RGB"))
    # The tile image is 200x100 scaled by 1, centred vertically in the 200 px square.
    ox, oy = GAP, GAP + HEADER_HEIGHT + (thumb - 100) // 2

    def box_edge_pixels(img: np.ndarray, box: Box) -> np.ndarray:
        x1, y1, x2, y2 = (int(v) for v in box.xyxy)
        return img[oy + (y1 + y2) // 2, ox + x1 - 1:ox + x1 + 2]  # across the left edge, mid-height

    grey = np.array([128, 128, 128])
    cat, dog = ds.items[0].boxes
    # Without ann_ids both boxes are drawn in their label colours.
    assert np.abs(box_edge_pixels(plain, cat) - grey).max() > 60
    assert np.abs(box_edge_pixels(plain, dog) - grey).max() > 60
    # With ann_ids=[12] the dog box is drawn in colour; the cat box only as a light grey outline.
    dog_px = box_edge_pixels(only, dog)
    assert (dog_px.max(axis=1) - dog_px.min(axis=1)).max() > 60  # saturated: a label colour
    cat_px = box_edge_pixels(only, cat).astype(int)
    assert (cat_px.max(axis=1) - cat_px.min(axis=1)).max() <= 10  # grey: dimmed
    assert not np.array_equal(plain, only)


def test_ann_ids_select_their_items(dataset: Dataset, tmp_path: Path) -> None:
    items = dataset.items
    wanted = [items[1].boxes[0].ann_id, items[3].boxes[2].ann_id, items[3].boxes[0].ann_id]
    out = render_gallery(dataset, tmp_path / "g.png", ann_ids=wanted, columns=4, thumb_size=96)
    with Image.open(out) as im:
        assert im.size == expected_size(2, 4, 96)  # items 1 and 3 only


def test_unknown_item_ids_are_named(dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(OtxNldError, match=r"unknown item.*'nope'.*\('train', 'img_001'\)"):
        render_gallery(dataset, tmp_path / "g.png", items=["img_000", "nope", ("train", "img_001")])
    assert not (tmp_path / "g.png").exists()


def test_ambiguous_item_id_needs_a_subset(dataset: Dataset, tmp_path: Path) -> None:
    twin = dataset.items[0].replace(subset="val")
    ds = dataset.with_items(dataset.items + (twin,))
    with pytest.raises(OtxNldError, match="several subsets.*img_000"):
        render_gallery(ds, tmp_path / "g.png", items=["img_000"])
    render_gallery(ds, tmp_path / "g.png", items=[("val", "img_000")])


def test_unknown_ann_ids_are_named(dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(OtxNldError, match="unknown annotation id.*9999.*12345"):
        render_gallery(dataset, tmp_path / "g.png", ann_ids=[1, 12345, 9999])


def test_missing_image_names_the_file(dataset: Dataset, tmp_path: Path) -> None:
    missing = dataset.items[2].image_path
    assert missing is not None
    missing.unlink()
    with pytest.raises(DatasetError, match="img_002.png.*not found") as info:
        render_gallery(dataset, tmp_path / "g.png")
    assert info.value.path == missing
    assert not (tmp_path / "g.png").exists()
    # Items whose images exist still render.
    render_gallery(dataset, tmp_path / "g.png", items=["img_000"])


def test_unreadable_image_names_the_file(dataset: Dataset, tmp_path: Path) -> None:
    broken = dataset.items[0].image_path
    assert broken is not None
    broken.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="img_000.png.*cannot read image"):
        render_gallery(dataset, tmp_path / "g.png", items=["img_000"])


def test_too_many_items_and_bad_arguments(dataset: Dataset, tmp_path: Path) -> None:
    with pytest.raises(OtxNldError, match="6 items selected, more than max_items=5"):
        render_gallery(dataset, tmp_path / "g.png", max_items=5)
    with pytest.raises(OtxNldError, match="nothing to draw"):
        render_gallery(dataset, tmp_path / "g.png", items=[])
    with pytest.raises(OtxNldError, match="columns"):
        render_gallery(dataset, tmp_path / "g.png", columns=0)
    with pytest.raises(OtxNldError, match="thumb_size"):
        render_gallery(dataset, tmp_path / "g.png", thumb_size=8)


def test_renders_generated_dice(tmp_path: Path) -> None:
    from otx_nld.data.synthetic_dice import generate_dice_dataset

    ds = Dataset.import_from(generate_dice_dataset(tmp_path / "dice", num_images=3, seed=0))
    out = render_gallery(ds, tmp_path / "dice.png", columns=2, thumb_size=160, show_ann_ids=True)
    with Image.open(out) as im:
        assert im.size == expected_size(3, 2, 160)
