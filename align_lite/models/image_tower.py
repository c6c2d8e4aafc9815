"""The image tower: an EfficientNet, built from scratch, pooled into one vector per image.

ALIGN (§4) uses EfficientNet "with global pooling (without training the 1x1 conv layer in the
classification head)". So the feature of an image is the global average of the last MBConv
stage's output, and its width is the tower's *native* dimension:

    pixels (B, 3, H, W) in [-1, 1]
      → stem conv (stride 2) → 7 MBConv stages (total stride 32) → (B, C, H/32, W/32)
      → global average pool → (B, C)
      → [Linear(C, embed_dim), only where C != embed_dim] → (B, embed_dim), not normalised

The blocks are torchvision's own (``torchvision.models.efficientnet``): we ask its config builder
for the MBConv stages of a given compound scaling (width multiplier, depth multiplier), build its
``EfficientNet`` with random weights and keep ``features[:-1]``, i.e. everything except the top
1x1 conv (``features[-1]``), the pooling and the classifier. Module names therefore stay
``features.0`` … ``features.7`` as in torchvision.

Native widths. The last stage has 320 channels at width 1.0, rounded to a multiple of 8 after
scaling (``_make_divisible``): B0 320, B3 384, B5 512, B7 640, and L2 (width 4.3) 320·4.3 = 1376
exactly. These are the paper's embedding sizes: 640 for B7, 1376 for L2 — both towers need no
projection. (The top 1x1 conv that ALIGN drops would have given 4x as many: 2560 for B7.)

Resolution is metadata (``image_size``): EfficientNet's compound scaling names one per variant
(B0 224 … B7 600, L2 800), but the network is fully convolutional and pooled, so any size works;
ALIGN pre-trains every variant at 289x289.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.efficientnet import EfficientNet, MBConvConfig, _efficientnet_conf

#: Output channels of EfficientNet's last MBConv stage at width multiplier 1.0 (Table 1 of Tan & Le).
LAST_STAGE_CHANNELS = 320


@dataclass(frozen=True)
class EfficientNetVariant:
    """One point of EfficientNet's compound scaling, as torchvision (B0–B7) and timm (L2) define it.

    ``head_dropout`` is the classifier's dropout in those libraries, kept for reference only: ALIGN
    has no classifier. ``bn_eps``/``bn_momentum`` are torchvision's (TF-style 1e-3/0.01 from B5 up).
    """

    width_mult: float
    depth_mult: float
    resolution: int
    head_dropout: float
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1


_TF_BN = dict(bn_eps=1e-3, bn_momentum=0.01)

#: torchvision's ``efficientnet_b*`` builders, plus Noisy Student's L2 (timm ``efficientnet_l2``).
VARIANTS: dict[str, EfficientNetVariant] = {
    "b0": EfficientNetVariant(1.0, 1.0, 224, 0.2),
    "b1": EfficientNetVariant(1.0, 1.1, 240, 0.2),
    "b2": EfficientNetVariant(1.1, 1.2, 260, 0.3),
    "b3": EfficientNetVariant(1.2, 1.4, 300, 0.3),
    "b4": EfficientNetVariant(1.4, 1.8, 380, 0.4),
    "b5": EfficientNetVariant(1.6, 2.2, 456, 0.4, **_TF_BN),
    "b6": EfficientNetVariant(1.8, 2.6, 528, 0.5, **_TF_BN),
    "b7": EfficientNetVariant(2.0, 3.1, 600, 0.5, **_TF_BN),
    "l2": EfficientNetVariant(4.3, 5.3, 800, 0.5, **_TF_BN),
}


def native_width(width_mult: float) -> int:
    """Channels of the last MBConv stage at ``width_mult`` (torchvision's rounding to 8)."""
    return MBConvConfig.adjust_channels(LAST_STAGE_CHANNELS, width_mult)


@dataclass(frozen=True)
class ImageTowerConfig:
    """An EfficientNet image tower.

    ``embed_dim=None`` means the native width (no projection), which is what ALIGN does.
    ``dropout`` acts on the pooled feature before the (optional) projection; 0 by default since
    ALIGN, kakaobrain's COYO-ALIGN and transformers' ``AlignVisionModel`` use none.
    ``stochastic_depth_prob`` is torchvision's drop-path rate, linearly increased over blocks.
    """

    width_mult: float = 1.0
    depth_mult: float = 1.0
    embed_dim: int | None = None
    image_size: int = 224
    dropout: float = 0.0
    stochastic_depth_prob: float = 0.2
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.width_mult <= 0 or self.depth_mult <= 0:
            raise ValueError(f"width_mult and depth_mult must be > 0, got {self.width_mult}, {self.depth_mult}")
        if self.embed_dim is not None and self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1 or None, got {self.embed_dim}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32 (total stride), got {self.image_size}")
        if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.stochastic_depth_prob < 1.0):
            raise ValueError("dropout and stochastic_depth_prob must be in [0, 1)")

    @classmethod
    def from_variant(cls, variant: str, **overrides) -> ImageTowerConfig:
        """``"b0"`` … ``"b7"``, ``"l2"`` with its width, depth, resolution and BN settings;
        ``overrides`` replace any field (e.g. ``image_size=289``, ``embed_dim=640``)."""
        key = variant.lower().removeprefix("efficientnet-").removeprefix("efficientnet_")
        if key not in VARIANTS:
            raise KeyError(f"unknown EfficientNet variant {variant!r}; valid: {', '.join(VARIANTS)}")
        v = VARIANTS[key]
        fields = dict(
            width_mult=v.width_mult, depth_mult=v.depth_mult, image_size=v.resolution,
            bn_eps=v.bn_eps, bn_momentum=v.bn_momentum, name=f"efficientnet-{key}",
        )
        return cls(**{**fields, **overrides})

    @property
    def native_dim(self) -> int:
        """Width of the pooled last MBConv stage."""
        return native_width(self.width_mult)

    @property
    def output_dim(self) -> int:
        """Width of the tower's output: ``embed_dim`` or, when None, the native width."""
        return self.embed_dim if self.embed_dim is not None else self.native_dim

    @property
    def has_projection(self) -> bool:
        return self.output_dim != self.native_dim


class ImageTower(nn.Module):
    """pixels (B, 3, H, W) in [-1, 1] → (B, output_dim) image features, not normalised.

    ``gradient_checkpointing = True`` recomputes each MBConv stage in the backward pass instead of
    storing its activations (training mode only). Batch-norm running statistics are updated once
    per step, as without checkpointing (see :func:`frozen_batchnorm_stats`).
    The tower works in ``channels_last`` as is: ``tower.to(memory_format=torch.channels_last)``.

    Untrained and in eval mode, batch norm still holds its initial running statistics (mean 0,
    variance 1) while the real activations are far smaller, so they shrink ~10x per stage and the
    pooled features are ~1e-14 (they still normalise to unit vectors, see ``l2_normalize``). Run a
    few training-mode forwards before evaluating an untrained model, or expect tiny features.
    """

    def __init__(self, config: ImageTowerConfig):
        super().__init__()
        self.config = config
        # B0's stage table (every "efficientnet_b*" shares it), scaled by our width and depth.
        stages, _ = _efficientnet_conf("efficientnet_b0", width_mult=config.width_mult, depth_mult=config.depth_mult)
        net = EfficientNet(
            stages, dropout=0.0, stochastic_depth_prob=config.stochastic_depth_prob, num_classes=1,
            norm_layer=partial(nn.BatchNorm2d, eps=config.bn_eps, momentum=config.bn_momentum),
        )
        # Stem + MBConv stages; the top 1x1 conv (features[-1]), pooling and classifier are dropped.
        self.features = nn.Sequential(*list(net.features)[:-1])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.projection = nn.Linear(config.native_dim, config.output_dim) if config.has_projection else None
        self.gradient_checkpointing = False

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected pixels of shape (B, 3, H, W), got {tuple(pixels.shape)}")
        x = pixels
        for stage in self.features:  # (B, 3, H, W) → (B, native_dim, H/32, W/32)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(
                    stage, x, use_reentrant=False,
                    context_fn=lambda stage=stage: (contextlib.nullcontext(), frozen_batchnorm_stats(stage)),
                )
            else:
                x = stage(x)
        x = self.dropout(self.pool(x).flatten(1))  # (B, native_dim)
        return self.projection(x) if self.projection is not None else x

    def num_parameters(self, include_projection: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not include_projection and self.projection is not None:
            n -= sum(p.numel() for p in self.projection.parameters())
        return n


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Keep batch-norm running statistics unchanged through a training-mode forward of ``module``.

    Used when a forward is a repeat: a checkpointed stage recomputed in the backward pass, or the
    no-gradient pass of gradient accumulation (:mod:`align_lite.train`), where batch norm would
    otherwise fold the same batch into ``running_mean``/``running_var`` twice. With momentum 0 the running
    statistics stay put (the normalisation itself uses batch statistics, so outputs and gradients
    are unchanged), and ``num_batches_tracked`` is restored afterwards.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
