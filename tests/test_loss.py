"""The contrastive loss (align_lite.loss) against transformers' AlignModel, a from-scratch loop
implementation, and the properties the chapter relies on (smoothing floor, temperature gradient)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AlignConfig, AlignModel, AlignTextConfig, AlignVisionConfig
from transformers.models.align.modeling_align import align_loss

from align_lite.loss import ContrastiveLoss, LossConfig, contrastive_loss, gather_with_grad, two_way_loss

DOUBLE = {"dtype": torch.float64}


def unit(n: int, d: int, seed: int = 0, **kw) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, **kw), dim=-1)


def pair(n: int = 8, d: int = 16, noise: float = 0.5, seed: int = 0, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and text unit vectors; text i = image i + noise, so the diagonal tends to win."""
    x = unit(n, d, seed, **kw)
    y = F.normalize(x + noise * unit(n, d, seed + 1, **kw), dim=-1)
    return x, y


def loop_loss(x: torch.Tensor, y: torch.Tensor, temperature: float, eps: float) -> float:
    """The paper's equations with smoothing, one row at a time, in plain Python floats."""
    n = len(x)

    def one_direction(a, b):
        total = 0.0
        for i in range(n):
            logits = [float(a[i] @ b[j]) / temperature for j in range(n)]
            top = max(logits)
            log_z = top + math.log(sum(math.exp(v - top) for v in logits))
            neg_log_p = [log_z - v for v in logits]  # -log softmax, every column
            total += (1 - eps) * neg_log_p[i] + eps * sum(neg_log_p) / n
        return total / n

    return one_direction(x, y) + one_direction(y, x)  # L_i2t + L_t2i


# -- transformers' AlignModel ------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 1 / 64, 0.37])
def test_mean_reduction_equals_transformers_align_loss(temperature):
    x, y = pair(12, 32, seed=3)
    hf = align_loss(y @ x.T / temperature)  # AlignModel: logits_per_text = text @ image.T / σ
    ours = contrastive_loss(x, y, temperature, label_smoothing=0.1, reduction="mean")
    torch.testing.assert_close(ours, hf)
    paper = contrastive_loss(x, y, temperature, label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(paper, 2 * hf, rtol=0, atol=0)  # exactly twice, not approximately
    assert contrastive_loss(x, y, temperature) == paper  # the default is the paper's sum


def _tiny_align_model() -> AlignModel:
    text = AlignTextConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=16)
    vision = AlignVisionConfig(image_size=32, width_coefficient=1.0, depth_coefficient=1.0, kernel_sizes=[3, 3],
                               in_channels=[32, 16], out_channels=[16, 16], strides=[1, 2],
                               num_block_repeats=[1, 1], expand_ratios=[1, 2], hidden_dim=64, drop_connect_rate=0.0)
    config = AlignConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16,
                         temperature_init_value=0.25)
    torch.manual_seed(0)
    return AlignModel(config).train()  # train mode: batch norm on batch statistics, well-spread embeddings


def test_equals_a_full_align_model_forward_and_its_gradients():
    model = _tiny_align_model()
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(6, 3, 32, 32, generator=g) * 2 - 1
    input_ids = torch.randint(5, 40, (6, 10), generator=g)
    out = model(input_ids=input_ids, pixel_values=pixels, return_loss=True)
    assert out.loss is not None and out.loss.item() > 0
    ours = contrastive_loss(out.image_embeds, out.text_embeds, model.temperature, reduction="mean")
    torch.testing.assert_close(ours, out.loss)
    torch.testing.assert_close(
        ContrastiveLoss(LossConfig(reduction="mean"))(out.image_embeds, out.text_embeds, model.temperature), out.loss
    )
    # the same gradient, down to the temperature parameter
    (hf_grad,) = torch.autograd.grad(out.loss, model.temperature, retain_graph=True)
    (our_grad,) = torch.autograd.grad(ours, model.temperature)
    torch.testing.assert_close(our_grad, hf_grad)


# -- from scratch --------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("temperature", [1.0, 1 / 16, 1 / 64])
def test_equals_a_loop_over_rows(eps, temperature):
    x, y = pair(7, 10, noise=0.8, seed=5, **DOUBLE)
    ours = contrastive_loss(x, y, temperature, label_smoothing=eps)
    assert ours.dtype == torch.float64
    assert ours.item() == pytest.approx(loop_loss(x, y, temperature, eps), rel=1e-12)


def test_rectangular_two_way_loss_with_offset_targets_matches_the_full_batch_rows():
    """A 'rank' holding rows 4..7 of an 8-batch scores them against all 8 columns."""
    x, y = pair(8, 16, seed=1, **DOUBLE)
    full_i2t = F.cross_entropy(x @ y.T / 0.1, torch.arange(8), label_smoothing=0.1, reduction="none")
    full_t2i = F.cross_entropy(y @ x.T / 0.1, torch.arange(8), label_smoothing=0.1, reduction="none")
    local = two_way_loss(x[4:] @ y.T / 0.1, y[4:] @ x.T / 0.1, torch.arange(4, 8), 0.1, "sum")
    torch.testing.assert_close(local, full_i2t[4:].mean() + full_t2i[4:].mean())


# -- properties ----------------------------------------------------------------------------------


def test_label_smoothing_changes_the_loss():
    x, y = pair()
    assert not torch.isclose(contrastive_loss(x, y, 0.1, label_smoothing=0.0), contrastive_loss(x, y, 0.1))


def test_perfect_alignment_reaches_the_smoothing_floor():
    n, eps = 8, 0.1
    x = torch.eye(n, **DOUBLE)  # orthonormal: positives at cosine 1, negatives at 0
    # without smoothing the loss goes to zero as σ → 0
    assert contrastive_loss(x, x, 1 / 64, label_smoothing=0.0).item() < 1e-20
    # with smoothing it cannot: the best possible is the entropy of the smoothed target q,
    # reached when softmax = q, i.e. at exp(1/σ*) = q_pos / q_neg
    q_pos, q_neg = 1 - eps + eps / n, eps / n
    entropy = -(q_pos * math.log(q_pos) + (n - 1) * q_neg * math.log(q_neg))
    best_temperature = 1 / math.log(q_pos / q_neg)
    floor = contrastive_loss(x, x, best_temperature, label_smoothing=eps)
    assert floor.item() == pytest.approx(2 * entropy, rel=1e-12)
    for temperature in (best_temperature / 4, best_temperature * 0.9, best_temperature * 1.1, 1.0):
        assert contrastive_loss(x, x, temperature, label_smoothing=eps) > floor
    # below σ* the smoothed negatives cost ε (n-1)/n · (1/σ) per direction: the loss grows again
    small = contrastive_loss(x, x, 1 / 64, label_smoothing=eps)
    assert small.item() == pytest.approx(2 * eps * (n - 1) / n * 64, rel=1e-3)


def test_random_embeddings_at_high_temperature_give_log_n():
    for n in (4, 64, 512):
        x, y = unit(n, 64, seed=0), unit(n, 64, seed=1)
        assert contrastive_loss(x, y, 100.0).item() == pytest.approx(2 * math.log(n), rel=1e-3)


def test_temperature_gradient_sign():
    """Aligned pairs want a sharper softmax (dL/dσ > 0: lowering σ lowers the loss); unrelated
    pairs want a flatter one (dL/dσ < 0)."""
    x, y = pair(16, 32, noise=0.3, seed=2)
    sigma = torch.tensor(0.5, requires_grad=True)
    contrastive_loss(x, y, sigma, label_smoothing=0.0).backward()
    assert sigma.grad > 0
    sigma = torch.tensor(0.05, requires_grad=True)
    contrastive_loss(unit(16, 32, seed=3), unit(16, 32, seed=4), sigma, label_smoothing=0.0).backward()
    assert sigma.grad < 0
    # with smoothing, even perfect alignment stops sharpening below σ* (the floor above)
    sigma = torch.tensor(0.01, requires_grad=True)
    contrastive_loss(torch.eye(8), torch.eye(8), sigma, label_smoothing=0.1).backward()
    assert sigma.grad < 0


def test_gradients_flow_to_both_sides_and_the_temperature():
    x, y = pair()
    x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
    sigma = torch.tensor(0.2, requires_grad=True)
    contrastive_loss(x, y, sigma).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (x, y, sigma))


def test_symmetric_in_image_and_text():
    x, y = pair(9, 12, seed=4)
    torch.testing.assert_close(contrastive_loss(x, y, 0.1), contrastive_loss(y, x, 0.1))


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"reduction": "none"}, "reduction"),
    ({"reduction": "avg"}, "reduction"),
    ({"label_smoothing": -0.1}, "label_smoothing"),  # torch's cross_entropy accepts this silently
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"label_smoothing": 1.5}, "label_smoothing"),
])
def test_bad_arguments_raise(kwargs, match):
    x, y = pair()
    with pytest.raises(ValueError, match=match):
        contrastive_loss(x, y, 0.1, **kwargs)


@pytest.mark.parametrize("shapes", [((8, 16), (7, 16)), ((8, 16), (8, 15)), ((16,), (16,)), ((0, 16), (0, 16))])
def test_bad_shapes_raise(shapes):
    a, b = torch.randn(*shapes[0]), torch.randn(*shapes[1])
    with pytest.raises(ValueError, match="embeddings"):
        contrastive_loss(a, b, 0.1)
    with pytest.raises(ValueError, match="embeddings"):
        ContrastiveLoss()(a, b, 0.1)


@pytest.mark.parametrize("kwargs", [{"label_smoothing": 1.0}, {"label_smoothing": -0.5}, {"reduction": "max"}])
def test_loss_config_validates(kwargs):
    with pytest.raises(ValueError):
        LossConfig(**kwargs)


# -- the module without a process group ----------------------------------------------------------


@pytest.mark.parametrize("config", [LossConfig(), LossConfig(label_smoothing=0.0, reduction="mean"),
                                    LossConfig(gather=False)])
def test_module_without_process_group_equals_function(config):
    assert not torch.distributed.is_initialized()
    x, y = pair(10, 8, seed=7)
    sigma = torch.tensor(1 / 16)
    expected = contrastive_loss(x, y, sigma, config.label_smoothing, config.reduction)
    torch.testing.assert_close(ContrastiveLoss(config)(x, y, sigma), expected, rtol=0, atol=0)


def test_gather_with_grad_is_the_identity_without_process_group():
    x = torch.randn(3, 4)
    assert gather_with_grad(x) is x
