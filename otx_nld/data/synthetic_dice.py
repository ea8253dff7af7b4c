"""A procedural six-sided-dice detection dataset that looks like photos of dice on a table.

The Kaggle "six-sided dice" dataset used by the Datumaro + OpenVINO Training Extensions
noisy-label tutorial cannot be downloaded here, so :func:`generate_dice_dataset` draws a
stand-in with the same label set and the same loose YOLO layout::

    OUT/Annotations/IMG_0000.txt     one "class cx cy w h" line per die (normalized)
    OUT/Annotations/classes.txt      dice1 .. dice6, one per line
    OUT/obj.names                    same
    OUT/Images/IMG_0000.jpg

Class ``k`` (0..5) is ``dice{k+1}``: the number of pips on the die's *top* face.

What makes the images look like photos rather than icons:

* a camera looking down at the table at a tilt of 0-28 degrees: top faces are foreshortened,
  the near side faces of every die show as a darker strip (with their own, squashed pips),
  dice nearer the camera are a little larger and drawn in front, and the table texture itself
  is warped with the same perspective;
* one light per image: a brightness gradient and a glossy highlight on each top face, side
  faces shaded by how much they face the light, a darker rounded rim, concave-looking pips,
  and a soft drop shadow plus a tight contact shadow on the table (or on a die behind);
* textured tables (wood planks, felt, woven cloth or tartan, paper/studio gradients, tiles);
* a camera pipeline: uneven illumination and vignetting, colour cast, brightness/contrast,
  slight blur, sensor noise and JPEG compression at quality 70-95.

Sizes. Images default to 416x320. The detector trains at about 320 px, so a die's top face
is 32-50 px wide at the default size (times the perspective factor, about 0.8-1.2), giving
boxes of 32-85 px, 55 px on average (measured over 250 images). A pip is 16.5% of the face
wide (5-8 px) and neighbouring pip centres are 26% of the face apart (8-13 px), so after
resizing to 320 px pips are 4-6 px dots about 5-10 px apart: countable. All die sizes scale
with ``min(W / 416, H / 320)`` for other image sizes. Dice per image: 3-12 (fewer when the
dice are large), 6.7 on average; classes are drawn uniformly.

Speed: about 50 ms per 416x320 image on one core (250 images in ~12-15 s).

Annotations. The box is the tight axis-aligned box of the whole visible die (top face plus
side strip) computed from the exact geometry, clipped to the image; every die lies fully
inside the image. Dice may overlap, but each box is at most ``max_occlusion`` (30%) covered
by the boxes of dice in front of it, and no top-face pip is ever hidden, so every label can
be read from the image.

Determinism. Image ``i`` depends only on ``(seed, i)`` through a ``numpy`` ``Generator`` (no
global random state), so the same seed gives byte-identical files (with the same Pillow
build) and ``num_images`` only decides how many images are drawn.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from otx_nld.io import atomic_output_dir

__all__ = ["DEFAULT_IMAGE_SIZE", "LABELS", "PIP_LAYOUTS", "DiceStyle", "generate_dice_dataset"]

LABELS: tuple[str, ...] = tuple(f"dice{k}" for k in range(1, 7))
"""Label names; class ``k`` is ``dice{k+1}``, the number of pips on the top face."""

DEFAULT_IMAGE_SIZE: tuple[int, int] = (416, 320)
_REFERENCE_SIZE = (416, 320)  # the size the pixel sizes in DiceStyle refer to
_SS = 4  # supersampling factor: PIL polygons are not anti-aliased, so draw 4x and reduce

# Pip centres on the unit face [-1, 1]^2 (x right, y down), the standard Western layouts.
# 2, 3 and 6 are not symmetric under a quarter turn; the random in-plane rotation of every
# die makes both diagonals (and row/column sixes) appear.
_A = 0.52
PIP_LAYOUTS: dict[int, tuple[tuple[float, float], ...]] = {
    1: ((0.0, 0.0),),
    2: ((-_A, -_A), (_A, _A)),
    3: ((-_A, -_A), (0.0, 0.0), (_A, _A)),
    4: ((-_A, -_A), (_A, -_A), (-_A, _A), (_A, _A)),
    5: ((-_A, -_A), (_A, -_A), (0.0, 0.0), (-_A, _A), (_A, _A)),
    6: ((-_A, -_A), (-_A, 0.0), (-_A, _A), (_A, -_A), (_A, 0.0), (_A, _A)),
}
_PIP_RADIUS = 0.165  # in half-edge units: a pip is ~16% of the face wide
_ONE_PIP_RADIUS = 0.23  # many dice have a larger single pip

RGB = tuple[float, float, float]

_PIP_COLOURS: dict[str, RGB] = {
    "black": (0.05, 0.05, 0.05),
    "white": (0.97, 0.97, 0.95),
    "red": (0.80, 0.05, 0.08),
    "blue": (0.10, 0.20, 0.70),
    "gold": (0.92, 0.74, 0.25),
    "brown": (0.30, 0.17, 0.09),
}


@dataclass(frozen=True)
class _Body:
    name: str
    colour: RGB
    pips: tuple[str, ...]  # pip colours that contrast with this body
    opacity: float  # < 1 for translucent dice (pips stay opaque)
    weight: float  # relative frequency


_BODIES: tuple[_Body, ...] = (
    _Body("white", (0.93, 0.93, 0.90), ("black", "black", "red", "blue"), 1.0, 3.0),
    _Body("ivory", (0.92, 0.86, 0.72), ("black", "red", "brown"), 1.0, 1.5),
    _Body("red", (0.78, 0.07, 0.09), ("white", "white", "gold"), 1.0, 2.0),
    _Body("black", (0.07, 0.07, 0.08), ("white", "white", "gold"), 1.0, 1.5),
    _Body("blue", (0.08, 0.22, 0.62), ("white", "gold"), 1.0, 1.5),
    _Body("green", (0.06, 0.48, 0.22), ("white", "black"), 1.0, 1.2),
    _Body("yellow", (0.95, 0.78, 0.10), ("black", "red"), 1.0, 0.8),
    _Body("orange", (0.95, 0.45, 0.08), ("white", "black"), 1.0, 0.6),
    _Body("purple", (0.40, 0.15, 0.55), ("white", "gold"), 1.0, 0.6),
    _Body("translucent red", (0.88, 0.12, 0.16), ("white",), 0.78, 0.7),
    _Body("translucent blue", (0.18, 0.38, 0.88), ("white",), 0.78, 0.6),
    _Body("translucent green", (0.18, 0.78, 0.38), ("white",), 0.80, 0.5),
    _Body("smoke", (0.22, 0.22, 0.26), ("white",), 0.82, 0.4),
)
_BODY_P = np.array([b.weight for b in _BODIES]) / sum(b.weight for b in _BODIES)


def _luma(c: Sequence[float] | np.ndarray) -> float:
    return float(0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2])


@dataclass(frozen=True)
class DiceStyle:
    """Knobs of the generator. Pixel sizes refer to a 416x320 image and scale with it.

    Attributes:
        min_dice, max_dice: dice per image (fewer than ``max_dice`` when large dice would
            not fit; never fewer than ``min_dice``).
        face_size: range of the top-face edge length in pixels (before perspective).
        max_tilt_deg: largest camera tilt from straight down; 0 gives flat top views.
        max_occlusion: largest fraction of a box covered by boxes of dice in front of it.
        jpeg_quality: inclusive range of the JPEG quality.
    """

    min_dice: int = 3
    max_dice: int = 12
    face_size: tuple[float, float] = (32.0, 50.0)
    max_tilt_deg: float = 28.0
    max_occlusion: float = 0.3
    jpeg_quality: tuple[int, int] = (70, 95)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        if not (isinstance(self.min_dice, int) and isinstance(self.max_dice, int)) or not (
            1 <= self.min_dice <= self.max_dice <= 40
        ):
            raise ValueError(f"need 1 <= min_dice <= max_dice <= 40, got {self.min_dice}, {self.max_dice}")
        lo, hi = self.face_size
        if not 8 <= lo <= hi <= 120:
            raise ValueError(f"face_size must satisfy 8 <= low <= high <= 120, got {self.face_size}")
        if not 0 <= self.max_tilt_deg <= 45:
            raise ValueError(f"max_tilt_deg must be in [0, 45], got {self.max_tilt_deg}")
        if not 0 <= self.max_occlusion < 1:
            raise ValueError(f"max_occlusion must be in [0, 1), got {self.max_occlusion}")
        qlo, qhi = self.jpeg_quality
        if not 1 <= qlo <= qhi <= 100:
            raise ValueError(f"jpeg_quality must satisfy 1 <= low <= high <= 100, got {self.jpeg_quality}")


# ------------------------------------------------------------------------------------------
# Die geometry and rendering
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DieSpec:
    """One die: what it shows and where (``cx, cy`` is the centre of the top face)."""

    label: int  # 0..5; the top face shows label + 1 pips
    cx: float
    cy: float
    face: float  # top-face edge length in px, before foreshortening
    angle: float  # in-plane rotation, radians
    body: RGB
    pip: RGB
    opacity: float = 1.0
    corner: float = 0.22  # corner radius, in half-edge units
    gloss: float = 0.15  # strength of the specular highlight
    gradient: float = 0.2  # strength of the light gradient across the top face
    one_pip: RGB | None = None  # colour of the single pip of a 1 (red on "Asian" dice)
    side_values: tuple[int, int, int, int] = (2, 3, 5, 4)  # pips on the S, W, N, E faces
    side_turns: tuple[int, int, int, int] = (0, 0, 0, 0)  # quarter turns of those layouts


@dataclass(frozen=True)
class _Scene:
    """What all dice of one image share: the camera tilt and the light."""

    tilt: float = 0.0  # radians from straight down
    light: tuple[float, float] = (-0.6, -0.8)  # unit vector towards the light, image plane


_UNIT_NORMALS = ((0.0, 1.0), (-1.0, 0.0), (0.0, -1.0), (1.0, 0.0))  # S, W, N, E in die frame


def _rounded_square(corner: float, n_arc: int = 7) -> np.ndarray:
    """Outline of the unit rounded square [-1, 1]^2, shape (4 * n_arc, 2), in order."""
    c = 1.0 - corner
    pts = []
    for sx, sy, a0 in ((1, 1, 0.0), (-1, 1, 90.0), (-1, -1, 180.0), (1, -1, 270.0)):
        for t in np.radians(np.linspace(a0, a0 + 90.0, n_arc)):
            pts.append((sx * c + corner * math.cos(t), sy * c + corner * math.sin(t)))
    return np.array(pts)


_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 20, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 20, endpoint=False))], axis=1)


@dataclass(frozen=True)
class _Geometry:
    rot: np.ndarray  # 2x2 in-plane rotation
    m: np.ndarray  # 2x2: unit die coordinates -> image offsets (rotation, half edge, foreshortening)
    centre: np.ndarray  # (2,)
    depth: np.ndarray  # (2,) image offset from the top face to the bottom of the side faces
    top: np.ndarray  # (N, 2) top-face outline in image coordinates
    hull: np.ndarray  # (K, 2) convex silhouette of the whole die, counter-clockwise
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 of the silhouette

    def to_image(self, unit_pts: np.ndarray) -> np.ndarray:
        return unit_pts @ self.m.T + self.centre

    def pip_circles(self, label: int) -> list[tuple[np.ndarray, float]]:
        """``(centre in unit coords, radius in unit coords)`` of the top-face pips."""
        n = label + 1
        r = _ONE_PIP_RADIUS if n == 1 else _PIP_RADIUS
        return [(np.array(p), r) for p in PIP_LAYOUTS[n]]


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain; returns the hull counter-clockwise (in x-right, y-up terms)."""
    pts = sorted(map(tuple, points))

    def cross(o: tuple, a: tuple, b: tuple) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def _inside_hull(hull: np.ndarray, pts: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Which of ``pts`` lie inside the convex ``hull`` grown by ``margin`` pixels."""
    a = hull
    b = np.roll(hull, -1, axis=0)
    edge = b - a
    length = np.hypot(edge[:, 0], edge[:, 1]) + 1e-9
    # Signed distance to every edge line, positive inside for a counter-clockwise hull.
    rel = pts[:, None, :] - a[None, :, :]
    dist = (edge[None, :, 0] * rel[..., 1] - edge[None, :, 1] * rel[..., 0]) / length[None, :]
    return np.all(dist >= -margin, axis=1)


def _die_geometry(spec: _DieSpec, scene: _Scene) -> _Geometry:
    c, s = math.cos(spec.angle), math.sin(spec.angle)
    rot = np.array([[c, -s], [s, c]])
    # The camera looks down at `tilt` from vertical, from the bottom of the image: the top
    # face is squashed vertically by cos(tilt) and the near side faces show below it, as
    # tall as the die times sin(tilt).
    m = np.diag([1.0, math.cos(scene.tilt)]) @ rot * (spec.face / 2.0)
    centre = np.array([spec.cx, spec.cy])
    depth = np.array([0.0, spec.face * math.sin(scene.tilt)])
    top = _rounded_square(spec.corner) @ m.T + centre
    allpts = np.vstack([top, top + depth])
    hull = _convex_hull(allpts)
    box = (float(allpts[:, 0].min()), float(allpts[:, 1].min()),
           float(allpts[:, 0].max()), float(allpts[:, 1].max()))
    return _Geometry(rot, m, centre, depth, top, hull, box)


@dataclass
class _DiePatch:
    """A rendered die: straight (not premultiplied) colour, coverage and masks of a patch."""

    x0: int
    y0: int
    rgb: np.ndarray  # (h, w, 3) float32 in [0, 1]
    alpha: np.ndarray  # (h, w) float32, die coverage (times opacity off the pips)
    face: np.ndarray  # (h, w) float32, top-face coverage
    pips: np.ndarray  # (h, w) float32, top-face pip coverage
    box: tuple[float, float, float, float]


def _side_shade(normal: np.ndarray, light: np.ndarray) -> float:
    """Brightness of a vertical side face whose (in-plane) outward normal is ``normal``."""
    # Side faces get much less light than the top face (the light is above the table);
    # those facing the light's azimuth get more, and a little ambient light reaches all.
    return float(0.42 + 0.33 * max(0.0, float(normal @ light)) + 0.08 * normal[1])


def _fill(colour: Sequence[float], scale: float = 1.0) -> tuple[int, int, int]:
    """A PIL fill colour: ``colour * scale`` in 8 bits."""
    r, g, b = (int(round(255 * min(1.0, max(0.0, v * scale)))) for v in colour)
    return (r, g, b)


def _render_die(spec: _DieSpec, scene: _Scene, geom: _Geometry | None = None) -> _DiePatch:
    """Rasterize one die into a patch (no shadow; see :func:`_cast_shadow`)."""
    g = geom if geom is not None else _die_geometry(spec, scene)
    light = np.array(scene.light)
    x1b, y1b, x2b, y2b = g.box
    x0, y0 = math.floor(x1b) - 2, math.floor(y1b) - 2
    w, h = math.ceil(x2b) + 2 - x0, math.ceil(y2b) + 2 - y0
    origin = np.array([x0, y0], dtype=float)

    def canvas(pts: np.ndarray) -> list[tuple[float, float]]:
        return [tuple(p) for p in ((pts - origin) * _SS)]

    size = (w * _SS, h * _SS)
    colour_img = Image.new("RGB", size)
    alpha_img = Image.new("L", size)
    face_img = Image.new("L", size)
    pip_img = Image.new("L", size)
    dc, da, df, dp = (ImageDraw.Draw(im) for im in (colour_img, alpha_img, face_img, pip_img))
    unit_outline = _rounded_square(spec.corner)

    # Side faces: sweep every outline segment whose outward normal faces the camera down by
    # `depth`. Consecutive segments of a rounded corner get smoothly varying shades, which
    # reads as a rounded vertical edge.
    if g.depth[1] > 0.5:
        n = len(unit_outline)
        for i in range(n):
            pu, qu = unit_outline[i], unit_outline[(i + 1) % n]
            mid, d = (pu + qu) / 2, qu - pu
            normal_u = np.array([d[1], -d[0]])
            if normal_u @ mid < 0:
                normal_u = -normal_u
            normal = g.rot @ (normal_u / (np.linalg.norm(normal_u) + 1e-12))
            if normal[1] <= 0:
                continue
            p, q = g.top[i], g.top[(i + 1) % n]
            quad = canvas(np.array([p, q, q + g.depth, p + g.depth]))
            dc.polygon(quad, fill=_fill(spec.body, _side_shade(normal, light)))
            da.polygon(quad, fill=255)
        # Pips on the visible side faces, squashed like the faces themselves. Skipped when a
        # face is seen almost edge-on, where they would only be a smear.
        for k, n_u in enumerate(_UNIT_NORMALS):
            n_u_arr = np.array(n_u)
            normal = g.rot @ n_u_arr
            if normal[1] < 0.3 or g.depth[1] < 4:
                continue
            tangent = np.array([n_u[1], -n_u[0]])
            shade = _side_shade(normal, light)
            turn = spec.side_turns[k]
            value = spec.side_values[k]
            r = _ONE_PIP_RADIUS if value == 1 else _PIP_RADIUS
            for px, py in PIP_LAYOUTS[value]:
                for _ in range(turn):
                    px, py = -py, px
                circle = np.array([px, py]) + r * _CIRCLE  # (u, w) side-face coordinates
                edge_pts = (n_u_arr[None, :] + circle[:, :1] * tangent[None, :]) @ g.m.T + g.centre
                pts = edge_pts + g.depth[None, :] * ((circle[:, 1:2] + 1) / 2)
                dc.polygon(canvas(pts), fill=_fill(spec.pip, shade))

    # Top face and its pips. A pip is a rim and a slightly lighter core shifted away from the
    # light: the shadowed near wall of a concave dimple.
    top_poly = canvas(g.top)
    dc.polygon(top_poly, fill=_fill(spec.body))
    da.polygon(top_poly, fill=255)
    df.polygon(top_poly, fill=255)
    light_u = g.rot.T @ light
    for centre_u, r in g.pip_circles(spec.label):
        pip_colour = spec.one_pip if (spec.label == 0 and spec.one_pip is not None) else spec.pip
        outer = canvas(g.to_image(centre_u + r * _CIRCLE))
        inner = canvas(g.to_image(centre_u - 0.16 * r * light_u + 0.8 * r * _CIRCLE))
        light_pip = _luma(pip_colour) > 0.3
        dc.polygon(outer, fill=_fill(pip_colour, 0.72 if light_pip else 1.0))
        dc.polygon(inner, fill=_fill(pip_colour) if light_pip else _fill([v + 0.06 for v in pip_colour]))
        dp.polygon(outer, fill=255)

    rgb = np.asarray(colour_img.reduce(_SS), dtype=np.float32) / 255.0
    alpha = np.asarray(alpha_img.reduce(_SS), dtype=np.float32) / 255.0
    face_small = face_img.reduce(_SS)
    face = np.asarray(face_small, dtype=np.float32) / 255.0
    pips = np.asarray(pip_img.reduce(_SS), dtype=np.float32) / 255.0

    # Lighting of the top face: a gradient towards the light, a darker rounded rim where the
    # face curves into the sides (from a blurred face mask) and a soft specular highlight.
    half = spec.face / 2.0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs += x0 + 0.5 - spec.cx
    ys += y0 + 0.5 - spec.cy
    towards = (xs * light[0] + ys * light[1]) / half
    shade = 1.0 + 0.5 * spec.gradient * towards
    blurred = np.asarray(face_small.filter(ImageFilter.GaussianBlur(max(0.6, 0.06 * spec.face))),
                         dtype=np.float32) / 255.0
    rim = 0.72 + 0.28 * np.clip((blurred - 0.5) / 0.4, 0.0, 1.0)
    hx, hy = light[0] * 0.35 * half, light[1] * 0.35 * half
    sigma2 = 2.0 * (0.4 * half) ** 2
    highlight = spec.gloss * np.exp(-((xs - hx) ** 2 + (ys - hy) ** 2) / sigma2)
    lit = rgb * (shade * rim)[..., None] + highlight[..., None]
    rgb = np.clip(rgb + face[..., None] * (lit - rgb), 0.0, 1.0)
    # Translucent dice let the table through everywhere but on the (opaque, painted) pips.
    if spec.opacity < 1.0:
        alpha = alpha * (spec.opacity + (1.0 - spec.opacity) * pips)
    return _DiePatch(x0, y0, rgb, alpha, face, pips, g.box)


@dataclass(frozen=True)
class _ShadowStyle:
    offset: float = 0.25  # drop-shadow offset, in face edges
    blur: float = 0.14  # drop-shadow blur radius, in face edges
    strength: float = 0.45  # darkening at the shadow's core


def _cast_shadow(canvas: np.ndarray, patch: _DiePatch, spec: _DieSpec, scene: _Scene,
                 style: _ShadowStyle) -> None:
    """Darken ``canvas`` in place with a soft drop shadow and a contact shadow of a die."""
    H, W = canvas.shape[:2]
    light = np.array(scene.light)
    # A shadow is opaque even under a translucent die (well, mostly): use the coverage mask.
    mask = Image.fromarray((np.clip(patch.alpha / max(spec.opacity, 1e-3), 0, 1) * 255).astype(np.uint8))
    layers = []
    for offset, blur, strength in (
        (style.offset * spec.face, style.blur * spec.face, style.strength),
        (0.06 * spec.face, 0.05 * spec.face, 0.35),  # contact shadow, hugging the base
    ):
        dx, dy = -light * offset + np.array([0.0, 0.1 * spec.face * math.sin(scene.tilt)])
        pad = int(math.ceil(offset + 3 * blur)) + 2
        layer = Image.new("L", (mask.width + 2 * pad, mask.height + 2 * pad))
        layer.paste(mask, (pad + int(round(dx)), pad + int(round(dy))))
        layer = layer.filter(ImageFilter.GaussianBlur(max(0.5, blur)))
        darkening = np.asarray(layer, dtype=np.float32) * (strength / 255.0)
        layers.append((patch.x0 - pad, patch.y0 - pad, darkening))
    for lx, ly, arr in layers:
        x1, y1 = max(0, lx), max(0, ly)
        x2, y2 = min(W, lx + arr.shape[1]), min(H, ly + arr.shape[0])
        if x1 >= x2 or y1 >= y2:
            continue
        sub = arr[y1 - ly:y2 - ly, x1 - lx:x2 - lx]
        canvas[y1:y2, x1:x2] *= (1.0 - sub)[..., None]


def _composite(canvas: np.ndarray, patch: _DiePatch) -> None:
    H, W = canvas.shape[:2]
    h, w = patch.alpha.shape
    x1, y1 = max(0, patch.x0), max(0, patch.y0)
    x2, y2 = min(W, patch.x0 + w), min(H, patch.y0 + h)
    a = patch.alpha[y1 - patch.y0:y2 - patch.y0, x1 - patch.x0:x2 - patch.x0, None]
    rgb = patch.rgb[y1 - patch.y0:y2 - patch.y0, x1 - patch.x0:x2 - patch.x0]
    region = canvas[y1:y2, x1:x2]
    region += a * (rgb - region)


# ------------------------------------------------------------------------------------------
# Table textures
# ------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cell: float,
                  cell_y: float | None = None) -> np.ndarray:
    """Value noise of about unit variance: a coarse random grid upsampled bicubically.

    ``cell`` (and ``cell_y``, default ``cell``) is the feature size in pixels.
    """
    gw = max(2, int(round(w / cell)) + 2)
    gh = max(2, int(round(h / (cell_y or cell))) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return np.array(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)


def _fractal(rng: np.random.Generator, w: int, h: int, cell: float, octaves: int = 3) -> np.ndarray:
    out = np.zeros((h, w), dtype=np.float32)
    amp = 1.0
    for _ in range(octaves):
        out += amp * _smooth_noise(rng, w, h, max(2.0, cell))
        cell /= 2.0
        amp /= 2.0
    return out / 1.5


def _pick(rng: np.random.Generator, colours: Sequence[RGB], jitter: float = 0.06) -> np.ndarray:
    base = np.array(colours[int(rng.integers(len(colours)))], dtype=np.float32)
    return np.clip(base * rng.uniform(1 - jitter, 1 + jitter, 3), 0, 1).astype(np.float32)


_WOODS: tuple[RGB, ...] = ((0.72, 0.53, 0.33), (0.40, 0.25, 0.14), (0.82, 0.66, 0.45),
                           (0.56, 0.30, 0.18), (0.60, 0.56, 0.50), (0.30, 0.20, 0.13))


def _wood(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    vertical = rng.random() < 0.35
    fw, fh = (h, w) if vertical else (w, h)  # grain runs along x in this frame
    base = _pick(rng, _WOODS)
    plank_w = fh * rng.uniform(0.16, 0.4)
    y = np.arange(fh, dtype=np.float32)[:, None] + rng.uniform(0, plank_w)
    x = np.arange(fw, dtype=np.float32)[None, :]
    plank = (y // plank_w).astype(int)
    n_planks = int(plank.max()) + 1
    tone = rng.normal(1.0, 0.07, n_planks).astype(np.float32)
    phase = rng.uniform(0, 200, n_planks).astype(np.float32)
    # Grain lines run along the board and undulate slowly: the warp varies over the length
    # of a board but little across it. A second, across-only noise makes the spacing of the
    # lines irregular, as growth rings are.
    period = rng.uniform(5, 16)
    warp = _smooth_noise(rng, fw, fh, fw / rng.uniform(1.0, 3.0), fh / rng.uniform(2.0, 6.0))
    warp *= period * rng.uniform(0.6, 2.0)
    spacing = _smooth_noise(rng, 1, fh, 1.0, rng.uniform(8, 30)) * period * 0.8
    grain = (y + phase[plank] + warp + spacing) / period
    rings = (0.5 + 0.5 * np.sin(2 * np.pi * grain)) ** rng.uniform(2, 5)
    streak_grid = rng.standard_normal((fh, fw // 24 + 2)).astype(np.float32)
    streaks = np.asarray(Image.fromarray(streak_grid).resize((fw, fh), Image.Resampling.BILINEAR))
    value = tone[plank] * (1.0 - rng.uniform(0.1, 0.25) * rings + 0.05 * streaks)
    seam = (y % plank_w) < rng.uniform(1.0, 2.5)
    joints = rng.uniform(0, fw * 1.5, n_planks)
    seam = seam | (np.abs(x - joints[plank]) < 1.0)
    value = np.where(seam, value * 0.55, value)
    out = base[None, None, :] * value[..., None]
    return out.transpose(1, 0, 2) if vertical else out


_FELTS: tuple[RGB, ...] = ((0.10, 0.42, 0.20), (0.12, 0.25, 0.50), (0.50, 0.08, 0.10),
                           (0.40, 0.40, 0.42), (0.13, 0.13, 0.14), (0.62, 0.55, 0.42))


def _felt(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    base = _pick(rng, _FELTS)
    mottle = _fractal(rng, w, h, rng.uniform(30, 90)) * rng.uniform(0.03, 0.08)
    fibres = rng.standard_normal((h, w)).astype(np.float32) * rng.uniform(0.02, 0.05)
    return base[None, None, :] * (1.0 + mottle + fibres)[..., None]


_CLOTHS: tuple[RGB, ...] = ((0.80, 0.78, 0.72), (0.55, 0.15, 0.12), (0.15, 0.22, 0.40),
                            (0.25, 0.35, 0.25), (0.85, 0.82, 0.70), (0.45, 0.40, 0.35), (0.9, 0.9, 0.9))


def _stripes(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """A random sequence of bands of k colour indices, length n."""
    out = np.empty(n, dtype=int)
    pos = 0
    while pos < n:
        width = int(rng.integers(6, 40))
        out[pos:pos + width] = int(rng.integers(k))
        pos += width
    return out


def _cloth(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    period = rng.uniform(2.6, 4.5)
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    weave = np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period) * rng.uniform(0.04, 0.09)
    if rng.random() < 0.5:  # tartan: crossing bands of 2-3 colours
        colours = np.stack([_pick(rng, _CLOTHS, 0.15) for _ in range(int(rng.integers(2, 4)))])
        cx = colours[_stripes(rng, w, len(colours))][None, :, :]
        cy = colours[_stripes(rng, h, len(colours))][:, None, :]
        base = 0.5 * (cx + cy)
    else:  # plain linen with slubs (thicker threads) running along x
        slubs = rng.standard_normal((h, w // 30 + 2)).astype(np.float32)
        slub = np.asarray(Image.fromarray(slubs).resize((w, h), Image.Resampling.BILINEAR)) * 0.04
        base = _pick(rng, _CLOTHS)[None, None, :] * (1.0 + slub)[..., None]
    folds = _smooth_noise(rng, w, h, rng.uniform(60, 140)) * rng.uniform(0.04, 0.1)
    return base * (1.0 + weave + folds)[..., None]


_PAPERS: tuple[RGB, ...] = ((0.92, 0.92, 0.90), (0.80, 0.80, 0.80), (0.85, 0.80, 0.70),
                            (0.60, 0.65, 0.72), (0.35, 0.35, 0.37), (0.78, 0.85, 0.78), (0.95, 0.85, 0.80))


def _gradient(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    c1, c2 = _pick(rng, _PAPERS), _pick(rng, _PAPERS)
    x = np.arange(w, dtype=np.float32)[None, :] / w - 0.5
    y = np.arange(h, dtype=np.float32)[:, None] / h - 0.5
    if rng.random() < 0.6:
        a = rng.uniform(0, 2 * np.pi)
        t = np.clip(0.5 + math.cos(a) * x + math.sin(a) * y, 0, 1)
    else:
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        t = np.clip(np.hypot(x - cx, y - cy) * 1.4, 0, 1)
    mix = c1[None, None, :] + t[..., None] * (c2 - c1)[None, None, :]
    grain = rng.standard_normal((h, w)).astype(np.float32) * 0.012 + _smooth_noise(rng, w, h, 50) * 0.02
    return mix * (1.0 + grain)[..., None]


_TILES: tuple[RGB, ...] = ((0.90, 0.90, 0.88), (0.70, 0.38, 0.25), (0.35, 0.36, 0.38),
                           (0.55, 0.68, 0.78), (0.80, 0.75, 0.65), (0.20, 0.35, 0.30))


def _tiles(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    base = _pick(rng, _TILES)
    size = h * rng.uniform(0.16, 0.4)
    gw = rng.uniform(1.5, 4.0)
    x = np.arange(w, dtype=np.float32)[None, :] + rng.uniform(0, size)
    y = np.arange(h, dtype=np.float32)[:, None] + rng.uniform(0, size)
    ix, iy = (x // size).astype(int), (y // size).astype(int)
    tone = rng.normal(1.0, 0.05, (int(iy.max()) + 1, int(ix.max()) + 1)).astype(np.float32)
    value = tone[iy, ix] * (1.0 + 0.02 * rng.standard_normal((h, w)).astype(np.float32))
    if rng.random() < 0.5:  # marble veins
        warp = _fractal(rng, w, h, 60) * 25
        veins = np.abs(np.sin((x + y * 0.7 + warp) / rng.uniform(12, 30))) ** 12
        value = value * (1.0 - 0.12 * veins)
    grout = ((x % size) < gw) | ((y % size) < gw)
    grout_colour = np.array((0.85, 0.85, 0.82) if _luma(base) < 0.6 else (0.45, 0.45, 0.45), dtype=np.float32)
    out = base[None, None, :] * value[..., None]
    return np.where(grout[..., None], grout_colour[None, None, :] * value[..., None], out)


_TEXTURES = (_wood, _felt, _cloth, _gradient, _tiles)
_TEXTURE_P = np.array([0.3, 0.2, 0.2, 0.15, 0.15])


def _table(rng: np.random.Generator, w: int, h: int, perspective: float) -> np.ndarray:
    """A table texture seen in perspective: the far (top) edge shows ``1 + perspective``
    times more table than the near (bottom) edge."""
    k = perspective
    tw, th = int(math.ceil(w * (1 + k))) + 2, int(math.ceil(h * (1 + k / 2))) + 2
    texture = _TEXTURES[int(rng.choice(len(_TEXTURES), p=_TEXTURE_P))](rng, tw, th)
    if k <= 1e-3:
        return texture[:h, :w].astype(np.float32)
    # Output (x, y) samples the texture at x' = cx + (x - w/2) * s(y), y' = e y / (1 + q y)
    # with s(y) = (1 + k) / (1 + q y): a homography, so straight lines stay straight.
    q = k / h
    cx = tw / 2.0
    e = (th - 2) * (1 + k) / h
    coeffs = (1 + k, cx * q, cx - (1 + k) * w / 2.0, 0.0, e, 0.0, 0.0, q)
    channels = [Image.fromarray(np.ascontiguousarray(texture[..., i], dtype=np.float32))
                .transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
                for i in range(3)]
    return np.stack([np.asarray(c) for c in channels], axis=-1)


# ------------------------------------------------------------------------------------------
# Scenes
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Placed:
    spec: _DieSpec
    geom: _Geometry
    order: int  # placement index, breaks ties in depth order

    @property
    def depth_key(self) -> tuple[float, int]:
        """Sort key from far to near: dice whose base is lower in the image are nearer."""
        return (self.geom.box[3], self.order)


BoxXYXY = tuple[float, float, float, float]


def _box_coverage(target: BoxXYXY, covers: list[BoxXYXY]) -> float:
    """Fraction of the ``target`` box covered by the union of the ``covers`` boxes."""
    x1, y1, x2, y2 = target
    # Rasterize at 1 px on the target's grid: exact enough and simple for a union.
    w, h = max(1, int(math.ceil(x2 - x1))), max(1, int(math.ceil(y2 - y1)))
    grid = np.zeros((h, w), dtype=bool)
    for cx1, cy1, cx2, cy2 in covers:
        a, b = int(max(0, math.floor(cx1 - x1))), int(min(w, math.ceil(cx2 - x1)))
        c, d = int(max(0, math.floor(cy1 - y1))), int(min(h, math.ceil(cy2 - y1)))
        if a < b and c < d:
            grid[c:d, a:b] = True
    return float(grid.mean())


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _in_front(a: _Placed, b: _Placed) -> bool:
    """Whether ``a`` is nearer the camera than ``b``, so drawn over it."""
    return a.depth_key > b.depth_key


def _occlusion_ok(dice: list[_Placed], max_occlusion: float) -> bool:
    """Every box at most ``max_occlusion`` covered by dice in front; no top pip hidden."""
    new = dice[-1]
    for target in dice:
        front = [d for d in dice
                 if d is not target and _in_front(d, target) and _overlaps(d.geom.box, target.geom.box)]
        if not front or (target is not new and new not in front):
            continue  # unchanged by the new die
        if _box_coverage(target.geom.box, [d.geom.box for d in front]) > max_occlusion:
            return False
        # A pip is hidden if any point of its outline is inside a die in front (+1 px).
        circles = target.geom.pip_circles(target.spec.label)
        pts = np.vstack([target.geom.to_image(c + r * _CIRCLE) for c, r in circles])
        for d in front:
            if _inside_hull(d.geom.hull, pts, margin=1.0).any():
                return False
    return True


def _choose_body(rng: np.random.Generator, bg_colour: np.ndarray, preferred: int | None) -> _Body:
    """A die body that stands out from the table under it (a few tries)."""
    def random_body() -> _Body:
        return _BODIES[int(rng.choice(len(_BODIES), p=_BODY_P))]

    body = _BODIES[preferred] if preferred is not None else random_body()
    for _ in range(8):
        # What the camera sees of a translucent die is partly the table.
        colour = np.array(body.colour) * body.opacity + bg_colour * (1 - body.opacity)
        contrast = max(abs(_luma(colour) - _luma(bg_colour)), 0.5 * float(np.linalg.norm(colour - bg_colour)))
        if contrast >= 0.18:
            break
        body = random_body()
    return body


def _side_faces(rng: np.random.Generator, top: int) -> tuple[int, int, int, int]:
    """Values of the four side faces in order around the die: opposite faces sum to 7."""
    others = [v for v in range(1, 7) if v not in (top, 7 - top)]
    a = others[int(rng.integers(len(others)))]
    rest = [v for v in others if v not in (a, 7 - a)]
    b = rest[int(rng.integers(len(rest)))]
    return (a, b, 7 - a, 7 - b)


def _render_scene(rng: np.random.Generator, width: int, height: int,
                  style: DiceStyle) -> tuple[np.ndarray, list[_Placed]]:
    """One image (uint8, HxWx3) and its dice in drawing order."""
    scale = min(width / _REFERENCE_SIZE[0], height / _REFERENCE_SIZE[1])
    tilt = math.radians(rng.uniform(0.0, style.max_tilt_deg))
    light_angle = rng.uniform(0, 2 * math.pi)
    scene = _Scene(tilt, (math.cos(light_angle), math.sin(light_angle)))
    perspective = 1.2 * math.sin(tilt) * rng.uniform(0.6, 1.0)
    canvas = _table(rng, width, height, perspective)

    face_base = rng.uniform(*style.face_size) * scale
    fit = int(0.33 * width * height / (1.45 * face_base) ** 2)
    n_dice = int(rng.integers(style.min_dice, max(style.min_dice, min(style.max_dice, fit)) + 1))
    same_set = rng.random() < 0.45  # a photo of one set of dice, or of mixed dice
    set_body = int(rng.choice(len(_BODIES), p=_BODY_P))
    set_pip = _PIP_COLOURS[_BODIES[set_body].pips[int(rng.integers(len(_BODIES[set_body].pips)))]]
    margin = 2.0

    dice: list[_Placed] = []
    attempts = 0
    while len(dice) < n_dice and attempts < 60 * n_dice:
        attempts += 1
        # Shrink the dice a little if the image is hard to fill (never seen in practice).
        shrink = 1.0 if attempts < 30 * n_dice else 0.8
        label = int(rng.integers(6))
        cy = rng.uniform(0, height)
        # Nearer (lower) dice look larger: the size follows the table's perspective.
        persp = (1 + perspective * cy / height) / (1 + perspective / 2)
        face = face_base * rng.uniform(0.92, 1.08) * persp * shrink
        probe = _DieSpec(label, 0.0, 0.0, face, rng.uniform(0, 2 * math.pi), (1, 1, 1), (0, 0, 0),
                         corner=rng.uniform(0.14, 0.3))
        g0 = _die_geometry(probe, scene)
        lo_x, hi_x = margin - g0.box[0], width - margin - g0.box[2]
        lo_y, hi_y = margin - g0.box[1], height - margin - g0.box[3]
        if lo_x >= hi_x or lo_y >= hi_y:
            continue
        if not lo_y <= cy <= hi_y:
            continue  # resampling rather than clipping keeps dice off the image edges
        cx = rng.uniform(lo_x, hi_x)
        bx1, by1, bx2, by2 = (int(v + o) for v, o in zip(g0.box, (cx, cy, cx, cy)))
        under = canvas[by1:by2 + 1, bx1:bx2 + 1].reshape(-1, 3).mean(axis=0)  # table colour under the die
        body = _choose_body(rng, under, set_body if same_set else None)
        if same_set and body is _BODIES[set_body]:
            pip = set_pip
        else:
            pip = _PIP_COLOURS[body.pips[int(rng.integers(len(body.pips)))]]
        r, g, b = (float(v) for v in np.clip(np.array(body.colour) * rng.uniform(0.94, 1.06, 3), 0, 1))
        t1, t2, t3, t4 = (int(v) for v in rng.integers(0, 4, 4))
        spec = _DieSpec(
            label, cx, cy, face, probe.angle, (r, g, b), pip, body.opacity, probe.corner,
            gloss=float(rng.uniform(0.05, 0.35)), gradient=float(rng.uniform(0.1, 0.35)),
            one_pip=_PIP_COLOURS["red"] if body.name == "white" and rng.random() < 0.3 else None,
            side_values=_side_faces(rng, label + 1),
            side_turns=(t1, t2, t3, t4),
        )
        placed = _Placed(spec, _die_geometry(spec, scene), len(dice))
        if _occlusion_ok(dice + [placed], style.max_occlusion):
            dice.append(placed)
    if len(dice) < style.min_dice:  # only with extreme styles: the `fit` rule avoids it otherwise
        raise ValueError(f"could place only {len(dice)} of min_dice={style.min_dice} dice of face size "
                         f"{style.face_size} in a {width}x{height} image; lower min_dice or face_size")

    # Painter's order: far (higher in the image) dice first, so nearer dice cover them.
    dice.sort(key=lambda d: d.depth_key)
    shadow = _ShadowStyle(offset=float(rng.uniform(0.12, 0.4)), blur=float(rng.uniform(0.08, 0.2)),
                          strength=float(rng.uniform(0.3, 0.6)))
    for d in dice:
        patch = _render_die(d.spec, scene, d.geom)
        _cast_shadow(canvas, patch, d.spec, scene, shadow)
        _composite(canvas, patch)
    return _camera(rng, canvas, scene), dice


def _camera(rng: np.random.Generator, img: np.ndarray, scene: _Scene) -> np.ndarray:
    """Uneven light, vignetting, white balance, exposure, blur and sensor noise."""
    h, w = img.shape[:2]
    x = (np.arange(w, dtype=np.float32)[None, :] - w / 2) / (w / 2)
    y = (np.arange(h, dtype=np.float32)[:, None] - h / 2) / (h / 2)
    light = scene.light
    illumination = 1.0 + rng.uniform(0.0, 0.2) * (x * light[0] + y * light[1])
    illumination *= 1.0 - rng.uniform(0.0, 0.3) * (x * x + y * y) / 2
    gains = np.clip(rng.normal(1.0, 0.05, 3), 0.88, 1.12).astype(np.float32)
    exposure = rng.uniform(0.8, 1.15)
    contrast = rng.uniform(0.85, 1.15)
    out = img * illumination[..., None] * gains[None, None, :] * exposure
    out = (out - 0.5) * contrast + 0.5
    pil = Image.fromarray((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8))
    if rng.random() < 0.75:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.9)))
    arr = np.asarray(pil, dtype=np.float32)
    sigma = rng.uniform(1.0, 7.0)  # in 8-bit levels
    # Sensor noise: per-channel (chroma) plus a shared luminance part, as in real sensors.
    noise = rng.standard_normal(arr.shape).astype(np.float32) * sigma
    noise += rng.standard_normal(arr.shape[:2]).astype(np.float32)[..., None] * (sigma * 0.7)
    return np.clip(arr + noise + 0.5, 0, 255).astype(np.uint8)


def _encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def _yolo_lines(dice: list[_Placed], width: int, height: int) -> str:
    lines = []
    for d in dice:
        x1, y1, x2, y2 = d.geom.box
        x1, x2 = max(0.0, x1), min(float(width), x2)
        y1, y2 = max(0.0, y1), min(float(height), y2)
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        lines.append(f"{d.spec.label} {cx:.6f} {cy:.6f} {(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return "\n".join(lines) + "\n"


def _render_item(seed: int, index: int, width: int, height: int, style: DiceStyle) -> tuple[bytes, str]:
    """JPEG bytes and YOLO label text of image ``index``; depends only on (seed, index)."""
    rng = np.random.default_rng([seed, index])
    img, dice = _render_scene(rng, width, height, style)
    quality = int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1))
    return _encode_jpeg(img, quality), _yolo_lines(dice, width, height)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def generate_dice_dataset(out: str | Path, num_images: int = 250, seed: int = 0,
                          image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE, overwrite: bool = False,
                          progress: bool = False, style: DiceStyle | None = None) -> Path:
    """Generate a synthetic six-sided-dice detection dataset in the loose YOLO layout.

    See the module docstring for what the images look like. The output directory appears
    only when complete (it is built next to ``out`` and moved into place).

    Args:
        out: output directory; must not exist or be empty unless ``overwrite``.
        num_images: number of images (``>= 1``), named ``IMG_0000``, ``IMG_0001``, ...
        seed: non-negative seed; image ``i`` depends only on ``(seed, i)``.
        image_size: ``(width, height)`` in pixels, each in ``[128, 4096]``.
        overwrite: replace an existing non-empty ``out``.
        progress: show a tqdm progress bar.
        style: generator knobs (:class:`DiceStyle`); the defaults match the tutorial.

    Returns:
        ``out`` as a ``Path``.

    Raises:
        ValueError: an argument is invalid.
        otx_nld.errors.OtxNldError: ``out`` is a non-empty directory and not ``overwrite``.
    """
    num_images = _check_int("num_images", num_images, 1)
    seed = _check_int("seed", seed, 0)
    try:
        width, height = image_size
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be a (width, height) pair, got {image_size!r}") from None
    width = _check_int("image width", width, 128)
    height = _check_int("image height", height, 128)
    if width > 4096 or height > 4096:
        raise ValueError(f"image_size must be at most 4096x4096, got {width}x{height}")
    style = style or DiceStyle()
    style.validate()

    out = Path(out)
    digits = max(4, len(str(num_images - 1)))
    names = ("\n".join(LABELS) + "\n").encode("utf-8")
    indices: Iterable[int] = range(num_images)
    if progress:
        from tqdm import tqdm

        indices = tqdm(range(num_images), desc="dice images", unit="img")
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        ann_dir, img_dir = tmp / "Annotations", tmp / "Images"
        ann_dir.mkdir()
        img_dir.mkdir()
        (ann_dir / "classes.txt").write_bytes(names)
        (tmp / "obj.names").write_bytes(names)
        for i in indices:
            jpeg, labels = _render_item(seed, i, width, height, style)
            item_id = f"IMG_{i:0{digits}d}"
            (img_dir / f"{item_id}.jpg").write_bytes(jpeg)
            (ann_dir / f"{item_id}.txt").write_bytes(labels.encode("utf-8"))
    return out
