"""Loaders (align_lite.data.sources): pair folders, ``datasets``, webdataset shards; bad samples
are counted and skipped, never raised."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from align_lite.data.images import ImageTransformConfig, image_transform
from align_lite.data.records import METADATA_JSONL, SkipLog, read_pairs, write_pairs
from align_lite.data.sources import (
    PairDataset,
    collate_pairs,
    hf_pairs,
    to_pair_folder,
    webdataset_pairs,
    write_webdataset,
)

GOOD_COLORS = [(220, 30, 30), (30, 200, 60), (40, 60, 230)]


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def patterned(color, size=(24, 20), seed=0) -> Image.Image:
    """A solid colour with a little noise, so images differ pixel-wise."""
    rng = np.random.default_rng(seed)
    arr = np.empty((size[1], size[0], 3), dtype=np.uint8)
    arr[:] = color
    arr[: size[1] // 2, : size[0] // 3] = rng.integers(0, 256, (size[1] // 2, size[0] // 3, 3))
    return Image.fromarray(arr)


def tar_shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def pair_folder(tmp_path) -> Path:
    """Rows: 3 good PNGs, a truncated PNG, a missing file, an RGBA and a greyscale image.

    Index: 0-2 good, 3 truncated, 4 missing, 5 RGBA, 6 grey.
    """
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    rows = []
    for i, color in enumerate(GOOD_COLORS):
        patterned(color, seed=i).save(root / f"images/good{i}.png")
        rows.append({"file_name": f"images/good{i}.png", "text": f"caption of good image {i}"})
    (root / "images/truncated.png").write_bytes(png_bytes(patterned((9, 9, 9), size=(64, 64), seed=9))[:150])
    rows.append({"file_name": "images/truncated.png", "text": "a truncated image"})
    rows.append({"file_name": "images/missing.png", "text": "an image that is not there"})
    rgba = np.zeros((20, 24, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:10, :, 3] = 0  # top half transparent
    Image.fromarray(rgba, "RGBA").save(root / "images/rgba.png")
    rows.append({"file_name": "images/rgba.png", "text": "half transparent red"})
    Image.fromarray(np.full((20, 24), 77, dtype=np.uint8)).save(root / "images/grey.png")
    rows.append({"file_name": "images/grey.png", "text": "a grey square"})
    write_pairs(pa.Table.from_pylist(rows), root)
    return root


GOOD_INDICES = [0, 1, 2, 5, 6]


# ------------------------------------------------------------------------------- PairDataset


def test_pair_dataset_skips_bad_images_with_reasons(pair_folder):
    ds = PairDataset(pair_folder)
    assert len(ds) == 7
    samples = [ds[i] for i in range(len(ds))]
    assert [i for i, s in enumerate(samples) if s is not None] == GOOD_INDICES
    assert dict(ds.log.counts) == {"corrupt_image": 1, "missing_file": 1}
    assert "row 3" in ds.log.examples["corrupt_image"][0]
    assert "row 4" in ds.log.examples["missing_file"][0]
    for i in GOOD_INDICES:
        s = samples[i]
        assert s["index"] == i
        assert s["text"] == ds.texts[i]
        assert isinstance(s["image"], Image.Image) and s["image"].mode == "RGB"
        assert s["image"].size == (24, 20)


def test_pair_dataset_converts_modes(pair_folder):
    ds = PairDataset(pair_folder)
    rgba = np.asarray(ds[5]["image"])
    assert (rgba[:10] == 255).all(), "transparent half composited on white"
    assert (rgba[10:] == (200, 0, 0)).all()
    assert (np.asarray(ds[6]["image"]) == 77).all()
    good = np.asarray(ds[1]["image"])
    np.testing.assert_array_equal(good, np.asarray(patterned(GOOD_COLORS[1], seed=1)))


def test_pair_dataset_with_transform(pair_folder):
    config = ImageTransformConfig(resize=20, crop=16)
    ds = PairDataset(pair_folder, transform=image_transform(config))
    s = ds[0]
    assert isinstance(s["image"], torch.Tensor)
    assert s["image"].shape == (3, 16, 16) and s["image"].dtype == torch.float32
    assert ds[3] is None


def test_pair_dataset_shares_a_given_log_including_row_skips(tmp_path, pair_folder):
    meta = pair_folder / METADATA_JSONL
    meta.write_bytes(meta.read_bytes() + b"{broken json\n")
    log = SkipLog()
    ds = PairDataset(pair_folder, log=log)
    assert ds.log is log
    assert log.counts["bad_json"] == 1
    ds[4]
    assert log.counts["missing_file"] == 1


def test_pair_dataset_refuses_paths_outside_the_folder(tmp_path):
    secret = tmp_path / "secret.png"
    patterned((1, 2, 3)).save(secret)
    root = tmp_path / "set"
    root.mkdir()
    patterned((1, 2, 3)).save(root / "ok.png")
    write_pairs(pa.Table.from_pylist([
        {"file_name": "../secret.png", "text": "escape"},
        {"file_name": str(secret), "text": "absolute"},
        {"file_name": "ok.png", "text": "fine"},
    ]), root)
    ds = PairDataset(root)
    assert ds[0] is None and ds[1] is None and ds[2] is not None
    assert ds.log.counts["unsafe_file_name"] == 2


# ------------------------------------------------------------------------------- collate_pairs


def test_collate_drops_none_and_stacks(pair_folder):
    config = ImageTransformConfig(resize=20, crop=16)
    ds = PairDataset(pair_folder, transform=image_transform(config))
    batch = collate_pairs([ds[i] for i in range(len(ds))])
    assert batch["n_skipped"] == 2
    assert batch["image"].shape == (5, 3, 16, 16)
    assert batch["index"].tolist() == GOOD_INDICES
    assert batch["index"].dtype == torch.int64
    assert batch["text"] == [ds.texts[i] for i in GOOD_INDICES]
    assert torch.equal(batch["image"][3], ds[5]["image"])
    assert "input_ids" not in batch


def test_collate_without_transform_keeps_pil_list(pair_folder):
    ds = PairDataset(pair_folder)
    batch = collate_pairs([ds[0], None, ds[2]])
    assert batch["n_skipped"] == 1
    assert isinstance(batch["image"], list) and len(batch["image"]) == 2
    assert all(isinstance(im, Image.Image) for im in batch["image"])


def test_collate_all_none():
    batch = collate_pairs([None, None])
    assert batch["n_skipped"] == 2
    assert batch["text"] == [] and len(batch["image"]) == 0
    assert batch["index"].shape == (0,)


def test_collate_tokenizes(pair_folder):
    from align_lite.data.tokenizer import TokenizerConfig, train_tokenizer

    tok = train_tokenizer(["caption of good image", "a grey square", "half transparent red"] * 5,
                          TokenizerConfig(vocab_size=100, max_length=12))
    config = ImageTransformConfig(resize=20, crop=16)
    ds = PairDataset(pair_folder, transform=image_transform(config))
    batch = collate_pairs([ds[i] for i in range(len(ds))], tokenizer=tok)
    assert batch["input_ids"].shape == (5, 12)
    assert batch["attention_mask"].shape == (5, 12)
    assert torch.equal(batch["input_ids"], tok(batch["text"])["input_ids"])


def test_collate_in_a_dataloader(pair_folder):
    from torch.utils.data import DataLoader

    config = ImageTransformConfig(resize=20, crop=16)
    ds = PairDataset(pair_folder, transform=image_transform(config))
    loader = DataLoader(ds, batch_size=4, collate_fn=collate_pairs)
    batches = list(loader)
    assert [b["n_skipped"] for b in batches] == [1, 1]
    assert sum(len(b["text"]) for b in batches) == 5


# ------------------------------------------------------------------------------- datasets


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, no shared cache. The environment only counts before ``datasets`` is first
    imported (hf_pairs imports it lazily); after that, its config constants are patched too."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    if "datasets" in sys.modules:
        import datasets.config
        import huggingface_hub.constants

        monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return {"cache_dir": str(tmp_path / "hf_cache")}


def test_hf_pairs_on_a_local_folder(pair_folder, offline):
    log = SkipLog()
    samples = list(hf_pairs(str(pair_folder), log=log, **offline))
    assert [s["index"] for s in samples] == GOOD_INDICES
    table, _ = read_pairs(pair_folder)
    texts = table.column("text").to_pylist()
    assert [s["text"] for s in samples] == [texts[i] for i in GOOD_INDICES]
    assert all(s["image"].mode == "RGB" for s in samples)
    np.testing.assert_array_equal(np.asarray(samples[0]["image"]), np.asarray(patterned(GOOD_COLORS[0], seed=0)))
    assert (np.asarray(samples[3]["image"])[:10] == 255).all()  # RGBA composited on white
    assert log.counts["corrupt_image"] == 1
    assert log.total == 2  # the missing file is counted too, whichever way datasets reports it


def test_hf_pairs_streaming(pair_folder, offline):
    log = SkipLog()
    samples = list(hf_pairs(str(pair_folder), streaming=True, log=log, **offline))
    assert [s["index"] for s in samples] == GOOD_INDICES
    assert log.counts["corrupt_image"] == 1


def test_hf_pairs_unknown_column(pair_folder, offline):
    with pytest.raises(KeyError, match="caption"):
        next(hf_pairs(str(pair_folder), text_column="caption", **offline))


def test_hf_pairs_from_in_memory_style_cells(monkeypatch):
    """Image cells as ``datasets`` gives them: dicts of bytes/path, raw bytes, PIL images."""
    import datasets

    good = png_bytes(patterned((10, 200, 10)))
    rows = {
        "image": [good, b"", b"\x89PNGgarbage", good, good],
        "text": ["fine", "empty bytes", "garbage", "   ", "also fine"],
    }
    ds = datasets.Dataset.from_dict(rows)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: ds)
    log = SkipLog()
    samples = list(hf_pairs("some/hub-name", log=log))
    assert [s["text"] for s in samples] == ["fine", "also fine"]
    assert dict(log.counts) == {"empty_file": 1, "corrupt_image": 1, "empty_text": 1}


def test_hf_pairs_with_a_list_of_captions_per_image(monkeypatch):
    """Flickr30K/MSCOCO style: five captions per image become five pairs; empty ones are counted."""
    import datasets

    good = png_bytes(patterned((10, 200, 10)))
    ds = datasets.Dataset.from_dict({"image": [good, good], "caption": [["a dog", "a brown dog", ""], [" ", None]]})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: ds)
    log = SkipLog()
    samples = list(hf_pairs("nlphuji/flickr30k", text_column="caption", log=log))
    assert [(s["text"], s["index"]) for s in samples] == [("a dog", 0), ("a brown dog", 0)]
    assert dict(log.counts) == {"empty_text": 3}


# ------------------------------------------------------------------------------- webdataset


def test_webdataset_round_trip(pair_folder, tmp_path):
    log = SkipLog()
    shards = write_webdataset(pair_folder, str(tmp_path / "wds" / "shard-%04d.tar"), max_count=3, log=log)
    assert log.counts["missing_file"] == 1  # not written, counted
    assert log.counts["corrupt_image"] == 1  # decode-checked at write time, like data filter
    assert shards == [str(tmp_path / "wds" / f"shard-{i:04d}.tar") for i in range(2)]
    assert all(Path(s).is_file() for s in shards)

    read_log = SkipLog()
    samples = list(webdataset_pairs(shards, log=read_log))
    assert read_log.total == 0
    ds = PairDataset(pair_folder)
    assert [s["text"] for s in samples] == [ds.texts[i] for i in GOOD_INDICES]
    for s, i in zip(samples, GOOD_INDICES):
        np.testing.assert_array_equal(np.asarray(s["image"]), np.asarray(ds[i]["image"]))
        assert s["key"] == f"{i:09d}"


def test_webdataset_brace_pattern(pair_folder, tmp_path):
    write_webdataset(pair_folder, str(tmp_path / "shard-%02d.tar"), max_count=2)
    samples = list(webdataset_pairs(str(tmp_path / "shard-{00..02}.tar")))
    assert len(samples) == 5


def test_webdataset_keeps_all_columns_in_json(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    patterned((1, 2, 3)).save(root / "a.jpeg")
    write_pairs(pa.Table.from_pylist([{"file_name": "a.jpeg", "text": "café ✓", "license": "cc0"}]), root)
    [shard] = write_webdataset(root, str(tmp_path / "s-%d.tar"))
    with tarfile.open(shard) as tar:
        names = sorted(tar.getnames())
        meta = json.loads(tar.extractfile("000000000.json").read())
    assert names == ["000000000.jpg", "000000000.json"]
    assert meta == {"file_name": "a.jpeg", "text": "café ✓", "license": "cc0"}
    [sample] = webdataset_pairs(shard)
    assert sample["text"] == "café ✓"


def test_webdataset_counts_bad_members(tmp_path):
    red, blue = png_bytes(patterned((255, 0, 0))), png_bytes(patterned((0, 0, 255)))
    truncated = png_bytes(patterned((0, 255, 0), size=(64, 64)))[:100]
    shard = tar_shard(tmp_path / "bad.tar", [
        ("k0.png", red), ("k0.txt", b"a red one"),
        ("k1.png", b"definitely not a png"), ("k1.txt", b"corrupt image"),
        ("k2.png", blue),  # no caption
        ("k3.png", truncated), ("k3.txt", b"truncated"),
        ("k4.txt", b"caption without an image"),
        ("k5.png", red), ("k5.txt", b"   "),  # blank caption
        ("k6.jpg", png_bytes(patterned((0, 0, 255)))), ("k6.json", json.dumps({"caption": "blue from json"}).encode()),
        ("k7.png", red), ("k7.json", b"{not json"),
        ("k8.png", red), ("k8.txt", b"\xff\xfe not utf-8"),
    ])
    log = SkipLog()
    samples = list(webdataset_pairs(str(shard), log=log))
    assert [(s["key"], s["text"]) for s in samples] == [("k0", "a red one"), ("k6", "blue from json")]
    assert dict(log.counts) == {"corrupt_image": 2, "empty_text": 4, "missing_file": 1}


def test_webdataset_truncated_or_missing_shard_is_counted_not_raised(pair_folder, tmp_path):
    [good] = write_webdataset(pair_folder, str(tmp_path / "good-%d.tar"))
    raw = Path(good).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(raw[: len(raw) // 2 + 100])
    log = SkipLog()
    samples = list(webdataset_pairs([str(cut), str(tmp_path / "absent.tar"), good], log=log))
    assert log.counts["corrupt_shard"] >= 2
    assert [s["text"] for s in samples][-5:] == [PairDataset(pair_folder).texts[i] for i in GOOD_INDICES]


def test_write_webdataset_skips_unsafe_paths(tmp_path):
    patterned((1, 2, 3)).save(tmp_path / "outside.png")
    root = tmp_path / "set"
    root.mkdir()
    patterned((4, 5, 6)).save(root / "in.png")
    write_pairs(pa.Table.from_pylist([
        {"file_name": "../outside.png", "text": "escape"},
        {"file_name": "in.png", "text": "inside"},
    ]), root)
    log = SkipLog()
    shards = write_webdataset(root, str(tmp_path / "w-%d.tar"), log=log)
    assert log.counts["unsafe_file_name"] == 1
    assert [s["text"] for s in webdataset_pairs(shards)] == ["inside"]


# ------------------------------------------------------------------------------- to_pair_folder


def test_to_pair_folder_round_trip(pair_folder, tmp_path):
    ds = PairDataset(pair_folder)
    samples = [s for s in (ds[i] for i in range(len(ds))) if s is not None]
    out = to_pair_folder(iter(samples), tmp_path / "copy")
    back = PairDataset(out)
    assert len(back) == len(samples)
    assert back.texts == [s["text"] for s in samples]
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(np.asarray(back[i]["image"]), np.asarray(s["image"]))
    assert back.log.total == 0


def test_hf_pairs_to_pair_folder(pair_folder, tmp_path, offline):
    out = to_pair_folder(hf_pairs(str(pair_folder), **offline), tmp_path / "from_hf")
    table, _ = read_pairs(out)
    assert table.num_rows == 5
    assert all((out / name).is_file() for name in table.column("file_name").to_pylist())


def test_symbolic_links_out_of_the_folder_are_unsafe_everywhere(tmp_path):
    """A link inside the data set to a file outside it is refused like ``../x`` (never read,
    copied or packed); a link to a file inside the folder is fine."""
    secret = tmp_path / "secret.png"
    patterned((9, 9, 9)).save(secret)
    root = tmp_path / "set"
    (root / "img").mkdir(parents=True)
    patterned((4, 5, 6)).save(root / "img" / "in.png")
    (root / "img" / "out.png").symlink_to(secret)
    (root / "img" / "alias.png").symlink_to(root / "img" / "in.png")
    (root / "up").symlink_to(tmp_path, target_is_directory=True)
    write_pairs(pa.Table.from_pylist([
        {"file_name": "img/out.png", "text": "a link out"},
        {"file_name": "up/secret.png", "text": "a folder link out"},
        {"file_name": "img/alias.png", "text": "a link in"},
        {"file_name": "img/in.png", "text": "plain"},
    ]), root)
    ds = PairDataset(root)
    assert [ds[i] is None for i in range(4)] == [True, True, False, False]
    assert ds.log.counts == {"unsafe_file_name": 2}
    log = SkipLog()
    shards = write_webdataset(root, str(tmp_path / "w-%d.tar"), log=log)
    assert log.counts == {"unsafe_file_name": 2}
    assert [s["text"] for s in webdataset_pairs(shards)] == ["a link in", "plain"]


def test_write_webdataset_decode_checks_images_unless_told_not_to(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    patterned((4, 5, 6)).save(root / "good.png")
    (root / "cut.png").write_bytes(png_bytes(patterned((1, 2, 3), size=(64, 64)))[:120])
    (root / "empty.png").write_bytes(b"")
    (root / "words.jpg").write_text("this is text, not a JPEG")
    write_pairs(pa.Table.from_pylist([{"file_name": n, "text": f"row {i}"} for i, n in enumerate(
        ["good.png", "cut.png", "empty.png", "words.jpg", "cut.png", "gone.png", "good.png"])]), root)
    log = SkipLog()
    shards = write_webdataset(root, str(tmp_path / "w-%d.tar"), log=log)
    assert dict(log.counts) == {"corrupt_image": 3, "empty_file": 1, "missing_file": 1}
    assert [s["text"] for s in webdataset_pairs(shards)] == ["row 0", "row 6"]
    unchecked = SkipLog()
    shards = write_webdataset(root, str(tmp_path / "u-%d.tar"), log=unchecked, check_images=False)
    assert dict(unchecked.counts) == {"empty_file": 1, "missing_file": 1}
    assert len(list(webdataset_pairs(shards, log=SkipLog()))) == 2  # the rest fail when read back
