"""Scene geometry shared by the table (what a caption may claim: a group that fits a corner) and
the renderer (what is drawn there): object sizes, the grid objects sit on, the anchors."""

from __future__ import annotations

import numpy as np

# Object diameter as a fraction of the image's shorter side, by size class.
DIAMETER = {"small": (0.22, 0.27), "large": (0.33, 0.41)}
CELL = 1.12  # grid cell side / object diameter: objects never overlap
MARGIN = 0.04  # free border, fraction of the shorter side
CORNER_MAX_BOX = 0.62  # a group may sit off-centre only when its box is at most this big
# Where a group's box sits in the free space (0 = left/top, 1 = right/bottom).
ANCHORS = {
    "center": (0.5, 0.5), "top": (0.5, 0.0), "bottom": (0.5, 1.0),
    "left": (0.0, 0.5), "right": (1.0, 0.5), "top left": (0.0, 0.0),
    "top right": (1.0, 0.0), "bottom left": (0.0, 1.0), "bottom right": (1.0, 1.0),
}


def grid_dim(count: np.ndarray) -> np.ndarray:
    """Side (in cells) of the longest grid axis a group of ``count`` objects needs."""
    return np.where(count <= 1, 1, np.where(count <= 4, 2, 3))


def grid(count: int, relation: str | None, flip: bool) -> tuple[int, int, list[int]]:
    """(rows, cols, cells used in row-major order) for a group; relations use 1x2 or 2x1."""
    if relation is not None:
        rows, cols = (1, 2) if relation in ("left of", "right of") else (2, 1)
        return rows, cols, [0, 1]
    shapes = {1: (1, 1), 2: (1, 2), 3: (2, 2), 4: (2, 2), 5: (2, 3), 6: (2, 3)}
    rows, cols = shapes.get(count, (3, 3))
    if flip:
        rows, cols = cols, rows
    return rows, cols, list(range(count))
