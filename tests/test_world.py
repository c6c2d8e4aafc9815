"""Tests for the procedurally drawn image–text world (align_lite.data.world)."""

from __future__ import annotations

import json
import pickle
from collections import Counter, defaultdict
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from align_lite.data import records
from align_lite.data.world import (
    BACKGROUNDS,
    BOILERPLATE,
    COLORS,
    NOISE_KINDS,
    NUMBER_WORDS,
    PLURALS,
    SHAPES,
    NoiseConfig,
    WorldConfig,
    WorldDataset,
    make_world_table,
    noise_counts,
    render_image,
    write_world,
)

COLUMNS = {
    "file_name": pa.string(), "text": pa.string(), "width": pa.int32(), "height": pa.int32(),
    "image_id": pa.int64(), "scene_seed": pa.int64(), "label": pa.string(),
    "color": pa.string(), "shape": pa.string(), "count": pa.int32(), "size": pa.string(),
    "position": pa.string(), "relation": pa.string(), "other_color": pa.string(),
    "other_shape": pa.string(), "noise": pa.string(),
}
# Rows whose caption is a clean description of their own image.
CLEAN_CAPTION_KINDS = ("clean", "small_image", "extreme_aspect")


@pytest.fixture(scope="module")
def big_config() -> WorldConfig:
    """Default noise mix plus one hub image of 1001 alt-texts."""
    return WorldConfig(n=20000, seed=7, noise=NoiseConfig(hub_rows=0.06))


@pytest.fixture(scope="module")
def big_rows(big_config) -> list[dict]:
    return make_world_table(big_config).to_pylist()


@pytest.fixture(scope="module")
def clean_vocab(big_rows) -> set[str]:
    return {w for r in big_rows if r["noise"] in CLEAN_CAPTION_KINDS for w in r["text"].split()}


def rows_of(rows: list[dict], kind: str) -> list[dict]:
    return [r for r in rows if r["noise"] == kind]


def color_mask(image: Image.Image, rgb: tuple[int, int, int], tol: float = 40.0) -> np.ndarray:
    """Pixels within ``tol`` (Euclidean RGB) of ``rgb``."""
    pixels = np.asarray(image, dtype=np.float32)
    return np.linalg.norm(pixels - np.array(rgb, dtype=np.float32), axis=-1) < tol


def components(mask: np.ndarray, min_pixels: int = 20) -> int:
    """Number of 4-connected components of at least ``min_pixels`` in a mask (flood fill).

    Tiny components are rasterisation crumbs (e.g. a lone pixel at a sharp polygon tip).
    """
    seen = np.zeros_like(mask)
    h, w = mask.shape
    n = 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        size = 0
        stack = [(y0, x0)]
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            size += 1
            for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    stack.append((yy, xx))
        n += size >= min_pixels
    return n


# --------------------------------------------------------------------------- table


def test_table_is_deterministic_and_seed_sensitive():
    config = WorldConfig.noisy(n=3000, seed=0)
    a, b = make_world_table(config), make_world_table(config)
    assert a.equals(b)
    c = make_world_table(WorldConfig.noisy(n=3000, seed=1))
    assert not a.equals(c)
    assert a["text"].to_pylist() != c["text"].to_pylist()
    assert a["scene_seed"].to_pylist() != c["scene_seed"].to_pylist()


def test_columns_and_dtypes(big_config):
    table = make_world_table(WorldConfig.noisy(n=500, seed=3))
    assert table.column_names == list(COLUMNS)
    for name, dtype in COLUMNS.items():
        assert table.schema.field(name).type == dtype, name
    assert table.num_rows == 500
    rows = table.to_pylist()
    assert {r["noise"] for r in rows} <= set(NOISE_KINDS)
    for r in rows:
        assert r["file_name"] == f"images/{r['image_id']:07d}.png"
        assert r["label"] == f"{r['color']} {r['shape']}"
        assert r["color"] in COLORS and r["shape"] in SHAPES
        assert 1 <= r["count"] <= 4 and r["size"] in ("small", "large")
        has_other = r["relation"] is not None
        assert (r["other_color"] is not None) == has_other == (r["other_shape"] is not None)
        if has_other:
            assert r["count"] == 1 and r["other_color"] != r["color"]
            assert r["relation"] in ("left of", "right of", "above", "below")
        assert r["scene_seed"] >= 0
    # every non-hub row has an image of its own
    ids = [r["image_id"] for r in rows]
    assert len(set(ids)) == len(ids)


def test_noise_counts_match_rates(big_config, big_rows):
    counts = Counter(r["noise"] for r in big_rows)
    n, noise = big_config.n, big_config.noise
    for kind in ("boilerplate", "filename", "too_short", "too_long", "gibberish",
                 "misaligned", "small_image", "extreme_aspect"):
        assert counts[kind] == round(getattr(noise, kind) * n), kind
    assert counts["hub"] == 1001  # round(0.06 * 20000 / 1001) = 1 hub image
    assert sum(counts.values()) == n
    assert noise_counts(big_config) == {k: counts[k] for k in NOISE_KINDS}
    # noisy rows are spread over the table, not bunched at one end
    positions = [i for i, r in enumerate(big_rows) if r["noise"] == "misaligned"]
    assert min(positions) < n // 10 and max(positions) > n - n // 10


def test_clean_images_pass_the_paper_size_rules(big_rows):
    for r in big_rows:
        short, long = sorted((r["width"], r["height"]))
        if r["noise"] == "small_image":
            assert 48 <= short <= 200 and long / short < 3
        elif r["noise"] == "extreme_aspect":
            assert short > 200 and 3 <= long / short <= 6.01
        else:
            assert short > 200 and long / short < 3, r


def test_clean_captions_are_short_faithful_and_closed_vocabulary(big_rows, clean_vocab):
    clean = [r for r in big_rows if r["noise"] in CLEAN_CAPTION_KINDS]
    assert len(clean) > 10000
    for r in clean:
        words = r["text"].split()
        assert 3 <= len(words) <= 20, r["text"]
        assert r["text"] == r["text"].lower() and all(w.isalpha() for w in words)
        text = f" {r['text']} "
        assert f" {r['color']} " in text
        assert f" {r['shape']} " in text or f" {PLURALS[r['shape']]} " in text
        if r["relation"] is not None:
            assert f" {r['other_color']} " in text
        elif r["count"] > 1:
            assert f" {NUMBER_WORDS[r['count']]} " in text
        else:
            assert not any(f" {w} " in text for w in NUMBER_WORDS[2:])
        if r["relation"] is None:
            # position words, when used, agree with the drawn position
            if " left" in text:
                assert "left" in r["position"], (r["text"], r["position"])
            if " right" in text:
                assert "right" in r["position"], (r["text"], r["position"])
            if " top" in text:
                assert "top" in r["position"], (r["text"], r["position"])
            if " middle" in text or " center" in text:
                assert r["position"] == "center"
    assert 30 < len(clean_vocab) < 120
    # variety: many distinct captions, several templates
    texts = [r["text"] for r in clean]
    assert len(set(texts)) > 0.8 * len(texts)
    phrases = ("a photo of", "there is", "there are", "background with", "left of", "above",
               "side by side", "in the top left", "on the right", "in the center", "small", "big")
    for phrase in phrases:
        assert any(phrase in t for t in texts), phrase


def test_length_noise(big_rows):
    for r in rows_of(big_rows, "too_short"):
        assert 1 <= len(r["text"].split()) < 3
    for r in rows_of(big_rows, "too_long"):
        assert 20 < len(r["text"].split()) <= 40
        assert r["color"] in r["text"] and r["shape"] in r["text"]


def test_filename_texts_look_like_file_names(big_rows):
    texts = [r["text"] for r in rows_of(big_rows, "filename")]
    assert all(any(c.isdigit() for c in t) for t in texts)
    assert len(set(texts)) > 0.8 * len(texts)


def test_boilerplate_is_shared_by_many_images():
    for n in (2000, 5000):
        rows = make_world_table(WorldConfig.noisy(n=n, seed=2)).to_pylist()
        images_of = defaultdict(set)
        for r in rows_of(rows, "boilerplate"):
            assert r["text"] in BOILERPLATE
            images_of[r["text"]].add(r["image_id"])
        assert len(images_of) >= 5
        assert all(len(ids) > 10 for ids in images_of.values()), n


def test_hub_images_carry_many_alt_texts():
    config = WorldConfig(n=5000, seed=4, noise=NoiseConfig(hub_rows=0.1, hub_alt_texts=50))
    rows = make_world_table(config).to_pylist()
    hubs = defaultdict(list)
    for r in rows_of(rows, "hub"):
        hubs[r["image_id"]].append(r)
    assert len(hubs) == round(0.1 * 5000 / 50)
    for hub_rows in hubs.values():
        assert len(hub_rows) >= config.noise.hub_alt_texts
        assert len({(r["file_name"], r["width"], r["height"], r["label"]) for r in hub_rows}) == 1
        assert len({r["text"] for r in hub_rows}) > 10  # many different alt-texts
    others = [r["file_name"] for r in rows if r["noise"] != "hub"]
    assert len(set(others)) == len(others)
    assert not {r["file_name"] for r in rows_of(rows, "hub")} & set(others)


def test_no_hubs_by_default():
    assert WorldConfig.noisy(n=1000).noise.hub_rows == 0
    assert WorldConfig.noisy(n=20000).noise.hub_rows == 0.02
    rows = make_world_table(WorldConfig.noisy(n=2000)).to_pylist()
    assert not rows_of(rows, "hub")


def test_gibberish_tokens_are_rare(big_rows, clean_vocab):
    corpus = Counter(w for r in big_rows for w in r["text"].split())
    gibberish = rows_of(big_rows, "gibberish")
    for r in gibberish:
        odd = [w for w in r["text"].split() if w not in clean_vocab]
        assert 1 <= len(odd) <= 3, r["text"]
        assert all(corpus[w] <= 3 for w in odd), r["text"]
        assert len(r["text"].split()) <= 20


def test_misaligned_captions_describe_another_image(big_rows):
    captions = {r["text"] for r in big_rows if r["noise"] in CLEAN_CAPTION_KINDS}
    misaligned = rows_of(big_rows, "misaligned")
    mismatched = 0
    for r in misaligned:
        text = f" {r['text']} "
        color, shape = r["color"], r["shape"]
        own = f" {color} {shape} " in text or f" {color} {PLURALS[shape]} " in text
        mismatched += not own
        assert 3 <= len(r["text"].split()) <= 20
    assert mismatched > 0.9 * len(misaligned)
    # they read like clean captions (same style, often literally another row's caption)
    assert sum(r["text"] in captions for r in misaligned) > 0.3 * len(misaligned)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=0), dict(n=-5), dict(n=2.5), dict(seed=-1), dict(min_side=0),
        dict(min_side=300, max_side=250), dict(min_side=150, max_side=250),
        dict(min_side=210, max_side=700), dict(max_count=0), dict(max_count=10),
        dict(relation_rate=1.5), dict(noise="none"),
    ],
)
def test_world_config_validation(kwargs):
    with pytest.raises(ValueError):
        WorldConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(boilerplate=-0.1), dict(misaligned=1.5), dict(hub_rows=2.0),
        dict(too_short=0.5, too_long=0.6), dict(hub_alt_texts=0), dict(hub_alt_texts=2.5),
    ],
)
def test_noise_config_validation(kwargs):
    with pytest.raises(ValueError):
        NoiseConfig(**kwargs)


def test_presets():
    assert NoiseConfig().total() == pytest.approx(0.26)
    assert WorldConfig.clean(n=10).noise.total() == 0
    rows = make_world_table(WorldConfig.clean(n=300, seed=5)).to_pylist()
    assert {r["noise"] for r in rows} == {"clean"}
    with pytest.raises(ValueError, match="sum"):
        NoiseConfig(misaligned=0.9, boilerplate=0.2)


def test_tiny_worlds_and_full_noise():
    assert make_world_table(WorldConfig.noisy(n=1)).num_rows == 1
    noise = replace(NoiseConfig.none(), boilerplate=0.5, filename=0.5)
    rows = make_world_table(WorldConfig(n=7, noise=noise)).to_pylist()  # 4 + 4 rounded > 7
    assert len(rows) == 7 and {r["noise"] for r in rows} == {"boilerplate", "filename"}


# --------------------------------------------------------------------------- rendering


@pytest.fixture(scope="module")
def sample_rows() -> list[dict]:
    config = WorldConfig(n=400, seed=11, noise=NoiseConfig(hub_rows=0.25, hub_alt_texts=50))
    return make_world_table(config).to_pylist()


def test_render_sizes_mode_and_determinism(sample_rows):
    r = sample_rows[0]
    nominal = render_image(r)
    assert nominal.size == (r["width"], r["height"]) and nominal.mode == "RGB"
    assert render_image(r, 32).size == (32, 32)
    assert render_image(r, (50, 40)).size == (50, 40)
    for row in sample_rows[:30]:
        for size in (None, 64):
            assert render_image(row, size).tobytes() == render_image(row, size).tobytes()
    assert render_image(sample_rows[1], 64).tobytes() != render_image(sample_rows[2], 64).tobytes()
    with pytest.raises(ValueError):
        render_image(r, 0)


def test_render_draws_the_right_colours(sample_rows):
    for r in sample_rows[:80]:
        for size in (32, 64, None):
            image = render_image(r, size)
            w, h = image.size
            enough = max(10, 0.01 * min(w, h) ** 2)  # a small star at 32 px covers ~20 px
            assert color_mask(image, COLORS[r["color"]]).sum() >= enough, (r, size)
            if r["relation"] is not None:
                assert color_mask(image, COLORS[r["other_color"]]).sum() >= enough, (r, size)
            # the object colours drawn are the only saturated pixels: no colour is confusable
            absent = [c for c in COLORS if c not in (r["color"], r["other_color"])]
            for c in absent:
                assert color_mask(image, COLORS[c], tol=30).mean() < 0.005, (r, c, size)


def test_backgrounds_are_light_and_named_correctly(sample_rows):
    for r in [r for r in sample_rows if r["noise"] != "hub"][:60]:
        image = np.asarray(render_image(r), dtype=np.float32)
        corners = np.stack([image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]]).mean(0)
        nearest = min(BACKGROUNDS, key=lambda b: np.abs(corners - BACKGROUNDS[b]).sum())
        assert nearest == list(BACKGROUNDS)[r["scene_seed"] % len(BACKGROUNDS)]
        assert corners.min() > 180
        if "background" in r["text"] and r["noise"] == "clean":
            assert f"{nearest} background" in r["text"]


def test_relations_and_positions_are_geometrically_true(sample_rows):
    checked = Counter()
    for r in sample_rows:
        if r["noise"] == "hub":
            continue
        for size in (64, None):
            image = render_image(r, size)
            w, h = image.size
            ys, xs = np.nonzero(color_mask(image, COLORS[r["color"]]))
            cx, cy = xs.mean() / w, ys.mean() / h
            if r["relation"] is not None:
                oys, oxs = np.nonzero(color_mask(image, COLORS[r["other_color"]]))
                # offsets in units of the shorter side (extreme-aspect images are long)
                dx = (xs.mean() - oxs.mean()) / min(w, h)
                dy = (ys.mean() - oys.mean()) / min(w, h)
                expected = {"left of": dx < -0.1, "right of": dx > 0.1,
                            "above": dy < -0.1, "below": dy > 0.1}
                assert expected[r["relation"]], (r, dx, dy)
                checked["relation"] += 1
                continue
            pos = r["position"]
            if "left" in pos:
                assert cx < 0.45, (r, cx)
            if "right" in pos:
                assert cx > 0.55, (r, cx)
            if "top" in pos:
                assert cy < 0.45, (r, cy)
            if "bottom" in pos:
                assert cy > 0.55, (r, cy)
            if pos == "center":
                assert abs(cx - 0.5) < 0.2 and abs(cy - 0.5) < 0.2, (r, cx, cy)
            checked[pos] += 1
    assert checked["relation"] > 20 and len(checked) >= 6


def test_counts_are_drawn_as_separate_objects(sample_rows):
    checked = 0
    for r in sample_rows:
        if r["noise"] == "hub" or r["relation"] is not None:
            continue
        image = render_image(r)
        assert components(color_mask(image, COLORS[r["color"]], tol=25)) == r["count"], r
        checked += 1
        if checked == 25:
            break
    assert checked == 25


def test_hub_images_are_one_fixed_logo(sample_rows):
    hub = rows_of(sample_rows, "hub")
    assert hub
    same_image = [r for r in hub if r["image_id"] == hub[0]["image_id"]]
    a = render_image(same_image[0], 64).tobytes()
    assert all(render_image(r, 64).tobytes() == a for r in same_image[1:5])
    assert color_mask(render_image(hub[0], 32), COLORS[hub[0]["color"]]).sum() > 50


def test_render_accepts_rows_without_optional_columns():
    row = dict(width=240, height=260, scene_seed=5, color="red", shape="star", count=2,
               size="small", position="top left")
    assert render_image(row).size == (240, 260)


# --------------------------------------------------------------------------- disk and dataset


def test_write_world_round_trip(tmp_path, monkeypatch):
    config = WorldConfig(n=60, seed=9, noise=NoiseConfig(hub_rows=0.2, hub_alt_texts=10))
    out = write_world(config, tmp_path / "world")
    assert out == tmp_path / "world"
    table = make_world_table(config)
    lines = (out / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 60
    meta = [json.loads(line) for line in lines]
    assert meta == table.to_pylist()
    files = sorted((out / "images").iterdir())
    assert len(files) == len({r["image_id"] for r in meta}) == 51  # 50 own + 1 hub image
    for r in meta:
        with Image.open(out / r["file_name"]) as image:
            assert image.size == (r["width"], r["height"]) and image.mode == "RGB"
    assert np.array_equal(
        np.asarray(Image.open(out / meta[0]["file_name"])), np.asarray(render_image(meta[0]))
    )
    read, _ = records.read_pairs(out)
    assert read.num_rows == 60

    import datasets
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    ds = datasets.load_dataset(
        "imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "hf_cache")
    )
    assert ds.num_rows == 60
    assert ds[0]["text"] == meta[0]["text"] and ds[0]["noise"] == meta[0]["noise"]
    assert ds[0]["image"].size == (meta[0]["width"], meta[0]["height"])


def test_write_world_jpeg(tmp_path):
    out = write_world(WorldConfig.noisy(n=12, seed=1), tmp_path, image_format="jpg")
    meta = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert all(r["file_name"].endswith(".jpg") and (out / r["file_name"]).is_file() for r in meta)
    with pytest.raises(ValueError):
        write_world(WorldConfig.noisy(n=2), tmp_path / "x", image_format="tiff")


def test_world_dataset():
    config = WorldConfig.noisy(n=50, seed=2)
    table = make_world_table(config)
    ds = WorldDataset(config, image_size=32)
    assert len(ds) == 50
    item = ds[3]
    assert set(item) == {"image", "text", "label", "index"}
    assert item["image"].size == (32, 32) and item["image"].mode == "RGB"
    assert item["text"] == table["text"][3].as_py() and item["label"] == table["label"][3].as_py()
    assert item["index"] == 3
    assert ds[-1]["index"] == 49
    with pytest.raises(IndexError):
        ds[50]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[7]["image"].tobytes() == ds[7]["image"].tobytes()

    shaped = WorldDataset(config, image_size=16, transform=lambda im: np.asarray(im).shape)
    assert shaped[0]["image"] == (16, 16, 3)


def test_cached_world_draws_equal_uncached_draws():
    import numpy as np
    import torch

    config = WorldConfig.clean(n=6, seed=4)
    plain = WorldDataset(config, image_size=40)
    cached = WorldDataset(config, image_size=40, cache=True)
    for i in (0, 3, 3, 5):
        expected = torch.from_numpy(np.asarray(plain[i]["image"]).transpose(2, 0, 1).copy())
        assert torch.equal(cached[i]["image"], expected)
    assert sorted(cached.cache) == [0, 3, 5]


def test_paraphrases_describe_the_scene_in_other_words():
    from align_lite.data.world import paraphrases

    table = make_world_table(WorldConfig.noisy(n=60, seed=3))
    more = paraphrases(table, 3, seed=1)
    assert more == paraphrases(table, 3, seed=1) and more != paraphrases(table, 3, seed=2)
    assert paraphrases(table, 0) == [[] for _ in range(60)]
    rows = table.to_pylist()
    for row, captions in zip(rows, more):
        assert len(captions) == 3
        for caption in captions:  # faithful even where the row's own text is noise
            assert row["color"] in caption and (row["shape"] in caption or PLURALS[row["shape"]] in caption)
            assert (row["other_color"] or "") in caption
    assert sum(len(set(c)) > 1 for c in more) > 50  # other wordings, not copies
    with pytest.raises(ValueError):
        paraphrases(table, -1)
