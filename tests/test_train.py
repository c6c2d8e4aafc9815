"""The trainer's contract: parameter groups, schedules, skipped non-finite steps, clipping, honest
gradient accumulation, learning, exact resumption, checkpoints, metrics and the CLI."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from align_lite.cli import main
from align_lite.data.world import WorldConfig, write_world
from align_lite.models import AlignDualEncoder, from_pretrained, get_preset, load_tokenizer
from align_lite.optim import OptimizerConfig, Schedule, build_optimizer, build_scheduler, param_groups
from align_lite.train import (
    METRIC_FIELDS, STATE_JSON, STATE_TENSORS, TrainConfig, Trainer, find_checkpoints, train,
)


def small(**overrides) -> TrainConfig:
    """A few-second configuration: the tiny model, 16-token texts, a 96-row world."""
    base = dict(model="tiny", batch_size=8, warmup_steps=2, max_steps=4, text_length=16, world_n=96,
                vocab_size=500, eval_size=0, log_every=1, tensorboard=False)
    return TrainConfig(**{**base, **overrides})


def split(batch: dict, parts: int) -> list[dict]:
    n = len(batch["text"]) // parts
    out = []
    for j in range(parts):
        sl = slice(j * n, (j + 1) * n)
        out.append({k: (v[sl] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()})
    return out


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grads_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Float32 agreement, each tensor to 1e-5 of its largest entry (sums in another order)."""
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        atol = 1e-5 * value.abs().max().item() + 1e-12
        torch.testing.assert_close(actual[name], value, rtol=1e-4, atol=atol, msg=name)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --------------------------------------------------------------------------------------------
# Optimizer and schedule
# --------------------------------------------------------------------------------------------


def test_param_groups_exclude_vectors_and_temperature_from_weight_decay():
    model = AlignDualEncoder(get_preset("tiny").with_vocab_size(100))
    groups = {g["group"]: g for g in param_groups(model, 1e-5, lr=1e-3, temperature_lr_scale=10.0)}
    shapes = dict(model.named_parameters())
    assert groups["decay"]["weight_decay"] == 1e-5
    assert all(shapes[n].ndim >= 2 for n in groups["decay"]["names"])
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert all(shapes[n].ndim < 2 for n in groups["no_decay"]["names"])
    assert any(n.endswith("bias") for n in groups["no_decay"]["names"])
    assert any("LayerNorm" in n for n in groups["no_decay"]["names"])
    assert groups["temperature"]["names"] == ["log_temperature"]
    assert groups["temperature"]["weight_decay"] == 0.0 and groups["temperature"]["lr"] == pytest.approx(1e-2)
    listed = [n for g in groups.values() for n in g["names"]]
    assert sorted(listed) == sorted(shapes) and len(set(listed)) == len(listed)  # each exactly once

    for name, cls in (("adamw", torch.optim.AdamW), ("lamb", None)):
        opt = build_optimizer(model, OptimizerConfig(name, lr=1e-3, weight_decay=1e-5))
        if cls is not None:
            assert isinstance(opt, cls)
        else:
            from timm.optim import Lamb

            assert isinstance(opt, Lamb) and all(g["max_grad_norm"] is None for g in opt.param_groups)
        assert [g["weight_decay"] for g in opt.param_groups] == [1e-5, 0.0, 0.0]

    fixed = AlignDualEncoder(replace(get_preset("tiny").with_vocab_size(100), learnable_temperature=False))
    assert "log_temperature" not in [n for g in param_groups(fixed, 1e-5) for n in g["names"]]


def test_image_lr_scale_gives_the_image_tower_its_own_groups():
    model = AlignDualEncoder(get_preset("tiny").with_vocab_size(100))
    groups = param_groups(model, 1e-5, lr=1e-3, temperature_lr_scale=20.0, image_lr_scale=3.0)
    by_label = {g["group"]: g for g in groups}
    assert list(by_label) == ["decay", "no_decay", "temperature", "image_decay", "image_no_decay"]
    assert all(n.startswith("image.") for label in ("image_decay", "image_no_decay") for n in by_label[label]["names"])
    assert not any(n.startswith("image.") for label in ("decay", "no_decay") for n in by_label[label]["names"])
    assert [by_label[k]["lr"] for k in by_label] == pytest.approx([1e-3, 1e-3, 2e-2, 3e-3, 3e-3])
    assert [by_label[k]["weight_decay"] for k in by_label] == [1e-5, 0.0, 0.0, 1e-5, 0.0]
    listed = [n for g in groups for n in g["names"]]
    assert sorted(listed) == sorted(dict(model.named_parameters())) and len(set(listed)) == len(listed)
    # the scheduler scales every group alike, so the 3x ratio holds all along the schedule
    opt = build_optimizer(model, OptimizerConfig("adamw", lr=1e-3, image_lr_scale=3.0))
    sched = build_scheduler(opt, Schedule("linear", 2, 10))
    for _ in range(4):
        opt.step()
        sched.step()
        lrs = {g["group"]: g["lr"] for g in opt.param_groups}
        assert lrs["image_decay"] == pytest.approx(3 * lrs["decay"]) and lrs["decay"] > 0


def test_train_config_overrides_the_text_pooling_and_checks_it():
    trainer_config = TrainConfig.cpu_tiny()
    assert (trainer_config.image_lr_scale, trainer_config.text_dropout) == (5.0, 0.0)
    with pytest.raises(ValueError, match="text_pooling"):
        TrainConfig(text_pooling="max")
    with pytest.raises(ValueError, match="image_lr_scale"):
        TrainConfig(image_lr_scale=0.0)
    assert TrainConfig.from_dict(TrainConfig(text_pooling="cls").to_dict()).text_pooling == "cls"


def test_schedule_warms_up_then_decays_to_zero():
    linear = Schedule("linear", warmup_steps=10, total_steps=110)
    assert linear(0) == pytest.approx(0.1)  # the first step already learns
    assert linear(4) == pytest.approx(0.5)
    assert linear(9) == pytest.approx(1.0) and linear(10) == pytest.approx(1.0)  # end of warm-up
    assert linear(60) == pytest.approx(0.5)  # half way through the decay
    assert linear(110) == 0.0 and linear(500) == 0.0
    cosine = Schedule("cosine", warmup_steps=10, total_steps=110)
    assert cosine(60) == pytest.approx(0.5) and cosine(35) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine(110) == pytest.approx(0.0)
    assert Schedule("constant", 10, 110)(100) == 1.0

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    sched = build_scheduler(opt, linear)
    seen = []
    for _ in range(111):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(0.2) and seen[9] == pytest.approx(2.0) and seen[60] == pytest.approx(1.0)
    assert seen[110] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        Schedule("step", 1, 10)


# --------------------------------------------------------------------------------------------
# One step: non-finite losses, clipping, accumulation
# --------------------------------------------------------------------------------------------


def test_non_finite_loss_skips_the_update_and_is_counted():
    trainer = Trainer(small())
    data = trainer.loader(0)
    trainer.train_step([next(data)])
    before = params(trainer.model)
    loss_fn = trainer.loss_fn
    trainer.loss_fn = lambda *args: loss_fn(*args) * float("nan")
    stats = trainer.train_step([next(data)])
    assert stats["skipped"] == 1.0 and trainer.skipped_steps == 1
    for name, value in params(trainer.model).items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    trainer.loss_fn = loss_fn
    stats = trainer.train_step([next(data)])
    assert stats["skipped"] == 0.0 and math.isfinite(stats["loss"])
    after = params(trainer.model)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert not torch.equal(after["text.projection.weight"], before["text.projection.weight"])


def test_non_finite_steps_are_reported_in_metrics(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = Trainer.train_step

    def poisoned(self, micro_batches):
        calls["n"] += 1
        if calls["n"] == 2:
            loss_fn = self.loss_fn
            self.loss_fn = lambda *args: loss_fn(*args) * float("inf")
            try:
                return original(self, micro_batches)
            finally:
                self.loss_fn = loss_fn
        return original(self, micro_batches)

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    result = train(small(max_steps=3), out_dir=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records if "loss" in r] == [0, 1, 1]
    assert result.skipped_steps == 1


def test_gradients_are_clipped():
    trainer = Trainer(small(grad_clip=1e-3))
    stats = trainer.train_step([next(trainer.loader(0))])
    assert stats["grad_norm"] > 1e-2  # the raw norm, reported
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.trainable]))
    assert clipped.item() == pytest.approx(1e-3, rel=1e-3)

    free = Trainer(small(grad_clip=None))
    stats = free.train_step([next(free.loader(0))])
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in free.trainable]))
    assert total.item() == pytest.approx(stats["grad_norm"], rel=1e-5) and total.item() > 1e-2


@pytest.fixture(scope="module")
def shared_tokenizer():
    return Trainer(small()).tokenizer


def test_accumulation_gives_the_big_batch_gradient(shared_tokenizer):
    """k=2 micro-batches of 8 with cached negatives == one batch of 16 (eval mode: no dropout,
    batch norm on running statistics, so the big batch and the micro-batches see the same model)."""
    # no clipping and σ = 0.1, so that the temperature's gradient is large enough to check
    big = Trainer(small(batch_size=16, grad_clip=None, temperature=0.1), tokenizer=shared_tokenizer)
    acc = Trainer(small(batch_size=8, accum_steps=2, grad_clip=None, temperature=0.1), tokenizer=shared_tokenizer)
    for name, value in params(big.model).items():
        torch.testing.assert_close(value, params(acc.model)[name], rtol=0, atol=0)
    big.model.eval()
    acc.model.eval()
    batch = next(big.loader(0))
    out_big = big.train_step([batch])
    out_acc = acc.train_step(split(batch, 2))
    assert out_acc["loss"] == pytest.approx(out_big["loss"], rel=1e-5)
    g_big, g_acc = grads(big.model), grads(acc.model)
    assert "log_temperature" in g_big and g_big["log_temperature"].abs() > 1e-2
    assert_grads_close(g_acc, g_big)
    torch.testing.assert_close(params(acc.model)["text.projection.weight"], params(big.model)["text.projection.weight"])


def test_accumulation_replays_dropout_in_training_mode(shared_tokenizer):
    """In training mode (dropout, drop-path, per-micro-batch batch norm) the accumulated gradient
    equals backpropagating the loss of the concatenated micro-batch embeddings directly."""
    acc = Trainer(small(batch_size=8, accum_steps=2, grad_clip=None, temperature=0.1), tokenizer=shared_tokenizer)
    reference = copy.deepcopy(acc.model)
    micro = split(next(Trainer(small(batch_size=16), tokenizer=shared_tokenizer).loader(0)), 2)
    torch.manual_seed(123)
    acc.train_step(micro)
    torch.manual_seed(123)
    outs = [reference(m["image"], m["input_ids"], m["attention_mask"]) for m in micro]
    loss = acc.loss_fn(torch.cat([o.image_embeds for o in outs]), torch.cat([o.text_embeds for o in outs]),
                       outs[0].temperature)
    loss.backward()
    assert_grads_close(grads(acc.model), grads(reference))
    # the no-gradient pass leaves batch-norm running statistics alone: one update per micro-batch
    for (name, b_ref), b_acc in zip(reference.named_buffers(), acc.model.buffers()):
        torch.testing.assert_close(b_acc, b_ref, msg=name)


# --------------------------------------------------------------------------------------------
# Runs: learning, resumption, checkpoints, metrics
# --------------------------------------------------------------------------------------------


def test_a_short_run_lowers_the_loss_and_the_temperature():
    result = train(small(batch_size=16, world_n=256, max_steps=60, warmup_steps=3, lr=2e-3,
                         temperature_lr_scale=20.0, eval_size=32, eval_every=30))
    losses = result.losses
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < losses[0] - 0.3
    assert result.temperatures[-1] < 0.9 < result.temperatures[0]
    assert {"eval_i2t_top1", "eval_t2i_top1"} <= set(result.eval)
    assert not result.model.training


def test_fixed_temperature_stays_fixed():
    result = train(small(max_steps=2, temperature=1 / 64, learnable_temperature=False))
    assert result.temperatures == pytest.approx([1 / 64, 1 / 64])
    assert not result.model.log_temperature.requires_grad


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory, shared_tokenizer):
    """A straight 6-step run, and a run interrupted after 3 steps then resumed to 6 (same schedule).
    Both start from one tokenizer: WordPiece training does not number the vocabulary the same way
    twice, and the resumed run takes the checkpoint's tokenizer."""
    config = small(max_steps=6, accum_steps=2, ckpt_every=2)
    straight_dir, split_dir = tmp_path_factory.mktemp("straight"), tmp_path_factory.mktemp("split")
    straight = train(config, out_dir=straight_dir, tokenizer=shared_tokenizer)
    first = train(replace(config, max_steps=3, schedule_steps=6), out_dir=split_dir, tokenizer=shared_tokenizer)
    resumed = train(config, out_dir=split_dir, resume=True)
    return straight, first, resumed, straight_dir, split_dir


def test_resume_continues_exactly(resumed_runs):
    straight, first, resumed, _, split_dir = resumed_runs
    assert first.step == 3 and resumed.step == 6
    assert [c.name for c in find_checkpoints(split_dir)] == [
        "checkpoint-0000002", "checkpoint-0000003", "checkpoint-0000004", "checkpoint-0000006"]
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(b, a, msg=name)
    assert resumed.losses == pytest.approx(straight.losses, rel=1e-6)
    steps = [json.loads(line)["step"] for line in (split_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the resumed run picked the metrics up where they stopped


def test_resume_refuses_a_different_run(resumed_runs):
    *_, split_dir = resumed_runs
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(small(max_steps=8, accum_steps=2, batch_size=4), out_dir=split_dir, resume=True)
    with pytest.raises(ValueError, match="already holds checkpoints"):  # a fresh run would mix with them
        Trainer(small(max_steps=8, accum_steps=2), out_dir=split_dir)


def test_checkpoints_load_with_from_pretrained_and_hold_no_pickles(resumed_runs):
    straight, _, _, straight_dir, _ = resumed_runs
    for folder in (straight_dir / "final", straight_dir / "checkpoint-0000006"):
        model = from_pretrained(folder)
        for (name, a), (_, b) in zip(straight.model.state_dict().items(), model.state_dict().items()):
            torch.testing.assert_close(b, a, msg=name)
        tokenizer = load_tokenizer(folder)
        assert tokenizer is not None and tokenizer.vocab_size == model.config.text.vocab_size
        assert tokenizer.config.max_length == 16
    checkpoint = straight_dir / "checkpoint-0000006"
    assert {p.suffix for p in checkpoint.iterdir()} == {".json", ".safetensors"}
    state = json.loads((checkpoint / STATE_JSON).read_text())
    assert state["step"] == 6 and state["config"]["accum_steps"] == 2
    assert state["data"] == {"epoch": 1, "batch_in_epoch": 0, "samples_seen": 96}  # 96 rows = 6 steps of 16
    tensors = load_file(str(checkpoint / STATE_TENSORS))
    assert "rng.0.torch" in tensors and any(k.startswith("optimizer.") and k.endswith("exp_avg") for k in tensors)
    assert not list(straight_dir.glob(".*tmp*"))  # no staging folders left behind


def test_metrics_jsonl_has_the_fields(resumed_runs):
    *_, straight_dir, _ = resumed_runs
    records = [json.loads(line) for line in (straight_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for record in records:
        assert set(METRIC_FIELDS) <= set(record)
        assert record["global_batch"] == 16 and record["images_per_s"] > 0 and record["skipped_steps"] == 0
    assert records[0]["lr"] == pytest.approx(0.5e-3) and records[1]["lr"] == pytest.approx(1e-3)
    assert json.loads((straight_dir / "train_config.json").read_text())["accum_steps"] == 2


def test_bad_images_in_a_pair_folder_are_replaced_and_counted(tmp_path):
    folder = write_world(WorldConfig.clean(n=40, seed=3), tmp_path / "pairs")
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    for i in (3, 10, 20):
        (folder / rows[i]["file_name"]).write_bytes(b"not an image")
    result = train(small(max_steps=5, batch_size=8), data=folder)  # 5 x 8 = one epoch of 40 rows
    assert result.step == 5 and result.skipped_samples == 3
    assert all(math.isfinite(loss) for loss in result.losses)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def test_cli_train_writes_a_loadable_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--out", str(out), "--max-steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert "trained 3 steps" in printed and "from_pretrained" in printed
    assert (out / "checkpoint-0000003" / STATE_JSON).is_file()
    model = from_pretrained(out / "final")
    assert load_tokenizer(out / "final").vocab_size == model.config.text.vocab_size
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 1


def test_cli_train_text_pooling_and_image_lr_scale_reach_the_run(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--max-steps", "1", "--world-n", "64", "--batch-size", "8",
                 "--eval-size", "0", "--text-pooling", "cls", "--image-lr-scale", "2", "--no-tensorboard"]) == 0
    assert from_pretrained(out / "final").config.text.pooling == "cls"  # the tiny preset's own is "mean"
    saved = json.loads((out / "checkpoint-0000001" / STATE_JSON).read_text())
    assert saved["config"]["image_lr_scale"] == 2.0 and saved["config"]["text_pooling"] == "cls"


def test_cli_train_bad_data_path_is_a_one_line_error(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "missing"), "--max-steps", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("align-lite: error:") and "missing" in err[0]
    assert not (tmp_path / "run").exists()


def test_module_entry_point_runs_the_cli(tmp_path, capsys):
    from align_lite.train.__main__ import main as train_main

    args = ["--out", str(tmp_path / "run"), "--max-steps", "1", "--batch-size", "8", "--world-n", "64",
            "--text-length", "16", "--eval-size", "0", "--no-tensorboard"]
    assert train_main(args) == 0
    assert "trained 1 steps" in capsys.readouterr().out


def test_lamb_with_bf16_autocast_trains_on_cpu():
    result = train(small(max_steps=2, optimizer="lamb", precision="bf16"))
    assert result.step == 2 and result.skipped_steps == 0
    assert all(math.isfinite(loss) for loss in result.losses)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast, not a cast


def test_log_fns_see_every_record_and_live_curves_keep_them():
    from align_lite.plots import LiveCurves

    seen = []
    live = LiveCurves(keys=("loss", "temperature", "eval_i2t_top1"))
    result = train(small(max_steps=4, log_every=2, eval_size=16, eval_every=2), log_fns=[seen.append, live])
    assert seen == result.history and len(seen) >= 3
    steps, losses = live.series("loss")
    assert steps == [2, 4] and losses == [r["loss"] for r in result.history if "loss" in r]
    fig = live.figure()
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == "loss"
    with pytest.raises(ValueError):
        LiveCurves(every=0)


@pytest.mark.parametrize("damage", ["state json", "state tensors", "weights"])
def test_resume_falls_back_to_the_newest_readable_checkpoint(tmp_path, shared_tokenizer, capfd, damage):
    config = small(max_steps=4, ckpt_every=2, keep_checkpoints=None)
    train(replace(config, max_steps=3, schedule_steps=4), out_dir=tmp_path, tokenizer=shared_tokenizer)
    newest = find_checkpoints(tmp_path)[-1]
    assert newest.name == "checkpoint-0000003"
    target = {"state json": STATE_JSON, "state tensors": STATE_TENSORS, "weights": "model.safetensors"}[damage]
    data = (newest / target).read_bytes()
    (newest / target).write_bytes(data[: len(data) // 2])  # as if the disk filled while it was written
    resumed = train(config, out_dir=tmp_path, resume=True)  # before: JSONDecodeError / SafetensorError traceback
    assert resumed.step == 4
    err = capfd.readouterr().err
    assert "cannot be read" in err and target in err and "resuming from checkpoint-0000002" in err


def test_resume_fails_clearly_when_no_checkpoint_reads_back(tmp_path, shared_tokenizer):
    config = small(max_steps=2, ckpt_every=2)
    train(config, out_dir=tmp_path, tokenizer=shared_tokenizer)
    (find_checkpoints(tmp_path)[-1] / STATE_JSON).write_text("{")
    with pytest.raises(ValueError, match=r"none of the 1 checkpoints .* can be read; the newest: .*trainer_state.json"):
        Trainer(replace(config, max_steps=4), out_dir=tmp_path, resume=True)


def test_a_long_run_of_unreadable_images_is_crossed_and_counted(tmp_path, capsys):
    folder = write_world(WorldConfig.clean(n=160, seed=4), tmp_path / "pairs")
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    gone = set(r["file_name"] for r in rows[20:130])
    for name in gone:
        (folder / name).unlink()
    assert sum(r["file_name"] in gone for r in rows) >= 100
    run = ["train", "--preset", "tiny", "--data", str(folder), "--max-steps", "3", "--batch-size", "16",
           "--eval-size", "0", "--no-tensorboard"]
    assert main([*run, "--out", str(tmp_path / "run")]) == 0  # before: "32 unreadable samples in a row"
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["bad_images_total"] > 0 and report["bad_images"] == {"missing_file": report["bad_images_total"]}
    out = capsys.readouterr().out
    assert (f"bad images met {report['bad_images_total']:,} times, replaced by the next readable row "
            f"(missing_file: {report['bad_images_total']:,})") in out
    for r in rows:
        (folder / r["file_name"]).unlink(missing_ok=True)
    assert main([*run, "--out", str(tmp_path / "run2")]) == 1
    err = capsys.readouterr().err
    assert "none of the 160 rows of the training data has a readable image (missing_file: 160)" in err
    assert not (tmp_path / "run2").exists() and "removed what it wrote" in err  # no half-made run folder


def _damaged_pairs(tmp_path, missing: int = 0):
    """A 64-row world folder with 4 rows that cannot be read (bad JSON, not UTF-8, empty text, no
    file name) appended to its metadata, and ``missing`` of its images deleted."""
    folder = write_world(WorldConfig.clean(n=64, seed=5), tmp_path / "pairs")
    with open(folder / "metadata.jsonl", "ab") as f:
        f.write(b'{"file_name": "images/x.png", "text": \n')
        f.write(b'{"file_name": "images/x.png", "text": "caf\xe9"}\n')
        f.write(b'{"file_name": "images/x.png", "text": "  "}\n')
        f.write(b'{"text": "a caption without its image"}\n')
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text(errors="replace").splitlines()[:64]]
    for r in rows[:missing]:
        (folder / r["file_name"]).unlink()
    return folder


def test_the_run_reports_every_row_it_could_not_use_by_reason(tmp_path, capsys):
    folder = _damaged_pairs(tmp_path, missing=3)
    result = train(small(max_steps=3, eval_size=8, augment=False), data=folder, out_dir=tmp_path / "run")
    report = result.data_report
    assert report["rows"] == 64
    assert report["dropped_while_reading"] == {"bad_json": 1, "empty_text": 1, "missing_file_name": 1, "not_utf8": 1}
    met = report["bad_images_total"] + sum(report["held_out_unreadable"].values())
    assert set(report["bad_images"]) <= {"missing_file"} and met >= 1
    assert report["bad_images_total"] == result.skipped_samples == sum(report["bad_images"].values())
    assert json.loads((tmp_path / "run" / "data_report.json").read_text()) == report


def test_max_bad_share_stops_a_run_on_mostly_bad_data(tmp_path, capsys):
    folder = _damaged_pairs(tmp_path, missing=40)
    base = ["train", "--preset", "tiny", "--data", str(folder), "--max-steps", "2", "--batch-size", "16",
            "--eval-size", "0", "--no-tensorboard", "--text-length", "16"]
    assert main([*base, "--out", str(tmp_path / "a"), "--max-bad-share", "0.05"]) == 1  # 4 of 68 at read time
    assert "4 of 68 rows (5.9%) were dropped while reading the pair table, more than max_bad_share 5.0%" in (
        capsys.readouterr().err)
    assert main([*base, "--out", str(tmp_path / "b"), "--max-bad-share", "0.3"]) == 1  # 40 of 64 images missing
    assert "were bad images met in training (missing, unreadable or unsafe), more than max_bad_share 30.0%" in (
        capsys.readouterr().err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert main([*base, "--out", str(tmp_path / "c")]) == 0  # no limit: the run goes on, and says so
    assert "4 dropped while reading (bad_json: 1, empty_text: 1, missing_file_name: 1, not_utf8: 1)" in (
        capsys.readouterr().out)


def test_resume_from_a_named_checkpoint(tmp_path, shared_tokenizer):
    config = small(max_steps=4, ckpt_every=2)
    train(config, out_dir=tmp_path / "run", tokenizer=shared_tokenizer)
    second = find_checkpoints(tmp_path / "run")[0]
    assert second.name.endswith("0000002")
    resumed = Trainer(config, out_dir=tmp_path / "run", resume=second)
    assert resumed.step == 2 and resumed.resume_from == second
    assert Trainer(config, out_dir=tmp_path / "other", resume=str(second)).step == 2  # into another folder
    with pytest.raises(ValueError, match=r"--resume .*nowhere: cannot resume from it \(no such folder\)"):
        Trainer(config, out_dir=tmp_path / "run", resume=tmp_path / "nowhere")
    (second / STATE_JSON).write_text('{"step": 2, "config"')
    with pytest.raises(ValueError, match=r"cannot resume from it \(.*checkpoint-0000002/trainer_state.json: "):
        Trainer(config, out_dir=tmp_path / "run", resume=second)
    with pytest.raises(ValueError, match=r"cannot resume from .*checkpoint-0000002: .*trainer_state.json"):
        resumed.load_checkpoint(second)  # named, never a bare JSONDecodeError


def test_skip_bad_samples_counts_the_row_drawn_not_the_rows_crossed():
    from align_lite.data.records import SkipLog
    from align_lite.train import SkipBadSamples

    class Rows:
        """Ten rows; 2..7 have missing images, logged the way PairDataset logs them."""
        log = SkipLog()

        def __len__(self):
            return 10

        def __getitem__(self, i):
            if 2 <= i <= 7:
                self.log.skip("missing_file", f"row {i}")
                return None
            return {"image": i, "text": str(i)}

    wrapped = SkipBadSamples(Rows())
    assert wrapped[1] == {"image": 1, "text": "1", "skipped": 0, "skip_reasons": {}}
    assert wrapped[3] == {"image": 8, "text": "8", "skipped": 1, "skip_reasons": {"missing_file": 1}}
    assert wrapped[2]["skipped"] == 1 and Rows.log.counts["missing_file"] == 6  # each bad row read once
    # over every row drawn once, the share replaced is the data's bad share
    assert sum(wrapped[i]["skipped"] for i in range(10)) == 6


def test_the_run_hands_its_loss_optimizer_and_schedule_settings_over_as_objects():
    config = small(optimizer="lamb", lr=2e-3, weight_decay=0.0, image_lr_scale=5.0, label_smoothing=0.0)
    assert config.optimizer_config() == OptimizerConfig("lamb", 2e-3, 0.0, config.betas, config.eps, 1.0, 5.0)
    assert config.loss_config().label_smoothing == 0.0 and config.loss_config().gather
    assert config.lr_schedule() == Schedule("linear", config.warmup_steps, config.max_steps)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        OptimizerConfig("sgd")
