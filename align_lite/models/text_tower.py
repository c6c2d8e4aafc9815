"""The text tower: BERT, its [CLS] state (or the mean of its states), and a linear layer to D.

ALIGN (§4): "we use BERT … with [CLS] token embedding as the text embedding … We add a fully
connected layer with linear activation on top of BERT encoder to match the dimension from the
image tower." So:

    input_ids, attention_mask (B, L)
      → BERT encoder (no pooler: its tanh layer is not used) → (B, L, hidden)
      → hidden state of the first token, [CLS] → (B, hidden)
        (``pooling="mean"``: the mean over the non-padding tokens instead)
      → Linear(hidden, embed_dim) → (B, embed_dim), not normalised

Why a second pooling. At initialisation (BERT's weights ~ N(0, 0.02²)) attention is nearly uniform
and each layer adds only a tiny update to the residual stream, so the [CLS] state is almost the
[CLS] embedding itself: the *same* vector for every text. Over the 64 "a photo of a {colour}
{shape}" prompts, a fresh ``tiny`` tower's [CLS] embeddings have mean pairwise cosine 0.99995;
mean pooling gives about 0.98 (Chapter 2), because every word's own embedding is in the average.
A paper-sized run has 10⁵–10⁶ steps to teach [CLS] to gather the words; a two-minute CPU run
does not, and the towers then stay blind to the words that the image side does not already
separate by itself (in the world: shape, see ``benchmarks/tiny_recipe.py``). The paper presets
keep [CLS]; the CPU presets (``tiny``, ``tiny-wide``) use mean pooling, as sentence-transformers
and open_clip's ``mean_pooler`` do.

BERT is transformers' ``BertModel`` built from a ``BertConfig`` with random weights (nothing is
downloaded). Sizes follow Turc et al.'s compact BERTs and the original BERT:

| size  | layers | hidden | heads | FFN  |
|-------|--------|--------|-------|------|
| tiny  | 2      | 128    | 2     | 512  |  (CPU runs; Turc et al.'s BERT-tiny)
| mini  | 4      | 256    | 4     | 1024 |  (COYO-ALIGN B3 + BERT-mini)
| small | 4      | 512    | 8     | 2048 |
| base  | 12     | 768    | 12    | 3072 |  (ablations, B7 + BERT-base)
| large | 24     | 1024   | 16    | 4096 |  (the main ALIGN model)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import BertConfig, BertModel


@dataclass(frozen=True)
class BertSize:
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int


BERT_SIZES: dict[str, BertSize] = {
    "tiny": BertSize(2, 128, 2, 512),
    "mini": BertSize(4, 256, 4, 1024),
    "small": BertSize(4, 512, 8, 2048),
    "base": BertSize(12, 768, 12, 3072),
    "large": BertSize(24, 1024, 16, 4096),
}


POOLINGS = ("cls", "mean")


@dataclass(frozen=True)
class TextTowerConfig:
    """A BERT text tower. ``vocab_size`` must cover the tokenizer's ids; ``max_position_embeddings``
    the longest sequence (the paper uses 64 tokens; BERT's own checkpoints have 512)."""

    num_layers: int = 2
    hidden_size: int = 128
    num_heads: int = 2
    intermediate_size: int = 512
    embed_dim: int = 128
    vocab_size: int = 8_000
    max_position_embeddings: int = 64
    dropout: float = 0.1  # BERT's hidden and attention-probability dropout
    pad_token_id: int = 0  # AltTextTokenizer puts [PAD] first
    pooling: str = "cls"  # "cls" (the paper's [CLS] state) or "mean" (over the non-padding tokens)
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if min(self.num_layers, self.embed_dim, self.vocab_size, self.intermediate_size) < 1:
            raise ValueError("num_layers, embed_dim, vocab_size and intermediate_size must be >= 1")
        if self.max_position_embeddings < 64:
            raise ValueError(
                f"max_position_embeddings must be >= 64 (the paper's text length), got {self.max_position_embeddings}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")

    @classmethod
    def from_size(cls, size: str, **overrides) -> TextTowerConfig:
        """``"tiny"``, ``"mini"``, ``"small"``, ``"base"`` or ``"large"``; ``overrides`` replace fields."""
        key = size.lower().removeprefix("bert-").removeprefix("bert_")
        if key not in BERT_SIZES:
            raise KeyError(f"unknown BERT size {size!r}; valid: {', '.join(BERT_SIZES)}")
        s = BERT_SIZES[key]
        fields = dict(
            num_layers=s.num_layers, hidden_size=s.hidden_size, num_heads=s.num_heads,
            intermediate_size=s.intermediate_size, name=f"bert-{key}",
        )
        return cls(**{**fields, **overrides})

    def bert_config(self) -> BertConfig:
        return BertConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings, hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.dropout, pad_token_id=self.pad_token_id,
        )


class TextTower(nn.Module):
    """input_ids, attention_mask (B, L) int64 → (B, embed_dim) text features, not normalised."""

    def __init__(self, config: TextTowerConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config.bert_config(), add_pooling_layer=False)
        self.projection = nn.Linear(config.hidden_size, config.embed_dim)  # "FC layer with linear activation"
        self._gradient_checkpointing = False

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.ndim != 2:
            raise ValueError(f"expected input_ids of shape (B, L), got {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}"
            )
        # Ids outside the vocabulary (a tokenizer/model mismatch) get a clear error; checked on CPU
        # only, where it costs no device synchronisation.
        if input_ids.device.type == "cpu" and input_ids.numel() and not (
            0 <= int(input_ids.min()) and int(input_ids.max()) < self.config.vocab_size
        ):
            raise ValueError(
                f"token ids must lie in [0, {self.config.vocab_size}) (vocab_size), got "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]: tokenizer and text tower disagree"
            )
        # use_cache=False: an encoder keeps no KV cache (and checkpointing would warn about it)
        bert_out = self.bert(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = bert_out.last_hidden_state  # (B, L, hidden)
        if self.config.pooling == "mean":
            return self.projection(masked_mean(hidden, attention_mask))  # (B, embed_dim)
        return self.projection(hidden[:, 0])  # [CLS] → (B, embed_dim)

    @property
    def gradient_checkpointing(self) -> bool:
        return self._gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, enabled: bool) -> None:
        """BERT's own activation checkpointing, one layer at a time (non-reentrant)."""
        kwargs = {"use_reentrant": False}
        if hasattr(self.bert, "activation_checkpointing_enable"):  # transformers >= 5.x
            if enabled:
                self.bert.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                self.bert.activation_checkpointing_disable()
        elif enabled:
            self.bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            self.bert.gradient_checkpointing_disable()
        self._gradient_checkpointing = bool(enabled)

    def num_parameters(self, include_projection: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not include_projection:
            n -= sum(p.numel() for p in self.projection.parameters())
        return n


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L, H) states and (B, L) mask (1 = token, 0 = padding; None = all tokens) → (B, H), the
    mean over each row's tokens. A row with no tokens at all gives zeros, not NaN."""
    if attention_mask is None:
        return hidden.mean(1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
