"""Hard-negative batches: the order, its runs, and how training and the CLI use it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from align_lite.data.hard_negatives import hard_negative_order, hard_negative_runs, run_statistics
from align_lite.data.world import WorldConfig, make_world_table
from align_lite.train import StepBatchSampler, TrainConfig, hard_negative_batches


@pytest.fixture(scope="module")
def world():
    table = make_world_table(WorldConfig.clean(n=1024, seed=3))
    shared = list(zip(table["color"].to_pylist(), table["count"].to_pylist()))
    return table, shared, table["shape"].to_pylist()


def test_runs_share_the_key_differ_in_the_varied_value_and_cover_every_row_once(world):
    _, shared, varied = world
    runs = hard_negative_runs(shared, varied, np.random.default_rng(0))
    assert sorted(i for run in runs for i in run) == list(range(len(shared)))
    for run in runs:
        assert len({shared[i] for i in run}) == 1
        assert len({varied[i] for i in run}) == len(run)
    # Runs are as long as the group has shapes until the rarer shapes run out: most rows are in
    # runs of six or more of the eight shapes (1,024 rows: ~4 of each shape per colour x count).
    assert max(len(r) for r in runs) == 8
    assert sum(len(r) for r in runs if len(r) >= 6) > 0.5 * len(shared)


def test_order_is_a_seeded_permutation(world):
    _, shared, varied = world
    a = hard_negative_order(shared, varied, np.random.default_rng(5))
    b = hard_negative_order(shared, varied, np.random.default_rng(5))
    c = hard_negative_order(shared, varied, np.random.default_rng(6))
    assert a.dtype == np.int64 and sorted(a.tolist()) == list(range(len(shared)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_batches_cut_from_the_order_hold_several_times_the_hard_negatives_of_shuffled_ones(world):
    _, shared, varied = world
    rng = np.random.default_rng(0)
    hard = run_statistics(hard_negative_order(shared, varied, rng), shared, varied, 64)
    plain = run_statistics(rng.permutation(len(shared)), shared, varied, 64)
    # 32 colour x count cells: a shuffled batch of 64 holds ~2 near misses a row, runs of 8 hold ~7.
    assert 1.0 < plain["hard_negatives_per_row"] < 3.0
    assert hard["hard_negatives_per_row"] > 3 * plain["hard_negatives_per_row"]


def test_rows_without_a_key_are_kept_as_runs_of_one():
    shared = [("a",), ("a",), None, ("b",), ("a",)]
    varied = ["x", "y", "x", "x", None]
    runs = hard_negative_runs(shared, varied, np.random.default_rng(0))
    assert sorted(map(sorted, runs)) == [[0, 1], [2], [3], [4]]
    with pytest.raises(ValueError, match="rows"):
        hard_negative_runs(shared, varied[:-1], np.random.default_rng(0))


def test_sampler_cuts_batches_from_the_order_and_resumes_exactly(world):
    _, shared, varied = world
    order = lambda rng: hard_negative_order(shared, varied, rng)  # noqa: E731
    indices = list(range(len(shared)))
    full = StepBatchSampler(indices, 64, seed=1, order=order)
    first = [b for b in itertools.islice(iter(full), 40)]  # 16 steps an epoch: crosses two epochs
    again = [b for b in itertools.islice(iter(StepBatchSampler(indices, 64, seed=1, start_step=23, order=order)), 17)]
    assert first[23:] == again
    expected = hard_negative_order(shared, varied, np.random.default_rng([1, 0]))
    assert first[0] == expected[:64].tolist() and first[1] == expected[64:128].tolist()
    assert all(len(set(b)) == 64 for b in first)


def test_config_takes_both_settings_or_neither():
    with pytest.raises(ValueError, match="go together"):
        TrainConfig(hard_negative_share=("color",))
    with pytest.raises(ValueError, match="go together"):
        TrainConfig(hard_negative_vary="shape")
    with pytest.raises(ValueError, match="without"):
        TrainConfig(hard_negative_share=("color", "shape"), hard_negative_vary="shape")
    config = TrainConfig.cpu_tiny()
    assert config.hard_negative_share == ("color", "count") and config.hard_negative_vary == "shape"
    assert TrainConfig.from_dict({**config.to_dict(), "hard_negative_share": ["color", "count"]}) == config


def test_data_without_the_columns_is_an_error_that_names_the_fix(world):
    table, _, _ = world

    class Pairs:
        texts = table["text"].to_pylist()

        def __len__(self):
            return len(self.texts)

    config = TrainConfig.cpu_tiny()
    with pytest.raises(ValueError, match="hard_negative_share=\\(\\).*--hard-negatives none"):
        hard_negative_batches(config, Pairs(), range(10))
    Pairs.table = table.select(["text", "color"])
    with pytest.raises(ValueError, match="'count', 'shape'"):
        hard_negative_batches(config, Pairs(), range(10))
    with pytest.raises(ValueError, match="streamed"):
        hard_negative_batches(config, Pairs(), range(10), streaming=True)
    Pairs.table = table
    order = hard_negative_batches(config, Pairs(), range(100, 300))
    picked = order(np.random.default_rng(0))
    assert sorted(picked.tolist()) == list(range(200))  # positions into the given indices
    assert hard_negative_batches(TrainConfig(), Pairs(), range(10)) is None


def _saved_config(run):
    import json

    from align_lite.train import STATE_JSON

    return json.loads(next(run.glob("checkpoint-*/" + STATE_JSON)).read_text())["config"]


def test_cli_sets_or_turns_off_hard_negatives_and_rejects_a_bad_spec(tmp_path, capsys):
    from align_lite.cli import main

    small = ["--max-steps", "1", "--world-n", "64", "--batch-size", "8", "--eval-size", "0", "--no-tensorboard"]
    assert main(["train", "--out", str(tmp_path / "a"), *small]) == 0  # cpu-tiny on the world: on
    assert _saved_config(tmp_path / "a")["hard_negative_share"] == ["color", "count"]
    assert main(["train", "--out", str(tmp_path / "b"), "--hard-negatives", "color:size", *small]) == 0
    saved = _saved_config(tmp_path / "b")
    assert (saved["hard_negative_share"], saved["hard_negative_vary"]) == (["color"], "size")
    assert main(["train", "--out", str(tmp_path / "c"), "--hard-negatives", "none", *small]) == 0
    assert _saved_config(tmp_path / "c")["hard_negative_vary"] is None
    capsys.readouterr()
    for spec in ("color", "color:", ":shape", "shape:shape"):
        assert main(["train", "--out", str(tmp_path / "d"), "--hard-negatives", spec, *small]) == 1, spec
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("align-lite: error:"), spec
    assert not (tmp_path / "d").exists()


def test_cli_turns_hard_negatives_off_for_a_pair_folder_and_says_so(tmp_path, capsys):
    from PIL import Image

    from align_lite.cli import main

    folder = tmp_path / "pairs"
    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(16):
        Image.new("RGB", (32, 32), (16 * i, 0, 0)).save(folder / "images" / f"{i}.png")
        lines.append(f'{{"file_name": "images/{i}.png", "text": "a red square number {i}"}}')
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    args = ["train", "--data", str(folder), "--out", str(tmp_path / "run"), "--max-steps", "1", "--batch-size", "4",
            "--eval-size", "0", "--text-length", "16", "--no-tensorboard"]
    assert main(args) == 0
    assert "hard-negative batches: off" in capsys.readouterr().out
    assert _saved_config(tmp_path / "run")["hard_negative_share"] == []
    # Asked for by name on data without the columns: a one-line error, not a crash mid-run.
    assert main([*args[:4], str(tmp_path / "run2"), *args[5:], "--hard-negatives", "color:shape"]) == 1
    err = capsys.readouterr().err
    assert "does not have" in err and "--hard-negatives none" in err


def test_a_run_on_hard_negative_batches_resumes_to_the_same_weights(tmp_path):
    """Interrupted after 3 steps and resumed to 7, across two epoch boundaries (40 rows, batch 8:
    5 steps an epoch), the run ends with the weights of an uninterrupted one; its batches are the
    hard-negative order's."""
    from dataclasses import replace

    import torch

    from align_lite.data.tokenizer import TokenizerConfig, train_tokenizer
    from align_lite.train import Trainer, train

    config = TrainConfig.cpu_tiny(batch_size=8, world_n=40, vocab_size=300, text_length=16, max_steps=7,
                                  warmup_steps=2, eval_size=0, eval_every=0, ckpt_every=3, log_every=1,
                                  tensorboard=False)
    table = make_world_table(WorldConfig.clean(n=40, seed=0))
    tokenizer = train_tokenizer(table["text"].to_pylist(), TokenizerConfig(vocab_size=300, max_length=16))
    straight = train(config, out_dir=tmp_path / "straight", tokenizer=tokenizer)
    train(replace(config, max_steps=3, schedule_steps=7), out_dir=tmp_path / "split", tokenizer=tokenizer)
    resumed = train(config, out_dir=tmp_path / "split", resume=True)
    assert resumed.step == 7
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(b, a, msg=name)

    trainer = Trainer(config, tokenizer=tokenizer)
    trainer.loader(0)  # builds the sampler the run draws its batches from
    sampler_batches = list(itertools.islice(iter(trainer.sampler), 5))
    shared = list(zip(table["color"].to_pylist(), table["count"].to_pylist()))
    expected = hard_negative_order(shared, table["shape"].to_pylist(), np.random.default_rng([config.seed, 0]))
    assert [i for b in sampler_batches for i in b] == expected.tolist()
