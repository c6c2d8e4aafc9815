"""ALIGN's normalized-softmax contrastive loss, in both directions, with in-batch negatives.

With L2-normalised image embeddings ``x`` (N, D), text embeddings ``y`` (N, D) and temperature
σ, the logits are ``x @ y.T / σ`` and row i's positive is column i:

    L_i2t = -(1/N) Σ_i log softmax_j(x_iᵀ y_j / σ)[i]          (image → text)
    L_t2i = -(1/N) Σ_i log softmax_j(y_iᵀ x_j / σ)[i]          (text → image)

each optionally with label smoothing (0.1 in the paper). ALIGN trains on the **sum**
``L_i2t + L_t2i`` (so does kakaobrain's COYO-ALIGN); transformers' ``AlignModel`` returns their
**mean**. ``reduction`` picks one; the two differ by exactly a factor 2, which only rescales the
gradients (and so interacts with the learning rate, not with the optimum).

Across processes, :class:`ContrastiveLoss` gathers every rank's embeddings *with gradient* and
computes the loss of its local rows against all columns (the "local loss" of open_clip): N ranks
× B rows then behave as one batch of N·B in-batch negatives, and after DDP averages the
gradients, they equal those of one process on the concatenated batch (see :func:`gather_with_grad`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

REDUCTIONS = ("sum", "mean")


def contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    temperature: torch.Tensor | float,
    label_smoothing: float = 0.1,
    reduction: str = "sum",
) -> torch.Tensor:
    """The two-way loss of one batch: (N, D) and (N, D) unit-norm embeddings → scalar.

    ``reduction="sum"`` gives the paper's ``L_i2t + L_t2i``; ``"mean"`` transformers' average.
    """
    _check_arguments(image_embeds, text_embeds, label_smoothing, reduction)
    logits_per_image = image_embeds @ text_embeds.T / temperature  # (N, N)
    targets = torch.arange(len(image_embeds), device=image_embeds.device)
    return two_way_loss(logits_per_image, logits_per_image.T, targets, label_smoothing, reduction)


def _check_arguments(image_embeds: torch.Tensor, text_embeds: torch.Tensor, label_smoothing: float,
                     reduction: str) -> None:
    """Clear errors for what ``F.cross_entropy`` would accept silently (a negative smoothing, a
    1-D embedding) or reject with a confusing message."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if image_embeds.ndim != 2 or image_embeds.shape != text_embeds.shape or len(image_embeds) == 0:
        raise ValueError(
            f"need matching, non-empty (N, D) embeddings, got {tuple(image_embeds.shape)} and "
            f"{tuple(text_embeds.shape)}"
        )


def two_way_loss(
    logits_per_image: torch.Tensor,
    logits_per_text: torch.Tensor,
    targets: torch.Tensor,
    label_smoothing: float,
    reduction: str,
) -> torch.Tensor:
    """Cross-entropy both ways. ``logits_per_image`` (B, M): local images against all M texts;
    ``logits_per_text`` (B, M): local texts against all M images; ``targets`` (B,) the column of
    each row's positive."""
    i2t = F.cross_entropy(logits_per_image, targets, label_smoothing=label_smoothing)
    t2i = F.cross_entropy(logits_per_text, targets, label_smoothing=label_smoothing)
    total = i2t + t2i
    return total if reduction == "sum" else total / 2


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns this rank's slice of the summed incoming gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.world, ctx.rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(ctx.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # A copy, never ``grad`` itself: autograd may hand the same tensor to other branches
        # (e.g. both inputs of an add), and an in-place all_reduce would corrupt their gradients.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)  # every rank's loss depends on every rank's embeddings
        return grad.chunk(ctx.world)[ctx.rank]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """(B, D) on each of W ranks → (W·B, D) everywhere, gradients flowing back to the owner.

    With one process (or no process group) it is the identity.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


@dataclass(frozen=True)
class LossConfig:
    label_smoothing: float = 0.1  # the paper's
    reduction: str = "sum"  # the paper's; "mean" is transformers' AlignModel
    gather: bool = True  # use every rank's embeddings as negatives

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")


class ContrastiveLoss(nn.Module):
    """The loss of a (possibly distributed) batch, from each rank's local embeddings.

    ``forward(image_embeds (B, D), text_embeds (B, D), temperature)`` → scalar. With W ranks the
    local rows are scored against all W·B gathered columns; the per-rank loss is the loss of the
    global batch restricted to this rank's rows, so the mean over ranks (what DDP's gradient
    averaging computes) equals the single-process loss of the whole batch.
    """

    def __init__(self, config: LossConfig = LossConfig()):
        super().__init__()
        self.config = config

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor,
                temperature: torch.Tensor | float) -> torch.Tensor:
        _check_arguments(image_embeds, text_embeds, self.config.label_smoothing, self.config.reduction)
        if not self.config.gather:
            return contrastive_loss(image_embeds, text_embeds, temperature, self.config.label_smoothing,
                                    self.config.reduction)
        all_images, all_texts = gather_with_grad(image_embeds), gather_with_grad(text_embeds)
        offset = dist.get_rank() * len(image_embeds) if all_images is not image_embeds else 0
        targets = torch.arange(len(image_embeds), device=image_embeds.device) + offset
        logits_per_image = image_embeds @ all_texts.T / temperature  # (B, W·B)
        logits_per_text = text_embeds @ all_images.T / temperature  # (B, W·B)
        return two_way_loss(logits_per_image, logits_per_text, targets, self.config.label_smoothing,
                            self.config.reduction)
