"""A WordPiece tokenizer learnt from the alt-texts, as the paper learns its vocabulary.

ALIGN trains a 100 k WordPiece vocabulary on its own training data (kakaobrain's reimplementation
used BERT's uncased vocabulary instead). We do the same at small scale with Hugging Face
``tokenizers``: BERT-style normalisation (lower-case, strip accents) and pre-tokenisation,
``[CLS] text [SEP]``, padded and truncated to 64 tokens (the paper's text length).

Saved as one ``tokenizer.json`` plus ``tokenizer_config.json``, so the folder also loads with
``transformers.PreTrainedTokenizerFast`` (what the BERT tower will consume).
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"


@dataclass(frozen=True)
class TokenizerConfig:
    """Vocabulary size and sequence length. Paper: 100 k wordpieces, 64 tokens."""

    vocab_size: int = 8_000
    max_length: int = 64
    min_frequency: int = 2
    lowercase: bool = True
    # None: BERT's rule (strip accents when lower-casing). False keeps every combining mark, which
    # multilingual text needs: stripping drops Devanagari and Thai vowel signs, not just accents.
    strip_accents: bool | None = None

    def __post_init__(self) -> None:
        if self.vocab_size < len(SPECIAL_TOKENS) + 1 or self.max_length < 3:
            raise ValueError("vocab_size must exceed the special tokens and max_length be >= 3")

    @classmethod
    def paper(cls) -> TokenizerConfig:
        return cls(vocab_size=100_000, max_length=64)


class AltTextTokenizer:
    """Texts → ``input_ids`` and ``attention_mask``, both (B, max_length) int64 tensors."""

    def __init__(self, tokenizer: Tokenizer, config: TokenizerConfig):
        self.tokenizer = tokenizer
        self.config = config
        self.pad_id = tokenizer.token_to_id("[PAD]")
        tokenizer.enable_padding(pad_id=self.pad_id, pad_token="[PAD]", length=config.max_length)
        tokenizer.enable_truncation(max_length=config.max_length)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __call__(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        encodings = self.tokenizer.encode_batch(list(texts))
        shape = (len(encodings), self.config.max_length)  # stays 2-D for an empty batch
        return {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(shape),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long).reshape(shape),
        }

    def tokens(self, text: str) -> list[str]:
        """The wordpieces of one text, without padding (for showing in the book)."""
        encoding = self.tokenizer.encode(text)
        return [t for t, m in zip(encoding.tokens, encoding.attention_mask) if m]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(directory / TOKENIZER_FILE))
        meta = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": self.config.max_length,
            "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
            "sep_token": "[SEP]", "mask_token": "[MASK]",
            "align_lite": asdict(self.config),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> AltTextTokenizer:
        directory = Path(directory)
        file = directory / TOKENIZER_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{directory}: no {TOKENIZER_FILE}")
        meta = json.loads((directory / CONFIG_FILE).read_text()) if (directory / CONFIG_FILE).is_file() else {}
        config = TokenizerConfig(**meta.get("align_lite", {}))
        return cls(Tokenizer.from_file(str(file)), config)

    def to_transformers(self):
        """The same tokenizer as ``transformers.PreTrainedTokenizerFast``."""
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_object=self.tokenizer, model_max_length=self.config.max_length,
            pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
            mask_token="[MASK]",
        )


def trim_padding(encoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut the columns that are padding in every row: (B, L) → (B, L') with L' the longest text
    in the batch (at least 1). A padded position is masked out of attention, so BERT's outputs at
    the real tokens do not change; the step just costs L'/L as much. The world's captions need
    ~16 of 32 positions."""
    mask = encoded["attention_mask"]
    if mask.numel() == 0:
        return encoded
    length = max(int(mask.sum(1).max()), 1)
    return {**encoded, "input_ids": encoded["input_ids"][:, :length],
            "attention_mask": mask[:, :length]}


def _symbols(word: str) -> tuple[str, ...]:
    """"star" → ("s", "##t", "##a", "##r"): the first character, then ``##``-continuations."""
    return (word[0], *(f"##{c}" for c in word[1:]))


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """Join every occurrence of ``pair`` (left to right) into one symbol."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(pair[0] + pair[1].removeprefix("##"))
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def _pairs(symbols: tuple[str, ...]) -> Counter:
    return Counter(zip(symbols, symbols[1:]))


def learn_vocab(word_counts: Mapping[str, int], vocab_size: int, min_frequency: int = 2) -> list[str]:
    """A WordPiece vocabulary learnt by merging the most frequent adjacent pair, as the BPE-style
    WordPiece trainer of ``tokenizers`` does, but with every tie broken by the pair's spelling.

    ``tokenizers``' own trainer breaks ties in hash-map order, which changes from process to
    process: the same texts gave other intermediate word-pieces, other token ids, and so a
    different model from the same seed in every run. Returns the special tokens, the alphabet
    (sorted) and the merged pieces in merge order, at most ``vocab_size`` tokens; a pair is
    merged only if it occurs at least ``min_frequency`` times.
    """
    words = {w: _symbols(w) for w in sorted(word_counts) if w}
    alphabet = sorted({s for symbols in words.values() for s in symbols})
    vocab = [*SPECIAL_TOKENS, *(a for a in alphabet if a not in SPECIAL_TOKENS)]
    counts: Counter = Counter()
    where: dict[tuple[str, str], set[str]] = {}
    for w, symbols in words.items():
        for pair, n in _pairs(symbols).items():
            counts[pair] += n * word_counts[w]
            where.setdefault(pair, set()).add(w)
    heap = [(-n, pair) for pair, n in counts.items()]
    heapq.heapify(heap)
    known = set(vocab)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -negative:  # stale entry; the current count was pushed again
            continue
        if -negative < min_frequency:
            break
        piece = pair[0] + pair[1].removeprefix("##")
        if piece not in known:
            vocab.append(piece)
            known.add(piece)
        changed = set()
        for w in sorted(where.pop(pair, ())):
            old, new = words[w], _merge(words[w], pair)
            for p, n in _pairs(old).items():
                counts[p] -= n * word_counts[w]
                changed.add(p)
            for p, n in _pairs(new).items():
                counts[p] += n * word_counts[w]
                where.setdefault(p, set()).add(w)
                changed.add(p)
            words[w] = new
        counts.pop(pair, None)
        for p in changed:
            if counts.get(p, 0) > 0:
                heapq.heappush(heap, (-counts[p], p))
            else:
                counts.pop(p, None)
    return vocab


def train_tokenizer(texts: Iterable[str], config: TokenizerConfig = TokenizerConfig()) -> AltTextTokenizer:
    """Learn a WordPiece vocabulary from ``texts`` (:func:`learn_vocab`, after BERT's
    normalisation and pre-tokenisation); the same texts give the same token ids in every process."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=config.strip_accents,
        lowercase=config.lowercase,
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    word_counts: Counter = Counter()
    for text in texts:
        normalized = tokenizer.normalizer.normalize_str(text)
        word_counts.update(word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized))
    vocab = learn_vocab(word_counts, config.vocab_size, config.min_frequency)
    tokenizer.model = models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]",
                                       max_input_chars_per_word=100)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))  # never split, skipped by decode
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return AltTextTokenizer(tokenizer, config)
