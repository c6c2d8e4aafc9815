"""Optimizers and learning-rate schedules for contrastive training (Chapter 4).

ALIGN trains with **LAMB**, weight decay 1e-5, a learning rate warmed up linearly from 0 to 1e-3
over 10 k steps and then decayed linearly to 0 at 1.2 M steps (see ``align_paper_facts.md``). We
offer LAMB (timm's implementation) and AdamW (our CPU default: at small batch sizes LAMB's
layer-wise trust ratio buys nothing and AdamW is the better-known baseline).

Weight decay is applied only to matrices and convolution kernels: parameters with ``ndim < 2``
(biases, batch-norm and layer-norm scales and shifts) and the temperature are left alone, as in
open_clip and kakaobrain's COYO-ALIGN (which excludes batch-norm weights). Frozen parameters (a
fixed temperature) are not handed to the optimizer at all.

The temperature has a group of its own so that its learning rate can be scaled. Adam-type
optimizers move a parameter by about ``lr`` per step whatever its gradient, so ``log σ`` needs
about ln(64) / lr ≈ 4 000 steps at lr 1e-3 to go from 1 to 1/64: nothing at the paper's 1.2 M
steps, most of a short CPU run. Short runs therefore raise ``temperature_lr_scale``.

The schedule is a multiplier of the base learning rate, as a function of the number of optimizer
steps already taken, ``s`` (0 for the first step), with ``W`` warm-up steps and ``T`` steps in all:

    warm-up (s < W):     (s + 1) / W                  the first step already learns (open_clip)
    linear   (s >= W):   1 - (s - W) / (T - W)        reaches 0 at s = T (the paper's decay)
    cosine   (s >= W):   ½ (1 + cos(π (s - W) / (T - W)))
    constant (s >= W):   1
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

OPTIMIZERS = ("adamw", "lamb")
SCHEDULES = ("linear", "cosine", "constant")
TEMPERATURE_PARAM = "log_temperature"


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                 temperature_lr_scale: float = 1.0, image_lr_scale: float = 1.0) -> list[dict]:
    """Up to five optimizer groups, each with ``names`` (the parameter names, for reports and
    tests), ``group`` (its label) and ``lr_scale`` (its learning rate over the base ``lr``):

    * ``decay``: matrices and kernels (ndim >= 2), with ``weight_decay``;
    * ``no_decay``: biases and norm parameters (ndim < 2), weight decay 0;
    * ``temperature``: the learnable temperature, weight decay 0, ``lr_scale`` = ``temperature_lr_scale``;
    * ``image_decay`` / ``image_no_decay``: only when ``image_lr_scale`` is not 1, the image
      tower's parameters (names starting ``image.``), split the same way, ``lr_scale`` =
      ``image_lr_scale``.

    When ``lr`` is given, each group's ``lr`` is ``lr * lr_scale``. Frozen parameters (a fixed
    temperature) are left out.
    """
    members: dict[str, list[tuple[str, nn.Parameter]]] = {
        "decay": [], "no_decay": [], "temperature": [], "image_decay": [], "image_no_decay": []}
    scales = {"temperature": temperature_lr_scale, "image_decay": image_lr_scale, "image_no_decay": image_lr_scale}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.split(".")[-1] == TEMPERATURE_PARAM:
            members["temperature"].append((name, param))
            continue
        label = "decay" if param.ndim >= 2 else "no_decay"
        if image_lr_scale != 1.0 and name.startswith("image."):
            label = "image_" + label
        members[label].append((name, param))
    groups = []
    for label, params in members.items():
        if not params:
            continue
        scale = scales.get(label, 1.0)
        group = {"params": [p for _, p in params], "names": [n for n, _ in params],
                 "weight_decay": weight_decay if label in ("decay", "image_decay") else 0.0,
                 "group": label, "lr_scale": scale}
        if lr is not None:
            group["lr"] = lr * scale
        groups.append(group)
    return groups


@dataclass(frozen=True)
class OptimizerConfig:
    """Which optimizer, at what rates: the paper's are LAMB, lr 1e-3, weight decay 1e-5.

    ``temperature_lr_scale`` / ``image_lr_scale`` multiply ``lr`` for the temperature and the
    image tower (see :func:`param_groups`)."""

    name: str = "adamw"  # "adamw" or "lamb"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    temperature_lr_scale: float = 1.0
    image_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; choose one of {OPTIMIZERS}")


def build_optimizer(model: nn.Module, config: OptimizerConfig = OptimizerConfig()) -> torch.optim.Optimizer:
    """AdamW (``torch.optim``) or LAMB (``timm.optim.Lamb``) over :func:`param_groups`.

    timm's LAMB clips the global gradient norm to 1 on its own by default; we turn that off
    (``max_grad_norm=None``) so that clipping happens once, in the trainer, where it is reported.
    """
    c = config
    groups = param_groups(model, c.weight_decay, c.lr, c.temperature_lr_scale, c.image_lr_scale)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    lr, betas, eps, weight_decay = c.lr, c.betas, c.eps, c.weight_decay
    if c.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    try:  # "lamb", the only other name OptimizerConfig allows
        from timm.optim import Lamb
    except ImportError as err:  # pragma: no cover - timm is a dependency
        raise ImportError("optimizer 'lamb' needs timm (pip install 'timm>=0.9')") from err
    return Lamb(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_grad_norm=None)


@dataclass(frozen=True)
class Schedule:
    """The learning-rate multiplier at step ``s`` (see the module docstring); a picklable callable
    for :class:`torch.optim.lr_scheduler.LambdaLR`."""

    kind: str = "linear"
    warmup_steps: int = 0
    total_steps: int = 1

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; choose one of {SCHEDULES}")
        if self.total_steps < 1 or not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(
                f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got "
                f"warmup_steps={self.warmup_steps}, total_steps={self.total_steps}"
            )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        span = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / span) if span > 0 else 1.0
        if self.kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def values(self, steps: Iterable[int]) -> list[float]:
        return [self(s) for s in steps]


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with the same multiplier for every group; call ``.step()`` after each
    optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


__all__ = ["OPTIMIZERS", "SCHEDULES", "OptimizerConfig", "Schedule", "build_optimizer", "build_scheduler",
           "param_groups"]
