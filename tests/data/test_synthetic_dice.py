"""The synthetic dice generator: layout, determinism, label validity and drawn pips."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from otx_nld.data import synthetic_dice as sd
from otx_nld.data.synthetic_dice import LABELS, PIP_LAYOUTS, DiceStyle, generate_dice_dataset
from otx_nld.errors import OtxNldError

NUM_IMAGES = 12
W, H = sd.DEFAULT_IMAGE_SIZE


@pytest.fixture(scope="module")
def dice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dice_dataset(tmp_path_factory.mktemp("dice") / "d6", num_images=NUM_IMAGES, seed=0)


def read_labels(root: Path, item_id: str) -> Rows:
    rows = []
    for line in (root / "Annotations" / f"{item_id}.txt").read_text().splitlines():
        fields = line.split()
        assert len(fields) == 5, line
        assert fields[0].isdigit(), line
        rows.append((int(fields[0]), *map(float, fields[1:])))
    return rows


Rows = list[tuple[int, float, float, float, float]]


def pixel_boxes(rows: Rows) -> list[tuple[float, float, float, float]]:
    return [((cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H)
            for _, cx, cy, w, h in rows]


def item_ids(n: int) -> list[str]:
    return [f"IMG_{i:04d}" for i in range(n)]


# -- layout and determinism ---------------------------------------------------------------


def test_layout(dice_dir: Path) -> None:
    names = "\n".join(f"dice{k}" for k in range(1, 7)) + "\n"
    assert (dice_dir / "obj.names").read_text() == names
    assert (dice_dir / "Annotations" / "classes.txt").read_text() == names
    assert sorted(p.stem for p in (dice_dir / "Images").iterdir()) == item_ids(NUM_IMAGES)
    expected = sorted([f"{i}.txt" for i in item_ids(NUM_IMAGES)] + ["classes.txt"])
    assert sorted(p.name for p in (dice_dir / "Annotations").iterdir()) == expected
    assert {p.name for p in dice_dir.iterdir()} == {"Annotations", "Images", "obj.names"}
    for item_id in item_ids(NUM_IMAGES):
        with Image.open(dice_dir / "Images" / f"{item_id}.jpg") as im:
            assert im.format == "JPEG" and im.size == (W, H) and im.mode == "RGB"


def test_same_seed_same_bytes_and_other_seed_differs(dice_dir: Path, tmp_path: Path) -> None:
    # Image i depends only on (seed, i): a shorter run reproduces the first images exactly.
    again = generate_dice_dataset(tmp_path / "again", num_images=3, seed=0)
    other = generate_dice_dataset(tmp_path / "other", num_images=3, seed=1)
    for item_id in item_ids(3):
        for rel in (f"Images/{item_id}.jpg", f"Annotations/{item_id}.txt"):
            assert (again / rel).read_bytes() == (dice_dir / rel).read_bytes(), rel
            assert (other / rel).read_bytes() != (dice_dir / rel).read_bytes(), rel


def test_overwrite(tmp_path: Path) -> None:
    out = generate_dice_dataset(tmp_path / "d", num_images=1, seed=0)
    with pytest.raises(OtxNldError, match="not empty"):
        generate_dice_dataset(out, num_images=1, seed=1)
    first = (out / "Images" / "IMG_0000.jpg").read_bytes()
    generate_dice_dataset(out, num_images=1, seed=1, overwrite=True)
    assert (out / "Images" / "IMG_0000.jpg").read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temp dirs left behind


def test_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate_dice_dataset(tmp_path / "d", num_images=2, progress=True)
    assert "2/2" in capsys.readouterr().err


# -- labels ---------------------------------------------------------------------------------


def test_every_label_line_is_valid_and_inside_the_image(dice_dir: Path) -> None:
    for item_id in item_ids(NUM_IMAGES):
        rows = read_labels(dice_dir, item_id)
        assert 3 <= len(rows) <= 12, item_id
        for label, cx, cy, w, h in rows:
            assert 0 <= label <= 5
            assert all(0.0 <= v <= 1.0 for v in (cx, cy, w, h))
            assert w > 0 and h > 0
            # Dice lie fully inside the image (with a small margin, up to the 6-digit rounding).
            assert cx - w / 2 >= 0 and cx + w / 2 <= 1 + 1e-6
            assert cy - h / 2 >= 0 and cy + h / 2 <= 1 + 1e-6
        for x1, y1, x2, y2 in pixel_boxes(rows):
            # Sizes chosen so pips stay visible at ~320 px training size (see module docs).
            assert 25 <= max(x2 - x1, y2 - y1) <= 100, (item_id, x2 - x1, y2 - y1)


def test_all_classes_appear_roughly_evenly(dice_dir: Path) -> None:
    counts = Counter(label for i in item_ids(NUM_IMAGES) for label, *_ in read_labels(dice_dir, i))
    assert set(counts) == set(range(6))
    total = sum(counts.values())
    assert min(counts.values()) >= total / 6 / 3


def test_occlusion_is_limited(dice_dir: Path) -> None:
    # Each box is at most 30% covered by the dice in front of it; the test does not know the
    # depth order, but of two overlapping boxes the one behind is covered at most 30%.
    for item_id in item_ids(NUM_IMAGES):
        for a, b in itertools.combinations(pixel_boxes(read_labels(dice_dir, item_id)), 2):
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            area_a = (a[2] - a[0]) * (a[3] - a[1])
            area_b = (b[2] - b[0]) * (b[3] - b[1])
            assert min(iw * ih / area_a, iw * ih / area_b) <= 0.3 + 0.02, item_id


def test_boxes_are_tight_around_the_drawn_dice() -> None:
    # The label box is the geometric extent of the die (top face + side strip); it must match
    # the extent of the pixels the renderer covers, up to anti-aliasing.
    for label, angle, tilt in ((2, 0.5, 25.0), (5, 2.0, 10.0), (0, 0.0, 0.0)):
        spec = sd._DieSpec(label, 50.0, 50.0, 40.0, angle, (0.9, 0.9, 0.9), (0.0, 0.0, 0.0))
        patch = sd._render_die(spec, sd._Scene(tilt=math.radians(tilt)))
        ys, xs = np.nonzero(patch.alpha > 0.5)
        x1, y1, x2, y2 = patch.box
        assert abs(patch.x0 + xs.min() - x1) <= 1.0 and abs(patch.x0 + xs.max() + 1 - x2) <= 1.0
        assert abs(patch.y0 + ys.min() - y1) <= 1.0 and abs(patch.y0 + ys.max() + 1 - y2) <= 1.0


def test_inside_hull() -> None:
    square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [5.0, 5.0]])
    hull = sd._convex_hull(square)
    assert len(hull) == 4  # the interior point is dropped
    pts = np.array([[5.0, 5.0], [0.5, 9.5], [-0.5, 5.0], [5.0, 10.5], [11.5, 5.0]])
    assert sd._inside_hull(hull, pts).tolist() == [True, True, False, False, False]
    assert sd._inside_hull(hull, pts, margin=1.0).tolist() == [True, True, True, True, False]


@pytest.mark.parametrize("seed", range(8))
def test_no_top_face_pip_is_hidden_by_a_die_in_front(seed: int) -> None:
    # Independent of the generator's geometric check: render every die drawn later and look
    # at its coverage over the pips of every die drawn earlier.
    rng = np.random.default_rng([seed, 1])
    _, dice = sd._render_scene(rng, W, H, DiceStyle(min_dice=10, max_dice=12, face_size=(40.0, 50.0)))
    scene = sd._Scene(tilt=0.0)
    for k, front in enumerate(dice):
        patch = sd._render_die(front.spec, scene, front.geom)
        h, w = patch.alpha.shape
        for back in dice[:k]:
            for centre, r in back.geom.pip_circles(back.spec.label):
                pts = back.geom.to_image(centre + r * sd._CIRCLE)
                cols = np.floor(pts[:, 0]).astype(int) - patch.x0
                rows = np.floor(pts[:, 1]).astype(int) - patch.y0
                inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
                assert (patch.alpha[rows[inside], cols[inside]] < 0.5).all()


# -- pips -------------------------------------------------------------------------------------


def count_blobs(mask: np.ndarray, min_pixels: int = 4) -> list[tuple[float, float]]:
    """Centroids (x, y) of the 4-connected components of ``mask`` with enough pixels."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    blobs = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        stack, pixels = [(y0, x0)], []
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(pixels) >= min_pixels:
            arr = np.array(pixels, dtype=float)
            blobs.append((arr[:, 1].mean(), arr[:, 0].mean()))
    return blobs


def render_on_plain(label: int, angle: float, tilt_deg: float, body: tuple, pip: tuple,
                    face: float = 48.0) -> tuple[np.ndarray, sd._DiePatch, sd._DieSpec]:
    spec = sd._DieSpec(label, 60.0, 60.0, face, angle, body, pip, gradient=0.2, gloss=0.1)
    canvas = np.full((130, 130, 3), 0.5, dtype=np.float32)
    patch = sd._render_die(spec, sd._Scene(tilt=math.radians(tilt_deg)))
    sd._composite(canvas, patch)
    return canvas, patch, spec


@pytest.mark.parametrize("label", range(6))
@pytest.mark.parametrize("angle, tilt", [(0.0, 0.0), (0.45, 0.0), (2.2, 0.0), (1.0, 25.0)])
def test_top_face_shows_label_plus_one_pips(label: int, angle: float, tilt: float) -> None:
    for body, pip, dark_pips in (((0.93, 0.93, 0.9), (0.05, 0.05, 0.05), True),
                                 ((0.07, 0.07, 0.08), (0.97, 0.97, 0.95), False)):
        canvas, patch, _ = render_on_plain(label, angle, tilt, body, pip)
        luma = canvas @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
        face = np.zeros(luma.shape, dtype=bool)
        h, w = patch.face.shape
        face[patch.y0:patch.y0 + h, patch.x0:patch.x0 + w] = patch.face > 0.5
        pips = (luma < 0.3) if dark_pips else (luma > 0.7)
        # Only the top face counts: tilted dice also show (other) pips on their sides.
        assert len(count_blobs(pips & face)) == label + 1, (label, angle, tilt, dark_pips)


@pytest.mark.parametrize("label", range(6))
def test_pip_positions_follow_the_standard_layout(label: int) -> None:
    face = 48.0
    canvas, _, spec = render_on_plain(label, 0.0, 0.0, (0.93, 0.93, 0.9), (0.05, 0.05, 0.05), face)
    luma = canvas @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    found = sorted((round((x - spec.cx) / (face / 2), 1), round((y - spec.cy) / (face / 2), 1))
                   for x, y in count_blobs(luma < 0.3))
    expected = sorted(PIP_LAYOUTS[label + 1])
    assert len(found) == len(expected)
    for (fx, fy), (ex, ey) in zip(found, expected):
        assert abs(fx - ex) <= 0.1 and abs(fy - ey) <= 0.1, (label, found)


def test_pip_layouts_are_the_standard_ones() -> None:
    for n, layout in PIP_LAYOUTS.items():
        assert len(layout) == len(set(layout)) == n
        # Every standard layout is symmetric under a half turn, centre pip iff odd.
        assert sorted(layout) == sorted((-x, -y) for x, y in layout)
        assert ((0.0, 0.0) in layout) == (n % 2 == 1)
        assert all(abs(x) <= 0.6 and abs(y) <= 0.6 for x, y in layout)
    assert [len(set(x for x, _ in PIP_LAYOUTS[6])), len(set(y for _, y in PIP_LAYOUTS[6]))] == [2, 3]


def test_pip_colours_contrast_with_their_body() -> None:
    for body in sd._BODIES:
        for name in body.pips:
            assert abs(sd._luma(body.colour) - sd._luma(sd._PIP_COLOURS[name])) >= 0.3, (body.name, name)


def test_side_faces_are_consistent() -> None:
    rng = np.random.default_rng(0)
    for top in range(1, 7):
        for _ in range(10):
            sides = sd._side_faces(rng, top)
            assert sorted(sides + (top, 7 - top)) == [1, 2, 3, 4, 5, 6]
            assert sides[0] + sides[2] == 7 and sides[1] + sides[3] == 7


# -- arguments and styles -------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"num_images": 0}, "num_images must be >= 1"),
    ({"num_images": -3}, "num_images must be >= 1"),
    ({"num_images": 2.5}, "num_images must be an integer"),
    ({"num_images": True}, "num_images must be an integer"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"seed": "x"}, "seed must be an integer"),
    ({"image_size": (100, 320)}, "image width must be >= 128"),
    ({"image_size": (416, 20)}, "image height must be >= 128"),
    ({"image_size": (416,)}, "image_size must be a"),
    ({"image_size": 416}, "image_size must be a"),
    ({"image_size": (5000, 320)}, "at most 4096"),
    ({"style": DiceStyle(min_dice=5, max_dice=4)}, "min_dice"),
    ({"style": DiceStyle(max_occlusion=1.0)}, "max_occlusion"),
    ({"style": DiceStyle(jpeg_quality=(90, 80))}, "jpeg_quality"),
])
def test_invalid_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_dice_dataset(tmp_path / "d", **kwargs)
    assert not (tmp_path / "d").exists()


def test_other_size_and_style(tmp_path: Path) -> None:
    style = DiceStyle(min_dice=2, max_dice=2, max_tilt_deg=0.0, jpeg_quality=(95, 95))
    out = generate_dice_dataset(tmp_path / "d", num_images=2, seed=3, image_size=(640, 480), style=style)
    for item_id in item_ids(2):
        with Image.open(out / "Images" / f"{item_id}.jpg") as im:
            assert im.size == (640, 480)
        assert len((out / "Annotations" / f"{item_id}.txt").read_text().splitlines()) == 2


def test_imports_as_a_dataset(dice_dir: Path) -> None:
    from otx_nld.data.dataset import Dataset

    ds = Dataset.import_from(dice_dir)
    assert ds.labels == LABELS
    assert sorted(item.id for item in ds.items) == item_ids(NUM_IMAGES)
    for item in ds.items:
        rows = read_labels(dice_dir, item.id)
        assert (item.width, item.height) == (W, H)
        assert [b.label for b in item.boxes] == [r[0] for r in rows]
        for box, (x1, y1, x2, y2) in zip(item.boxes, pixel_boxes(rows)):
            assert box.xyxy == pytest.approx((x1, y1, x2, y2), abs=1e-3)
