"""Compute, memory and time budgets of a training run (Chapter 7), measured without a GPU.

Both towers are built on PyTorch's *meta* device: tensors with shapes and dtypes but no data, so
even EfficientNet-L2 + BERT-large costs no memory and a second to "run". On it we measure, per
image–text pair,

* **forward FLOPs**, counted by ``torch.utils.flop_counter.FlopCounterMode``; a training step
  costs about 3× that (forward, plus a backward pass that computes gradients for both the
  activations and the weights);
* **activation memory**: the bytes of every tensor autograd saves for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``), with and without gradient checkpointing. With
  checkpointing only each stage's input is kept, and the backward pass recomputes one stage at a
  time, so the peak is the kept inputs plus the largest stage (measured stage by stage for
  EfficientNet; for BERT approximated by the mean layer).

From those, :func:`memory_per_device` adds the model state (fp32 weights, gradients and two
optimizer moments: 16 bytes per parameter for AdamW or LAMB) to ``per-device batch ×
activations`` (halved under bf16 autocast, as most activations are then bf16), and
:func:`training_days` turns a recipe's FLOPs into days on a number of GPUs at an assumed MFU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from align_lite.models import get_preset
from align_lite.models.image_tower import ImageTower
from align_lite.models.text_tower import TextTower

STATE_BYTES_PER_PARAMETER = 16  # fp32 weight + gradient + two optimizer moments (AdamW, LAMB)
GIB = 2**30

#: (dense bf16 tensor-core TFLOP/s from the datasheet, memory GiB, typical cloud $ per GPU-hour).
#: Prices are indicative on-demand list prices of 2025–2026 and vary by provider.
GPUS: dict[str, tuple[float, int, float]] = {
    "H100 80GB": (989.0, 80, 3.0),
    "A100 80GB": (312.0, 80, 1.8),
    "A100 40GB": (312.0, 40, 1.3),
    "L4 24GB": (121.0, 24, 0.8),
    "T4 16GB": (65.0, 16, 0.35),
}


def _saved_bytes(fn) -> tuple[object, int]:
    """Run ``fn()`` and add up the bytes of every tensor autograd saves for the backward pass."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


@dataclass(frozen=True)
class TowerCost:
    """Per pair: forward FLOPs, activation bytes saved for backward (fp32), and the peak of saved
    bytes with gradient checkpointing."""

    forward_flops: float
    activation_bytes: float
    checkpointed_bytes: float


def image_tower_cost(preset: str) -> TowerCost:
    """EfficientNet of ``preset`` on one (1, 3, S, S) image, on the meta device."""
    config = get_preset(preset).image
    size = config.image_size
    with torch.device("meta"):
        tower = ImageTower(config).train()
        x = torch.randn(1, 3, size, size, requires_grad=True)
        counter = FlopCounterMode(display=False)
        with counter:
            _, total = _saved_bytes(lambda: tower(x))
        stage_bytes, kept, h = [], 0, x
        for stage in tower.features:  # stage by stage, as checkpointing recomputes them
            kept += h.numel() * h.element_size()
            h, saved = _saved_bytes(lambda stage=stage, h=h: stage(h))
            stage_bytes.append(saved)
    return TowerCost(float(counter.get_total_flops()), float(total), float(kept + max(stage_bytes)))


def text_tower_cost(preset: str, text_length: int = 64) -> TowerCost:
    """BERT of ``preset`` on one (1, L) text, on the meta device (no attention mask: a full text)."""
    config = get_preset(preset).text
    with torch.device("meta"):
        tower = TextTower(config).train()
        ids = torch.zeros(1, text_length, dtype=torch.long)
        counter = FlopCounterMode(display=False)
        with counter:
            _, total = _saved_bytes(lambda: tower(ids, None))
        tower.gradient_checkpointing = True
        _, kept = _saved_bytes(lambda: tower(ids, None))
    layers = config.num_layers
    return TowerCost(float(counter.get_total_flops()), float(total), float(kept + total / layers))


@dataclass(frozen=True)
class ModelCost:
    """A preset's cost per image–text pair (``text_length`` tokens) and its parameter count."""

    preset: str
    parameters: int
    image: TowerCost
    text: TowerCost

    @property
    def train_flops(self) -> float:
        """FLOPs of one training step per pair: 3 × (image + text forward)."""
        return 3.0 * (self.image.forward_flops + self.text.forward_flops)

    def activation_bytes(self, checkpointing: bool = False) -> float:
        if checkpointing:
            return self.image.checkpointed_bytes + self.text.checkpointed_bytes
        return self.image.activation_bytes + self.text.activation_bytes


def model_cost(preset: str, text_length: int = 64) -> ModelCost:
    """FLOPs and activation memory per pair of ``preset``, measured on the meta device."""
    from align_lite.models import count_parameters

    return ModelCost(preset, count_parameters(get_preset(preset))["total"], image_tower_cost(preset),
                     text_tower_cost(preset, text_length))


def memory_per_device(cost: ModelCost, per_device_batch: int, precision: str = "bf16",
                      checkpointing: bool = False) -> dict[str, float]:
    """GiB per device: ``state`` (fp32 weights, gradients, 2 optimizer moments), ``activations``
    (per-device batch × per-pair activations; × 1/2 under bf16/fp16 autocast) and ``total``.
    Leaves out framework workspace and fragmentation: keep ~10–20 % headroom."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    state = cost.parameters * STATE_BYTES_PER_PARAMETER / GIB
    scale = 1.0 if precision == "fp32" else 0.5
    activations = per_device_batch * cost.activation_bytes(checkpointing) * scale / GIB
    return {"state": state, "activations": activations, "total": state + activations}


def training_days(cost: ModelCost, global_batch: int, steps: int, gpu: str, devices: int,
                  mfu: float = 0.35) -> float:
    """Days of training for ``steps`` steps of ``global_batch`` pairs on ``devices`` GPUs of kind
    ``gpu`` (a key of :data:`GPUS`) that reach ``mfu`` of their bf16 peak."""
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    if not 0 < mfu <= 1 or devices < 1:
        raise ValueError("need 0 < mfu <= 1 and devices >= 1")
    peak = GPUS[gpu][0] * 1e12
    seconds = cost.train_flops * global_batch * steps / (devices * peak * mfu)
    return seconds / 86_400


__all__ = ["GPUS", "ModelCost", "TowerCost", "image_tower_cost", "memory_per_device", "model_cost",
           "text_tower_cost", "training_days"]
