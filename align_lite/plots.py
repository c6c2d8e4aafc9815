"""Figures the chapters share: image grids with captions (matplotlib only)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image


def wrap(text: str, width: int = 22, max_lines: int = 3) -> str:
    """Wrap a caption to ``width`` columns, at most ``max_lines`` lines (ellipsis beyond)."""
    lines = textwrap.wrap(text, width) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1] + "…"
    return "\n".join(lines)


def image_grid(
    images: Sequence[Image.Image | np.ndarray],
    captions: Sequence[str] | None = None,
    ncols: int = 6,
    cell: float = 1.8,
    title: str | None = None,
    caption_width: int = 22,
) -> plt.Figure:
    """Show ``images`` in a grid, each with its (wrapped) caption underneath."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, (cell + 0.55) * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(image)
        if captions is not None:
            ax.set_title(wrap(captions[i], caption_width), fontsize=7.5, loc="left")
    if title:
        fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    fig.tight_layout()
    return fig
