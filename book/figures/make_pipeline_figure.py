"""Draw the book's one pipeline figure: ALIGN end to end, each stage tagged with its chapter.

Run from anywhere::

    python book/figures/make_pipeline_figure.py

It writes ``pipeline.png`` next to this file (150 dpi). The output is deterministic: no random
elements, fixed fonts (matplotlib's bundled DejaVu Sans) and no version stamp in the PNG metadata.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent / "pipeline.png"
DPI = 150

# One colour family per kind of stage: (face, edge).
DATA = ("#fdebd3", "#c8731e")
MODEL = ("#dceafb", "#2f6db3")
LEARN = ("#dff3e1", "#2e8b47")
USE = ("#ece3f7", "#6b45a8")

BOX_H = 1.0  # default box height, data units


def box(ax, cx, cy, w, title, body, colours, h=BOX_H):
    """A rounded box centred at (cx, cy): bold title line, smaller body line(s)."""
    face, edge = colours
    patch = FancyBboxPatch(
        (cx - w / 2, cy - h / 2),
        w,
        h,
        boxstyle="round,pad=0.02,rounding_size=0.12",
        linewidth=1.6,
        edgecolor=edge,
        facecolor=face,
        zorder=2,
    )
    ax.add_patch(patch)
    if body:
        ax.text(cx, cy + 0.2 * h, title, ha="center", va="center", fontsize=11.5,
                fontweight="bold", color="#1b1b1b", zorder=3)
        ax.text(cx, cy - 0.2 * h, body, ha="center", va="center", fontsize=9.5,
                color="#333333", zorder=3, linespacing=1.25)
    else:
        ax.text(cx, cy, title, ha="center", va="center", fontsize=11.5,
                fontweight="bold", color="#1b1b1b", zorder=3)
    return (cx, cy, w, h)


def arrow(ax, start, end, rad=0.0):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=16,
            linewidth=1.5,
            color="#444444",
            connectionstyle=f"arc3,rad={rad}",
            shrinkA=2,
            shrinkB=2,
            zorder=1,
        )
    )


def bottom(b):
    cx, cy, _, h = b
    return (cx, cy - h / 2)


def top(b):
    cx, cy, _, h = b
    return (cx, cy + h / 2)


def main() -> Path:
    plt.rcParams.update({"font.family": "DejaVu Sans", "svg.hashsalt": "align_lite"})
    fig, ax = plt.subplots(figsize=(8.4, 10.3))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 12.4)
    ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, top=0.99, bottom=0.01)

    left_x, right_x, col_w = 3.05, 6.95, 3.5

    web = box(ax, 5.0, 11.6, 6.6, "Web images + their alt-texts",
              "billions of noisy (image, alt-text) pairs, no human curation", DATA)
    filt = box(ax, 5.0, 10.1, 7.4, "Ch. 1 · Frequency-based filters",
               "image size, aspect ratio, shared alt-texts, rare tokens, length,\n"
               "eval-set near-duplicates  →  the 1.8 B pairs ALIGN trains on",
               DATA, h=1.15)

    img = box(ax, left_x, 8.45, col_w, "Ch. 2 · Image tower",
              "EfficientNet, global pooling", MODEL)
    txt = box(ax, right_x, 8.45, col_w, "Ch. 2 · Text tower",
              "BERT [CLS] → linear layer", MODEL)

    xemb = box(ax, left_x, 6.95, col_w, "image embedding",
               r"$x_i = f(\mathrm{img}_i)\,/\,\Vert f(\mathrm{img}_i)\Vert$", MODEL)
    yemb = box(ax, right_x, 6.95, col_w, "text embedding",
               r"$y_i = g(\mathrm{txt}_i)\,/\,\Vert g(\mathrm{txt}_i)\Vert$", MODEL)

    loss = box(ax, 5.0, 5.4, 7.4, "Ch. 3 · Contrastive (normalised softmax) loss",
               r"softmax over $x_i^\top y_j/\sigma$, image→text + text→image, "
               r"learnable temperature $\sigma$", LEARN)
    train = box(ax, 5.0, 3.9, 7.4, "Ch. 4 · Training",
                r"LAMB, warm-up + linear decay; ablation: learnable vs fixed $\sigma$", LEARN)

    zs = box(ax, left_x, 1.45, col_w + 0.1, "Ch. 5 · Zero-shot classification",
             "class names → prompts → text\nembeddings; nearest one wins", USE, h=1.15)
    ret = box(ax, right_x, 1.45, col_w + 0.1, "Ch. 6 · Retrieval",
              "image, text and image+text queries\nin a vector database", USE, h=1.15)

    # Arrows, top to bottom.
    arrow(ax, bottom(web), top(filt))
    arrow(ax, (filt[0] - 1.2, filt[1] - filt[3] / 2), top(img))
    arrow(ax, (filt[0] + 1.2, filt[1] - filt[3] / 2), top(txt))
    arrow(ax, bottom(img), top(xemb))
    arrow(ax, bottom(txt), top(yemb))
    arrow(ax, bottom(xemb), (loss[0] - 1.2, loss[1] + loss[3] / 2))
    arrow(ax, bottom(yemb), (loss[0] + 1.2, loss[1] + loss[3] / 2))
    arrow(ax, bottom(loss), top(train))
    # The trained towers feed both uses: straight down, leaving the middle free for Ch. 7's tag.
    arrow(ax, (left_x, train[1] - train[3] / 2), top(zs))
    arrow(ax, (right_x, train[1] - train[3] / 2), top(ret))

    # Chapter 7: the same towers, loss and training, scaled up. A dashed frame around them,
    # its tag sitting on the frame's bottom edge between the two downward arrows.
    frame_bottom, frame_top = 2.75, 9.2
    ax.add_patch(FancyBboxPatch(
        (0.55, frame_bottom),
        8.9,
        frame_top - frame_bottom,
        boxstyle="round,pad=0.02,rounding_size=0.2",
        linewidth=1.4,
        linestyle=(0, (5, 3)),
        edgecolor="#8a8a8a",
        facecolor="none",
        zorder=0,
    ))
    ax.text(5.0, frame_bottom, "Ch. 7 · scaled up to GPUs",
            ha="center", va="center", fontsize=10.5, fontweight="bold", color="#555555",
            bbox=dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor="#8a8a8a",
                      linestyle=(0, (5, 3)), linewidth=1.2),
            zorder=3)
    ax.text(5.0, frame_bottom - 0.48, "DDP, in-batch negatives\ngathered across GPUs",
            ha="center", va="center", fontsize=9, color="#555555", linespacing=1.2, zorder=3)
    ax.text(0.55, 0.3, "x: image, y: text — both L2-normalised;  σ: temperature",
            ha="left", va="center", fontsize=8.5, color="#666666")

    fig.savefig(OUT, dpi=DPI, metadata={"Software": None}, facecolor="white")
    plt.close(fig)
    return OUT


if __name__ == "__main__":
    print(main())
