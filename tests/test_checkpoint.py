"""Checkpoints: safetensors + JSON round trips exactly, and every mismatch is a clear error."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from align_lite.data.tokenizer import TokenizerConfig, train_tokenizer
from align_lite.models import (
    AlignDualEncoder,
    CheckpointError,
    from_pretrained,
    get_preset,
    load_tokenizer,
    save_pretrained,
)
from align_lite.models.checkpoint import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, _tensors_for_saving, read_config

TEXTS = [
    "a red circle on a blue square", "two green triangles", "a small yellow star above a red circle",
    "blue squares in a row", "a large green circle", "three red stars", "a purple triangle left of a star",
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, TokenizerConfig(vocab_size=120, max_length=16, min_frequency=1))


@pytest.fixture(scope="module")
def trained(tokenizer) -> AlignDualEncoder:
    """The tiny model after two training steps: batch-norm statistics and temperature have moved."""
    torch.manual_seed(0)
    model = AlignDualEncoder(get_preset("tiny").with_vocab_size(tokenizer.vocab_size)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tokens = tokenizer(TEXTS[:4])
    pixels = torch.rand(4, 3, 64, 64) * 2 - 1
    for _ in range(2):
        out = model(pixels, tokens["input_ids"], tokens["attention_mask"])
        labels = torch.arange(4)
        loss = F.cross_entropy(out.logits_per_image, labels) + F.cross_entropy(out.logits_per_text, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.temperature.item() != 1.0
    return model.eval()


@pytest.fixture
def saved(tmp_path, trained, tokenizer):
    return save_pretrained(trained, tmp_path / "ckpt", tokenizer=tokenizer)


def _embed(model, tokenizer):
    torch.manual_seed(1)
    pixels = torch.rand(3, 3, 64, 64) * 2 - 1
    tokens = tokenizer(TEXTS[2:5])
    with torch.no_grad():
        return model(pixels, tokens["input_ids"], tokens["attention_mask"])


# --------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------


def test_round_trip_gives_identical_embeddings_and_logits(saved, trained, tokenizer):
    loaded = from_pretrained(saved, map_location=torch.device("cpu"))
    assert not loaded.training
    assert loaded.config == trained.config
    a, b = _embed(trained, tokenizer), _embed(loaded, tokenizer)
    for field in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text", "temperature"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    for (name, x), y in zip(trained.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(x, y), name


def test_tokenizer_round_trip(saved, tokenizer):
    loaded = load_tokenizer(saved)
    assert loaded is not None and loaded.vocab_size == tokenizer.vocab_size
    assert loaded.config == tokenizer.config
    for key, value in tokenizer(TEXTS[:3]).items():
        assert torch.equal(loaded(TEXTS[:3])[key], value)


def test_checkpoint_files_and_no_pickle(tmp_path, trained, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle or torch.save/torch.load used")

    for module, name in ((pickle, "dump"), (pickle, "dumps"), (pickle, "load"), (pickle, "loads"),
                         (torch, "save"), (torch, "load")):
        monkeypatch.setattr(module, name, forbidden)
    directory = save_pretrained(trained, tmp_path / "model")
    from_pretrained(directory)
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind
    assert load_tokenizer(directory) is None
    config = json.loads((directory / CONFIG_FILE).read_text())
    assert config["format_version"] == FORMAT_VERSION and config["architecture"] == "AlignDualEncoder"
    assert config["align_lite_version"] and config["embed_dim"] == trained.config.embed_dim
    assert (directory / WEIGHTS_FILE).read_bytes()[:1] != b"\x80"  # not a pickle stream


def test_saving_over_a_checkpoint_replaces_ours_and_keeps_other_files(tmp_path, trained, tokenizer):
    directory = save_pretrained(AlignDualEncoder(trained.config), tmp_path / "ckpt", tokenizer=tokenizer)
    (directory / "notes.txt").write_text("keep me")
    save_pretrained(trained, directory)
    assert (directory / "notes.txt").read_text() == "keep me"
    assert load_tokenizer(directory) is not None  # saved earlier, not deleted
    assert torch.equal(from_pretrained(directory).log_temperature, trained.log_temperature)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with pytest.raises(NotADirectoryError):
        save_pretrained(trained, directory / "notes.txt")


def test_tied_tensors_are_stored_once_and_restored(tmp_path):
    torch.manual_seed(0)
    model = AlignDualEncoder(get_preset("tiny"))
    linears = (m for m in model.text.bert.modules() if isinstance(m, torch.nn.Linear))
    square = next(m for m in linears if m.weight.shape == (128, 128))
    model.text.projection.weight = square.weight  # tie two (128, 128) weights
    tensors, aliases = _tensors_for_saving(model.state_dict())
    assert len(aliases) == 1 and len(tensors) == len(model.state_dict()) - 1
    directory = save_pretrained(model, tmp_path / "tied")
    assert len(load_file(str(directory / WEIGHTS_FILE))) == len(model.state_dict()) - 1
    loaded = from_pretrained(directory)
    assert torch.equal(loaded.text.projection.weight, square.weight)


def test_channels_last_model_saves(tmp_path):
    model = AlignDualEncoder(get_preset("tiny")).to(memory_format=torch.channels_last).eval()
    loaded = from_pretrained(save_pretrained(model, tmp_path / "cl"))
    for (name, x), y in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(x, y), name


# --------------------------------------------------------------------------------------------
# Clear errors
# --------------------------------------------------------------------------------------------


def _edit_config(directory, edit):
    path = directory / CONFIG_FILE
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def _edit_weights(directory, edit):
    path = str(directory / WEIGHTS_FILE)
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def test_edited_embed_dim_in_config_is_an_error(saved):
    _edit_config(saved, lambda c: c.update(embed_dim=64))
    with pytest.raises(CheckpointError, match="embed_dim mismatch"):
        from_pretrained(saved)


def test_config_weight_shape_mismatch_names_the_tensors(saved):
    def shrink(config):
        config["embed_dim"] = config["text"]["embed_dim"] = config["image"]["embed_dim"] = 64

    _edit_config(saved, shrink)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*text\.projection\.weight \(128, 128\) vs \(64, 128\)"):
        from_pretrained(saved)


def test_missing_tensor_is_an_error(saved):
    _edit_weights(saved, lambda t: t.pop("text.projection.bias"))
    with pytest.raises(CheckpointError, match=r"1 missing: text\.projection\.bias"):
        from_pretrained(saved)


def test_unexpected_tensors_are_listed_first_few(saved):
    _edit_weights(saved, lambda t: t.update({f"extra.{i}": torch.zeros(1) for i in range(7)}))
    with pytest.raises(CheckpointError, match=r"7 unexpected: extra\.0, .*extra\.4 and 2 more"):
        from_pretrained(saved)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(format_version=FORMAT_VERSION + 1), "newer"),
    (lambda c: c.pop("format_version"), "format_version"),
    (lambda c: c.update(format_version="1"), "format_version"),
    (lambda c: c.update(architecture="CLIPModel"), "architecture"),
    (lambda c: c.update(embedding_size=3), "unknown config keys"),
    (lambda c: c["text"].update(hidden=3), "unknown config keys"),
    (lambda c: c["text"].update(hidden_size="128"), r"text\.hidden_size: expected an integer, got '128' \(str\)"),
    (lambda c: c["image"].update(image_size=64.5), r"image\.image_size: expected an integer"),
    (lambda c: c["text"].update(vocab_size=10**12), r"vocab_size 1,000,000,000,000 .* GiB for the word-piece table"),
])
def test_bad_config_is_an_error(saved, edit, message):
    _edit_config(saved, edit)
    with pytest.raises(CheckpointError, match=message):
        read_config(saved)
    with pytest.raises(CheckpointError, match=message):
        from_pretrained(saved)


def test_missing_and_corrupt_files(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_FILE):
        from_pretrained(tmp_path / "nowhere")
    weights = saved / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read"):
        from_pretrained(saved)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        from_pretrained(saved)
    (saved / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        from_pretrained(saved)
