"""ALIGN's dual encoder: two towers, one embedding space, one learnable temperature.

    pixels (B_img, 3, H, W) ──ImageTower──► (B_img, D) ──L2 norm──► x
    input_ids, attention_mask (B_txt, L) ──TextTower──► (B_txt, D) ──L2 norm──► y
    logits_per_image = x @ y.T / σ      (B_img, B_txt): the scaled cosine similarities
    logits_per_text  = y @ x.T / σ      (B_txt, B_img) = logits_per_image.T

σ is the temperature, shared by both directions of the loss; the paper learns it, starting at
1.0, and it converges to about 1/64. We store ``log σ`` (so σ = exp(·) is positive whatever an
optimizer does to the parameter) and clamp σ into ``[temperature_min, temperature_max]`` in the
forward, as open_clip clamps its logit scale (there at 100, i.e. σ >= 0.01). The default bounds
[1e-3, 10] leave room for the paper's fixed-temperature ablations (1/128, 1/64, 1/32). With
``learnable_temperature=False`` the parameter is kept (so checkpoints look the same) but frozen.

The conventions match transformers' ``AlignModel``: ``image_features``/``text_features`` are the
unnormalised tower outputs (``get_image_features``/``get_text_features``); ``encode_*`` return
unit vectors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from align_lite.models.image_tower import ImageTower, ImageTowerConfig
from align_lite.models.text_tower import TextTower, TextTowerConfig


@dataclass(frozen=True)
class AlignConfig:
    """Both towers and the temperature. ``embed_dim`` must equal both towers' output sizes (use
    :meth:`from_towers` to set them together). The defaults have the ``tiny`` preset's sizes."""

    image: ImageTowerConfig = ImageTowerConfig(width_mult=0.4, depth_mult=0.25, image_size=64)
    text: TextTowerConfig = TextTowerConfig(embed_dim=128)
    embed_dim: int = 128
    temperature_init: float = 1.0
    learnable_temperature: bool = True
    temperature_min: float = 1e-3
    temperature_max: float = 10.0
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.image.output_dim != self.embed_dim or self.text.embed_dim != self.embed_dim:
            raise ValueError(
                f"embed_dim mismatch: AlignConfig.embed_dim={self.embed_dim}, image tower outputs "
                f"{self.image.output_dim} (native width {self.image.native_dim}), text tower outputs "
                f"{self.text.embed_dim}; build the config with AlignConfig.from_towers(...)"
            )
        if not 0 < self.temperature_min <= self.temperature_init <= self.temperature_max:
            raise ValueError(
                "need 0 < temperature_min <= temperature_init <= temperature_max, got "
                f"{self.temperature_min}, {self.temperature_init}, {self.temperature_max}"
            )

    @classmethod
    def from_towers(cls, image: ImageTowerConfig, text: TextTowerConfig, embed_dim: int | None = None,
                    **kwargs) -> AlignConfig:
        """Set ``embed_dim`` on both towers; ``None`` takes the image tower's native width (ALIGN's
        choice: 640 for B7, 1376 for L2), so that only the text tower projects."""
        embed_dim = image.native_dim if embed_dim is None else embed_dim
        image = replace(image, embed_dim=None if embed_dim == image.native_dim else embed_dim)
        return cls(image=image, text=replace(text, embed_dim=embed_dim), embed_dim=embed_dim, **kwargs)

    def with_vocab_size(self, vocab_size: int) -> AlignConfig:
        """The same model for a tokenizer with ``vocab_size`` ids (e.g. ``tokenizer.vocab_size``)."""
        return replace(self, text=replace(self.text, vocab_size=vocab_size))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AlignConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        data = dict(data)
        for key, tower_cls in (("image", ImageTowerConfig), ("text", TextTowerConfig)):
            if key in data:
                data[key] = tower_cls(**_known_fields(tower_cls, data[key], key))
        return cls(**_known_fields(cls, data, "AlignConfig"))


def _known_fields(cls, data: dict, where: str) -> dict:
    """``data`` after checking it names only fields of ``cls`` and that each value has the kind of
    its field's default (a number for a number, text for text, true/false for a flag)."""
    if not isinstance(data, dict):
        raise TypeError(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"{where}: unknown config keys {unknown}")
    for f in fields(cls):
        if f.name in data and isinstance(f.default, (bool, int, float, str)):
            _check_kind(data[f.name], f.default, f"{where}.{f.name}")
    return data


def _check_kind(value: object, default: object, where: str) -> None:
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        ok, kind = isinstance(value, str), "a string"
    if not ok:
        raise TypeError(f"{where}: expected {kind}, got {value!r} ({type(value).__name__})")


@dataclass
class AlignOutput:
    """What :meth:`AlignDualEncoder.forward` returns. Embeddings are L2-normalised."""

    image_embeds: torch.Tensor  # (B_img, D)
    text_embeds: torch.Tensor  # (B_txt, D)
    logits_per_image: torch.Tensor  # (B_img, B_txt) = image_embeds @ text_embeds.T / temperature
    logits_per_text: torch.Tensor  # (B_txt, B_img) = logits_per_image.T
    temperature: torch.Tensor  # () the clamped temperature used


class AlignDualEncoder(nn.Module):
    """EfficientNet image tower + BERT text tower + temperature (see the module docstring)."""

    def __init__(self, config: AlignConfig = AlignConfig()):
        super().__init__()
        self.config = config
        self.image = ImageTower(config.image)
        self.text = TextTower(config.text)
        self.log_temperature = nn.Parameter(
            torch.tensor(math.log(config.temperature_init)), requires_grad=config.learnable_temperature
        )

    # -- the two towers ------------------------------------------------------------------------

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → (B, D), not normalised (HF ``get_image_features``)."""
        return self.image(pixels)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) token ids and mask → (B, D), not normalised (HF ``get_text_features``)."""
        return self.text(input_ids, attention_mask)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, D) unit vectors."""
        return l2_normalize(self.image_features(pixels))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) → (B, D) unit vectors."""
        return l2_normalize(self.text_features(input_ids, attention_mask))

    # -- the temperature and the logits --------------------------------------------------------

    @property
    def temperature(self) -> torch.Tensor:
        """σ, a 0-d tensor in [temperature_min, temperature_max] (differentiable when learnable)."""
        return self.log_temperature.exp().clamp(self.config.temperature_min, self.config.temperature_max)

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> AlignOutput:
        image_embeds = self.encode_image(pixels)  # (B_img, D)
        text_embeds = self.encode_text(input_ids, attention_mask)  # (B_txt, D)
        temperature = self.temperature
        logits_per_text = text_embeds @ image_embeds.T / temperature  # (B_txt, B_img), as HF
        return AlignOutput(image_embeds, text_embeds, logits_per_text.T, logits_per_text, temperature)

    # -- bookkeeping ---------------------------------------------------------------------------

    def set_gradient_checkpointing(self, enabled: bool = True) -> AlignDualEncoder:
        """Recompute activations in the backward pass in both towers (less memory, ~30% slower)."""
        self.image.gradient_checkpointing = enabled
        self.text.gradient_checkpointing = enabled
        return self

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: ``image``/``text`` towers (projections included), their
        ``image_projection``/``text_projection`` layers alone, and the ``total``."""
        image_projection = self.image.num_parameters() - self.image.num_parameters(include_projection=False)
        text_projection = self.text.num_parameters() - self.text.num_parameters(include_projection=False)
        return {
            "image": self.image.num_parameters(),
            "text": self.text.num_parameters(),
            "image_projection": image_projection,
            "text_projection": text_projection,
            "total": sum(p.numel() for p in self.parameters()),
        }


def l2_normalize(features: torch.Tensor) -> torch.Tensor:
    """(..., D) → unit vectors along D; an all-zero row stays zero (no NaN).

    The norm is floored at the dtype's smallest normal number, not at ``F.normalize``'s 1e-12: an
    *untrained* EfficientNet in eval mode (batch-norm running statistics still at their initial
    mean 0, variance 1) shrinks its activations about 10x per stage, so its pooled features are
    ~1e-14 and would otherwise come out far shorter than unit length. (transformers' ``AlignModel``
    divides by the norm with no floor at all.)
    """
    return F.normalize(features, dim=-1, eps=torch.finfo(features.dtype).tiny)


def count_parameters(config: AlignConfig) -> dict[str, int]:
    """:meth:`AlignDualEncoder.num_parameters` without allocating weights (built on the meta
    device), so even the L2 + BERT-large configuration is counted in well under a second."""
    with torch.device("meta"):
        model = AlignDualEncoder(config)
    return model.num_parameters()
