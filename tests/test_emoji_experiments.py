"""Training on the emoji corpus and scoring on the held-out style (align_lite.emoji_experiments)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from align_lite import emoji_experiments as ee
from align_lite.data.emoji import sample_folder
from align_lite.data.emoji_corpus import EmojiSplit, load_emoji_corpus
from align_lite.data.filters import FilterConfig
from align_lite.models.checkpoint import CheckpointError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import emoji_quality  # noqa: E402  (benchmarks/emoji_quality.py)


@pytest.fixture(scope="module")
def corpus():
    return load_emoji_corpus()


@pytest.fixture(scope="module")
def eval_data(corpus):
    return ee.EmojiEval.of(corpus, EmojiSplit(), ["en", "ja"])


def test_eval_set_is_the_held_out_styles_base_emoji(corpus, eval_data):
    styles, tones = corpus.column("style")[eval_data.rows], corpus.column("skin_tone")[eval_data.rows]
    assert set(styles) == {"twemoji"} and set(tones) == {"none"}
    assert eval_data.pixels.shape == (len(eval_data.rows), 3, 64, 64)
    assert -1.0 <= eval_data.pixels.min() and eval_data.pixels.max() <= 1.0
    texts, owner = eval_data.labels["en"]
    assert len(texts) == len(eval_data.rows)  # one English label per base emoji
    first = int(eval_data.rows[owner[0]])
    assert texts[0] == corpus.images["text"][first].as_py()  # the label of its own image
    assert len(eval_data.subgroup_names) > 90 and int(eval_data.subgroups.max()) < len(eval_data.subgroup_names)


def test_filtered_training_pairs_obey_the_text_rules(corpus):
    split = EmojiSplit()
    everything = ee.train_pairs(corpus, split, ["en"])
    kept = ee.train_pairs(corpus, split, ["en"], filters=FilterConfig())
    assert 0 < kept.num_rows < everything.num_rows
    from align_lite.data.unigrams import unigrams

    lengths = [len(unigrams(t)) for t in kept["text"].to_pylist()]
    assert min(lengths) >= 3 and max(lengths) <= 20  # the paper's length rule, image rules off
    assert "face" not in set(kept["text"].to_pylist())  # shared by far more than 10 images
    assert set(pc.unique(kept["style"]).to_pylist()) <= set(split.train_styles)


def test_a_short_run_trains_and_scores_every_language(corpus, eval_data):
    pairs = ee.train_pairs(corpus, EmojiSplit(), ["en"], ["label"]).slice(0, 256)
    config = replace(ee.EMOJI_RECIPE, max_steps=3, warmup_steps=1, batch_size=8, vocab_size=300, log_every=1)
    run, model, tokenizer = ee.train_on_emoji(config, pairs, corpus, eval_data)
    assert run.steps[-1] == 3 and run.train_pairs == 256 and run.curve[-1]["step"] == 3
    scores = run.curve[-1]
    for key in ("en/t2i_r10", "ja/i2t_r1", "mean/t2i_r5", "zero_shot_subgroup_top1"):
        assert 0.0 <= scores[key] <= 1.0
    assert scores["mean/t2i_r10"] == pytest.approx((scores["en/t2i_r10"] + scores["ja/t2i_r10"]) / 2)
    assert tokenizer.config.strip_accents is False
    rows = corpus.rows(style="twemoji")
    edits = ee.attribute_edits(model, tokenizer, corpus, rows, ["en", "fr"])
    assert [(e["edit"], e["language"]) for e in edits] == [
        ("dark skin tone", "en"), ("dark skin tone", "fr"), ("woman", "en"), ("woman", "fr")]
    assert edits[1]["text"] == "teint foncé" and edits[0]["pairs"] > 200
    assert all(0 <= e[k] <= 1 for e in edits for k in ("image+text", "image only", "text only"))


def test_score_is_perfect_for_a_model_that_knows_the_answers(eval_data):
    """A stand-in model whose image and text embeddings are one-hot on the image's index:
    every recall is 1 and the subgroup classifier (texts unknown to it) is at chance or worse."""

    n = len(eval_data.rows)
    texts, owner = eval_data.labels["en"]
    index_of = {t: int(o) for t, o in zip(texts, owner)}

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.device_probe = torch.nn.Parameter(torch.zeros(1))  # embed_* read the device from it

        def encode_image(self, pixels):
            return torch.nn.functional.one_hot(self.rows(pixels), n + 1).float()

        def rows(self, pixels):  # the first held-out image drawn pixel for pixel like each one
            return torch.tensor([first_with[p.numpy().tobytes()] for p in pixels])

        def encode_text(self, input_ids, attention_mask):
            return torch.nn.functional.one_hot(input_ids[:, 0], n + 1).float()

    all_flat = eval_data.pixels.flatten(1)
    first_with: dict[bytes, int] = {}
    for i, p in enumerate(eval_data.pixels):
        first_with.setdefault(p.numpy().tobytes(), i)

    def tokenize(batch):
        ids = torch.tensor([[index_of.get(t, n)] for t in batch])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    scores = ee.score(Oracle(), tokenize, eval_data, ["en"])
    # A few emoji are drawn pixel for pixel alike in one style (7 in Twemoji); the oracle cannot
    # tell those apart, so it misses their queries and nothing else.
    duplicates = len(all_flat) - len(torch.unique(all_flat, dim=0))
    assert 0 < duplicates < 20
    for key in ("en/t2i_r1", "en/t2i_r10", "en/i2t_r1", "en/i2t_r10"):
        assert 1 - 2 * duplicates / n <= scores[key] <= 1.0, key
    assert scores["mean/t2i_r10"] == scores["en/t2i_r10"]


def test_benchmark_table_judges_the_targets():
    point = {"seconds": 60.0, "step": 300, "temperature": 0.1,
             "held_out_style": {"en/t2i_r10": 0.62, "de/t2i_r10": 0.5, "en/i2t_r10": 0.4,
                                "mean/t2i_r10": 0.56, "zero_shot_subgroup_top1": 0.3},
             "held_out_concepts": {"en/t2i_r10": 0.1}, "train_style": {"en/t2i_r10": 0.9}}
    result = {"config": {"batch_size": 64}, "eval_images": {"held_out_style": 1800, "held_out_concepts": 300,
                                                            "train_style": 1900},
              "runs": {"all languages": {"pairs": 10, "points": [point]}},
              "pixel_baseline": {"en/t2i_r10": 0.05, "zero_shot_subgroup_top1": 0.2},
              "chance": {"en/t2i_r10": 10 / 1800, "zero_shot_subgroup_top1": 1 / 98}}
    table = emoji_quality.markdown(result, threads=2)
    assert "R@10 (English) >= 60.0 %: **met** (62.0 %)" in table
    assert "subgroup top-1 >= 50.0 %: **not met** (30.0 %)" in table
    assert "within 15 points of English: **met** (largest gap 12.0 points)" in table
    assert "| pixel nearest neighbour (no text model) | – | – | 5.0 % |" in table
    assert table.rstrip().endswith("(largest gap 12.0 points).")
    assert "| chance | – | – | 0.6 % | 0.6 % | 0.6 % | 1.0 % | 3.3 % | 0.5 % |" in table  # 10 of 300, 10 of 1900


def test_pixel_baseline_finds_a_picture_drawn_the_same_way(corpus):
    """On the training style itself the pixel baseline is near perfect (the same pictures);
    on the held-out style it is far from it (another artist's drawing)."""
    split = EmojiSplit()
    same = ee.EmojiEval.of(corpus, EmojiSplit(test_style="noto"), ["en"])
    keep = np.flatnonzero(np.isin(same.rows, split.train_rows(corpus)))[:200]
    texts, owner = same.labels["en"]
    chosen = torch.isin(owner, torch.from_numpy(keep))
    remap = torch.full((len(same.rows),), -1, dtype=torch.long)
    remap[torch.from_numpy(keep)] = torch.arange(len(keep))
    small = ee.EmojiEval(same.pixels[keep], same.rows[keep],
                         {"en": ([t for t, c in zip(texts, chosen.tolist()) if c], remap[owner][chosen])},
                         same.subgroups[keep], same.subgroup_names)
    scores = emoji_quality.pixel_baseline(corpus, split, small)
    assert scores["en/t2i_r10"] > 0.9 and scores["zero_shot_subgroup_top1"] > 0.9


def test_noise_sets_grow_from_clean_to_noisy(corpus):
    sets = ee.noise_sets(corpus)
    sizes = [t.num_rows for t in sets.values()]
    names = list(sets)
    assert names[0].startswith("clean") and names[2].startswith("noisy")
    assert sizes[0] < sizes[1] < sizes[3] < sizes[2]  # one style < both < filtered < everything
    first = sets[names[0]]
    assert set(first["language"].to_pylist()) == {"en"} and set(first["kind"].to_pylist()) == {"label"}
    assert len(set(first["style"].to_pylist())) == 1


def test_runs_table_reads_each_runs_last_checkpoint():
    scores = {"en/t2i_r1": 0.01, "en/t2i_r10": 0.05, "en/i2t_r10": 0.04, "mean/t2i_r10": 0.03,
              "zero_shot_subgroup_top1": 0.02}
    run = ee.EmojiRun("fixed 1/64", {}, [{"step": 1, **{k: 0 for k in scores}}, {"step": 9, **scores}], [1, 9],
                      [8.0, 7.0], [0.015625, 0.015625], 1234, 1.0)
    table = ee.runs_table([run])
    assert "| fixed 1/64 | 1,234 | 9 | 0.0156 | 1.0 | 5.0 | 4.0 | 3.0 | 2.0 |" in table


def test_zero_shot_by_language_uses_each_languages_names(corpus, eval_data, monkeypatch):
    """A stand-in model that embeds an image as its subgroup and a prompt as the subgroup the
    prompt names *in one language* (Japanese): perfect there, near chance in English."""
    keys = eval_data.subgroup_names
    ja = corpus.names("ja", "subgroups")
    class_of = {ja[k]: i for i, k in enumerate(keys) if k in ja}
    width = len(keys) + 1

    class Stand(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.device_probe = torch.nn.Parameter(torch.zeros(1))

        def encode_text(self, input_ids, attention_mask):
            return torch.nn.functional.one_hot(input_ids[:, 0], width).float()

    def tokenize(batch):
        ids = torch.tensor([[class_of.get(t, len(keys))] for t in batch])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    monkeypatch.setattr(ee, "embed_images",
                        lambda model, pixels: torch.nn.functional.one_hot(eval_data.subgroups, width).float())
    out = ee.zero_shot_by_language(Stand(), tokenize, corpus, eval_data, ["ja", "en"])
    assert out["ja"]["missing"] == 0 and out["ja"]["top1"] == pytest.approx(1.0)
    assert out["en"]["top1"] < 0.2  # English names are unknown to this stand-in: one tied class


def test_the_book_model_is_trained_once_and_cached(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGN_LITE_CACHE", str(tmp_path))
    config = replace(ee.EMOJI_RECIPE, max_steps=2, warmup_steps=1, batch_size=8, vocab_size=300)
    model, tokenizer, record = ee.trained_emoji_model(config, corpus=corpus)
    assert not record["cached"] and record["steps"][-1] == 2
    assert record["train_pairs"] == ee.train_pairs(corpus, EmojiSplit(), ["en"], ["label"]).num_rows
    again, tokenizer2, record2 = ee.trained_emoji_model(config, corpus=corpus)
    assert record2["cached"] and record2["folder"] == record["folder"]
    assert [point["step"] for point in record["curve"]] == [2]  # scored at the end (eval every 150)
    assert 0 <= record["curve"][-1]["en/t2i_r10"] <= 1 and record2["curve"] == record["curve"]
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert tokenizer2(["waving hand"])["input_ids"].tolist() == tokenizer(["waving hand"])["input_ids"].tolist()
    _, _, other = ee.trained_emoji_model(config, languages=["de"], corpus=corpus)
    assert not other["cached"] and other["folder"] != record["folder"]  # other data, other model


def test_the_shipped_model_scores_what_its_record_says(corpus):
    model, tokenizer, record = ee.book_emoji_model()
    manifest = (corpus.root / "MANIFEST.sha256").read_bytes()
    assert record["corpus_manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    last = record["points"][-1]
    assert last["step"] == record["config"]["max_steps"] >= 10 * ee.EMOJI_BOOK_MODEL.max_steps  # far past the budget
    assert record["train_pairs"] == ee.train_pairs(corpus, EmojiSplit(), ["en"], ["label"]).num_rows
    scores = ee.score(model, tokenizer, ee.EmojiEval.of(corpus, EmojiSplit(), ["en", "ja"]))
    for key in ("en/t2i_r1", "en/t2i_r10", "en/i2t_r10", "ja/t2i_r10", "zero_shot_subgroup_top1"):
        assert scores[key] == pytest.approx(last["scores"][key], abs=2e-3), key
    assert scores["en/t2i_r10"] > 0.05  # well above chance (0.5 %)


def test_the_shipped_model_fails_clearly_when_damaged(tmp_path):
    shipped = sample_folder(ee.BOOK_MODEL_DIR, "the shipped emoji model", marker="record.json")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ee.book_emoji_model(tmp_path / "missing")
    copy = shutil.copytree(shipped, tmp_path / "copy")
    record = json.loads((copy / "record.json").read_text())
    (copy / "record.json").write_text(json.dumps({**record, "corpus_manifest_sha256": "0" * 64}))
    with pytest.warns(UserWarning, match="another version of the emoji corpus"):
        ee.book_emoji_model(copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer"):
        ee.book_emoji_model(copy)
    (copy / "record.json").unlink()
    with pytest.raises(CheckpointError, match="no record.json"):
        ee.book_emoji_model(copy)
