"""Chapter 4's experiments at toy size: the held-out set, the temperature ablation, noise vs
scale, their JSON records and the `align-lite experiment` command."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch

from align_lite import experiments as ex
from align_lite.cli import main
from align_lite.data.world import WorldConfig, make_world_table
from align_lite.train import TrainConfig


def toy(**overrides) -> TrainConfig:
    base = dict(model="tiny", batch_size=8, warmup_steps=1, max_steps=3, text_length=16, world_n=64,
                vocab_size=400, eval_size=0, log_every=1, tensorboard=False)
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def eval_data():
    return ex.WorldEval.from_world(n=48, seed=ex.EVAL_SEED)


def test_eval_set_classifies_only_one_kind_scenes(eval_data):
    table = make_world_table(WorldConfig.clean(n=48, seed=ex.EVAL_SEED))
    relation = table["relation"].to_pylist()
    labels = table["label"].to_pylist()
    expected = [ex.CLASSNAMES.index(label) if r is None else -1 for label, r in zip(labels, relation)]
    assert eval_data.labels.tolist() == expected
    assert eval_data.pixels.shape == (48, 3, 64, 64)
    assert eval_data.pixels.min() >= -1 and eval_data.pixels.max() <= 1
    assert len(ex.CLASSNAMES) == 64 and len(eval_data.classified) == sum(r is None for r in relation)


def test_number_prompts_say_every_count_a_scene_can_show():
    assert ex.number_prompts("orange cross") == ["a photo of an orange cross", "a photo of two orange crosses",
                                                 "a photo of three orange crosses", "a photo of four orange crosses"]
    assert len(ex.number_prompts("red star", max_count=2)) == 2
    table = make_world_table(WorldConfig.clean(n=2000, seed=0))
    counts = {r["count"] for r in table.select(["count", "relation"]).to_pylist() if r["relation"] is None}
    assert counts == set(range(1, WorldConfig().max_count + 1))  # the prompts cover every count the world draws


class CaptionEcho(torch.nn.Module):
    """A "perfect" model: image i embeds as its own caption does (the caption is looked up by
    the image's first pixel, which holds i); a text embeds as a fixed random vector of its words."""

    def __init__(self, texts: list[str]):
        super().__init__()
        self.texts = texts
        self.unused = torch.nn.Parameter(torch.zeros(1))

    @staticmethod
    def vector(text: str) -> torch.Tensor:
        seed = zlib.crc32(text.encode())
        return torch.nn.functional.normalize(torch.randn(16, generator=torch.Generator().manual_seed(seed)), dim=0)

    def encode_text(self, input_ids, attention_mask):
        return torch.stack([self.vector(self.words[int(i)]) for i in input_ids[:, 0]])

    def encode_image(self, pixels):
        return torch.stack([self.vector(self.texts[int(p[0, 0, 0])]) for p in pixels])

    def tokenize(self, texts):
        self.words = list(texts)
        return {"input_ids": torch.arange(len(texts))[:, None], "attention_mask": torch.ones(len(texts), 1)}


def test_score_world_recall_counts_only_the_own_partner():
    """Two images with one caption: a caption-equality score would give both a hit; the paper's
    Recall@1 (and score_world) gives one of them the hit, because their captions tie."""
    texts = ["a red star", "a red star", "two blue hearts", "a green cross"]
    pixels = torch.arange(4, dtype=torch.float32)[:, None, None, None].expand(4, 3, 2, 2).clone()
    model = CaptionEcho(texts)
    scores = ex.score_world(model, model.tokenize, ex.WorldEval(pixels, texts, torch.tensor([0, 0, -1, 1]), 0))
    assert scores["i2t_r1"] == scores["t2i_r1"] == 0.75
    distinct = ["a red star", "a blue star", "two blue hearts", "a green cross"]
    model = CaptionEcho(distinct)
    scores = ex.score_world(model, model.tokenize, ex.WorldEval(pixels, distinct, torch.tensor([0, 0, -1, 1]), 0))
    assert scores["i2t_r1"] == scores["t2i_r1"] == 1.0


def test_held_out_world_captions_are_distinct():
    """Why the recorded Chapter 4 tables kept their numbers when score_world moved from caption
    equality to Recall@1: on the 512-scene held-out world the two agree, as no caption repeats."""
    texts = ex.WorldEval.from_world(image_size=16).texts
    assert len(texts) == 512 and len(set(texts)) == 512


def test_temperature_ablation_changes_only_the_temperature(eval_data, tmp_path):
    settings = (("fixed 1/64", 1 / 64, False), ("learnable (init 1.0)", 1.0, True))
    runs = ex.temperature_ablation(toy(), eval_data, settings=settings)
    assert [r.name for r in runs] == ["fixed 1/64", "learnable (init 1.0)"]
    assert runs[0].temperatures == pytest.approx([1 / 64] * 3)
    assert runs[1].temperatures[-1] != pytest.approx(1.0, abs=1e-4)  # learnt: σ moves (3 steps: either way)
    for r in runs:
        assert set(r.metrics) == {"zero_shot_top1", "zero_shot_top5", "colour_top1", "shape_top1",
                                  "zero_shot_numbers_top1", "i2t_r1", "t2i_r1"}
        assert all(0.0 <= v <= 1.0 for v in r.metrics.values())
        assert r.curve[-1]["step"] == 3 and r.train_pairs == 64
        other = {k: v for k, v in r.config.items() if k not in ("temperature", "learnable_temperature")}
        assert other == {k: v for k, v in runs[0].config.items() if k not in ("temperature", "learnable_temperature")}
    path = ex.save_runs(runs, tmp_path / "t.json", command="test")
    loaded, meta = ex.load_runs(path)
    assert meta == {"command": "test"} and [r.metrics for r in loaded] == [r.metrics for r in runs]
    table = ex.runs_table(loaded, ex.PAPER_TABLE8)
    assert "| fixed 1/64 |" in table and "52.2 | 37.3 |" in table


def test_noisy_sets_are_filtered_and_accounted():
    world = WorldConfig.noisy(n=400, seed=3)
    rows, dropped = ex.noisy_filtered_rows(world)
    assert 0 < len(rows) < 400 and len(rows) + sum(dropped.values()) == 400
    assert len(set(rows.tolist())) == len(rows)


def test_noise_vs_scale_spends_the_same_steps(eval_data):
    runs = ex.noise_vs_scale(toy(max_steps=2), clean_n=32, noisy_ratios=(2,), eval_data=eval_data)
    assert [r.name for r in runs] == ["clean 32", "noisy 2x"]
    assert all(r.steps[-1] == 2 for r in runs)
    assert runs[0].train_pairs == 32 and runs[1].notes["world_rows"] == 64
    assert runs[1].train_pairs == runs[1].notes["kept_after_filters"] < 64


def test_cli_experiment_writes_json(tmp_path, capsys):
    out = tmp_path / "runs.json"
    code = main(["experiment", "noise-scale", "--steps", "2", "--batch-size", "8", "--clean-n", "32",
                 "--ratios", "1", "--eval-n", "24", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| clean 32 |" in printed and "| noisy 1x |" in printed
    payload = json.loads(out.read_text())
    assert payload["meta"]["experiment"] == "noise-scale" and len(payload["runs"]) == 2


@pytest.mark.parametrize("args, message", [
    (["--ratios", "2,x"], "comma-separated"),
    (["--ratios", "0"], ">= 1"),
    (["--steps", "0"], "positive"),
])
def test_cli_experiment_bad_arguments_are_one_line_errors(args, message, capsys):
    assert main(["experiment", "noise-scale", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("align-lite: error:") and message in err


def test_world_rows_are_cached_uint8_draws():
    data = ex.world_rows(WorldConfig.clean(n=8, seed=1), 64, rows=[5, 2])
    first = data[0]["image"]
    assert first.shape == (3, 64, 64) and first.dtype == torch.float32
    assert data.texts == [make_world_table(WorldConfig.clean(n=8, seed=1))["text"][i].as_py() for i in (5, 2)]
    assert set(data.world.cache) == {5} and data.world.cache[5].dtype == torch.uint8
    torch.testing.assert_close(data[0]["image"], first)  # no random crop on the world


def test_trained_model_is_cached_by_config_and_reloaded_equal(tmp_path, monkeypatch):
    monkeypatch.setenv(ex.CACHE_ENV, str(tmp_path))
    model, tokenizer, record = ex.trained_model(toy())
    assert record["cached"] is False and record["steps"][-1] == 3
    again, tokenizer2, record2 = ex.trained_model(toy())
    assert record2["cached"] is True and record2["folder"] == record["folder"]
    assert record2["losses"] == record["losses"]
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
    assert tokenizer2(["a red star"])["input_ids"].tolist() == tokenizer(["a red star"])["input_ids"].tolist()
    other = ex.trained_model(toy(seed=1))[2]
    assert other["cached"] is False and other["folder"] != record["folder"]
    assert not any(p.name.startswith(".") for p in (tmp_path / "models").iterdir())  # no staging left
    uncached = ex.trained_model(toy(), cache=False)[2]
    assert uncached["cached"] is False and uncached["folder"] is None


def test_training_leaves_the_callers_random_state_as_a_cache_hit_does(tmp_path, monkeypatch):
    """A notebook's later draws must not depend on whether its model came from the cache."""
    import random

    monkeypatch.setenv(ex.CACHE_ENV, str(tmp_path))

    def draws_after_asking() -> tuple:
        random.seed(5), np.random.seed(5), torch.manual_seed(5)
        ex.trained_model(toy())
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    trained = draws_after_asking()  # trains (reseeding the generators inside), then caches
    cached = draws_after_asking()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    untouched = random.random(), float(np.random.rand()), float(torch.rand(()))
    assert trained == cached == untouched


def summary(name: str, seed: int, top1: float, sigma: float) -> ex.RunSummary:
    metrics = {key: top1 for key in ex.TABLE_METRICS}
    return ex.RunSummary(name=name, config={"seed": seed}, metrics=metrics, steps=[1, 2],
                         losses=[4.0 + seed, 2.0 + seed], temperatures=[1.0, sigma],
                         curve=[{"step": 2, "i2t_r1": top1}], train_pairs=64)


def test_seed_means_fold_the_runs_of_a_name_and_keep_their_range():
    runs = [summary("a", 0, 0.2, 0.1), summary("b", 0, 0.9, 0.3),
            summary("a", 1, 0.4, 0.2), summary("b", 1, 0.5, 0.5), summary("a", 2, 0.9, 0.3)]
    a, b = ex.seed_means(runs)
    assert (a.name, b.name) == ("a", "b")
    assert a.notes["seeds"] == [0, 1, 2] and b.notes["seeds"] == [0, 1]
    assert a.metrics["i2t_r1"] == pytest.approx(0.5) and a.notes["range"]["i2t_r1"] == [0.2, 0.9]
    assert a.temperatures == pytest.approx([1.0, 0.2]) and a.notes["range"]["final_sigma"] == [0.1, 0.3]
    assert a.losses == pytest.approx([5.0, 3.0]) and a.curve == [{"step": 2, "i2t_r1": pytest.approx(0.5)}]
    assert ex.spread_text(a, "i2t_r1") == "50.0 (20.0–90.0)"
    table = ex.runs_table(runs)
    assert table.count("| a |") == 1 and "| 50.0 (20.0–90.0) |" in table and "| 70.0 (50.0–90.0) |" in table
    single = ex.runs_table(runs[:2])  # one seed: plain numbers, as before
    assert "| 20.0 | 20.0 |" in single and "(" not in single.split("\n", 2)[2]


def test_over_seeds_changes_only_the_seed(eval_data):
    runs = ex.over_seeds(lambda config: ex.temperature_ablation(config, eval_data,
                                                                settings=(("fixed 1/64", 1 / 64, False),)),
                         toy(max_steps=2), seeds=(0, 1))
    assert [r.config["seed"] for r in runs] == [0, 1]
    assert {k: v for k, v in runs[0].config.items() if k != "seed"} == \
        {k: v for k, v in runs[1].config.items() if k != "seed"}
    assert runs[0].losses != runs[1].losses  # another initialisation and batch order
