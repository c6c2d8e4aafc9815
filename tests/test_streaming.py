"""Streaming (align_lite.data.streaming): shard lists, the per-rank/per-worker split, resampling,
bad samples counted and skipped, ALIGN's filters on a stream, HF streaming, the shards CLI."""

from __future__ import annotations

import io
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader

from align_lite.cli import main
from align_lite.data.filters import RULES, FilterConfig, reference_filter_masks
from align_lite.data.images import ImageTransformConfig, image_transform
from align_lite.data.records import SkipLog, write_pairs
from align_lite.data.hf_stream import hf_stream
from align_lite.data.stream_filter import ShardCounts, StreamFilter, count_pass, merge_counts
from align_lite.data.streaming import ShardStream, shard_list, split_shards, write_shards

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

GOOD = 8  # rows 0..7 of the pair folder: 224x224, distinct, 6-word alt-texts


def png(size: tuple[int, int], seed: int) -> bytes:
    """A ``size`` (w, h) PNG: a solid colour per seed, so images and their hashes differ."""
    rng = np.random.default_rng(seed)
    arr = np.empty((size[1], size[0], 3), dtype=np.uint8)
    arr[:] = rng.integers(0, 256, 3)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def make_folder(root: Path, rows: list[tuple[bytes, str]]) -> Path:
    (root / "images").mkdir(parents=True)
    table = []
    for i, (data, text) in enumerate(rows):
        (root / f"images/{i:03d}.png").write_bytes(data)
        table.append({"file_name": f"images/{i:03d}.png", "text": text})
    write_pairs(pa.Table.from_pylist(table), root)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """8 good rows, then: a corrupt image, an empty text (dropped when the shards are written), a
    too-small image, an extreme aspect ratio, a one-word alt-text."""
    rows = [(png((224, 224), i), f"a photo of item number {i}") for i in range(GOOD)]
    rows += [
        (b"this is not an image", "a corrupt image file here"),
        (png((224, 224), 100), ""),
        (png((100, 100), 101), "a small image of something"),
        (png((700, 210), 102), "a very wide panorama picture"),
        (png((224, 224), 103), "cat"),
    ]
    return make_folder(tmp_path_factory.mktemp("pairs"), rows)


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory) -> list[str]:
    """4 shards of 3 from the folder, one hand-made shard with an empty caption and a sample with
    no image, and a truncated shard: 6 in all. Good samples: the 8 good rows + 3 that only the
    filters drop = 11 (keys 000000000..000000011 without 8, the corrupt image: the empty text
    was never written, so keys are positions among the 12 rows written)."""
    out = tmp_path_factory.mktemp("shards")
    log = SkipLog()
    # unchecked, so that the corrupt image travels into a shard for the reader to count
    written = write_shards(folder, str(out / "shard-%06d.tar"), max_count=3, log=log, check_images=False)
    assert len(written) == 4 and log.counts == Counter({"empty_text": 1})
    with wds.TarWriter(str(out / "shard-000004.tar")) as sink:
        sink.write({"__key__": "x-empty", "png": png((224, 224), 200), "txt": b"   "})
        sink.write({"__key__": "x-noimage", "txt": b"a caption without any image"})
    with wds.TarWriter(str(out / "whole.tar")) as sink:
        sink.write({"__key__": "t-0", "png": png((224, 224), 300), "txt": b"lost in a broken shard"})
    raw = (out / "whole.tar").read_bytes()
    (out / "shard-000005.tar").write_bytes(raw[:700])  # cut inside the first member
    (out / "whole.tar").unlink()
    return shard_list(str(out / "shard-{000000..000005}.tar"))


GOOD_KEYS = {f"{i:09d}" for i in range(12)} - {"000000008"}


def keys_of(stream) -> list[str]:
    return [sample["key"] for sample in stream]


# --------------------------------------------------------------------------------------------
# shard lists and splits
# --------------------------------------------------------------------------------------------


def test_shard_list_expands_braces_globs_and_lists(shards):
    folder = Path(shards[0]).parent
    assert len(shards) == 6 and shards == sorted(shards)
    assert shard_list(str(folder / "shard-*.tar")) == shards
    assert shard_list([shards[0], str(folder / "shard-00000{1..2}.tar")]) == shards[:3]
    with pytest.raises(ValueError, match="no shards match"):
        shard_list(str(folder / "nothing-*.tar"))
    with pytest.raises(ValueError, match="do not exist"):
        shard_list(str(folder / "shard-{000000..000009}.tar"))
    assert shard_list(str(folder / "shard-{000000..000009}.tar"), missing_ok=True) == shards


def test_split_shards_partitions_and_refuses_too_few():
    shards = [f"s{i}" for i in range(7)]
    parts = [split_shards(shards, r, 2, w, 3) for r in range(2) for w in range(3)]
    assert sorted(itertools.chain(*parts)) == sorted(shards) and all(parts)
    with pytest.raises(ValueError, match="cannot feed 2 ranks x 4 workers"):
        split_shards(shards, 0, 2, 0, 4)


# --------------------------------------------------------------------------------------------
# one pass: every good sample once, bad ones counted
# --------------------------------------------------------------------------------------------


def test_one_pass_yields_good_samples_and_counts_bad_ones(shards):
    stream = ShardStream(shards)
    samples = list(stream)
    assert sorted(s["key"] for s in samples) == sorted(GOOD_KEYS)
    assert all(isinstance(s["image"], Image.Image) and s["text"] for s in samples)
    assert stream.log.counts == Counter(
        {"corrupt_image": 1, "empty_text": 1, "missing_file": 1, "corrupt_shard": 1})
    # the per-sample "skipped" reports the bad samples before each one (the corrupt image, in
    # shard 2, precedes key 000000009); the trailing ones, after the last good sample, are in the log
    assert sum(s["skipped"] for s in samples) == 1
    assert next(s for s in samples if s["skipped"])["key"] == "000000009"


def test_ranks_times_workers_cover_every_good_sample_exactly_once(shards):
    seen: list[str] = []
    per_rank = []
    for rank in range(2):
        stream = ShardStream(shards, rank=rank, world_size=2)
        loader = DataLoader(stream, batch_size=None, num_workers=2)
        keys = keys_of(loader)
        per_rank.append(set(keys))
        seen += keys
    assert sorted(seen) == sorted(GOOD_KEYS)  # no duplicates, nothing missing
    assert per_rank[0] and per_rank[1] and not per_rank[0] & per_rank[1]


def test_too_few_shards_for_one_pass_is_an_error_but_resampling_is_fine(shards):
    with pytest.raises(ValueError, match="cannot feed"):
        list(ShardStream(shards[:1], rank=0, world_size=2))
    stream = ShardStream(shards[:1], rank=1, world_size=2, resample=True)
    assert len(keys_of(itertools.islice(stream, 7))) == 7


def test_shuffled_pass_still_covers_everything_once(shards):
    keys = [k for r in range(2) for k in keys_of(ShardStream(shards, rank=r, world_size=2, shuffle=True, seed=3))]
    assert sorted(keys) == sorted(GOOD_KEYS)


def test_transform_gives_tensors(shards):
    transform = image_transform(ImageTransformConfig.tiny(16))
    sample = next(iter(ShardStream(shards, transform=transform)))
    assert sample["image"].shape == (3, 16, 16) and sample["image"].dtype == torch.float32


# --------------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------------


def first_keys(shards, n=40, **kwargs) -> list[str]:
    return keys_of(itertools.islice(ShardStream(shards, resample=True, **kwargs), n))


def test_resampled_stream_is_endless_deterministic_and_seeded(shards):
    a = first_keys(shards, seed=0, rank=0, world_size=2)
    assert len(a) == 40 and set(a) <= GOOD_KEYS
    assert a == first_keys(shards, seed=0, rank=0, world_size=2)
    assert a != first_keys(shards, seed=1, rank=0, world_size=2)
    assert a != first_keys(shards, seed=0, rank=1, world_size=2)
    stream = ShardStream(shards, resample=True, seed=0, rank=0, world_size=2)
    stream.set_epoch(1)
    assert keys_of(itertools.islice(stream, 40)) != a


def test_resampled_workers_draw_different_shards(shards):
    loader = DataLoader(ShardStream(shards, resample=True, seed=0), batch_size=None, num_workers=2)
    urls = [s["url"] for s in itertools.islice(loader, 24)]
    worker0, worker1 = urls[0::2], urls[1::2]  # the DataLoader alternates between its workers
    assert worker0 != worker1


# --------------------------------------------------------------------------------------------
# filters
# --------------------------------------------------------------------------------------------


def test_stream_filter_counts_per_sample_rules(shards):
    config = FilterConfig()
    stream = ShardStream(shards, filter=StreamFilter(config))
    keys = keys_of(stream)
    assert sorted(keys) == sorted(f"{i:09d}" for i in range(GOOD))
    f = stream.filter
    assert f.removed == Counter({"image_size": 1, "aspect_ratio": 1, "text_length": 1})
    assert f.report() == {"rows_in": 11, "kept": 8,
                          "removed": {"image_size": 1, "aspect_ratio": 1, "text_length": 1}}


def test_stream_filter_thresholds_come_from_filter_config(shards):
    lenient = FilterConfig(min_image_side=50, max_aspect_ratio=4.0, min_unigrams=1)
    assert len(keys_of(ShardStream(shards, filter=StreamFilter(lenient)))) == len(GOOD_KEYS)


def test_stream_filter_matches_the_table_rules_with_counts():
    """Same decisions as filters.reference_filter_masks, all six rules, first-failure order."""
    rng = np.random.default_rng(0)
    words = ["red", "blue", "cat", "dog", "a", "photo", "of", "the", "zebra", "Tree!"]
    rows = []
    for i in range(300):
        n = int(rng.integers(1, 8))
        rows.append({"text": " ".join(rng.choice(words, n)), "image_key": f"img{int(rng.integers(0, 60))}",
                     "width": int(rng.choice([150, 250, 800])), "height": int(rng.choice([210, 260]))})
    rows += [{"text": f"red cat zebra{i}", "image_key": f"solo{i}", "width": 250, "height": 260} for i in range(5)]
    config = FilterConfig(max_alt_texts_per_image=6, max_images_per_alt_text=2, min_unigrams=2,
                          max_unigrams=6, rare_token_top_k=12)
    masks = reference_filter_masks(rows, config)
    expected = [next((r for r in RULES if masks[r][i]), None) for i in range(len(rows))]
    part_a, part_b = ShardCounts(), ShardCounts()  # counted in two "shards", then merged
    for i, row in enumerate(rows):
        (part_a if i % 2 else part_b).add(row["text"], row["image_key"])
    f = StreamFilter(config, merge_counts([part_a, part_b]))
    got = [f.failed_rule(r["width"], r["height"], r["text"], r["image_key"]) for r in rows]
    assert got == expected
    assert set(expected) == set(RULES) | {None}  # every rule is exercised


def test_count_pass_and_shared_alt_text_rule(tmp_path):
    """11 distinct images share one alt-text (> 10: dropped), 10 share another (kept)."""
    rows = [(png((224, 224), i), "A photo of a cat!") for i in range(11)]
    rows += [(png((224, 224), 50 + i), "a photo of a dog") for i in range(10)]
    rows += [(png((224, 224), 50), "a photo of a dog")]  # an image repeated: still 10 distinct
    folder = make_folder(tmp_path / "shared", rows)
    shards = write_shards(folder, str(tmp_path / "s" / "shard-%06d.tar"), max_count=5)
    counts = count_pass(shards)
    assert counts["pairs"] == 22
    assert counts["images_per_text"] == Counter({"a photo of a cat": 11, "a photo of a dog": 10})
    assert max(counts["alt_texts_per_image"].values()) == 2
    stream = ShardStream(shards, filter=StreamFilter(FilterConfig(), counts))
    texts = [s["text"] for s in stream]
    assert texts == ["a photo of a dog"] * 11
    assert stream.filter.removed == Counter({"alt_text_sharing": 11})
    # without the counts, the stream cannot know: nothing is dropped
    assert len(list(ShardStream(shards, filter=StreamFilter()))) == 22


def test_count_pass_skips_bad_samples_and_broken_shards(shards):
    counts = count_pass(shards)
    # images are not decoded in the pre-pass: the corrupt image is counted as a pair
    assert counts["pairs"] == len(GOOD_KEYS) + 1
    assert counts["skipped"]["counts"] == {"corrupt_shard": 1, "empty_text": 1, "missing_file": 1}


# --------------------------------------------------------------------------------------------
# Hugging Face streaming (local parquet only)
# --------------------------------------------------------------------------------------------


def test_hf_stream_splits_a_local_parquet_by_node(tmp_path):
    n = 9
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = [{"bytes": png((32, 32), i), "path": None} for i in range(n)]
    images[4] = {"bytes": b"broken", "path": None}
    texts = [f"caption {i}" for i in range(n)]
    texts[6] = ""
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"image": pa.array(images, image_type), "caption": texts}), path)
    got, logs = [], []
    for rank in range(2):
        log = SkipLog()
        got.append([s["text"] for s in hf_stream(path, text_column="caption", rank=rank, world_size=2, log=log)])
        again = hf_stream(path, text_column="caption", rank=rank, world_size=2)
        assert all(isinstance(s["image"], Image.Image) for s in again)
        logs.append(log)
    assert got[0] and got[1] and not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == sorted(t for i, t in enumerate(texts) if i not in (4, 6))
    total = SkipLog()
    for log in logs:
        total.merge(log)
    assert total.counts == Counter({"corrupt_image": 1, "empty_text": 1})
    with pytest.raises(KeyError, match="no column 'text'"):
        next(hf_stream(path, rank=0, world_size=1))


# --------------------------------------------------------------------------------------------
# the converter CLI
# --------------------------------------------------------------------------------------------


def test_cli_data_shards_writes_shards_and_reports_skips(folder, tmp_path, capsys):
    out = tmp_path / "cli" / "shard-%06d.tar"
    report = tmp_path / "cli" / "report.json"
    assert main(["data", "shards", str(folder), "--out", str(out), "--max-count", "5", "--report", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 3 shards" in printed and "corrupt_image: 1, empty_text: 1" in printed
    assert "e.g. corrupt_image: row 8: images/008.png" in printed
    assert json.loads(report.read_text())["skipped"]["counts"] == {"corrupt_image": 1, "empty_text": 1}
    written = shard_list(str(tmp_path / "cli" / "shard-*.tar"))
    assert len(written) == 3
    members = [json.loads(s["json"]) for s in wds.WebDataset(written, shardshuffle=False)]
    assert len(members) == 11 and members[0]["text"] == "a photo of item number 0"
    assert "a corrupt image file here" not in {m["text"] for m in members}


def test_cli_data_shards_rejects_a_pattern_without_a_field(folder, tmp_path, capsys):
    assert main(["data", "shards", str(folder), "--out", str(tmp_path / "one.tar")]) == 1
    assert "needs one %d-style field" in capsys.readouterr().err
