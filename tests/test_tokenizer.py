"""The WordPiece tokenizer learnt from alt-texts (align_lite.data.tokenizer)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from align_lite.data.tokenizer import (
    CONFIG_FILE,
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    AltTextTokenizer,
    TokenizerConfig,
    train_tokenizer,
)

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "grey"]
SHAPES = ["circle", "square", "triangle", "star", "heart", "hexagon"]
WORDS = ["a", "the", "big", "small", "on", "left", "right", "of", "photo", "two", "three", "and", "with"]
BATCH = [
    "a red circle",
    "Two BIG blue squares on the left of a green triangle",
    "photo",
    "a small purple star with an orange heart and a hexagon",
]


def captions(n: int = 500, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS), rng.choice(COLORS), rng.choice(SHAPES)]
        words += rng.choices(COLORS + SHAPES + WORDS, k=rng.randint(0, 7))
        out.append(" ".join(words))
    return out


@pytest.fixture(scope="module")
def tok() -> AltTextTokenizer:
    return train_tokenizer(captions(), TokenizerConfig(vocab_size=400))


def pieces(tok: AltTextTokenizer, text: str) -> list[int]:
    """The text's wordpiece ids without [CLS]/[SEP] and padding (truncated to max_length)."""
    encoding = tok.tokenizer.encode(text, add_special_tokens=False)
    return [i for i, m in zip(encoding.ids, encoding.attention_mask) if m]


def ids(tok: AltTextTokenizer, name: str) -> int:
    i = tok.tokenizer.token_to_id(name)
    assert i is not None
    return i


# ------------------------------------------------------------------------------- config


def test_config_defaults_and_paper():
    assert TokenizerConfig().max_length == 64
    paper = TokenizerConfig.paper()
    assert (paper.vocab_size, paper.max_length) == (100_000, 64)


@pytest.mark.parametrize("kwargs", [
    {"vocab_size": len(SPECIAL_TOKENS)},
    {"vocab_size": 0},
    {"max_length": 2},
    {"max_length": 0},
])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        TokenizerConfig(**kwargs)


def test_config_smallest_valid():
    config = TokenizerConfig(vocab_size=len(SPECIAL_TOKENS) + 1, max_length=3)
    assert config.max_length == 3


# ------------------------------------------------------------------------------- training / shapes


def test_vocab_has_special_tokens_first_and_the_corpus_words(tok):
    vocab = tok.tokenizer.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    for word in COLORS + SHAPES:
        assert word in vocab, word
    assert len(SPECIAL_TOKENS) < tok.vocab_size <= 400
    assert tok.pad_id == vocab["[PAD]"]


def test_output_shapes_and_dtypes(tok):
    out = tok(BATCH)
    assert set(out) == {"input_ids", "attention_mask"}
    for key in ("input_ids", "attention_mask"):
        assert out[key].shape == (len(BATCH), 64)
        assert out[key].dtype == torch.int64


def test_single_string_is_a_batch_of_one(tok):
    out = tok("a red circle")
    assert out["input_ids"].shape == (1, 64)
    assert torch.equal(out["input_ids"][0], tok(["a red circle"])["input_ids"][0])


def test_empty_batch_keeps_two_dimensions(tok):
    out = tok([])
    assert out["input_ids"].shape == (0, 64)
    assert out["attention_mask"].shape == (0, 64)


def test_cls_text_sep_then_padding(tok):
    cls_id, sep_id, pad_id = ids(tok, "[CLS]"), ids(tok, "[SEP]"), ids(tok, "[PAD]")
    out = tok(BATCH)
    for row, (text, input_ids, mask) in enumerate(zip(BATCH, out["input_ids"], out["attention_mask"])):
        text_ids = pieces(tok, text)
        n = len(text_ids) + 2
        assert n < 64
        assert input_ids[0] == cls_id
        assert input_ids[1 : n - 1].tolist() == text_ids
        assert input_ids[n - 1] == sep_id
        assert (input_ids[n:] == pad_id).all()
        assert mask[:n].tolist() == [1] * n
        assert mask[n:].sum() == 0
        assert int(mask.sum()) == n
        assert sep_id not in input_ids[1 : n - 1].tolist() and cls_id not in input_ids[1:].tolist()


def test_lowercased_and_unknown_words(tok):
    out = tok(["RED Circle", "red circle"])
    assert torch.equal(out["input_ids"][0], out["input_ids"][1])
    unk = ids(tok, "[UNK]")
    assert unk in tok(["ünknöwn ξ"])["input_ids"][0].tolist()


def test_truncation_to_max_length_with_sep_last(tok):
    long_text = " ".join(random.Random(1).choice(COLORS + SHAPES) for _ in range(200))
    out = tok([long_text, "a red circle"])
    row, mask = out["input_ids"][0], out["attention_mask"][0]
    assert row.shape == (64,)
    assert mask.sum() == 64, "a 200-word text fills every position"
    assert row[0] == ids(tok, "[CLS]")
    assert row[-1] == ids(tok, "[SEP]")
    text_ids = pieces(tok, long_text)
    assert len(text_ids) == 64  # the text alone is longer than the window
    assert row[1:-1].tolist() == text_ids[:62], "truncation keeps the start of the text"
    assert out["attention_mask"][1].sum() < 64


def test_other_max_length():
    tok = train_tokenizer(captions(200), TokenizerConfig(vocab_size=200, max_length=8))
    out = tok(["a red circle", " ".join(["red"] * 50)])
    assert out["input_ids"].shape == (2, 8)
    assert out["input_ids"][1, -1] == ids(tok, "[SEP]")
    assert out["attention_mask"][0].tolist() == [1] * 5 + [0] * 3


def test_tokens_are_the_unpadded_wordpieces(tok):
    pieces = tok.tokens("a red circle")
    assert pieces == ["[CLS]", "a", "red", "circle", "[SEP]"]


def test_decode_round_trip(tok):
    sentence = "a big red circle on the left of two green square and a star"
    out = tok([sentence])
    assert tok.decode(out["input_ids"][0].tolist()) == sentence
    assert "[PAD]" not in tok.decode(out["input_ids"][0].tolist())


# ------------------------------------------------------------------------------- save / load


def test_save_load_round_trip(tok, tmp_path):
    folder = tok.save(tmp_path / "tok")
    assert (folder / TOKENIZER_FILE).is_file() and (folder / CONFIG_FILE).is_file()
    meta = json.loads((folder / CONFIG_FILE).read_text())
    assert meta["model_max_length"] == 64
    assert meta["align_lite"]["vocab_size"] == 400

    loaded = AltTextTokenizer.load(folder)
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.config == tok.config
    assert loaded.tokenizer.get_vocab() == tok.tokenizer.get_vocab()
    texts = BATCH + captions(50, seed=9) + [" ".join(["blue"] * 100)]
    a, b = tok(texts), loaded(texts)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["attention_mask"], b["attention_mask"])


def test_load_keeps_a_non_default_max_length(tmp_path):
    tok = train_tokenizer(captions(200), TokenizerConfig(vocab_size=200, max_length=16))
    loaded = AltTextTokenizer.load(tok.save(tmp_path))
    assert loaded.config.max_length == 16
    assert loaded(["a red circle"])["input_ids"].shape == (1, 16)


def test_load_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        AltTextTokenizer.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        AltTextTokenizer.load(tmp_path / "empty")


# ------------------------------------------------------------------------------- transformers


def test_to_transformers_gives_the_same_ids(tok):
    hf = tok.to_transformers()
    texts = BATCH + [" ".join(["green"] * 150)]
    ours = tok(texts)
    theirs = hf(texts, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
    assert torch.equal(theirs["input_ids"], ours["input_ids"])
    assert torch.equal(theirs["attention_mask"], ours["attention_mask"])
    assert hf.pad_token_id == tok.pad_id
    assert hf.cls_token == "[CLS]" and hf.sep_token == "[SEP]"
    assert hf.model_max_length == 64


def test_to_transformers_does_not_change_the_native_tokenizer(tok):
    hf = tok.to_transformers()
    hf(BATCH, padding=False, truncation=False)  # reconfigures the backend it was given
    hf(BATCH, padding="longest")
    assert tok(BATCH)["input_ids"].shape == (len(BATCH), 64)


def test_saved_folder_loads_with_transformers(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast.from_pretrained(str(tok.save(tmp_path)))
    out = hf(BATCH, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
    assert torch.equal(out["input_ids"], tok(BATCH)["input_ids"])


def test_trim_padding_keeps_the_longest_text_and_bert_outputs():
    from align_lite.data.tokenizer import TokenizerConfig, train_tokenizer, trim_padding
    from align_lite.models.text_tower import TextTower, TextTowerConfig

    texts = ["a red star", "two small blue hearts on a white background", "a cross"]
    tok = train_tokenizer(texts * 10, TokenizerConfig(vocab_size=200, max_length=64))
    full = tok(texts)
    trimmed = trim_padding(full)
    longest = int(full["attention_mask"].sum(1).max())
    assert trimmed["input_ids"].shape == (3, longest) < full["input_ids"].shape
    assert torch.equal(trimmed["input_ids"], full["input_ids"][:, :longest])
    torch.manual_seed(0)
    tower = TextTower(TextTowerConfig(vocab_size=tok.vocab_size)).eval()
    with torch.no_grad():
        torch.testing.assert_close(tower(**trimmed), tower(**full), rtol=1e-5, atol=1e-5)


def test_learn_vocab_merges_the_most_frequent_pair_and_breaks_ties_by_spelling():
    from align_lite.data.tokenizer import SPECIAL_TOKENS, learn_vocab

    vocab = learn_vocab({"abab": 5, "cd": 5, "x": 1}, vocab_size=100, min_frequency=2)
    assert vocab[:len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert vocab[len(SPECIAL_TOKENS):len(SPECIAL_TOKENS) + 6] == ["##a", "##b", "##d", "a", "c", "x"]
    # every pair occurs 5 times, so the spelling decides: (##a,##b), then (##b,##ab) in a·##b·##ab,
    # then (a,##bab), then (c,##d)
    assert vocab[len(SPECIAL_TOKENS) + 6:] == ["##ab", "##bab", "abab", "cd"]
    assert learn_vocab({"abab": 5}, vocab_size=len(SPECIAL_TOKENS) + 3) == [*SPECIAL_TOKENS, "##a", "##b", "a"]
    assert learn_vocab({"abab": 1}, vocab_size=100) == [*SPECIAL_TOKENS, "##a", "##b", "a"]  # min_frequency


def test_the_same_texts_give_the_same_vocabulary_in_another_process(tmp_path):
    import subprocess
    import sys

    code = ("from align_lite.data.tokenizer import TokenizerConfig, train_tokenizer\n"
            "from align_lite.data.world import WorldConfig, make_world_table\n"
            "texts = make_world_table(WorldConfig.noisy(n=3000, seed=0))['text'].to_pylist()\n"
            "vocab = train_tokenizer(texts, TokenizerConfig(vocab_size=600)).tokenizer.get_vocab()\n"
            "import json, sys; json.dump(sorted(vocab.items()), sys.stdout)")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2)]
    assert runs[0] == runs[1] and len(runs[0]) > 1000


def test_strip_accents_false_keeps_vowel_signs_of_hindi_and_thai():
    texts = ["चेहरा खुश", "หน้ายิ้ม", "Lächelnd"] * 3
    bert = train_tokenizer(texts, TokenizerConfig(vocab_size=200))
    kept = train_tokenizer(texts, TokenizerConfig(vocab_size=200, strip_accents=False))
    # BERT's rule (strip accents when lower-casing) erases the combining vowel signs
    assert "".join(bert.tokens("चेहरा")[1:-1]).replace("##", "") == "चहरा"  # े (a non-spacing mark) is gone
    assert "".join(kept.tokens("चेहरा")[1:-1]).replace("##", "") == "चेहरा"
    assert "".join(kept.tokens("หน้ายิ้ม")[1:-1]).replace("##", "") == "หน้ายิ้ม"
    assert kept.tokens("Lächelnd")[1:-1] == ["lächelnd"] and bert.tokens("Lächelnd")[1:-1] == ["lachelnd"]
