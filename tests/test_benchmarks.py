"""The benchmark scripts' measuring code, at toy size (their numbers live in the book's appendix)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import throughput  # noqa: E402  (benchmarks/, on the path above)


def test_throughput_measures_every_phase_and_counts_flops():
    row = throughput.measure("tiny", batch_size=4, steps=1, warmup=0, precision="fp32", peak=1.0)
    for phase in ("data", "forward", "backward", "optimizer"):
        assert row[f"{phase}_ms"] > 0
    assert row["step_ms"] == pytest.approx(sum(row[f"{p}_ms"] for p in ("data", "forward", "backward", "optimizer")))
    assert row["images_per_s"] == pytest.approx(4 / (row["step_ms"] / 1000))
    # tiny at 64 px: ~20 MFLOPs forward per pair, x3 for training. Counting the backward with
    # FlopCounterMode would give ~3x more (it counts depthwise-conv backward as dense).
    assert 0.03 < row["gflops_per_step"] / 4 < 0.12
    # tiny; the word-piece table is sized to the world's vocabulary
    assert 0 < row["mfu"] and 0.2 < row["parameters_m"] < 1.7
    table = throughput.to_markdown({"device": "cpu", "torch": "x", "threads": 1, "peak_tflops": 1.0,
                                    "peak_is": "given", "results": [row]})
    assert f"| tiny | {row['parameters_m']:.1f} | 64 | 4 | fp32 |" in table



def test_shape_learning_probe_and_supervised_run_at_toy_size():
    import shape_learning
    import torch

    torch.manual_seed(0)
    # A linear probe must separate features that carry the label, and not features that do not.
    labels = torch.arange(80) % 8
    informative = torch.nn.functional.one_hot(labels, 8).float() + 0.01 * torch.randn(80, 8)
    assert shape_learning.linear_probe(informative[:40], labels[:40], informative[40:], labels[40:]) == 1.0
    noise = torch.randn(80, 8)
    assert shape_learning.linear_probe(noise[:40], labels[:40], noise[40:], labels[40:]) < 0.6

    pixels, classes = shape_learning.one_kind_scenes(96, seed=3)
    shapes = classes % 8
    assert pixels.shape[1:] == (3, 64, 64) and pixels.min() >= -1 and pixels.max() <= 1
    assert len(classes) == len(pixels) and 0 <= classes.min() and classes.max() < 64
    run = shape_learning.supervised_run(1e-3, (pixels, shapes), (pixels[:16], shapes[:16]), steps=2, marks=[1, 2])
    assert [p["step"] for p in run["points"]] == [1, 2] and run["train_scenes"] == len(shapes)
    assert all(0 <= p["held_out"] <= 1 and p["s_per_step"] > 0 for p in run["points"])


def test_shape_learning_cut_captions_keep_only_colour_and_shape_words():
    import shape_learning
    from align_lite.data.world import COLOR_NAMES, SHAPES
    from align_lite.train import TrainConfig

    data = shape_learning.CutCaptions(TrainConfig.cpu_tiny(world_n=40))
    assert len(data) == len(data.texts) == 40
    words = [t.split() for t in data.texts]
    assert all(len(w) in (2, 4) for w in words) and any(len(w) == 4 for w in words)  # one or two kinds
    assert all(w[i] in COLOR_NAMES and w[i + 1] in SHAPES for w in words for i in range(0, len(w), 2))
    item = data[3]
    assert item["text"] == data.texts[3] and item["image"].shape == (3, 64, 64)


def test_tiny_recipe_undoes_one_departure_per_run_at_toy_size():
    import tiny_recipe
    from align_lite import experiments as ex
    from align_lite.train import TrainConfig

    base = TrainConfig.cpu_tiny(max_steps=2, warmup_steps=1, world_n=64, batch_size=8, vocab_size=300,
                                eval_size=0, eval_every=0, tensorboard=False)
    for name, fields in tiny_recipe.UNDONE.items():  # every override names a real field with another value
        assert all(getattr(base, key) != value for key, value in fields.items()), name
    runs = tiny_recipe.ablation(base, ex.WorldEval.from_world(n=24), names=("recipe (cpu_tiny)", "[CLS] pooling"))
    assert [r.config["text_pooling"] for r in runs] == [None, "cls"]
    assert runs[0].config["image_lr_scale"] == 5.0 and runs[0].steps[-1] == 2
    table = tiny_recipe.markdown(runs, 2, 1, 1.0, ex.WorldEval.from_world(n=24))
    assert "| [CLS] pooling |" in table and "| recipe (cpu_tiny) |" in table


def test_quality_per_minute_scores_both_prompt_sets_and_judges_the_target():
    import quality_per_minute as quality
    from align_lite.train import TrainConfig

    config = TrainConfig.cpu_tiny(world_n=64, batch_size=8, max_steps=3, warmup_steps=1, eval_size=0, eval_every=0,
                                  tensorboard=False)
    result = quality.run(1.0, 2, config)
    assert result["budget_seconds"] == 1.0 and len(result["points"]) == 2 and result["points"][-1]["step"] <= 3
    assert result["eval_images"] == 512 and 0 < result["eval_classified"] < 512  # the held-out world, drawn once
    table = quality.markdown(result, threads=1)
    assert "number prompts: **not met**" in table and "single prompt: **not met**" in table  # 3 steps are far from 95 %
    # the diagnosis scores the final model the way score_world() does, split by the number of objects
    diagnosis, by_objects = result["diagnosis"], result["eval_by_objects"]
    assert diagnosis["numbers"] == pytest.approx(result["points"][-1]["zero_shot_numbers_top1"], abs=1e-4)
    assert sorted(by_objects) == ["1", "2", "3", "4"] and sum(by_objects.values()) == result["eval_classified"]

    def weighted(by_split):  # the per-split scores, weighted by each split's scene count
        return sum(by_split[k] * n for k, n in by_objects.items()) / result["eval_classified"]

    mean_by_objects = weighted(diagnosis["numbers_by_objects"])
    assert mean_by_objects == pytest.approx(diagnosis["numbers"], abs=1e-3)  # scores are rounded to 4 places
    assert 0 < diagnosis["probe_scenes"] < 64 and 0 <= diagnosis["shape_probe"] <= 1
    probe_by_objects = weighted(diagnosis["shape_probe_by_objects"])
    assert probe_by_objects == pytest.approx(diagnosis["shape_probe"], abs=1e-3)  # the same seeded probe, per split
    assert "| the one prompt naming the true number |" in table and "4 objects (" in table
    # a longer budget reports when the target accuracy is first reached, not met/not met at 120 s
    fake = {**result, "budget_seconds": 480.0, "points": [
        {**result["points"][-1], "seconds": s, "step": 10 * s, "zero_shot_numbers_top1": acc, "zero_shot_top1": 0.5}
        for s, acc in ((120, 0.90), (240, 0.96), (360, 0.97))]}
    table = quality.markdown(fake, threads=1)
    assert "Number prompts: >= 95 % first at 240 s (step 2400)." in table
    assert "Single prompt: >= 95 % not reached in 360 s (best 50.0 %)." in table


def test_book_model_trains_the_book_recipe_and_records_its_curve():
    import book_model
    from align_lite.emoji_experiments import EMOJI_BOOK_MODEL

    record, model, tokenizer = book_model.run(steps=24, checkpoints=2)  # the recipe warms up for 20
    assert [p["step"] for p in record["points"]] == [12, 24]
    assert record["config"]["max_steps"] == 24 and record["config"]["lr"] == EMOJI_BOOK_MODEL.lr
    assert record["languages"] == ["en"] and record["kinds"] == ["label"]
    last = record["points"][-1]
    assert 0 <= last["scores"]["en/t2i_r10"] <= 1 and last["temperature"] == pytest.approx(model.temperature.item())
    assert len(tokenizer(["waving hand"])["input_ids"][0]) > 0
    record.update(threads=2, cpu="test CPU", torch="x")
    table = book_model.markdown(record)
    assert "| 24 |" in table and f"{100 * last['scores']['en/t2i_r10']:.1f}" in table


def test_chapter_times_reads_the_stamps_and_matches_the_appendix(tmp_path):
    import chapter_times

    def cell(start: str, end: str) -> dict:
        return {"cell_type": "code", "metadata": {"execution": {"iopub.execute_input": start,
                                                                "shell.execute_reply": end}}}
    notebook = tmp_path / "09_toy.ipynb"
    notebook.write_text(json.dumps({"cells": [cell("2026-01-02T10:00:00Z", "2026-01-02T10:00:05Z"),
                                              {"cell_type": "markdown", "metadata": {}},
                                              cell("2026-01-02T10:01:00Z", "2026-01-02T10:01:30.5Z")]}))
    assert chapter_times.chapter_time(notebook) == {"chapter": "09_toy", "cells": 2, "seconds": 90.5,
                                                    "executed": "2026-01-02"}
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "metadata": {}}]}))  # saved by hand
    with pytest.raises(ValueError, match="timing"):
        chapter_times.chapter_time(notebook)
    # the appendix's table is the stored notebooks' (rerun the script after executing a chapter)
    rows = [chapter_times.chapter_time(p) for p in sorted(chapter_times.BOOK.glob("[0-9][0-9]_*.ipynb"))]
    assert (chapter_times.OUT_DIR / "chapter_times.md").read_text() == chapter_times.markdown(rows)
