"""A procedurally drawn image–text world: the project's offline, deterministic default data.

Every row is an (image, alt-text) pair. Images are simple scenes drawn with PIL — one to
``max_count`` objects of one colour and shape, or two objects in a spatial relation — on a light,
neutral background. Clean alt-texts describe the scene faithfully with a small closed vocabulary
("two small blue squares on a grey background", "a yellow star to the left of a purple hexagon").

A share of the rows carries the kinds of noise that ALIGN's filters target (paper §3), each kind
built so that one rule is the natural catch:

=================  ==========================================================  ===============
noise kind          what the row looks like                                     caught by
=================  ==========================================================  ===============
``boilerplate``     generic alt-text shared by many images ("click here to       shared-text rule
                    enlarge")
``filename``        "IMG_4821.JPG", "DSC01234.jpg"                              length / rare
``too_short``       1–2 words ("red star")                                      length rule
``too_long``        21–40 words of keyword stuffing about the true content      length rule
``gibberish``       a clean caption with 1–3 random rare tokens inserted         rare-token rule
``misaligned``      the clean caption of a *different* image                     nothing
``small_image``     clean caption, shorter image side in [48, 200] px           image-size rule
``extreme_aspect``  clean caption, aspect ratio in [3, 6]                        aspect rule
``hub``             one of > 1000 alt-texts of a logo-like image                 many-alt-texts rule
=================  ==========================================================  ===============

The table is a pure function of :class:`WorldConfig` (``make_world_table``), and an image is a
pure function of its row (``render_image``), so a world of any size costs nothing on disk:
:class:`WorldDataset` draws images on the fly, while :func:`write_world` writes the usual image
folder + ``metadata.jsonl`` for the filtering chapter.

>>> table = make_world_table(WorldConfig.clean(n=4, seed=0))
>>> table.num_rows, table.column_names[:3]
(4, ['file_name', 'text', 'width'])
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch.utils.data
from PIL import Image, ImageDraw

from align_lite.data import records
from align_lite.progress import progress

# ---------------------------------------------------------------------------------------------
# Vocabulary of the world
# ---------------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "hexagon", "cross", "heart", "diamond",
)
PLURALS: dict[str, str] = {s: s + "es" if s.endswith("ss") else s + "s" for s in SHAPES}

# Saturated colours, pairwise far apart in RGB and far from the light neutral backgrounds.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (130, 40, 180),
    "orange": (245, 130, 20),
    "pink": (240, 100, 180),
    "cyan": (20, 200, 210),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

# Light, low-saturation backgrounds; the index is derived from a row's scene_seed.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (248, 248, 246),
    "grey": (208, 208, 208),
    "beige": (238, 226, 198),
}
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)

SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = (
    "center", "top", "bottom", "left", "right",
    "top left", "top right", "bottom left", "bottom right",
)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)

NOISE_KINDS: tuple[str, ...] = (
    "clean", "boilerplate", "filename", "too_short", "too_long", "gibberish",
    "misaligned", "small_image", "extreme_aspect", "hub",
)

# Generic alt-texts that real web pages attach to many unrelated images.
BOILERPLATE: tuple[str, ...] = (
    "click here to enlarge",
    "stock photo image",
    "product image thumbnail",
    "untitled image",
    "image not available",
    "view larger image",
    "click to see more",
    "photo for illustration purposes only",
    "image courtesy of the author",
    "see more images",
    "main product photo",
    "featured image placeholder",
)

# Keyword-stuffing vocabulary (common words: such captions fail only the length rule).
SEO_WORDS: tuple[str, ...] = (
    "free", "download", "hd", "wallpaper", "vector", "clipart", "art", "stock", "image",
    "images", "picture", "photo", "png", "transparent", "background", "best", "top", "new",
    "cheap", "buy", "online", "sale", "icon", "icons", "design", "cute", "simple", "geometric",
    "shape", "shapes", "color", "colors", "colorful", "kids", "printable", "high", "quality",
    "sticker", "logo", "template", "ideas",
)

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

_ROW_RATES = (
    "boilerplate", "filename", "too_short", "too_long", "gibberish",
    "misaligned", "small_image", "extreme_aspect",
)


@dataclass(frozen=True)
class NoiseConfig:
    """Fractions of rows that carry each kind of noise (the rest are clean).

    ``hub_rows`` is the fraction of rows that are alt-texts of "hub" images, logo-like pictures
    that each carry ``hub_alt_texts`` alt-texts (the paper drops images with > 1000 alt-texts);
    the number of hub images is ``round(hub_rows * n / hub_alt_texts)``.
    """

    boilerplate: float = 0.04
    filename: float = 0.03
    too_short: float = 0.03
    too_long: float = 0.03
    gibberish: float = 0.03
    misaligned: float = 0.05
    small_image: float = 0.03
    extreme_aspect: float = 0.02
    hub_rows: float = 0.0
    hub_alt_texts: int = 1001

    def __post_init__(self) -> None:
        for name in (*_ROW_RATES, "hub_rows"):
            rate = getattr(self, name)
            if not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"NoiseConfig.{name} must be a fraction in [0, 1], got {rate!r}")
        if not isinstance(self.hub_alt_texts, int) or self.hub_alt_texts < 1:
            raise ValueError(
                f"NoiseConfig.hub_alt_texts must be an integer >= 1, got {self.hub_alt_texts!r}"
            )
        if self.total() > 1.0 + 1e-9:
            raise ValueError(
                f"NoiseConfig rates sum to {self.total():.4f} > 1: at most all rows can be noisy"
            )

    def total(self) -> float:
        """Sum of the row-level rates (every kind, hub rows included)."""
        return float(sum(getattr(self, name) for name in (*_ROW_RATES, "hub_rows")))

    @classmethod
    def none(cls) -> NoiseConfig:
        """All rates zero: a clean world."""
        return cls(**{name: 0.0 for name in (*_ROW_RATES, "hub_rows")})


@dataclass(frozen=True)
class WorldConfig:
    """Size, seed and look of a world; see :meth:`clean` and :meth:`noisy` for presets.

    Clean images have each side uniform in ``[min_side, max_side]``; ``min_side`` must exceed
    200 px and ``max_side`` stay below ``3 * min_side`` so that clean images pass the paper's
    image-size (shorter side > 200) and aspect-ratio (< 3) rules.
    """

    n: int = 1000
    seed: int = 0
    min_side: int = 224
    max_side: int = 320
    max_count: int = 4
    relation_rate: float = 0.25
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    def __post_init__(self) -> None:
        for name in ("n", "seed", "min_side", "max_side", "max_count"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ValueError(f"WorldConfig.{name} must be an integer, got {value!r}")
        if self.n < 1:
            raise ValueError(f"WorldConfig.n must be >= 1, got {self.n}")
        if self.seed < 0:
            raise ValueError(f"WorldConfig.seed must be >= 0, got {self.seed}")
        if not 0 < self.min_side <= self.max_side:
            raise ValueError(
                f"WorldConfig needs 0 < min_side <= max_side, got {self.min_side}, {self.max_side}"
            )
        if self.min_side <= 200:
            raise ValueError(
                f"WorldConfig.min_side must be > 200 (got {self.min_side}) so that clean images "
                "pass the paper's image-size rule; small images are a noise kind (small_image)"
            )
        if self.max_side >= 3 * self.min_side:
            raise ValueError(
                f"WorldConfig.max_side must be < 3 * min_side (got {self.max_side} vs "
                f"{self.min_side}) so that clean images pass the paper's aspect-ratio rule"
            )
        if not 1 <= self.max_count <= 9:
            raise ValueError(f"WorldConfig.max_count must be in 1..9, got {self.max_count}")
        if not 0.0 <= float(self.relation_rate) <= 1.0:
            raise ValueError(
                f"WorldConfig.relation_rate must be in [0, 1], got {self.relation_rate}"
            )
        if not isinstance(self.noise, NoiseConfig):
            raise ValueError(f"WorldConfig.noise must be a NoiseConfig, got {self.noise!r}")

    @classmethod
    def clean(cls, n: int = 1000, seed: int = 0) -> WorldConfig:
        """Every row clean: faithful captions, paper-compliant image sizes."""
        return cls(n=n, seed=seed, noise=NoiseConfig.none())

    @classmethod
    def noisy(cls, n: int = 1000, seed: int = 0) -> WorldConfig:
        """The default noise mix; hub images (2% of rows) only from n >= 20000."""
        return cls(n=n, seed=seed, noise=NoiseConfig(hub_rows=0.02 if n >= 20000 else 0.0))


# ---------------------------------------------------------------------------------------------
# Scene geometry shared by the table (what captions may claim) and the renderer (what is drawn)
# ---------------------------------------------------------------------------------------------

# Object diameter as a fraction of the image's shorter side, by size class.
_DIAMETER = {"small": (0.22, 0.27), "large": (0.33, 0.41)}
_CELL = 1.12  # grid cell side / object diameter: objects never overlap
_MARGIN = 0.04  # free border, fraction of the shorter side
_CORNER_MAX_BOX = 0.62  # a group may sit off-centre only when its box is at most this big
# Where a group's box sits in the free space (0 = left/top, 1 = right/bottom).
_ANCHORS = {
    "center": (0.5, 0.5), "top": (0.5, 0.0), "bottom": (0.5, 1.0),
    "left": (0.0, 0.5), "right": (1.0, 0.5), "top left": (0.0, 0.0),
    "top right": (1.0, 0.0), "bottom left": (0.0, 1.0), "bottom right": (1.0, 1.0),
}


def _grid_dim(count: np.ndarray) -> np.ndarray:
    """Side (in cells) of the longest grid axis a group of ``count`` objects needs."""
    return np.where(count <= 1, 1, np.where(count <= 4, 2, 3))


def _grid(count: int, relation: str | None, flip: bool) -> tuple[int, int, list[int]]:
    """(rows, cols, cells used in row-major order) for a group; relations use 1x2 or 2x1."""
    if relation is not None:
        rows, cols = (1, 2) if relation in ("left of", "right of") else (2, 1)
        return rows, cols, [0, 1]
    shapes = {1: (1, 1), 2: (1, 2), 3: (2, 2), 4: (2, 2), 5: (2, 3), 6: (2, 3)}
    rows, cols = shapes.get(count, (3, 3))
    if flip:
        rows, cols = cols, rows
    return rows, cols, list(range(count))


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def make_world_table(config: WorldConfig) -> pa.Table:
    """All rows of the world as an Arrow table (one row per image–text pair).

    Columns: ``file_name, text, width, height, image_id, scene_seed, label, color, shape,
    count, size, position, relation, other_color, other_shape, noise`` (see the module
    docstring). Deterministic: the same config gives an identical table.
    """
    rngs = [np.random.default_rng([config.seed, stream]) for stream in range(8)]
    kind = _assign_kinds(config, rngs[0])
    hub_of_row = _assign_hubs(kind, config.noise.hub_alt_texts, rngs[1])
    image_id = _image_ids(hub_of_row)
    scene = _sample_scenes(config, rngs[2])
    _override_hubs(scene, hub_of_row, rngs[3])
    width, height = _image_sizes(config, kind, hub_of_row, rngs[4])
    scene_seed = _scene_seeds(config.seed, image_id)
    background = scene_seed % len(BACKGROUNDS)

    captions = _clean_captions(scene, background, rngs[5])
    texts = _noisy_texts(kind, scene, captions, rngs[6])

    labels = tuple(f"{c} {s}" for c in COLOR_NAMES for s in SHAPES)
    columns = {
        "file_name": pa.array([f"images/{i:07d}.png" for i in image_id.tolist()], pa.string()),
        "text": pa.array(texts, pa.string()),
        "width": pa.array(width, pa.int32()),
        "height": pa.array(height, pa.int32()),
        "image_id": pa.array(image_id, pa.int64()),
        "scene_seed": pa.array(scene_seed, pa.int64()),
        "label": _take(labels, scene["color"] * len(SHAPES) + scene["shape"]),
        "color": _take(COLOR_NAMES, scene["color"]),
        "shape": _take(SHAPES, scene["shape"]),
        "count": pa.array(scene["count"], pa.int32()),
        "size": _take(SIZES, scene["size"]),
        "position": _take(POSITIONS, scene["position"]),
        "relation": _take(RELATIONS, scene["relation"]),
        "other_color": _take(COLOR_NAMES, scene["other_color"]),
        "other_shape": _take(SHAPES, scene["other_shape"]),
        "noise": _take(NOISE_KINDS, kind),
    }
    return pa.table(columns)


def paraphrases(table: pa.Table, k: int, seed: int = 0) -> list[list[str]]:
    """``k`` more faithful captions of every row's scene, drawn by the same caption generator with
    other random choices (wording, lead, position and background phrases): several captions per
    image, as retrieval benchmarks have. They describe the scene, whatever the row's own
    (possibly noisy) text says; a paraphrase may repeat another."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")

    def index(column: str, vocab: tuple[str, ...]) -> np.ndarray:
        position = {v: i for i, v in enumerate(vocab)}
        return np.array([-1 if v is None else position[v] for v in table.column(column).to_pylist()], dtype=np.int64)

    scene = {
        "color": index("color", COLOR_NAMES), "shape": index("shape", SHAPES),
        "count": np.asarray(table.column("count").to_pylist(), dtype=np.int64),
        "size": index("size", SIZES), "position": index("position", POSITIONS),
        "relation": index("relation", RELATIONS), "other_color": index("other_color", COLOR_NAMES),
        "other_shape": index("other_shape", SHAPES),
    }
    background = np.asarray(table.column("scene_seed").to_pylist(), dtype=np.int64) % len(BACKGROUNDS)
    drawn = [_clean_captions(scene, background, np.random.default_rng([seed, 1000 + j])) for j in range(k)]
    return [list(row) for row in zip(*drawn)] if k else [[] for _ in range(table.num_rows)]


def _take(vocab: tuple[str, ...], index: np.ndarray) -> pa.Array:
    """The strings of ``vocab`` at ``index`` as an Arrow column (null where index is -1)."""
    return pc.take(pa.array(vocab, pa.string()), pa.array(np.maximum(index, 0), mask=index < 0))


def noise_counts(config: WorldConfig) -> dict[str, int]:
    """How many rows of each noise kind a world of this config has (sums to ``config.n``)."""
    n, noise = config.n, config.noise
    n_hub_images = min(round(noise.hub_rows * n / noise.hub_alt_texts), n // noise.hub_alt_texts)
    counts = {name: int(round(getattr(noise, name) * n)) for name in _ROW_RATES}
    counts["hub"] = n_hub_images * noise.hub_alt_texts
    while sum(counts.values()) > n:  # rounding can overshoot by a few rows at tiny n
        largest = max(_ROW_RATES, key=lambda k: counts[k])
        counts[largest] -= 1
    counts["clean"] = n - sum(counts.values())
    return {kind: counts[kind] for kind in NOISE_KINDS}


def _assign_kinds(config: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """Noise kind index (into NOISE_KINDS) of each row, exact counts, random rows."""
    counts = noise_counts(config)
    kinds = np.repeat(np.arange(len(NOISE_KINDS), dtype=np.int64), list(counts.values()))
    return rng.permutation(kinds)


def _assign_hubs(kind: np.ndarray, per_hub: int, rng: np.random.Generator) -> np.ndarray:
    """Index of the hub image each hub row belongs to (``-1`` for ordinary rows)."""
    hub_of_row = np.full(len(kind), -1, dtype=np.int64)
    is_hub = kind == NOISE_KINDS.index("hub")
    n_hub_rows = int(is_hub.sum())
    if n_hub_rows:
        hub_of_row[is_hub] = rng.permutation(np.arange(n_hub_rows) // per_hub)
    return hub_of_row


def _image_ids(hub_of_row: np.ndarray) -> np.ndarray:
    """Image ids numbered by first appearance; all rows of one hub image share an id."""
    n = len(hub_of_row)
    keys = np.where(hub_of_row >= 0, n + hub_of_row, np.arange(n))
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def _sample_scenes(config: WorldConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-row scene attributes as index arrays (``relation`` etc. are -1 where absent)."""
    n, n_colors, n_shapes = config.n, len(COLOR_NAMES), len(SHAPES)
    color = rng.integers(0, n_colors, n)
    shape = rng.integers(0, n_shapes, n)
    is_rel = rng.random(n) < config.relation_rate
    count = np.where(is_rel, 1, rng.integers(1, config.max_count + 1, n))
    grid = np.where(is_rel, 2, _grid_dim(count))
    size = np.where(grid >= 3, 0, rng.integers(0, 2, n))  # three-wide grids only fit small objects
    box = grid * np.array([_DIAMETER[s][1] for s in SIZES])[size] * _CELL
    position = np.where(box <= _CORNER_MAX_BOX, rng.integers(0, len(POSITIONS), n), 0)
    relation = np.where(is_rel, rng.integers(0, len(RELATIONS), n), -1)
    other_color = np.where(is_rel, (color + rng.integers(1, n_colors, n)) % n_colors, -1)
    other_shape = np.where(is_rel, rng.integers(0, n_shapes, n), -1)
    return dict(
        color=color, shape=shape, count=count, size=size, position=position,
        relation=relation, other_color=other_color, other_shape=other_shape,
    )


def _override_hubs(
    scene: dict[str, np.ndarray], hub_of_row: np.ndarray, rng: np.random.Generator
) -> None:
    """Hub rows show their hub's logo: one large centred object, no relation."""
    is_hub = hub_of_row >= 0
    if not is_hub.any():
        return
    n_hubs = int(hub_of_row.max()) + 1
    hub_color = rng.integers(0, len(COLOR_NAMES), n_hubs)
    hub_shape = rng.integers(0, len(SHAPES), n_hubs)
    h = hub_of_row[is_hub]
    scene["color"][is_hub] = hub_color[h]
    scene["shape"][is_hub] = hub_shape[h]
    scene["count"][is_hub] = 1
    scene["size"][is_hub] = SIZES.index("large")
    scene["position"][is_hub] = POSITIONS.index("center")
    for key in ("relation", "other_color", "other_shape"):
        scene[key][is_hub] = -1


def _image_sizes(
    config: WorldConfig, kind: np.ndarray, hub_of_row: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Nominal (width, height) per row: clean sizes, except the image-level noise kinds."""
    n, lo, hi = config.n, config.min_side, config.max_side
    width = rng.integers(lo, hi + 1, n)
    height = rng.integers(lo, hi + 1, n)
    # small_image: shorter side in [48, 200], aspect below 1.5
    short = rng.integers(48, 201, n)
    long_small = np.minimum(np.round(short * rng.uniform(1.0, 1.5, n)), 300).astype(np.int64)
    long_small = np.maximum(long_small, short)
    # extreme_aspect: shorter side as for clean images, aspect in [3, 6]
    short_x = rng.integers(lo, hi + 1, n)
    long_x = np.ceil(short_x * rng.uniform(3.0, 6.0, n)).astype(np.int64)
    wide = rng.random(n) < 0.5
    for name, short_side, long_side in (
        ("small_image", short, long_small), ("extreme_aspect", short_x, long_x)
    ):
        rows = kind == NOISE_KINDS.index(name)
        width[rows] = np.where(wide, long_side, short_side)[rows]
        height[rows] = np.where(wide, short_side, long_side)[rows]
    # all rows of a hub image share its (square, clean-sized) picture
    is_hub = hub_of_row >= 0
    if is_hub.any():
        side = rng.integers(lo, hi + 1, int(hub_of_row.max()) + 1)
        width[is_hub] = height[is_hub] = side[hub_of_row[is_hub]]
    return width, height


def _scene_seeds(seed: int, image_id: np.ndarray) -> np.ndarray:
    """A non-negative int64 per image, mixed from the world seed and image id (splitmix64)."""
    with np.errstate(over="ignore"):
        z = image_id.astype(np.uint64) + np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        z = z + np.uint64(0x632BE59BD9B4E019)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(1)).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------

_LEADS = (  # "" twice: a third of captions start with the noun phrase (or "there is/are")
    "", "", "a photo of", "a picture of", "an image of", "a drawing of", "an illustration of",
    "a simple drawing of", "a rendering of", "a graphic of", "a sketch of", "a cartoon of",
    "a picture showing", "a diagram of",
)
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_POSITION_PHRASES = {
    "center": ("in the center", "in the middle"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    **{
        p: (f"in the {p}", f"in the {p} corner", f"at the {p}")
        for p in ("top left", "top right", "bottom left", "bottom right")
    },
}
_RELATION_PHRASES = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_MAX_CLEAN_WORDS = 16  # leaves room for 3 gibberish tokens under the 20-word rule


def article(word: str) -> str:
    """"an" before a vowel ("an orange star"), else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(count: int, size: str, color: str, shape: str, bits: int) -> str:
    """"a big red circle", "three small blue squares", "one green star" (``bits`` in 0..63)."""
    size_words = _SIZE_WORDS[size]
    adjectives = f"{size_words[(bits >> 1) % len(size_words)]} {color}" if bits & 1 else color
    if count == 1:
        det = "one" if bits >> 3 == 0 else article(adjectives)
        return f"{det} {adjectives} {shape}"
    return f"{NUMBER_WORDS[count]} {adjectives} {PLURALS[shape]}"


def _fit(lead: str, core: str, tail: list[str]) -> str:
    """Join ``lead core *tail``; drop tail parts (last first), then the lead, past the limit."""
    while True:
        text = " ".join(p for p in (lead, core, *tail) if p)
        words = text.split()
        if len(words) <= _MAX_CLEAN_WORDS or (not tail and not lead):
            return " ".join(words)
        if tail:
            tail = tail[:-1]
        else:
            lead = ""


def _clean_caption(
    color: str, shape: str, count: int, size: str, position: str, background: str,
    relation: str | None, other_color: str | None, other_shape: str | None, r: int,
) -> str:
    """A faithful caption of one scene; the random int ``r`` picks template and wording."""
    r, lead_i = divmod(r, len(_LEADS))
    r, bg_i = divmod(r, 6)
    r, np_bits = divmod(r, 64)
    r, template = divmod(r, 6)
    r, phrase_i = divmod(r, 12)
    lead = _LEADS[lead_i]
    bg = f"{'on' if bg_i == 0 else 'against'} a {background} background" if bg_i < 2 else ""
    if relation is not None:
        main = _noun_phrase(1, size, color, shape, np_bits)
        other = _noun_phrase(1, size, other_color, other_shape, r % 64)
        if template == 5:
            horizontal = relation in ("left of", "right of")
            together = "side by side" if horizontal else "one above the other"
            return _fit("", f"{main} and {other} {together}", [bg])
        if template >= 3:  # described from the other object's point of view
            main, other, relation = other, main, _INVERSE[relation]
        phrases = _RELATION_PHRASES[relation]
        if lead == "" and template in (0, 3):
            lead = "there is"
        return _fit(lead, f"{main} {phrases[phrase_i % len(phrases)]} {other}", [bg])
    noun_phrase = _noun_phrase(count, size, color, shape, np_bits)
    pos = ""
    phrases = _POSITION_PHRASES[position]
    if (position != "center" and phrase_i % 2) or (position == "center" and phrase_i % 4 == 1):
        pos = phrases[(phrase_i // 2) % len(phrases)]
    if template == 0 and bg:  # "a grey background with two red circles"
        return _fit("", f"a {background} background with {noun_phrase}", [pos])
    if template == 1 and lead == "":
        lead = "there is" if count == 1 else "there are"
    return _fit(lead, noun_phrase, [pos, bg])


def _clean_captions(
    scene: dict[str, np.ndarray], background: np.ndarray, rng: np.random.Generator
) -> list[str]:
    """A clean caption for every row's own scene (vectorised sampling, one format per row)."""
    def names(key: str, vocab: tuple[str, ...]) -> list[str | None]:
        table = list(vocab) + [None]  # index -1 -> None
        return [table[i] for i in scene[key].tolist()]

    r = rng.integers(0, 2**62, len(background)).tolist()
    return [
        _clean_caption(*args)
        for args in zip(
            names("color", COLOR_NAMES), names("shape", SHAPES), scene["count"].tolist(),
            names("size", SIZES), names("position", POSITIONS),
            [BACKGROUND_NAMES[b] for b in background.tolist()],
            names("relation", RELATIONS), names("other_color", COLOR_NAMES),
            names("other_shape", SHAPES), r,
        )
    ]


# ---------------------------------------------------------------------------------------------
# Noisy alt-texts
# ---------------------------------------------------------------------------------------------


def _noisy_texts(
    kind: np.ndarray, scene: dict[str, np.ndarray], captions: list[str], rng: np.random.Generator
) -> list[str]:
    """Replace the clean captions of text-noise rows by their noisy alt-texts."""
    texts = list(captions)
    py = random.Random(int(rng.integers(0, 2**62)))
    rows_of = {name: np.flatnonzero(kind == NOISE_KINDS.index(name)) for name in NOISE_KINDS}

    boilerplate = rows_of["boilerplate"]
    for i, text in zip(boilerplate.tolist(), _boilerplate(len(boilerplate), rng)):
        texts[i] = text
    for i in rows_of["filename"].tolist():
        texts[i] = _filename_text(py)
    for i in rows_of["too_short"].tolist():
        texts[i] = _short_text(_obj(scene, i), py)
    for i in rows_of["too_long"].tolist():
        texts[i] = _long_text(_obj(scene, i), py)
    for i in rows_of["gibberish"].tolist():
        texts[i] = _gibberish_text(captions[i], py)
    # Misaligned rows and hub rows borrow the clean caption of another (non-hub) image.
    donors_pool = np.flatnonzero(kind != NOISE_KINDS.index("hub"))
    for name in ("misaligned", "hub"):
        rows = rows_of[name]
        donors = _donors(rows, donors_pool, scene, rng, avoid_same_label=name == "misaligned")
        for i, d in zip(rows.tolist(), donors.tolist()):
            texts[i] = captions[d]
    return texts


def _obj(scene: dict[str, np.ndarray], i: int) -> tuple[str, str, int]:
    """(colour, shape, count) of row ``i``'s main object."""
    return COLOR_NAMES[scene["color"][i]], SHAPES[scene["shape"][i]], int(scene["count"][i])


def _boilerplate(k: int, rng: np.random.Generator) -> list[str]:
    """``k`` boilerplate texts, balanced over as few strings as keep each used by >= 12 rows."""
    n_strings = max(1, min(len(BOILERPLATE), k // 12))
    picked = np.arange(k) % n_strings
    return [BOILERPLATE[j] for j in rng.permutation(picked).tolist()]


def _filename_text(py: random.Random) -> str:
    """A camera/screenshot file name: one or few tokens, mostly unique digits."""
    form = py.randrange(6)
    if form == 0:
        return f"IMG_{py.randrange(10000):04d}.JPG"
    if form == 1:
        return f"DSC{py.randrange(100000):05d}.jpg"
    if form == 2:
        return f"photo ({py.randrange(1, 40)}).png"
    if form == 3:
        y, mo, d = py.randrange(2012, 2024), py.randrange(1, 13), py.randrange(1, 29)
        h, mi, s = py.randrange(24), py.randrange(60), py.randrange(60)
        return f"Screenshot {y}-{mo:02d}-{d:02d} at {h:02d}.{mi:02d}.{s:02d}"
    if form == 4:
        return f"{py.getrandbits(32):08x}.jpg"
    return f"image_{py.randrange(10**6):06d}.jpeg"


def _short_text(obj: tuple[str, str, int], py: random.Random) -> str:
    """One or two words about the main object: "circle", "red star", "two circles"."""
    color, shape, count = obj
    noun = shape if count == 1 else PLURALS[shape]
    form = py.randrange(4)
    if form == 0:
        return noun
    if form == 1 and count > 1:
        return f"{NUMBER_WORDS[count]} {noun}"
    if form == 2:
        return color
    return f"{color} {noun}"


def _long_text(obj: tuple[str, str, int], py: random.Random) -> str:
    """21–40 words of keyword stuffing that keeps mentioning the true colour and shape."""
    color, shape, _ = obj
    target = py.randint(21, 40)
    content = (f"{color} {shape}", shape, PLURALS[shape], color, f"{color} {PLURALS[shape]}")
    words: list[str] = f"{color} {shape}".split()
    while len(words) < target:
        phrase = py.choice(content) if py.random() < 0.35 else py.choice(SEO_WORDS)
        words.extend(phrase.split())
    return " ".join(words[:target])


def _gibberish_text(caption: str, py: random.Random) -> str:
    """``caption`` with 1–3 random lowercase tokens (each practically unique) inserted."""
    words = caption.split()
    for _ in range(py.randint(1, 3)):
        token = "".join(py.choices(string.ascii_lowercase, k=py.randint(5, 8)))
        words.insert(py.randint(0, len(words)), token)
    return " ".join(words)


def _donors(
    rows: np.ndarray, pool: np.ndarray, scene: dict[str, np.ndarray],
    rng: np.random.Generator, avoid_same_label: bool,
) -> np.ndarray:
    """For each row another row of ``pool`` (a different image), preferably of another label."""
    if len(rows) == 0 or len(pool) == 0:
        return rows.copy()
    donors = pool[rng.integers(0, len(pool), len(rows))]
    label = scene["color"] * len(SHAPES) + scene["shape"]
    for _ in range(8):  # redraw donors that are the row itself or (if asked) share its label
        bad = donors == rows
        if avoid_same_label:
            bad |= label[donors] == label[rows]
        if not bad.any() or len(pool) == 1:
            break
        donors[bad] = pool[rng.integers(0, len(pool), int(bad.sum()))]
    return donors


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


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
    lo, hi = _DIAMETER[row["size"]]
    d = rnd.uniform(lo, hi)
    rows, cols, cells = _grid(count, relation, flip=rnd.random() < 0.5)
    if len(cells) < rows * cols:  # e.g. three objects in a 2x2 grid: leave a random cell empty
        cells = sorted(rnd.sample(range(rows * cols), len(cells)))
    cell = d * _CELL * s
    box_w, box_h = cols * cell, rows * cell
    ax, ay = _ANCHORS[row["position"]]
    jx, jy = rnd.uniform(-0.15, 0.15), rnd.uniform(-0.15, 0.15)
    ux = ax + jx if ax == 0.5 else abs(ax - abs(jx) / 1.5)  # corners/edges jitter inwards
    uy = ay + jy if ay == 0.5 else abs(ay - abs(jy) / 1.5)
    x0 = _MARGIN * s + ux * max(0.0, width - 2 * _MARGIN * s - box_w)
    y0 = _MARGIN * s + uy * max(0.0, height - 2 * _MARGIN * s - box_h)

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


# ---------------------------------------------------------------------------------------------
# On disk and in memory
# ---------------------------------------------------------------------------------------------

# The columns render_image reads.
_RENDER_COLUMNS = (
    "width", "height", "scene_seed", "color", "shape", "count", "size", "position",
    "relation", "other_color", "other_shape", "noise",
)
_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg"),
            "webp": ("WEBP", ".webp")}


def write_world(config: WorldConfig, out_dir: str | Path, image_format: str = "png",
                overwrite: bool = False) -> Path:
    """Write the world as an image folder: ``out_dir/images/*`` + ``out_dir/metadata.jsonl``.

    Each distinct image is drawn once at its nominal size; the metadata has one row per pair
    with every column of :func:`make_world_table`. Loads with
    ``datasets.load_dataset("imagefolder", data_dir=out_dir)``. Returns ``out_dir``. Written
    through :func:`~align_lite.data.records.fresh_output`: a non-empty ``out_dir`` is refused
    unless ``overwrite``, and an interrupted write leaves it as it was.
    """
    if image_format.lower() not in _FORMATS:
        raise ValueError(f"unknown image_format {image_format!r}; use one of {sorted(_FORMATS)}")
    with records.fresh_output(out_dir, overwrite) as staging:
        _draw_world(config, staging, image_format)
    return Path(out_dir)


def _draw_world(config: WorldConfig, out_dir: Path, image_format: str) -> None:
    pil_format, suffix = _FORMATS[image_format.lower()]
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    table = make_world_table(config)
    if suffix != ".png":
        names = pc.replace_substring_regex(table["file_name"], r"\.png$", suffix)
        table = table.set_column(table.schema.get_field_index("file_name"), "file_name", names)

    _, first_rows = np.unique(table["image_id"].to_numpy(), return_index=True)
    columns = {name: table[name].to_pylist() for name in _RENDER_COLUMNS + ("file_name",)}
    save_args = {"compress_level": 1} if pil_format == "PNG" else {"quality": 90}
    for i in progress(first_rows.tolist(), desc="drawing world", unit="img"):
        row = {name: values[i] for name, values in columns.items()}
        render_image(row).save(out_dir / row["file_name"], pil_format, **save_args)
    records.write_pairs(table, out_dir)


class WorldDataset(torch.utils.data.Dataset):
    """A world drawn on the fly: ``ds[i]`` renders row ``i`` as a square of ``image_size`` px.

    Items are dicts ``{"image", "text", "label", "index"}`` where ``image`` is
    ``transform(pil_image)`` if a transform is given (e.g. to a ``(3, S, S)`` float tensor),
    else the RGB PIL image. Nothing touches the disk; the dataset pickles (DataLoader workers).

    ``cache=True`` keeps every drawn image as a (3, S, S) uint8 tensor (3·S² bytes a row, 17.8 kB
    at S = 77) and hands that tensor, not a PIL image, to ``transform`` — pair it with
    :class:`~align_lite.data.images.CropToPixels`. Each DataLoader worker holds its own cache.
    """

    def __init__(self, config: WorldConfig, image_size: int = 64, transform=None, cache: bool = False) -> None:
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        self.config = config
        self.image_size = image_size
        self.transform = transform
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.table = make_world_table(config)
        self._columns = {
            name: self.table[name].to_pylist() for name in _RENDER_COLUMNS + ("text", "label")
        }

    def __len__(self) -> int:
        return self.table.num_rows

    def row(self, index: int) -> dict[str, Any]:
        """Row ``index`` as a dict of the columns needed to render it, plus text and label."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a world of {len(self)} rows")
        index %= len(self)
        return {name: values[index] for name, values in self._columns.items()}

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        row = self.row(index)
        if self.cache is None:
            image = render_image(row, self.image_size)
        else:
            image = self.cache.get(index % len(self))
            if image is None:
                array = np.asarray(render_image(row, self.image_size), dtype=np.uint8)
                image = self.cache[index % len(self)] = torch.from_numpy(array.transpose(2, 0, 1).copy())
        if self.transform is not None:
            image = self.transform(image)
        index %= len(self)
        return {"image": image, "text": row["text"], "label": row["label"], "index": index}
