"""The dual encoder: towers, presets, temperature, logits, parameter counts, checkpointing."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.efficientnet import MBConv

from align_lite.models import (
    AlignConfig,
    AlignDualEncoder,
    ImageTower,
    ImageTowerConfig,
    TextTower,
    TextTowerConfig,
    count_parameters,
    get_preset,
    list_presets,
    native_width,
)

EXPECTED_PRESETS = {"tiny", "tiny-wide", "b3-mini", "b5-base", "b7-base", "l2-large"}
# (native width, embed dim) per preset: ALIGN uses the image tower's native width (640 for B7,
# 1376 for L2); b5-base projects 512 → 640 as the paper's Table 8 baseline has D = 640.
EXPECTED_DIMS = {
    "tiny": (128, 128), "tiny-wide": (160, 128), "b3-mini": (384, 384),
    "b5-base": (512, 640), "b7-base": (640, 640), "l2-large": (1376, 1376),
}


def _inputs(config: AlignConfig, batch: int = 2, length: int = 8, size: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    input_ids = torch.randint(5, config.text.vocab_size, (batch, length), generator=g)
    input_ids[:, 0] = 2  # [CLS]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, length // 2:] = 0  # one padded text
    return pixels, input_ids, attention_mask


# --------------------------------------------------------------------------------------------
# Every preset: shapes and unit norms
# --------------------------------------------------------------------------------------------


def test_preset_registry_lists_the_expected_presets():
    assert set(list_presets()) == EXPECTED_PRESETS


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS - {"l2-large"}))
def test_preset_forward_shapes_and_unit_norms(name):
    config = get_preset(name)
    assert (config.image.native_dim, config.embed_dim) == EXPECTED_DIMS[name]
    torch.manual_seed(0)
    model = AlignDualEncoder(config).eval()
    pixels, input_ids, attention_mask = _inputs(config, batch=2, size=64)
    with torch.no_grad():
        out = model(pixels, input_ids[:1].expand(3, -1), attention_mask[:1].expand(3, -1))
    d = config.embed_dim
    assert out.image_embeds.shape == (2, d) and out.text_embeds.shape == (3, d)
    assert out.logits_per_image.shape == (2, 3) and out.logits_per_text.shape == (3, 2)
    assert torch.allclose(out.image_embeds.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(out.text_embeds.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.isfinite(out.logits_per_image).all()


def test_l2_large_shapes_on_the_meta_device():
    """EfficientNet-L2 + BERT-large (874 M parameters) is too big for a CPU test run: check its
    shapes without allocating anything."""
    config = get_preset("l2-large")
    assert config.image.width_mult == 4.3 and config.image.depth_mult == 5.3
    with torch.device("meta"):
        model = AlignDualEncoder(config).eval()
        out = model(torch.empty(2, 3, 64, 64), torch.zeros(3, 8, dtype=torch.long), None)
    assert out.image_embeds.shape == (2, 1376) and out.text_embeds.shape == (3, 1376)
    assert out.logits_per_image.shape == (2, 3)
    assert model.image.projection is None  # the paper's 1376 is L2's native width


# --------------------------------------------------------------------------------------------
# Logits and temperature
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> AlignDualEncoder:
    torch.manual_seed(0)
    return AlignDualEncoder(get_preset("tiny")).eval()


def test_logits_are_cosines_over_temperature_and_transposes(tiny_model):
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.log_temperature.fill_(math.log(0.05))
    pixels, input_ids, attention_mask = _inputs(model.config, batch=3)
    with torch.no_grad():
        out = model(pixels, input_ids[:2], attention_mask[:2])
        image = model.image_features(pixels)
        text = model.text_features(input_ids[:2], attention_mask[:2])
    # (features of an untrained EfficientNet in eval mode are ~1e-14: F.cosine_similarity's
    # eps would swamp them, so divide by the norms explicitly)
    cosine = (image / image.norm(dim=-1, keepdim=True)) @ (text / text.norm(dim=-1, keepdim=True)).T  # (3, 2)
    assert torch.allclose(out.logits_per_image, cosine / 0.05, atol=1e-4)
    assert torch.equal(out.logits_per_text, out.logits_per_image.T)
    assert torch.allclose(out.temperature, torch.tensor(0.05))
    assert torch.allclose(model.encode_image(pixels), image / image.norm(dim=-1, keepdim=True))
    assert not torch.allclose(image.norm(dim=-1), torch.ones(3))  # features are not normalised


def test_padding_is_masked(tiny_model):
    """Tokens behind the attention mask do not change the text embedding."""
    _, input_ids, attention_mask = _inputs(tiny_model.config, batch=1)
    attention_mask[:, 5:] = 0
    other = input_ids.clone()
    other[:, 5:] = 0
    with torch.no_grad():
        a = tiny_model.encode_text(input_ids, attention_mask)
        b = tiny_model.encode_text(other, attention_mask)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("learnable", [True, False])
def test_temperature_init_and_learnable_flag(learnable):
    config = AlignConfig(learnable_temperature=learnable)
    model = AlignDualEncoder(config)
    assert model.temperature.item() == pytest.approx(1.0)
    assert model.log_temperature.requires_grad is learnable
    out = model(*_inputs(config))
    out.logits_per_image.logsumexp(dim=1).mean().backward()
    assert (model.log_temperature.grad is not None) is learnable


def test_temperature_stays_positive_and_bounded_under_big_steps():
    model = AlignDualEncoder(AlignConfig())
    optimizer = torch.optim.SGD([model.log_temperature], lr=100.0)
    for _ in range(3):
        optimizer.zero_grad()
        model.temperature.backward()  # minimising σ pushes it down, as the contrastive loss does
        optimizer.step()
        assert model.temperature.item() > 0
    assert model.temperature.item() == pytest.approx(model.config.temperature_min)
    with torch.no_grad():
        model.log_temperature.fill_(50.0)
    assert model.temperature.item() == pytest.approx(model.config.temperature_max)


def test_config_validation():
    with pytest.raises(ValueError, match="embed_dim mismatch"):
        AlignConfig(embed_dim=64)
    with pytest.raises(ValueError, match="temperature"):
        AlignConfig(temperature_init=0.0)
    with pytest.raises(ValueError, match="divisible"):
        TextTowerConfig(hidden_size=100, num_heads=3)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        TextTowerConfig(max_position_embeddings=32)
    with pytest.raises(ValueError, match="width_mult"):
        ImageTowerConfig(width_mult=0)


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_config_dict_round_trip(name):
    config = get_preset(name)
    assert AlignConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown config keys"):
        AlignConfig.from_dict({**config.to_dict(), "embedding_size": 3})


def test_with_vocab_size_resizes_only_the_text_embeddings():
    config = get_preset("tiny").with_vocab_size(500)
    assert config.text.vocab_size == 500 and config.embed_dim == get_preset("tiny").embed_dim
    model = AlignDualEncoder(config)
    assert model.text.bert.embeddings.word_embeddings.weight.shape == (500, config.text.hidden_size)


# --------------------------------------------------------------------------------------------
# Image tower: torchvision's EfficientNet without its head
# --------------------------------------------------------------------------------------------


def _torchvision_backbone_parameters(variant: str) -> int:
    """torchvision's classification model minus the top 1x1 conv and the classifier."""
    with torch.device("meta"):
        net = getattr(torchvision.models, f"efficientnet_{variant}")(weights=None)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    return count(net) - count(net.features[-1]) - count(net.classifier)


@pytest.mark.parametrize("variant", ["b0", "b3", "b7"])
def test_image_tower_parameters_match_torchvision(variant):
    with torch.device("meta"):
        tower = ImageTower(ImageTowerConfig.from_variant(variant))
    reference = _torchvision_backbone_parameters(variant)
    assert abs(tower.num_parameters() - reference) <= 0.02 * reference
    assert tower.projection is None


@pytest.mark.parametrize("variant, width", [("b0", 320), ("b3", 384), ("b5", 512), ("b7", 640), ("l2", 1376)])
def test_native_widths(variant, width):
    config = ImageTowerConfig.from_variant(variant)
    assert native_width(config.width_mult) == config.native_dim == config.output_dim == width


def test_l2_parameter_arithmetic():
    """L2 is torchvision's EfficientNet at width 4.3, depth 5.3 (Noisy Student; timm's
    ``efficientnet_l2``): 480.3 M as a classifier, 467.2 M without the head ALIGN drops."""
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf

    with torch.device("meta"):
        stages, _ = _efficientnet_conf("efficientnet_b0", width_mult=4.3, depth_mult=5.3)
        full = EfficientNet(stages, dropout=0.5)
        tower = ImageTower(ImageTowerConfig.from_variant("l2"))
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(full) == pytest.approx(480.3e6, rel=1e-3)
    assert tower.num_parameters() == count(full) - count(full.features[-1]) - count(full.classifier)
    assert ImageTowerConfig.from_variant("l2").image_size == 800


def test_image_tower_has_no_top_conv_and_pools_the_last_mbconv_stage():
    tower = ImageTower(ImageTowerConfig(width_mult=0.25, depth_mult=0.25)).eval()
    assert isinstance(tower.features[-1][-1], MBConv)
    assert len(tower.features) == 8  # stem + 7 MBConv stages; torchvision has a 9th, the top conv
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        maps = tower.features(x)
        assert maps.shape == (2, 80, 2, 2)
        assert torch.allclose(tower(x), maps.mean(dim=(2, 3)), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tower(torch.rand(3, 64, 64))


def test_projection_only_where_native_width_differs_from_embed_dim():
    for name in EXPECTED_PRESETS:
        config = get_preset(name)
        with torch.device("meta"):
            model = AlignDualEncoder(config)
        assert (model.image.projection is not None) == (config.image.native_dim != config.embed_dim), name
        assert model.text.projection.out_features == config.embed_dim
    same = ImageTowerConfig(width_mult=0.4, depth_mult=0.25, embed_dim=128)  # native width is 128
    assert ImageTower(same).projection is None
    other = ImageTower(ImageTowerConfig(width_mult=0.4, depth_mult=0.25, embed_dim=96)).eval()
    assert other.projection is not None and other(torch.zeros(1, 3, 32, 32)).shape == (1, 96)


def test_image_tower_works_in_channels_last():
    torch.manual_seed(0)
    tower = ImageTower(ImageTowerConfig(width_mult=0.25, depth_mult=0.25)).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = tower(x)
        tower = tower.to(memory_format=torch.channels_last)
        got = tower(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-5)


def test_parameter_counts_per_tower():
    config = get_preset("b7-base")
    counts = count_parameters(config)
    assert counts["image"] == _torchvision_backbone_parameters("b7")  # 62.1 M (66.3 M with head)
    assert counts["image_projection"] == 0
    assert counts["text_projection"] == 768 * 640 + 640
    assert counts["text"] - counts["text_projection"] == pytest.approx(108.9e6, rel=1e-3)  # BERT-base, no pooler
    assert counts["total"] == counts["image"] + counts["text"] + 1  # + the temperature
    tiny = AlignDualEncoder(get_preset("tiny"))
    assert tiny.num_parameters() == count_parameters(get_preset("tiny"))


# --------------------------------------------------------------------------------------------
# Text tower
# --------------------------------------------------------------------------------------------


def test_text_tower_uses_cls_state_and_rejects_bad_ids():
    torch.manual_seed(0)
    tower = TextTower(TextTowerConfig(embed_dim=32)).eval()
    ids = torch.randint(5, 8000, (2, 10))
    with torch.no_grad():
        hidden = tower.bert(input_ids=ids).last_hidden_state
        assert torch.allclose(tower(ids), tower.projection(hidden[:, 0]), atol=1e-6)
    assert not hasattr(tower.bert, "pooler") or tower.bert.pooler is None
    with pytest.raises(ValueError, match="vocab_size"):
        tower(torch.full((1, 4), 8000))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        tower(torch.zeros(1, 65, dtype=torch.long))


def test_mean_pooling_averages_the_unpadded_states():
    torch.manual_seed(0)
    tower = TextTower(TextTowerConfig(embed_dim=32, pooling="mean")).eval()
    ids = torch.randint(5, 8000, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        hidden = tower.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = torch.stack([hidden[0].mean(0), hidden[1, :6].mean(0)])
        torch.testing.assert_close(tower(ids, mask), tower.projection(expected))
        padded = torch.cat([ids[1:, :6], torch.zeros(1, 20, dtype=torch.long)], 1)
        torch.testing.assert_close(tower(padded, (padded > 0).long() | (torch.arange(26) < 6).long()),
                                   tower(ids[1:, :6], mask[1:, :6]), atol=1e-5, rtol=1e-5)
        # no mask means every token counts
        torch.testing.assert_close(tower(ids), tower.projection(tower.bert(input_ids=ids).last_hidden_state.mean(1)))
        cls_tower = TextTower(TextTowerConfig(embed_dim=32, pooling="cls")).eval()
        cls_tower.load_state_dict(tower.state_dict())  # same weights: only the pooling differs
        assert not torch.allclose(cls_tower(ids, mask), tower(ids, mask))
    with pytest.raises(ValueError, match="pooling"):
        TextTowerConfig(pooling="max")


def test_cpu_presets_mean_pool_and_paper_presets_use_cls():
    assert {name: get_preset(name).text.pooling for name in list_presets()} == {
        "tiny": "mean", "tiny-wide": "mean", "b3-mini": "cls", "b5-base": "cls", "b7-base": "cls", "l2-large": "cls"}
    saved = get_preset("tiny").to_dict()
    assert AlignConfig.from_dict(saved).text.pooling == "mean"
    del saved["text"]["pooling"]  # a checkpoint written before pooling existed used [CLS]
    assert AlignConfig.from_dict(saved).text.pooling == "cls"


def test_fresh_cls_state_is_one_vector_for_every_text_and_the_mean_is_not():
    """The reason the CPU presets mean-pool: a fresh BERT's [CLS] state barely depends on the words."""
    torch.manual_seed(0)
    ids = torch.randint(5, 8000, (16, 12))
    ids[:, 0] = 2  # every text starts with the same [CLS] token
    spread = {}
    for pooling in ("cls", "mean"):
        torch.manual_seed(0)
        tower = TextTower(TextTowerConfig(pooling=pooling)).eval()
        with torch.no_grad():
            e = F.normalize(tower(ids), dim=-1)
        spread[pooling] = 1 - (e @ e.T)[~torch.eye(16, dtype=torch.bool)].mean().item()
    assert spread["cls"] < 1e-3 < spread["mean"] and spread["mean"] > 30 * spread["cls"]


def test_size_and_variant_tables():
    assert TextTowerConfig.from_size("mini").num_layers == 4 and TextTowerConfig.from_size("mini").hidden_size == 256
    large = TextTowerConfig.from_size("bert-large")
    assert (large.num_layers, large.hidden_size, large.num_heads, large.intermediate_size) == (24, 1024, 16, 4096)
    assert ImageTowerConfig.from_variant("B7").image_size == 600
    with pytest.raises(KeyError, match="b0, b1"):
        ImageTowerConfig.from_variant("b9")
    with pytest.raises(KeyError, match="tiny, mini"):
        TextTowerConfig.from_size("huge")


def test_unknown_preset_lists_valid_names():
    with pytest.raises(KeyError) as info:
        get_preset("b7-large")
    message = str(info.value)
    assert "b7-large" in message and all(name in message for name in EXPECTED_PRESETS)


# --------------------------------------------------------------------------------------------
# Gradient checkpointing
# --------------------------------------------------------------------------------------------


def test_gradient_checkpointing_gives_the_same_outputs_gradients_and_statistics():
    torch.manual_seed(0)
    plain = AlignDualEncoder(get_preset("tiny-wide")).train()
    checkpointed = copy.deepcopy(plain).set_gradient_checkpointing(True)
    calls = {"stage": 0, "layer": 0}
    # Pre-hooks on modules at the start of a checkpointed stage / BERT layer (a recomputation stops
    # once it has rebuilt the saved tensors, and transformers checkpoints a layer's forward, not its
    # __call__, so hooks on the checkpointed module itself do not see the recomputation).
    def counter(key):
        return lambda *_: calls.__setitem__(key, calls[key] + 1)

    checkpointed.image.features[2][0].register_forward_pre_hook(counter("stage"))
    checkpointed.text.bert.encoder.layer[0].attention.register_forward_pre_hook(counter("layer"))

    inputs = _inputs(plain.config, batch=4)
    results = []
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # same dropout / stochastic-depth draws
        out = model(*inputs)
        labels = torch.arange(4)
        loss = F.cross_entropy(out.logits_per_image, labels) + F.cross_entropy(out.logits_per_text, labels)
        loss.backward()
        results.append((out, model))
    assert calls == {"stage": 2, "layer": 2}  # forward + recomputation: checkpointing did happen

    (out_a, a), (out_b, b) = results
    assert torch.allclose(out_a.logits_per_image, out_b.logits_per_image, atol=1e-5)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), name
    for (name, s), t in zip(a.state_dict().items(), b.state_dict().values()):  # BN statistics updated once
        assert torch.allclose(s.float(), t.float(), atol=1e-6), name

    checkpointed.set_gradient_checkpointing(False)
    assert not checkpointed.image.gradient_checkpointing and not checkpointed.text.gradient_checkpointing
