"""Evaluation sets from pair folders and the world, `evaluate`, and `align-lite eval`."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from align_lite.cli import main
from align_lite.data.records import SkipLog
from align_lite.evaluate import evaluate, load_eval_set, world_eval_set
from align_lite.retrieval import retrieval_recall
from align_lite.train import TrainConfig, train


def write_folder(root, rows):
    (root / "images").mkdir(parents=True)
    for i, colour in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (40, 30), colour).save(root / "images" / f"{i}.png")
    (root / "images" / "broken.png").write_bytes(b"not a png")
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


ROWS = [
    {"file_name": "images/0.png", "text": "a red square", "label": "red"},
    {"file_name": "images/1.png", "text": "a blue square", "label": "blue"},
    {"file_name": "images/0.png", "text": "something red", "label": "red"},
    {"file_name": "images/broken.png", "text": "lost", "label": "red"},
    {"file_name": "images/2.png", "text": "a green square", "label": "green"},
]


def test_pair_folder_groups_captions_and_counts_bad_images(tmp_path):
    write_folder(tmp_path, ROWS)
    log = SkipLog()
    data = load_eval_set(tmp_path, image_size=16, log=log)
    assert data.pixels.shape == (3, 3, 16, 16)
    assert data.texts == ["a red square", "a blue square", "something red", "a green square"]
    assert data.text_to_image.tolist() == [0, 1, 0, 2]
    assert data.classnames == ("blue", "green", "red") and data.labels.tolist() == [2, 0, 1]
    assert sum(log.counts.values()) == 1 and data.skipped == dict(log.counts)
    assert data.image_names == ["images/0.png", "images/1.png", "images/2.png"]


def test_evaluate_equals_retrieval_recall_on_the_model_embeddings(tmp_path):
    write_folder(tmp_path, ROWS)
    config = TrainConfig(model="tiny", batch_size=4, warmup_steps=1, max_steps=2, text_length=16, world_n=32,
                         vocab_size=300, eval_size=0, tensorboard=False)
    result = train(config)
    data = load_eval_set(tmp_path, image_size=64)
    scores = evaluate(result.model, result.tokenizer, data)
    with torch.no_grad():
        images = result.model.encode_image(data.pixels)
        encoded = result.tokenizer(data.texts)
        texts = result.model.encode_text(encoded["input_ids"], encoded["attention_mask"])
    expected = retrieval_recall(images, texts, data.text_to_image)
    assert {k: scores[k] for k in expected} == pytest.approx(expected)
    assert scores["classes"] == 3 and 0 <= scores["zero_shot_top1"] <= scores["zero_shot_top5"] <= 1


def test_world_eval_set_marks_two_kind_scenes():
    data = world_eval_set(n=40, image_size=32)
    assert data.pixels.shape == (40, 3, 32, 32) and data.text_to_image.tolist() == list(range(40))
    assert (data.labels == -1).any() and (data.labels >= 0).any()
    assert all(" " in c for c in data.classnames)


def test_cli_eval_prints_json_and_rejects_bad_input(tmp_path, capsys):
    run = tmp_path / "run"
    train(TrainConfig(model="tiny", batch_size=4, warmup_steps=1, max_steps=1, text_length=16, world_n=16,
                      vocab_size=300, eval_size=0, tensorboard=False), out_dir=run)
    assert main(["eval", str(run), "--n", "24", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 24 and {"i2t_r1", "t2i_r10", "zero_shot_top1"} <= set(out)
    assert out["captions"] == 24 * 5 and 0 <= out["counting"] <= 1 and 0 <= out["relations"] <= 1
    assert main(["eval", str(run), "--n", "24", "--captions", "2"]) == 0
    printed = capsys.readouterr().out
    assert "24 images, 48 captions" in printed and "counting" in printed
    assert main(["eval", str(run), "--captions", "0"]) == 1
    assert "--captions" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing")]) == 1
    assert "no model here" in capsys.readouterr().err
    assert main(["eval", str(run), "--templates", "fancy"]) == 1
    assert "--templates" in capsys.readouterr().err


def test_cli_index_then_search_finds_rows(tmp_path, capsys):
    write_folder(tmp_path / "pairs", ROWS)
    run = tmp_path / "run"
    train(TrainConfig(model="tiny", batch_size=4, warmup_steps=1, max_steps=1, text_length=16, world_n=16,
                      vocab_size=300, eval_size=0, tensorboard=False), out_dir=run)
    db = str(tmp_path / "index.db")
    assert main(["index", str(run), "--data", str(tmp_path / "pairs"), "--db", db]) == 0
    printed = capsys.readouterr().out
    assert "indexed 3 images and 4 captions (7 vectors, 7 in the collection); skipped 1" in printed
    assert main(["search", "--db", db, "--text", "a red square", "--k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(" image " in line for line in lines)
    assert main(["search", "--db", db, "--image", str(tmp_path / "pairs" / "images" / "1.png"), "--k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(" text " in line for line in lines)
    assert main(["search", "--db", db, "--image", str(tmp_path / "pairs" / "images" / "1.png"),
                 "--text", "green", "--k", "2"]) == 0  # composed query → images
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(" image " in line for line in lines)
    assert main(["search", "--db", db]) == 1
    assert "give --text" in capsys.readouterr().err
    assert main(["search", "--db", db, "--image", str(tmp_path / "pairs" / "images" / "broken.png")]) == 1
    assert "--image" in capsys.readouterr().err


@pytest.mark.parametrize("level", ["category", "subcategory"])
def test_emoji_eval_set_has_several_captions_and_classes(level):
    from align_lite.data.emoji import load_emoji
    from align_lite.evaluate import emoji_eval_set

    data = emoji_eval_set(32, level, max_images=50)
    sample = load_emoji()
    assert data.pixels.shape == (50, 3, 32, 32)
    assert data.texts == [t for i in range(50) for t in sample.texts(i)]
    assert len(data.texts) > 50 and data.text_to_image.bincount().min() >= 1
    names = sample.categories if level == "category" else sample.subcategories
    column = sample.table.column(level).to_pylist()[:50]
    assert [data.classnames[c] for c in data.labels.tolist()] == column and data.classnames == names
    with pytest.raises(ValueError, match="level"):
        emoji_eval_set(32, "emoji")


def test_cli_index_is_idempotent_and_search_finds_the_recorded_collection(tmp_path, capsys):
    write_folder(tmp_path / "pairs", ROWS)
    run, other = tmp_path / "run", tmp_path / "other"
    for folder, seed in ((run, 0), (other, 1)):
        train(TrainConfig(model="tiny", batch_size=4, warmup_steps=1, max_steps=1, text_length=16, world_n=16,
                          vocab_size=300, eval_size=0, tensorboard=False, seed=seed), out_dir=folder)
    db = str(tmp_path / "index.db")
    index = ["index", str(run), "--data", str(tmp_path / "pairs"), "--db", db, "--collection", "mine"]
    assert main(index) == 0
    capsys.readouterr()
    assert main(index) == 1  # before: every row was appended again and every hit showed twice
    assert "already holds 7 vectors" in capsys.readouterr().err
    assert main([*index, "--overwrite"]) == 0
    assert "7 in the collection" in capsys.readouterr().out
    assert main([*index, "--append"]) == 0
    assert "14 in the collection" in capsys.readouterr().out
    assert main(["index", str(other), "--data", str(tmp_path / "pairs"), "--db", db, "--collection", "mine",
                 "--append"]) == 1
    assert "cannot be searched together" in capsys.readouterr().err
    assert main(["search", "--db", db, "--text", "a red square", "--k", "3"]) == 0  # the card names "mine"
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    assert main(["search", "--db", db, "--text", "a red square", "--k", "3", "--run", str(other)]) == 0
    assert "was indexed with the model" in capsys.readouterr().err
