"""How fast the tiny model learns shape: the image tower with labels, and the contrastive model's towers.

    python benchmarks/shape_learning.py [--steps 1000] [--threads 2]

Part 1 trains the ``tiny`` preset's image tower (EfficientNet w0.4 d0.25, 64 px) *supervised*, with
a linear head on the 8 shape labels of the one-kind scenes, and scores held-out scenes (the
evaluation world of :mod:`align_lite.experiments`). Four settings: the paper's learning rate 1e-3
on the book's 4,096-row world, lr 3e-3, lr 5e-3 (the CPU recipe's image-tower rate,
``image_lr_scale``), and lr 1e-3 on a 32,768-row world. Batch 64, AdamW (weight decay 1e-5), 20 warm-up steps,
gradient clipping at 1, channels-last.

Part 2 looks inside the book's contrastive model (:func:`align_lite.experiments.trained_model`,
600 steps): a linear shape probe on its frozen image embeddings, the cosine between class
prompts that differ only in shape or only in colour, and how often zero-shot picks the right
shape when the colour is given. Then three more contrastive runs of the same recipe: with
shuffled batches instead of hard-negative ones (the paper's way), on the 32,768-row world that
helps the supervised tower, and with every caption cut to its colour and shape words ("red
star", or "red star blue heart" for two kinds), which removes the other features a batch's pairs
can be told apart by (count, size, position, background, wording): how much of the gap to the
labels is {term}`feature suppression`, and how much of it do hard-negative batches close? Writes
``shape_learning.md`` / ``.json`` under ``book/appendix/generated/``.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from align_lite.evaluate import WORLD_CLASSNAMES, world_eval_set
from align_lite.data.world import WorldConfig
from align_lite.experiments import BOOK_MODEL, EVAL_SEED, TEMPLATES, WorldEval, score_world, trained_model, world_rows
from align_lite.models import get_preset
from align_lite.models.image_tower import ImageTower
from align_lite.train import TrainConfig, train
from align_lite.zero_shot import build_classifier, embed_images
from report import cpu_name, experiment_args, write_report  # benchmarks/report.py

SETTINGS = [  # (name, learning rate, rows of the training world)
    ("lr 1e-3 (the paper's), 4,096-row world", 1e-3, 4_096),
    ("lr 3e-3, 4,096-row world", 3e-3, 4_096),
    ("lr 5e-3 (the CPU recipe's), 4,096-row world", 5e-3, 4_096),
    ("lr 1e-3, 32,768-row world", 1e-3, 32_768),
]
BATCH, WARMUP, N_SHAPES = 64, 20, 8


def one_kind_scenes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-kind scenes of a clean world: pixels (M, 3, 64, 64) in [-1, 1] and classes (M,) into
    ``WORLD_CLASSNAMES`` (colour ``c // 8``, shape ``c % 8``)."""
    data = world_eval_set(n, seed, 64)
    keep = data.labels >= 0
    return data.pixels[keep].contiguous(memory_format=torch.channels_last), data.labels[keep]


@torch.no_grad()
def accuracy(net: nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    predicted = torch.cat([net(chunk).argmax(1) for chunk in pixels.split(256)])
    net.train()
    return (predicted == labels).float().mean().item()


def supervised_run(lr: float, train: tuple, held_out: tuple, steps: int, marks: list[int]) -> dict:
    """Image tower + linear head on shape labels; held-out accuracy at ``marks``."""
    torch.manual_seed(0)
    config = get_preset("tiny").image
    net = nn.Sequential(ImageTower(config), nn.Linear(config.output_dim, N_SHAPES))
    net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / WARMUP))
    pixels, labels = train
    order, seconds, points = torch.randperm(len(labels)), 0.0, []
    for step in range(1, steps + 1):
        start = (step - 1) * BATCH % (len(labels) - BATCH + 1)
        idx = order[start:start + BATCH]
        clock = time.perf_counter()
        loss = F.cross_entropy(net(pixels[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        warmup.step()
        seconds += time.perf_counter() - clock
        if step in marks:
            points.append({"step": step, "held_out": accuracy(net, *held_out),
                           "train": accuracy(net, pixels[:2_000], labels[:2_000]), "s_per_step": seconds / step})
            print(points[-1], flush=True)
    return {"points": points, "train_scenes": len(labels)}


def probe_predictions(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor) -> torch.Tensor:
    """(M,) shapes that a logistic regression fitted on frozen features ``train_x`` (N, D) with
    labels ``train_y`` (N,) predicts for ``test_x`` (M, D) (full batch, Adam, 500 steps, seeded)."""
    torch.manual_seed(0)
    head = nn.Linear(train_x.shape[1], N_SHAPES)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    with torch.enable_grad():
        for _ in range(500):
            loss = F.cross_entropy(head(train_x * 10), train_y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return head(test_x * 10).argmax(1)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """Held-out accuracy of :func:`probe_predictions`."""
    return (probe_predictions(train_x, train_y, test_x) == test_y).float().mean().item()


def contrastive_diagnosis(model: nn.Module, tokenizer, train: tuple, held_out_pixels: torch.Tensor,
                          held_out_classes: torch.Tensor) -> dict:
    """What the book's contrastive model holds about shape, in each tower. ``train`` is
    (pixels, shape labels); the held-out scenes come with their 64-way classes."""
    held_out_embeds = embed_images(model, held_out_pixels)
    probe = linear_probe(embed_images(model, train[0][:3_000]), train[1][:3_000],
                         held_out_embeds, held_out_classes % N_SHAPES)
    classes = build_classifier(model, tokenizer, WORLD_CLASSNAMES, TEMPLATES)  # (64, D), unit rows
    cosine = classes @ classes.T
    colour, shape = torch.arange(64) // N_SHAPES, torch.arange(64) % N_SHAPES
    other = ~torch.eye(64, dtype=torch.bool)
    same_colour = (colour[:, None] == colour[None]) & other
    same_shape = (shape[:, None] == shape[None]) & other
    labels = held_out_classes
    scores = (held_out_embeds @ classes.T).view(-1, 8, N_SHAPES)
    within_colour = scores[torch.arange(len(labels)), labels // N_SHAPES].argmax(1)
    return {"image_probe_held_out": probe,
            "text_cos_same_colour_other_shape": cosine[same_colour].mean().item(),
            "text_cos_same_shape_other_colour": cosine[same_shape].mean().item(),
            "zero_shot_shape_given_colour": (within_colour == labels % N_SHAPES).float().mean().item()}


def contrastive_variant(eval_data: WorldEval, **changes) -> dict:
    """The book's contrastive run with ``changes`` to its ``TrainConfig`` (e.g. shuffled batches,
    a larger world), trained afresh and scored on ``eval_data``."""
    model, tokenizer, record = trained_model(replace(BOOK_MODEL, **changes), cache=False)
    return {"steps": record["steps"][-1], **score_world(model, tokenizer, eval_data)}


class CutCaptions(torch.utils.data.Dataset):
    """The book's training rows with each caption cut to its colour and shape words: "red star",
    or "red star blue heart" for a two-kind scene (a diagnostic, not a recipe)."""

    def __init__(self, config: TrainConfig):
        world = WorldConfig.clean(n=config.world_n, seed=config.world_seed)
        self.rows = world_rows(world, 64)
        table = self.rows.table.select(["color", "shape", "other_color", "other_shape"]).to_pylist()
        self.texts = [" ".join(filter(None, r.values())) for r in table]
        self.table = self.rows.table  # the columns that hard-negative batches group by

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return {**self.rows[index], "text": self.texts[index]}


def contrastive_cut_captions(eval_data: WorldEval) -> dict:
    """The book's contrastive run with captions cut to "colour shape": the other features gone."""
    result = train(BOOK_MODEL, CutCaptions(BOOK_MODEL))
    return {"steps": result.step, **score_world(result.model, result.tokenizer, eval_data)}


def to_markdown(summary: dict) -> str:
    marks = [p["step"] for p in summary["supervised"][0]["points"]]
    lines = [f"The `tiny` image tower trained supervised on shape labels; {summary['threads']} threads, "
             f"{summary['cpu']}, torch {summary['torch']}. Held-out: {summary['held_out_scenes']} one-kind scenes "
             "of the evaluation world (chance 12.5 %).", "",
             "| setting | train scenes | " + " | ".join(f"held-out @ {m}" for m in marks)
             + f" | seen scenes @ {marks[-1]} | s/step |",
             "|---|---|" + "---|" * (len(marks) + 2)]
    for run in summary["supervised"]:
        points = run["points"]
        lines.append(f"| {run['name']} | {run['train_scenes']:,} | "
                     + " | ".join(f"{100 * p['held_out']:.1f} %" for p in points)
                     + f" | {100 * points[-1]['train']:.1f} % | {points[-1]['s_per_step']:.3f} |")
    d = summary["contrastive"]
    lines += ["", "The book's contrastive model (`experiments.trained_model()`, 600 steps) on the same scenes:", "",
              "| what | value |", "|---|---|",
              "| linear shape probe on its frozen image embeddings, held-out "
              f"| {100 * d['image_probe_held_out']:.1f} % |",
              f"| zero-shot shape right when the colour is given | {100 * d['zero_shot_shape_given_colour']:.1f} % |",
              f"| cosine of class prompts: same colour, other shape | {d['text_cos_same_colour_other_shape']:.3f} |",
              "| cosine of class prompts: same shape, other colour "
              f"| {d['text_cos_same_shape_other_colour']:.3f} |", ""]
    big, cut, shuffled = (summary["contrastive_bigger_world"], summary["contrastive_cut_captions"],
                          summary["contrastive_shuffled"])
    lines += ["The same contrastive recipe, changed in one way each (the book's model for reference):", "",
              "| run | steps | zero-shot top-1 | colour right | shape right |", "|---|---|---|---|---|"]
    for name, run in (("book model: hard-negative batches, 4,096-row world", summary["contrastive_book_model"]),
                      ("shuffled batches (the paper's)", shuffled), (f"{big['world_rows']:,}-row world", big),
                      ("captions cut to their colour and shape words", cut)):
        lines.append(f"| {name} | {run['steps']} | {100 * run['zero_shot_top1']:.1f} % | "
                     f"{100 * run['colour_top1']:.1f} % | {100 * run['shape_top1']:.1f} % |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    args = experiment_args(__doc__, steps=1_000)
    marks = sorted({m for m in (args.steps * 3 // 10, args.steps * 6 // 10, args.steps) if m > 0})
    held_out_pixels, held_out_classes = one_kind_scenes(1024, EVAL_SEED)
    held_out = (held_out_pixels, held_out_classes % N_SHAPES)
    runs, worlds = [], {}  # worlds: rows -> (pixels, shape labels), each drawn once
    for name, lr, rows in SETTINGS:
        if rows not in worlds:
            pixels, classes = one_kind_scenes(rows, 0)
            worlds[rows] = (pixels, classes % N_SHAPES)
        print(f"== {name}", flush=True)
        runs.append({"name": name, "lr": lr, "world_rows": rows,
                     **supervised_run(lr, worlds[rows], held_out, args.steps, marks)})
    model, tokenizer, record = trained_model()  # the book's model, trained once and cached
    eval_data = WorldEval.from_world()  # the contrastive runs' held-out world, drawn once
    summary = {"benchmark": "shape_learning", "steps": args.steps, "threads": args.threads, "cpu": cpu_name(),
               "torch": torch.__version__, "held_out_scenes": len(held_out[1]), "supervised": runs,
               "contrastive": contrastive_diagnosis(model, tokenizer, worlds[4_096], held_out_pixels, held_out_classes),
               "contrastive_book_model": {"steps": record["steps"][-1], **score_world(model, tokenizer, eval_data)},
               "contrastive_shuffled": contrastive_variant(eval_data, hard_negative_share=(), hard_negative_vary=None),
               "contrastive_bigger_world": {"world_rows": 32_768, **contrastive_variant(eval_data, world_n=32_768)},
               "contrastive_cut_captions": contrastive_cut_captions(eval_data)}
    print(summary["contrastive"], summary["contrastive_bigger_world"], summary["contrastive_cut_captions"])
    write_report(args.out, "shape_learning", summary, to_markdown(summary))


if __name__ == "__main__":
    main()
