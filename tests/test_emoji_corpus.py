"""The shipped multi-style, multilingual emoji corpus: loader, pairs, splits, errors."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from align_lite.data import emoji_corpus as ec
from align_lite.data.records import DataFormatError


@pytest.fixture(scope="module")
def corpus() -> ec.EmojiCorpus:
    return ec.load_emoji_corpus()


# -- a tiny corpus whose every answer is known -------------------------------------------------

def _image_row(style: str, hexcode: str, base: str, concept: str, tone: str = "none", gender: str = "",
               subgroup: str = "hand-fingers-open") -> dict:
    return {"file_name": f"images/{style}/{hexcode.lower()}.png", "cell": 0, "style": style, "hexcode": hexcode,
            "emoji": "x", "base": base, "concept": concept, "skin_tone": tone, "gender": gender,
            "group": "people-body", "subgroup": subgroup, "order": 1, "text": hexcode.lower()}


def _write_tiny(root: Path) -> Path:
    rows = []
    for style in ("noto", "twemoji"):
        rows += [_image_row(style, "1F44B", "1F44B", "1F44B"),
                 _image_row(style, "1F44B-1F3FF", "1F44B", "1F44B", tone="dark")]
    (root / "images").mkdir(parents=True, exist_ok=True)
    for style in ("noto", "twemoji"):  # each style's sheet: its rows' cells, 64 to a row
        mine = [i for i, r in enumerate(rows) if r["style"] == style]
        sheet = Image.new("RGB", (64 * ec.SHEET_COLUMNS, 64), "white")
        for cell, i in enumerate(mine):
            rows[i]["cell"] = cell
            sheet.paste(Image.new("RGB", (64, 64), (10 * i, 0, 0)), (64 * cell, 0))
        sheet.save(root / "images" / f"{style}.png")
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    texts = [{"hexcode": "1F44B", "texts": {"en": {"label": "waving hand", "tags": ["hello", "wave"]},
                                             "ja": {"label": "手を振る", "tags": ["手"]}}},
             {"hexcode": "1F44B-1F3FF", "texts": {"en": {"label": "waving hand: dark skin tone", "tags": []}}}]
    messages = [{"locale": "en", "groups": {"people-body": "people & body"}, "subgroups": {"hand-fingers-open": "hand"},
                  "skin_tones": {"dark": "dark skin tone"}}]
    (root / "messages.jsonl").write_text("".join(json.dumps(m) + "\n" for m in messages), encoding="utf-8")
    with gzip.open(root / "alt_texts.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts))
    return root


def test_pairs_of_a_known_tiny_corpus(tmp_path):
    tiny = ec.load_emoji_corpus(_write_tiny(tmp_path))
    assert tiny.languages == ("en", "ja")
    pairs = tiny.pairs(tiny.rows(style="noto"))
    got = list(zip(pairs["image_index"].to_pylist(), pairs["language"].to_pylist(),
                   pairs["kind"].to_pylist(), pairs["text"].to_pylist()))
    # the base: its label and tags in both languages; the dark variant: its own English label
    # and its base's tags (emojibase gives variants none), in no other language's label.
    assert got == [
        (0, "en", "label", "waving hand"), (0, "en", "tag", "hello"), (0, "en", "tag", "wave"),
        (0, "ja", "label", "手を振る"), (0, "ja", "tag", "手"),
        (1, "en", "label", "waving hand: dark skin tone"), (1, "en", "tag", "hello"), (1, "en", "tag", "wave"),
        (1, "ja", "tag", "手"),
    ]
    assert tiny.names("en", "skin_tones") == {"dark": "dark skin tone"}
    with pytest.raises(ValueError, match="no names in language"):
        tiny.names("xx", "skin_tones")
    only = tiny.pairs(languages=["ja"], kinds=["label"])
    assert only["text"].to_pylist() == ["手を振る", "手を振る"]
    assert only["style"].to_pylist() == ["noto", "twemoji"]


def test_unknown_language_or_kind_is_an_error(tmp_path):
    tiny = ec.load_emoji_corpus(_write_tiny(tmp_path))
    with pytest.raises(ValueError, match="unknown language"):
        tiny.pairs(languages=["xx"])
    with pytest.raises(ValueError, match="unknown kind"):
        tiny.pairs(kinds=["caption"])


def test_missing_or_truncated_corpus_gives_a_clear_error(tmp_path):
    root = _write_tiny(tmp_path / "c")
    (root / "images/twemoji.png").unlink()
    with pytest.raises(DataFormatError, match="twemoji.png: missing or empty"):
        ec.load_emoji_corpus(root)
    root = _write_tiny(tmp_path / "short")
    Image.new("RGB", (64 * ec.SHEET_COLUMNS, 32), "white").save(root / "images/noto.png")  # cut in half
    with pytest.raises(DataFormatError, match="noto.png: 4096x32 px, the metadata needs 4096x64"):
        ec.load_emoji_corpus(root)
    root = _write_tiny(tmp_path / "d")
    raw = (root / "metadata.jsonl").read_bytes()
    (root / "metadata.jsonl").write_bytes(raw[: len(raw) // 2])  # cut mid-line
    with pytest.raises(DataFormatError, match=r"metadata.jsonl:\d+: not a JSON line"):
        ec.load_emoji_corpus(root)
    root = _write_tiny(tmp_path / "e")
    (root / "alt_texts.jsonl.gz").unlink()
    with pytest.raises(DataFormatError, match="alt_texts.jsonl.gz: missing"):
        ec.load_emoji_corpus(root)
    root = _write_tiny(tmp_path / "f")
    raw = (root / "alt_texts.jsonl.gz").read_bytes()
    (root / "alt_texts.jsonl.gz").write_bytes(raw[: len(raw) // 2])  # a cut gzip stream
    with pytest.raises(DataFormatError, match="alt_texts.jsonl.gz: unreadable"):
        ec.load_emoji_corpus(root)
    with pytest.raises(DataFormatError, match="metadata.jsonl: missing|no such|empty"):
        ec.load_emoji_corpus(tmp_path / "nowhere")


def test_a_damaged_image_is_named(tmp_path):
    root = _write_tiny(tmp_path)
    good = (root / "images/noto.png").read_bytes()
    (root / "images/noto.png").write_bytes(good[:-40])  # header intact, pixel stream cut
    tiny = ec.load_emoji_corpus(root)
    with pytest.raises(DataFormatError, match="noto.png: unreadable image"):
        tiny.pixels()
    (root / "images/noto.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataFormatError, match="noto.png: unreadable image"):
        ec.load_emoji_corpus(root)


def test_pairs_dataset_serves_the_right_image(tmp_path):
    tiny = ec.load_emoji_corpus(_write_tiny(tmp_path))
    pairs = tiny.pairs(tiny.rows(style="twemoji"))
    ds = ec.EmojiPairs.of(tiny, pairs)
    item = ds[len(ds) - 1]  # the twemoji dark variant (image 3, red = 30)
    assert item["text"] == ds.texts[-1] and item["image"].shape == (3, 64, 64)
    assert item["image"][0, 0, 0].item() == pytest.approx(30 / 127.5 - 1)
    with pytest.raises(ValueError, match="empty"):
        ec.EmojiPairs.of(tiny, pairs.slice(0, 0))


# -- the shipped corpus ----------------------------------------------------------------------

def test_shipped_corpus_is_whole(corpus):
    corpus.verify()  # every file hashes as MANIFEST.sha256 says
    assert set(corpus.column("style")) == set(ec.STYLES)
    assert set(corpus.column("skin_tone")) <= set(ec.SKIN_TONES)
    assert corpus.names("fr", "skin_tones")["dark"] == "teint foncé"
    for language in corpus.languages:  # every subgroup is named in every language (prompts)
        assert set(corpus.column("subgroup")) <= set(corpus.names(language, "subgroups")), language
    assert len(corpus.languages) >= 25 and {"en", "ja", "zh", "th", "hi", "ru"} <= set(corpus.languages)
    counts = {s: len(corpus.rows(style=s)) for s in ec.STYLES}
    assert min(counts.values()) > 3000, counts
    # every style draws skin-tone variants and gendered variants
    for style in ec.STYLES:
        rows = corpus.rows(style=style)
        assert (corpus.column("skin_tone")[rows] == "dark").sum() > 200
        assert (corpus.column("gender")[rows] == "woman").sum() > 50


def test_shipped_images_are_64px_rgb_on_white(corpus):
    for style in ec.STYLES:
        pixels = corpus.pixels(corpus.rows(style=style)[:50])
        assert pixels.shape == (50, 3, 64, 64) and pixels.dtype == torch.uint8
        corners = pixels[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
        assert (corners == 255).float().mean() > 0.9  # drawn on white
        assert pixels.float().std() > 20  # not blank


def test_concepts_group_variants(corpus):
    concept = dict(zip(corpus.column("hexcode"), corpus.column("concept")))
    assert concept["1F645-200D-2640-FE0F"] == "1F645"  # woman gesturing NO → person gesturing NO
    assert concept["1F44B-1F3FF"] == "1F44B"  # waving hand: dark skin tone → waving hand
    tone = dict(zip(corpus.column("hexcode"), corpus.column("skin_tone")))
    assert tone["1F44B-1F3FF"] == "dark" and tone["1F44B"] == "none"


def test_splits_do_not_leak(corpus):
    split = ec.EmojiSplit()
    train, test, unseen = split.train_rows(corpus), split.test_rows(corpus), split.test_unseen_rows(corpus)
    styles, concepts = corpus.column("style"), corpus.column("concept")
    assert set(styles[train]) == set(split.train_styles) and set(styles[test]) == {split.test_style}
    assert not set(train) & set(test)
    held = set(concepts[unseen])
    assert held and not held & set(concepts[train])  # no variant of a held-out concept is trained on
    share = len(held) / len(set(concepts))
    assert 0.12 < share < 0.28, share
    # a variant never crosses the split without its concept
    seen_train = set(concepts[train])
    assert all(not ec.held_out_concept(c) for c in seen_train)
    # the same split for every style choice is a function of the concept alone
    other = ec.EmojiSplit(test_style="openmoji")
    assert set(concepts[other.test_unseen_rows(corpus)]) <= {c for c in set(concepts) if ec.held_out_concept(c)}


def test_shipped_pairs_are_noisy_and_multilingual(corpus):
    rows = corpus.rows(style="noto")
    pairs = corpus.pairs(rows)
    assert pairs.num_rows > 50 * len(rows)  # dozens of alt-texts per image
    texts = pairs["text"].to_pylist()
    images = pairs["image_index"].to_pylist()
    sharing: dict[str, set] = {}
    for text, image in zip(texts, images):
        sharing.setdefault(text, set()).add(image)
    assert max(len(v) for v in sharing.values()) > 100  # generic tags ("face") shared widely
    wave = corpus.pairs(corpus.rows(style="noto", hexcode="1F44B"), languages=["en"])
    assert "waving hand" in wave["text"].to_pylist() and "hello" in wave["text"].to_pylist()


@pytest.mark.parametrize("broken", ["metadata", "image"])
def test_copy_of_shipped_corpus_detects_truncation(corpus, tmp_path, broken):
    root = tmp_path / "copy"
    shutil.copytree(corpus.root, root)
    victim = ec.sheet_path(root, corpus.images["style"][5].as_py())
    if broken == "image":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        copy = ec.load_emoji_corpus(root)  # the header is whole: only the hashes or decoding tell
        with pytest.raises(DataFormatError, match="differ from MANIFEST"):
            copy.verify()
        with pytest.raises(DataFormatError, match="unreadable image"):
            copy.pixels()
    else:
        victim.unlink()
        with pytest.raises(DataFormatError, match="missing or empty"):
            ec.load_emoji_corpus(root)


def test_hf_imagefolder_reads_the_corpus(tmp_path):
    root = _write_tiny(tmp_path / "corpus")
    tiny = ec.load_emoji_corpus(root)
    ds = ec.load_emoji_corpus_hf(root, folder=tmp_path / "hf")
    assert len(ds) == 4 and set(ds.column_names) >= {"image", "style", "hexcode", "skin_tone", "text"}
    assert "cell" not in ds.column_names  # a sheet position means nothing in an imagefolder
    assert sorted(p.relative_to(tmp_path / "hf").as_posix() for p in (tmp_path / "hf").rglob("*.png")) == \
        sorted(tiny.images["file_name"].to_pylist())
    by_name = {row["file_name"]: i for i, row in enumerate(tiny.images.to_pylist())}
    for row in ds:
        i = by_name[f"images/{row['style']}/{row['hexcode'].lower()}.png"]
        assert np.array_equal(np.asarray(row["image"]), np.asarray(tiny.image(i)))  # lossless, right cell


def test_imagefolder_export_is_atomic_and_reused(tmp_path, monkeypatch):
    tiny = ec.load_emoji_corpus(_write_tiny(tmp_path / "corpus"))
    calls = []
    real_image = ec.EmojiCorpus.image

    def failing_image(self, i):
        calls.append(i)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed mid-export
        return real_image(self, i)

    monkeypatch.setattr(ec.EmojiCorpus, "image", failing_image)
    with pytest.raises(KeyboardInterrupt):
        ec.export_imagefolder(tiny, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()  # nothing that looks finished
    monkeypatch.setattr(ec.EmojiCorpus, "image", real_image)
    ec.export_imagefolder(tiny, tmp_path / "hf")
    assert (tmp_path / "hf" / "metadata.jsonl").is_file()
    stamp = (tmp_path / "hf" / "metadata.jsonl").stat().st_mtime_ns
    ec.export_imagefolder(tiny, tmp_path / "hf")  # a finished export is kept, not rewritten
    assert (tmp_path / "hf" / "metadata.jsonl").stat().st_mtime_ns == stamp


def test_edit_pairs_link_each_neutral_emoji_to_its_variant(corpus):
    from align_lite.emoji_experiments import edit_pairs, edit_text

    rows = corpus.rows(style="twemoji")
    hexcode = corpus.column("hexcode")[rows]
    sources, targets = edit_pairs(corpus, rows, "skin_tone", "dark")
    pairs = dict(zip(hexcode[sources], hexcode[targets]))
    assert pairs["1F44B"] == "1F44B-1F3FF" and len(pairs) > 200  # 👋 → 👋🏿 (211 in Twemoji)
    assert all(t.startswith(s.split("-")[0]) for s, t in pairs.items())
    sources, targets = edit_pairs(corpus, rows, "gender", "woman")
    pairs = dict(zip(hexcode[sources], hexcode[targets]))
    assert pairs["1F645"] == "1F645-200D-2640-FE0F" and len(pairs) > 40  # 🙅 → 🙅‍♀️ (51)
    assert edit_text(corpus, "dark skin tone", "fr") == "teint foncé"
    assert edit_text(corpus, "woman", "en") == "woman" and edit_text(corpus, "woman", "de") == "Frau"
