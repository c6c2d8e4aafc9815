"""The cross-rank loss for real: two CPU processes (gloo), each holding half of a batch, a tiny
model wrapped in DistributedDataParallel, and ContrastiveLoss on the local embeddings.

One spawn (module fixture) runs every scenario; each rank writes its results to a file, and the
tests compare them with one process computing the same thing on the whole batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from align_lite.loss import ContrastiveLoss, LossConfig, contrastive_loss, gather_with_grad

WORLD = 2
BATCH = 12  # global; each rank holds BATCH // WORLD rows
IMAGE_IN, TEXT_IN, DIM = 10, 7, 6

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


class TinyDualEncoder(nn.Module):
    """Linear towers + a learnable log-temperature (started at σ = 0.5)."""

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(IMAGE_IN, DIM)
        self.text = nn.Linear(TEXT_IN, DIM)
        self.log_temperature = nn.Parameter(torch.tensor(0.5).log())

    def forward(self, images, texts):
        return (F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1),
                self.log_temperature.exp())


def make_model() -> TinyDualEncoder:
    torch.manual_seed(0)
    return TinyDualEncoder().double()


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, IMAGE_IN, generator=g, dtype=torch.float64)
    texts = torch.randn(BATCH, TEXT_IN, generator=g, dtype=torch.float64)
    return images, texts


CONFIGS = {
    "paper": LossConfig(),  # gather, smoothing 0.1, sum
    "mean-no-smoothing": LossConfig(label_smoothing=0.0, reduction="mean"),
    "local": LossConfig(gather=False),  # only this rank's negatives
}


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        images, texts = make_batch()
        rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        results = {}
        for name, config in CONFIGS.items():
            model = DistributedDataParallel(make_model())
            image_embeds, text_embeds, temperature = model(images[rows], texts[rows])
            loss = ContrastiveLoss(config)(image_embeds, text_embeds, temperature)
            loss.backward()  # DDP averages the gradients over ranks here
            results[name] = {"loss": loss.detach(),
                             **{f"grad.{k}": p.grad for k, p in model.module.named_parameters()}}

        # gather_with_grad on its own. The gathered tensor meets another branch in an add (of
        # views), and autograd hands both branches the *same* gradient tensor: the gather's
        # backward must not all-reduce it in place, or the other branch's gradient is corrupted.
        x = torch.arange(4 * 3, dtype=torch.float64).reshape(4, 3).add(rank).requires_grad_()
        other = torch.zeros(4 * WORLD, 3, dtype=torch.float64, requires_grad=True)
        weights = torch.linspace(1, 2, 4 * WORLD * 3, dtype=torch.float64).reshape(4 * WORLD, 3)
        gathered = gather_with_grad(x)
        ((gathered.view(-1) + other.view(-1)) * weights.view(-1)).sum().backward()
        results["gather"] = {"gathered": gathered.detach(), "grad.x": x.grad, "grad.other": other.grad}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def single_process(config: LossConfig) -> dict:
    """The reference: one process, the whole batch, no process group."""
    model = make_model()
    images, texts = make_batch()
    image_embeds, text_embeds, temperature = model(images, texts)
    loss = contrastive_loss(image_embeds, text_embeds, temperature, config.label_smoothing, config.reduction)
    loss.backward()
    return {"loss": loss.detach(), **{f"grad.{k}": p.grad for k, p in model.named_parameters()}}


@pytest.mark.parametrize("name", ["paper", "mean-no-smoothing"])
def test_mean_of_rank_losses_equals_the_global_loss(ranks, name):
    expected = single_process(CONFIGS[name])
    per_rank = torch.stack([r[name]["loss"] for r in ranks])
    assert not torch.allclose(per_rank[0], per_rank[1])  # each rank sees different rows
    torch.testing.assert_close(per_rank.mean(), expected["loss"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["paper", "mean-no-smoothing"])
def test_ddp_gradients_equal_single_process_gradients(ranks, name):
    expected = single_process(CONFIGS[name])
    names = [k for k in expected if k.startswith("grad.")]
    assert set(names) == {"grad.image.weight", "grad.image.bias", "grad.text.weight", "grad.text.bias",
                          "grad.log_temperature"}
    for k in names:
        for r in ranks:  # DDP leaves the same averaged gradient on every rank
            torch.testing.assert_close(r[name][k], expected[k], rtol=1e-9, atol=1e-12, msg=k)
    assert expected["grad.log_temperature"].abs() > 1e-6  # the temperature gradient is really tested


def test_without_gather_each_rank_uses_only_local_negatives(ranks):
    images, texts = make_batch()
    config = CONFIGS["local"]
    with torch.no_grad():
        model = make_model()
        half = BATCH // WORLD
        local = [contrastive_loss(*model(images[r * half:(r + 1) * half], texts[r * half:(r + 1) * half]),
                                  config.label_smoothing, config.reduction) for r in range(WORLD)]
    for r in range(WORLD):
        torch.testing.assert_close(ranks[r]["local"]["loss"], local[r], rtol=1e-12, atol=1e-12)
    # fewer negatives: a different (here smaller) loss than the global one
    global_loss = single_process(config)["loss"]
    mean_local = torch.stack([r["local"]["loss"] for r in ranks]).mean()
    assert mean_local < global_loss - 0.1
    # and therefore different gradients
    assert not torch.allclose(ranks[0]["local"]["grad.image.weight"], ranks[0]["paper"]["grad.image.weight"])


def test_gather_with_grad_values_and_gradients(ranks):
    xs = [torch.arange(12, dtype=torch.float64).reshape(4, 3).add(r) for r in range(WORLD)]
    weights = torch.linspace(1, 2, 4 * WORLD * 3, dtype=torch.float64).reshape(4 * WORLD, 3)
    for r in range(WORLD):
        torch.testing.assert_close(ranks[r]["gather"]["gathered"], torch.cat(xs), rtol=0, atol=0)
        # every rank's loss uses every rank's rows: the owner receives the sum over ranks
        torch.testing.assert_close(ranks[r]["gather"]["grad.x"], WORLD * weights[4 * r:4 * (r + 1)])
        # the other branch of the add keeps its own, un-reduced gradient
        torch.testing.assert_close(ranks[r]["gather"]["grad.other"], weights, rtol=0, atol=0)
