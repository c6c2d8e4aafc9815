"""Drawing a row's scene with PIL: shapes, layout on the grid, backgrounds, hub logos
(:func:`render_image`, a pure function of the row)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from align_lite.data.world.geometry import ANCHORS, CELL, DIAMETER, MARGIN, grid
from align_lite.data.world.vocabulary import BACKGROUNDS, BACKGROUND_NAMES, COLORS, SHAPES


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Vertices of ``shape`` inside the unit circle, centred at the origin, y pointing down."""
    if shape == "square":
        return [(-0.68, -0.68), (0.68, -0.68), (0.68, 0.68), (-0.68, 0.68)]
    if shape == "triangle":
        return [(0.0, -0.95), (0.95, 0.72), (-0.95, 0.72)]
    if shape == "diamond":  # a rhombus taller than wide: never mistaken for a rotated square
        return [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)]
    if shape == "hexagon":
        return [(math.cos(a), math.sin(a)) for a in (math.pi / 3 * k for k in range(6))]
    if shape == "star":
        return [
            ((1.0 if k % 2 == 0 else 0.48) * math.sin(math.pi * k / 5),
             -(1.0 if k % 2 == 0 else 0.48) * math.cos(math.pi * k / 5))
            for k in range(10)
        ]
    if shape == "cross":
        a, b = 0.3, 0.9
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b),
                (-a, a), (-b, a), (-b, -a), (-a, -a)]
    if shape == "heart":
        pts = []
        for k in range(28):
            t = 2 * math.pi * k / 28
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x / 17.0, -(y + 2.5) / 17.0))
        return pts
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


_UNIT_POLYGONS = {s: _unit_polygon(s) for s in SHAPES if s != "circle"}


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, d: float,
    angle: float, rgb: tuple[int, int, int],
) -> None:
    """Fill ``shape`` of diameter ``d`` px centred at (cx, cy), rotated by ``angle`` radians."""
    r = d / 2
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
        return
    ca, sa = math.cos(angle), math.sin(angle)
    points = [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca))
              for x, y in _UNIT_POLYGONS[shape]]
    draw.polygon(points, fill=rgb)


def _shade(rgb: tuple[int, int, int], rnd: random.Random) -> tuple[int, int, int]:
    """A slightly varied shade of ``rgb`` (±10 per channel)."""
    r, g, b = (min(255, max(0, c + rnd.randint(-10, 10))) for c in rgb)
    return r, g, b


def _background(width: int, height: int, name: str, rnd: random.Random) -> Image.Image:
    """A light neutral background with a mild linear brightness gradient.

    The gradient is a 2x2 image of corner shades stretched bilinearly: fast at any size.
    """
    shift = rnd.uniform(-5, 5)
    base = [c + shift for c in BACKGROUNDS[name]]
    gx, gy = rnd.uniform(-8, 8), rnd.uniform(-8, 8)
    corners = bytes(
        min(255, max(0, round(c + gx * x + gy * y)))
        for y in (-1, 1) for x in (-1, 1) for c in base
    )
    return Image.frombytes("RGB", (2, 2), corners).resize((width, height), Image.BILINEAR)


def _render_size(row: Mapping[str, Any], size: int | tuple[int, int] | None) -> tuple[int, int]:
    if size is None:
        return int(row["width"]), int(row["height"])
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ValueError(f"render size must be positive, got {size!r}")
    return width, height


def _layout(row: Mapping[str, Any], rnd: random.Random, width: int, height: int):
    """(shape, rgb, cx, cy, diameter, angle) of every object of the row's scene, in pixels.

    All random draws come from ``rnd`` in a fixed order, independent of the render size, so a
    scene keeps its layout (in fractions of the image) at every resolution.
    """
    relation = row.get("relation")
    count = 1 if relation else int(row["count"])
    s = min(width, height)
    lo, hi = DIAMETER[row["size"]]
    d = rnd.uniform(lo, hi)
    rows, cols, cells = grid(count, relation, flip=rnd.random() < 0.5)
    if len(cells) < rows * cols:  # e.g. three objects in a 2x2 grid: leave a random cell empty
        cells = sorted(rnd.sample(range(rows * cols), len(cells)))
    cell = d * CELL * s
    box_w, box_h = cols * cell, rows * cell
    ax, ay = ANCHORS[row["position"]]
    jx, jy = rnd.uniform(-0.15, 0.15), rnd.uniform(-0.15, 0.15)
    ux = ax + jx if ax == 0.5 else abs(ax - abs(jx) / 1.5)  # corners/edges jitter inwards
    uy = ay + jy if ay == 0.5 else abs(ay - abs(jy) / 1.5)
    x0 = MARGIN * s + ux * max(0.0, width - 2 * MARGIN * s - box_w)
    y0 = MARGIN * s + uy * max(0.0, height - 2 * MARGIN * s - box_h)

    main_rgb = _shade(COLORS[row["color"]], rnd)
    objects = []
    for slot, c in enumerate(cells):
        if relation and (slot == 0) != (relation in ("left of", "above")):
            shape, rgb = row["other_shape"], _shade(COLORS[row["other_color"]], rnd)
        else:
            shape, rgb = row["shape"], main_rgb
        cx = x0 + (c % cols + 0.5) * cell
        cy = y0 + (c // cols + 0.5) * cell
        objects.append((shape, rgb, cx, cy, d * s, rnd.uniform(-0.14, 0.14)))
    return objects


def _draw_logo(draw: ImageDraw.ImageDraw, row: Mapping[str, Any], width: int, height: int) -> None:
    """A hub image: a fixed badge (ring + big shape) in the row's colour, no randomness."""
    s = min(width, height)
    cx, cy, rgb = width / 2, height / 2, COLORS[row["color"]]
    r = 0.44 * s
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=rgb, width=max(1, round(0.05 * s)))
    _draw_shape(draw, row["shape"], cx, cy, 0.5 * s, 0.0, rgb)


def render_image(row: Mapping[str, Any], size: int | tuple[int, int] | None = None) -> Image.Image:
    """Draw the image of a world row (a mapping with the table's columns) as RGB.

    ``size=None`` draws at the row's nominal ``(width, height)``, an int a square of that side
    (training sizes, 32–64 px), a tuple ``(width, height)``. The picture is a deterministic
    function of the row: same row, same pixels. Small renders are drawn at twice the size and
    box-filtered down, so edges are anti-aliased while object interiors keep their colour.
    """
    width, height = _render_size(row, size)
    scale = 2 if max(width, height) < 128 else 1
    w, h = width * scale, height * scale
    if row.get("noise") == "hub":
        image = Image.new("RGB", (w, h), (255, 255, 255))
        _draw_logo(ImageDraw.Draw(image), row, w, h)
    else:
        seed = int(row["scene_seed"])
        rnd = random.Random(seed)
        image = _background(w, h, BACKGROUND_NAMES[seed % len(BACKGROUNDS)], rnd)
        draw = ImageDraw.Draw(image)
        for shape, rgb, cx, cy, d, angle in _layout(row, rnd, w, h):
            _draw_shape(draw, shape, cx, cy, d, angle, rgb)
    return image.reduce(scale) if scale > 1 else image
