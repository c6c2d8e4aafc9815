"""The shipped emoji sample (data_samples/emoji) and its loader, align_lite.data.emoji."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from align_lite.data.emoji import EmojiSample, emoji_root, load_emoji, to_pairs
from align_lite.data.records import DataFormatError

REPO = Path(__file__).resolve().parents[1]

# emoji-datasource-google 16.0.0: emoji.json has 1,911 base entries, all with has_img_google;
# five of them are the skin-tone swatches (U+1F3FB..U+1F3FF, Component / skin-tone), which the
# sample leaves out, as it leaves out every skin_variations entry. 1911 - 5 = 1906.
UPSTREAM_BASE_ENTRIES = 1911
SKIN_TONES = ("1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff")
EXPECTED_IMAGES = UPSTREAM_BASE_ENTRIES - len(SKIN_TONES)
EXPECTED_CATEGORIES = (
    "Activities",
    "Animals & Nature",
    "Flags",
    "Food & Drink",
    "Objects",
    "People & Body",
    "Smileys & Emotion",
    "Symbols",
    "Travel & Places",
)


@pytest.fixture(scope="module")
def sample() -> EmojiSample:
    return load_emoji()


@pytest.fixture(scope="module")
def raw_rows() -> list[dict]:
    """metadata.jsonl read with plain json, independently of the loader."""
    with open(emoji_root() / "metadata.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_root_is_the_shipped_folder():
    root = emoji_root()
    assert (root / "metadata.jsonl").is_file()
    assert (root / "images").is_dir()
    assert (root / "LICENSE.md").is_file()


def test_counts_images_rows_and_expected(sample, raw_rows):
    root = emoji_root()
    on_disk = sorted(p.name for p in (root / "images").iterdir())
    assert len(sample) == len(raw_rows) == len(on_disk) == EXPECTED_IMAGES
    assert sorted(Path(r["file_name"]).name for r in raw_rows) == on_disk  # 1:1, no strays


def test_no_skin_tones(raw_rows):
    assert not [r for r in raw_rows if r["subcategory"] == "skin-tone"]
    assert not [r for r in raw_rows if any(t in r["file_name"].lower() for t in SKIN_TONES)]
    assert not [r for r in raw_rows if any(t.upper() in r["unified"] for t in SKIN_TONES)]


def test_rows_sorted_and_unique(raw_rows):
    orders = [r["sort_order"] for r in raw_rows]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    assert len({r["file_name"] for r in raw_rows}) == len(raw_rows)


def test_every_image_decodes_to_64px(sample):
    for i in range(len(sample)):
        with Image.open(sample.path(i)) as im:
            im.load()
            assert im.size == (64, 64), sample.path(i)


def test_image_is_rgb_composited_on_white(sample):
    i = sample.table.column("file_name").to_pylist().index("images/1f600.png")  # grinning face
    with Image.open(sample.path(i)) as im:
        raw = im.convert("RGBA")
    assert raw.getpixel((0, 0))[3] == 0, "test premise: the corner is transparent"
    img = sample.image(i)
    assert img.mode == "RGB" and img.size == (64, 64)
    assert img.getpixel((0, 0)) == (255, 255, 255)
    # opaque pixels keep their colour
    alpha = np.asarray(raw)[..., 3]
    y, x = np.argwhere(alpha == 255)[0]
    assert img.getpixel((int(x), int(y))) == raw.getpixel((int(x), int(y)))[:3]


def test_image_handles_every_png_mode(sample):
    """The PNGs come as RGBA, LA and P; each must come out RGB."""
    seen = {}
    for i in range(len(sample)):
        with Image.open(sample.path(i)) as im:
            seen.setdefault(im.mode, i)
    assert {"RGBA", "LA", "P"} <= set(seen)
    for i in seen.values():
        assert sample.image(i).mode == "RGB"


def test_texts_and_captions(sample, raw_rows):
    assert sample.texts(0) == ["grinning face", "grinning"]
    for i, row in enumerate(raw_rows):
        texts = sample.texts(i)
        assert texts[0] == row["text"] == row["text"].lower()
        assert len(texts) == len(set(texts)) >= 1
        assert all(t == t.lower() and t.strip() == t and "_" not in t for t in texts)
    flags = {r["name"]: r["text"] for r in raw_rows if r["subcategory"] == "country-flag"}
    assert flags["Egypt Flag"] == "flag of egypt"


def test_labels_align_with_categories(sample, raw_rows):
    assert sample.categories == EXPECTED_CATEGORIES
    assert len(sample.subcategories) == len({r["subcategory"] for r in raw_rows})
    for ids, names, key in (
        (sample.category_ids, sample.categories, "category"),
        (sample.subcategory_ids, sample.subcategories, "subcategory"),
    ):
        assert ids.dtype == np.int64 and ids.shape == (len(sample),)
        assert [names[j] for j in ids] == [r[key] for r in raw_rows]


def test_category_filter(raw_rows):
    wanted = ["Food & Drink", "Flags"]
    sub = load_emoji(categories=wanted)
    expected = [r["file_name"] for r in raw_rows if r["category"] in wanted]
    assert sub.table.column("file_name").to_pylist() == expected
    assert sub.categories == ("Flags", "Food & Drink")
    assert set(sub.category_ids.tolist()) == {0, 1}
    assert [sub.categories[j] for j in sub.category_ids] == [
        r["category"] for r in raw_rows if r["category"] in wanted
    ]
    assert len(load_emoji(categories="Flags")) == sum(r["category"] == "Flags" for r in raw_rows)


def test_category_filter_unknown_name():
    with pytest.raises(ValueError, match=r"'Flag'.*valid:.*'Flags'.*'Smileys & Emotion'"):
        load_emoji(categories=["Flag"])


def test_index_out_of_range(sample):
    with pytest.raises(IndexError):
        sample.image(len(sample))


def test_to_pairs(sample):
    pairs = to_pairs(sample)
    assert pairs.num_rows == sum(len(sample.texts(i)) for i in range(len(sample)))
    assert pairs.column("image_index").type == pa.int64()
    by_image: dict[int, list[str]] = {}
    for idx, text in zip(pairs["image_index"].to_pylist(), pairs["text"].to_pylist()):
        by_image.setdefault(idx, []).append(text)
    assert len(by_image) == len(sample)
    for i in (0, 1, len(sample) // 2, len(sample) - 1):
        assert by_image[i] == sample.texts(i)
    names = sample.table.column("file_name").to_pylist()
    indices = pairs.column("image_index").to_pylist()
    assert [names[i] for i in indices] == pairs.column("file_name").to_pylist()


def test_to_pairs_of_a_filtered_sample():
    sub = load_emoji(categories=["Activities"])
    pairs = to_pairs(sub)
    assert pairs.num_rows == sum(len(sub.texts(i)) for i in range(len(sub)))
    assert set(pairs.column("category").to_pylist()) == {"Activities"}
    assert max(pairs.column("image_index").to_pylist()) == len(sub) - 1


def test_rows_fit_imagefolder(raw_rows):
    """What datasets' imagefolder needs: a relative file_name per row naming a real file."""
    root = emoji_root().resolve()
    for row in raw_rows:
        name = row["file_name"]
        assert not Path(name).is_absolute()
        assert re.fullmatch(r"images/[0-9a-f-]+\.png", name), name
        assert (root / name).resolve().is_file()


def test_loads_with_datasets_imagefolder_offline(tmp_path, monkeypatch, raw_rows):
    import datasets
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ds = datasets.load_dataset(
        "imagefolder", data_dir=str(emoji_root()), split="train", cache_dir=str(tmp_path)
    )
    assert ds.num_rows == len(raw_rows)
    first = ds[0]
    assert first["text"] == raw_rows[0]["text"]
    assert first["image"].size == (64, 64)


def test_load_from_explicit_root_and_bad_root(tmp_path):
    assert len(load_emoji(emoji_root())) == EXPECTED_IMAGES
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "a"}\n')
    with pytest.raises(DataFormatError, match="texts"):
        load_emoji(tmp_path)


def test_packaging_lists_every_subpackage():
    """pyproject uses an explicit package list (for the data mapping): keep it complete."""
    tomllib = pytest.importorskip("tomllib")
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setup["package-dir"]["align_lite.data_samples"] == "data_samples"
    inits = (REPO / "align_lite").rglob("__init__.py")
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in inits}
    assert on_disk | {"align_lite.data_samples"} == set(setup["packages"])
    globs = setup["package-data"]["align_lite.data_samples"]
    assert {"emoji/images/*.png", "emoji/*.jsonl", "emoji/*.md"} <= set(globs)
