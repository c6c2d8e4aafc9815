"""Budgets measured on the meta device equal what the real towers do on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from align_lite.budget import (
    GIB, GPUS, ModelCost, TowerCost, _saved_bytes, image_tower_cost, memory_per_device, model_cost,
    text_tower_cost, training_days,
)
from align_lite.models import get_preset
from align_lite.models.image_tower import ImageTower


def test_meta_measurements_equal_a_real_run_on_cpu():
    config = get_preset("tiny").image
    tower = ImageTower(config).train()
    x = torch.randn(1, 3, config.image_size, config.image_size, requires_grad=True)
    counter = FlopCounterMode(display=False)
    with counter:
        _, saved = _saved_bytes(lambda: tower(x))
    cost = image_tower_cost("tiny")
    assert cost.forward_flops == counter.get_total_flops() > 0
    assert cost.activation_bytes == saved
    assert 0 < cost.checkpointed_bytes < cost.activation_bytes


def test_b3_forward_flops_match_the_published_efficientnet_b3():
    # torchvision's EfficientNet-B3 is ~1.8 GMACs at 300 px; ours at 289 px, without the head conv
    flops = image_tower_cost("b3-mini").forward_flops
    assert 3.0e9 < flops < 3.7e9
    text = text_tower_cost("b3-mini", 64)
    assert 0 < text.forward_flops < flops and 0 < text.checkpointed_bytes < text.activation_bytes


def test_memory_and_time_arithmetic():
    cost = ModelCost("toy", parameters=GIB // 16, image=TowerCost(1e9, GIB, GIB / 4), text=TowerCost(1e9, 0.0, 0.0))
    assert cost.train_flops == 6e9
    memory = memory_per_device(cost, per_device_batch=4, precision="fp32")
    assert memory == {"state": 1.0, "activations": 4.0, "total": 5.0}
    assert memory_per_device(cost, 4, "bf16", checkpointing=True)["activations"] == 0.5
    peak = GPUS["A100 80GB"][0] * 1e12
    days = training_days(cost, global_batch=1000, steps=100, gpu="A100 80GB", devices=2, mfu=0.5)
    assert days == pytest.approx(6e9 * 1000 * 100 / (2 * peak * 0.5) / 86_400)
    with pytest.raises(ValueError):
        training_days(cost, 1, 1, "Z100", 1)
    with pytest.raises(ValueError):
        memory_per_device(cost, 1, "int8")


def test_bigger_presets_cost_more():
    small, large = model_cost("tiny"), model_cost("b3-mini")
    assert large.parameters > small.parameters and large.train_flops > 10 * small.train_flops
    assert large.activation_bytes() > large.activation_bytes(checkpointing=True)
