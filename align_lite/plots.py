"""Figures the chapters share: image grids with captions, curves that redraw while training."""

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


def to_image(pixels) -> np.ndarray:
    """A (3, S, S) tensor in [-1, 1] (the models' input) → an (S, S, 3) array in [0, 1] to show."""
    array = np.asarray(pixels.detach().cpu().float() if hasattr(pixels, "detach") else pixels, dtype=np.float32)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"expected pixels of shape (3, S, S), got {array.shape}")
    return np.clip((array.transpose(1, 2, 0) + 1) / 2, 0, 1)


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


class LiveCurves:
    """Training curves that redraw in a notebook as records arrive.

    Pass as ``train(..., log_fns=[LiveCurves()])``: every record the trainer logs (``step`` plus
    ``loss``, ``temperature``, ``lr``, eval numbers …) is kept in :attr:`records`, and the figure,
    one panel per key in ``keys`` (missing keys are skipped), is redrawn in place every ``every``
    records and at every evaluation record (so the last frame is complete) through IPython's
    display handles. Outside IPython nothing is drawn.
    """

    def __init__(self, keys: Sequence[str] = ("loss", "temperature"), every: int = 1,
                 log_scale: Sequence[str] = ("temperature",)):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.keys, self.every, self.log_scale = tuple(keys), every, set(log_scale)
        self.records: list[dict] = []
        self._handle = None

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of ``key`` over the records that have it."""
        rows = [r for r in self.records if key in r]
        return [int(r["step"]) for r in rows], [float(r[key]) for r in rows]

    def figure(self) -> plt.Figure:
        fig, axes = plt.subplots(1, len(self.keys), figsize=(4 * len(self.keys), 3), squeeze=False)
        for ax, key in zip(axes[0], self.keys):
            steps, values = self.series(key)
            ax.plot(steps, values, marker="o" if len(steps) < 20 else None)
            ax.set(xlabel="step", title=key, yscale="log" if key in self.log_scale and values else "linear")
        fig.tight_layout()
        return fig

    def __call__(self, record: dict) -> None:
        self.records.append(dict(record))
        if len(self.records) % self.every and "loss" in record:  # eval records always redraw
            return
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython ships with the book extras
            return
        if get_ipython() is None:
            return
        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)
