"""Training on webdataset tar shards: the trainer streams them (resampled, per rank and worker),
holds out the last shard for evaluation, learns the tokenizer from the shards' texts, and the
command line takes a brace pattern."""

from __future__ import annotations

import json

import pytest
import torch

from align_lite.cli import main
from align_lite.data.streaming import write_shards
from align_lite.data.world import WorldConfig, write_world
from align_lite.train import TrainConfig, Trainer, is_shard_source, train

TOY = dict(model="tiny", batch_size=4, warmup_steps=1, max_steps=3, text_length=16, vocab_size=300, eval_size=8,
           log_every=1, tensorboard=False)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    folder = write_world(WorldConfig.clean(n=48, seed=3), root / "pairs")
    written = write_shards(folder, str(root / "s" / "shard-%06d.tar"), max_count=16)
    assert len(written) == 3
    return str(root / "s" / "shard-{000000..000002}.tar")


def test_shard_sources_are_recognised():
    assert is_shard_source("d/shard-{000000..000009}.tar") and is_shard_source(["a.tar", "b.tar"])
    assert not is_shard_source("pairs/") and not is_shard_source("world") and not is_shard_source([])


def test_training_streams_the_shards_and_holds_out_the_last(shards, tmp_path):
    result = train(TrainConfig(**TOY), data=shards, out_dir=tmp_path / "run")
    assert result.step == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    assert {"eval_i2t_top1", "eval_t2i_top1"} <= set(result.eval)  # 8 pairs of the held-out shard
    assert all(r["epoch"] is None for r in result.history if "loss" in r)  # a stream has no epochs
    state = json.loads((tmp_path / "run" / "checkpoint-0000003" / "trainer_state.json").read_text())
    assert state["data"] == {"samples_seen": 12, "stream_epoch": 3}
    trainer = Trainer(TrainConfig(**TOY), data=shards)
    assert trainer.streaming and len(trainer.train_ds.shards) == 2  # the third shard is held out
    assert trainer.tokenizer.tokens("a red star")[1:-1] == ["a", "red", "star"]  # learnt from the shards' texts


def test_the_same_seed_streams_the_same_batches(shards):
    first = [b["text"] for b, _ in zip(Trainer(TrainConfig(**TOY), data=shards).loader(0), range(3))]
    again = [b["text"] for b, _ in zip(Trainer(TrainConfig(**TOY), data=shards).loader(0), range(3))]
    other = [b["text"] for b, _ in zip(Trainer(TrainConfig(**{**TOY, "seed": 1}), data=shards).loader(0), range(3))]
    assert first == again and first != other
    resumed = [b["text"] for b, _ in zip(Trainer(TrainConfig(**TOY), data=shards).loader(2), range(3))]
    assert resumed != first  # a resumed stream draws fresh shards (documented: not a replay)


def test_one_shard_cannot_be_both_training_and_held_out(shards, tmp_path):
    single = shards.replace("{000000..000002}", "000000")
    with pytest.raises(ValueError, match="held out"):
        Trainer(TrainConfig(**TOY), data=single)
    assert Trainer(TrainConfig(**{**TOY, "eval_size": 0}), data=single).eval_batch is None


def test_cli_trains_on_a_brace_pattern(shards, tmp_path, capsys):
    args = ["train", "--data", shards, "--out", str(tmp_path / "cli"), "--max-steps", "2", "--batch-size", "4",
            "--text-length", "16", "--eval-size", "8", "--no-tensorboard"]
    assert main(args) == 0
    assert (tmp_path / "cli" / "final" / "model.safetensors").is_file()


@pytest.mark.slow  # torchrun
def test_two_processes_stream_different_shards_through_torchrun(shards, tmp_path):
    import os
    import subprocess
    import sys

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("needs gloo")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "align_lite.train", "--data", shards, "--out", str(out), "--max-steps", "2", "--batch-size", "4",
           "--text-length", "16", "--eval-size", "8", "--no-tensorboard", "--device", "cpu"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "ALIGN_PROGRESS": "0"},
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads((out / "checkpoint-0000002" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["data"]["samples_seen"] == 2 * 4 * 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2 and any(r.get("global_batch") == 8 for r in records)


# ----------------------------------------------------------------------- Hugging Face streaming


@pytest.fixture(scope="module")
def parquet_pairs(tmp_path_factory):
    """A local parquet of 24 rows (image bytes + a list of 2 captions each): what a hub data set
    such as Flickr30K looks like to `datasets`, offline."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from align_lite.data.world import make_world_table, render_image

    table = make_world_table(WorldConfig.clean(n=24, seed=11))
    images, captions = [], []
    for k, row in enumerate(table.to_pylist()):
        buffer = io.BytesIO()
        render_image(row, 64).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
        captions.append([f"{row['text']} number {k}", f"a {row['color']} {row['shape']} picture number {k}"])
    path = tmp_path_factory.mktemp("hf") / "pairs.parquet"
    pq.write_table(pa.table({"image": images, "caption": captions}), path)
    assert Image.open(io.BytesIO(images[0]["bytes"])).size == (64, 64)
    return path


def test_hf_stream_splits_epochs_per_rank_and_worker(parquet_pairs):
    from align_lite.data.hf_stream import HFStream

    parts = [[s["text"] for s in HFStream(parquet_pairs, text_column="caption", epochs=1, rank=r, world_size=2)]
             for r in range(2)]
    assert len(parts[0]) + len(parts[1]) == 48 and not set(parts[0]) & set(parts[1])
    loader = torch.utils.data.DataLoader(HFStream(parquet_pairs, text_column="caption", epochs=1), batch_size=None,
                                         num_workers=2)
    texts = [s["text"] for s in loader]
    assert sorted(texts) == sorted(parts[0] + parts[1])  # two workers (datasets splits by file): each row once
    two = HFStream(parquet_pairs, text_column="caption", epochs=2, shuffle_buffer=8)
    pairs = [s["text"] for s in two]
    assert len(pairs) == 96 and pairs[:48] != pairs[48:]  # each epoch shuffled anew
    first = HFStream(parquet_pairs, text_column="caption").texts(5)
    assert len(first) == 5 and first[1].startswith("a ")
    assert first[:2] == HFStream(parquet_pairs, text_column="caption").texts(2)
    with pytest.raises(KeyError, match="no column"):
        HFStream(parquet_pairs, text_column="text")


def test_training_on_a_hf_stream_and_from_the_cli(parquet_pairs, tmp_path):
    from align_lite.data.hf_stream import HFStream

    with pytest.raises(ValueError, match="no held-out"):
        Trainer(TrainConfig(**TOY), data=HFStream(parquet_pairs, text_column="caption"))
    result = train(TrainConfig(**{**TOY, "eval_size": 0}), data=HFStream(parquet_pairs, text_column="caption"))
    assert result.step == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    args = ["train", "--data", f"hf:{parquet_pairs}", "--text-column", "caption", "--out", str(tmp_path / "cli"),
            "--max-steps", "2", "--batch-size", "4", "--text-length", "16", "--no-tensorboard"]
    assert main(args) == 0 and (tmp_path / "cli" / "final" / "model.safetensors").is_file()
    assert main(["train", "--data", f"hf:{parquet_pairs}", "--text-column", "nope", "--out", str(tmp_path / "x")]) == 1


def test_a_filtered_shard_stream_trains_directly(shards):
    from align_lite.data.filters import FilterConfig
    from align_lite.data.stream_filter import StreamFilter, count_pass
    from align_lite.data.streaming import ShardStream

    stream = ShardStream(shards, resample=True, seed=0,
                         filter=StreamFilter(FilterConfig(rare_token_top_k=3_000), counts=count_pass(shards)))
    assert len(stream.texts(10)) == 10
    result = train(TrainConfig(**{**TOY, "eval_size": 0}), data=stream)
    assert result.step == 3 and stream.filter is not None
