"""The world as a table: every row's scene, noise kind, image size, caption and seed, a pure
function of :class:`~align_lite.data.world.WorldConfig` (:func:`make_world_table`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from align_lite.data.world.captions import clean_captions
from align_lite.data.world.config import ROW_RATES, WorldConfig
from align_lite.data.world.geometry import CELL, CORNER_MAX_BOX, DIAMETER, grid_dim
from align_lite.data.world.noise import noisy_texts
from align_lite.data.world.vocabulary import BACKGROUNDS, COLOR_NAMES, NOISE_KINDS, POSITIONS, RELATIONS, SHAPES, SIZES


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

    captions = clean_captions(scene, background, rngs[5])
    texts = noisy_texts(kind, scene, captions, rngs[6])

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
    drawn = [clean_captions(scene, background, np.random.default_rng([seed, 1000 + j])) for j in range(k)]
    return [list(row) for row in zip(*drawn)] if k else [[] for _ in range(table.num_rows)]


def _take(vocab: tuple[str, ...], index: np.ndarray) -> pa.Array:
    """The strings of ``vocab`` at ``index`` as an Arrow column (null where index is -1)."""
    return pc.take(pa.array(vocab, pa.string()), pa.array(np.maximum(index, 0), mask=index < 0))


def noise_counts(config: WorldConfig) -> dict[str, int]:
    """How many rows of each noise kind a world of this config has (sums to ``config.n``)."""
    n, noise = config.n, config.noise
    n_hub_images = min(round(noise.hub_rows * n / noise.hub_alt_texts), n // noise.hub_alt_texts)
    counts = {name: int(round(getattr(noise, name) * n)) for name in ROW_RATES}
    counts["hub"] = n_hub_images * noise.hub_alt_texts
    while sum(counts.values()) > n:  # rounding can overshoot by a few rows at tiny n
        largest = max(ROW_RATES, key=lambda k: counts[k])
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
    grid = np.where(is_rel, 2, grid_dim(count))
    size = np.where(grid >= 3, 0, rng.integers(0, 2, n))  # three-wide grids only fit small objects
    box = grid * np.array([DIAMETER[s][1] for s in SIZES])[size] * CELL
    position = np.where(box <= CORNER_MAX_BOX, rng.integers(0, len(POSITIONS), n), 0)
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
