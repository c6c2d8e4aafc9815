"""Recipes for real runs: the shipped files carry the paper's / COYO-ALIGN's numbers, and the
global batch is split into per-device batch × devices × accumulation."""

from __future__ import annotations

import json

import pytest

from align_lite.cli import main
from align_lite.recipes import Recipe, list_recipes, load_recipe

# (recipe, model, global batch, lr, warm-up, steps): ../shared/align_paper_facts.md
EXPECTED = [
    ("b3-mini-cc3m", "b3-mini", 16_384, 5e-3, 10_000, 100_000),      # COYO-ALIGN CC-3M run
    ("b7-base-coyo700m", "b7-base", 65_536, 2e-3, 40_000, 300_000),  # COYO-ALIGN COYO-700M run
    ("l2-large-align", "l2-large", 16_384, 1e-3, 10_000, 1_200_000),  # the paper
]


def test_shipped_recipes_carry_the_published_schedules():
    assert list_recipes() == sorted(name for name, *_ in EXPECTED)
    for name, model, global_batch, lr, warmup, steps in EXPECTED:
        recipe = load_recipe(name)
        config = recipe.config(devices=8)
        assert (config.model, recipe.global_batch, config.lr, config.warmup_steps, config.max_steps) == (
            model, global_batch, lr, warmup, steps)
        assert config.optimizer == "lamb" and config.weight_decay == 1e-5 and config.label_smoothing == 0.1
        assert config.batch_size * 8 * config.accum_steps == global_batch
        assert f"= {global_batch:,} pairs per step" in recipe.arithmetic(8)
    paper = load_recipe("l2-large-align")
    assert paper.config(devices=1024).accum_steps == 1 and paper.per_device_batch == 16  # 16 per TPU core
    assert paper.config(1).vocab_size == 100_000 and paper.config(1).text_length == 64


def test_accumulation_must_divide_and_overrides_win():
    recipe = load_recipe("b3-mini-cc3m")
    with pytest.raises(ValueError, match="not a multiple"):
        recipe.config(devices=3)
    config = recipe.config(devices=4, batch_size=128, lr=1e-3)
    assert (config.batch_size, config.accum_steps, config.lr) == (128, 32, 1e-3)
    with pytest.raises(ValueError, match="devices"):
        recipe.accumulation(0)


def test_recipe_files_are_checked(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('name = "mine"\nglobal_batch = 32\n[train]\nmodel = "tiny"\nbatch_size = 8\n')
    assert load_recipe(good).config(2).accum_steps == 2
    bad_key = tmp_path / "bad.toml"
    bad_key.write_text('name = "bad"\nglobal_batch = 32\n[train]\nbatchsize = 8\n')
    with pytest.raises(ValueError, match="unknown"):
        load_recipe(bad_key)
    accum = tmp_path / "accum.toml"
    accum.write_text('name = "a"\nglobal_batch = 32\n[train]\naccum_steps = 2\n')
    with pytest.raises(ValueError, match="accum_steps"):
        load_recipe(accum)
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(ValueError, match="TOML"):
        load_recipe(broken)
    with pytest.raises(ValueError, match="unknown recipe"):
        load_recipe("b9-huge")
    with pytest.raises(ValueError, match="global_batch"):
        Recipe(name="x", description="", source="", data="", global_batch=0)


def test_cli_lists_recipes_and_trains_from_a_recipe_file(tmp_path, capsys):
    assert main(["recipes", "--devices", "8"]) == 0
    listed = capsys.readouterr().out
    assert "b7-base-coyo700m" in listed and "256 per device × 8 devices × 32 accumulation = 65,536" in listed
    assert main(["train", "--config", "b3-mini-cc3m", "--devices", "3", "--out", str(tmp_path / "x")]) == 1
    assert "not a multiple" in capsys.readouterr().err
    recipe = tmp_path / "toy.toml"
    recipe.write_text('name = "toy"\nglobal_batch = 16\n[train]\nmodel = "tiny"\nbatch_size = 4\ntext_length = 16\n'
                      'vocab_size = 300\nworld_n = 32\nwarmup_steps = 1\nmax_steps = 1\ntensorboard = false\n')
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run")]) == 0
    assert "4 per device × 1 device × 4 accumulation = 16 pairs per step" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert (saved["batch_size"], saved["accum_steps"], saved["model"]) == (4, 4, "tiny")
