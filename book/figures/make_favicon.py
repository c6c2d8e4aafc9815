"""Draw the book's favicon: a red star and a blue circle from the generated world (Chapter 1).

Run from anywhere::

    python book/figures/make_favicon.py

It writes ``_static/favicon.png`` (64 x 64) at the repository root, where ``html.favicon`` in
``_config.yml`` points. Deterministic: the shapes come from :mod:`align_lite.data.world`'s drawer.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from align_lite.data.world import COLORS, _draw_shape

OUT = Path(__file__).resolve().parents[2] / "_static" / "favicon.png"
SIZE = 64


def main() -> None:
    image = Image.new("RGB", (SIZE, SIZE), (248, 248, 246))
    draw = ImageDraw.Draw(image)
    _draw_shape(draw, "star", 22, 24, 38, 0.0, COLORS["red"])
    _draw_shape(draw, "circle", 44, 44, 30, 0.0, COLORS["blue"])
    image.save(OUT, optimize=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
