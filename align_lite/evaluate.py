"""Scoring a trained model: zero-shot classification and retrieval on one evaluation set.

An :class:`EvalSet` holds preprocessed images, their captions (one or more per image) and, when
the data says so, a class per image. It comes from a pair folder / ``.jsonl`` / ``.parquet``
(:func:`load_eval_set`; rows sharing a ``file_name`` are captions of one image; a ``label``
column, when present, gives the classes) or from the generated world
(:func:`world_eval_set`). :func:`evaluate` returns zero-shot top-1/top-5 (prompt-ensembled,
:mod:`align_lite.zero_shot`) and Recall@1/5/10 both ways (:mod:`align_lite.retrieval`).
``align-lite eval RUN --data DIR`` prints them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from align_lite.data.emoji import load_emoji
from align_lite.data.images import BadImageError, ImageTransformConfig, image_transform, open_rgb
from align_lite.data.records import SkipLog, read_pairs, resolve_inside
from align_lite.data.world import COLORS, SHAPES, WorldConfig, make_world_table, paraphrases, render_image
from align_lite.retrieval import retrieval_recall
from align_lite.zero_shot import build_classifier, embed_images, embed_texts, topk_accuracy

WORLD_EVAL_SEED = 10_007  # never a training seed of the book
SCENE_KEYS = ("color", "shape", "count", "size", "position", "relation", "other_color", "other_shape")
WORLD_CLASSNAMES = tuple(f"{color} {shape}" for color in COLORS for shape in SHAPES)  # 64, colour-major


@dataclass
class EvalSet:
    """``pixels`` (N_img, 3, S, S); ``texts`` N_txt captions; ``text_to_image`` (N_txt,) the image of
    each caption; ``labels`` (N_img,) class indices into ``classnames`` (-1: no class), or None;
    ``skipped`` rows left out (unreadable images, unsafe paths) by reason; ``image_names`` the
    images' file names (N_img,); ``scenes`` (generated worlds only) each image's attributes:
    color, shape, count, size, position, relation, other_color, other_shape."""

    pixels: torch.Tensor
    texts: list[str]
    text_to_image: torch.Tensor
    labels: torch.Tensor | None = None
    classnames: tuple[str, ...] = ()
    skipped: dict[str, int] | None = None
    image_names: list[str] | None = None
    scenes: list[dict] | None = None


def _group_captions(file_names: Sequence[str], texts: Sequence[str]) -> tuple[list[str], list[str], list[int]]:
    """Unique images (first-seen order), all captions, and each caption's image position."""
    position: dict[str, int] = {}
    for name in file_names:
        position.setdefault(name, len(position))
    return list(position), list(texts), [position[name] for name in file_names]


def load_eval_set(path: str | Path, image_size: int, max_images: int | None = None,
                  label_column: str = "label", log: SkipLog | None = None) -> EvalSet:
    """An :class:`EvalSet` from pair data at ``path``, images centre-cropped to ``image_size``
    (the paper's 346:289 resize ratio). Unreadable images are counted in ``log`` and their
    captions dropped; ``max_images`` keeps the first N images."""
    log = log if log is not None else SkipLog()
    table, source = read_pairs(path, log)
    names, texts = table.column("file_name").to_pylist(), table.column("text").to_pylist()
    labels_of = dict(zip(names, table.column(label_column).to_pylist())) if label_column in table.column_names else None
    images, _, owner = _group_captions(names, texts)
    transform = image_transform(ImageTransformConfig.tiny(image_size), train=False)
    pixels, kept = [], {}
    for name in images:
        if max_images is not None and len(kept) >= max_images:
            break
        path = resolve_inside(source.root, name)
        if path is None:
            log.skip("unsafe_file_name", f"{name!r} leads outside the data set")
            continue
        try:
            pixels.append(transform(open_rgb(path, name=name)))
        except BadImageError as err:
            log.skip(err.reason, f"{name}: {err}")
            continue
        kept[name] = len(kept)
    if not kept:
        raise ValueError(f"{path}: no readable images to evaluate on ({log.summary()})")
    rows = [i for i, n in enumerate(names) if n in kept]
    out = EvalSet(torch.stack(pixels), [texts[i] for i in rows], torch.tensor([kept[names[i]] for i in rows]),
                  skipped=dict(log.counts), image_names=list(kept))
    if labels_of is not None:
        valid = sorted({str(labels_of[n]) for n in kept if labels_of[n] is not None and str(labels_of[n]).strip()})
        index = {c: i for i, c in enumerate(valid)}
        out.labels = torch.tensor([index.get(str(labels_of[n]), -1) if labels_of[n] is not None else -1 for n in kept])
        out.classnames = tuple(valid)
    return out


def world_eval_set(n: int = 512, seed: int = WORLD_EVAL_SEED, image_size: int = 64,
                   captions_per_image: int = 1) -> EvalSet:
    """A held-out generated world, drawn uncropped at ``image_size``: its own caption per image,
    plus ``captions_per_image - 1`` paraphrases (:func:`~align_lite.data.world.paraphrases`); the
    class of a one-kind scene is its index in :data:`WORLD_CLASSNAMES` (class c is colour
    ``c // 8``, shape ``c % 8``); two-kind scenes get -1 (no single right class). ``scenes``
    keeps each row's attributes for :mod:`align_lite.world_probes`."""
    table = make_world_table(WorldConfig.clean(n=n, seed=seed))
    rows = table.to_pylist()
    classnames = WORLD_CLASSNAMES
    index = {c: i for i, c in enumerate(classnames)}
    to_pixels = image_transform(ImageTransformConfig(resize=image_size, crop=image_size, random_flip=False))
    pixels = torch.stack([to_pixels(render_image(r, image_size)) for r in rows])
    labels = torch.tensor([index[r["label"]] if r["relation"] is None else -1 for r in rows])
    scenes = [{key: r[key] for key in SCENE_KEYS} for r in rows]
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image must be >= 1, got {captions_per_image}")
    captions = [[r["text"], *more] for r, more in zip(rows, paraphrases(table, captions_per_image - 1, seed))]
    texts = [t for per_image in captions for t in per_image]
    owner = torch.arange(n).repeat_interleave(captions_per_image)
    return EvalSet(pixels, texts, owner, labels, classnames, {}, [r["file_name"] for r in rows], scenes)


def emoji_eval_set(image_size: int = 64, level: str = "category", max_images: int | None = None) -> EvalSet:
    """The shipped Noto emoji sample: every alt-text of an emoji is one of its captions (several
    per image, for Recall@K), and its ``level`` ("category", 9 classes, or "subcategory") is its
    class. Class names are the sample's own ("Smileys & Emotion", "face-smiling")."""
    if level not in ("category", "subcategory"):
        raise ValueError(f"level must be 'category' or 'subcategory', got {level!r}")
    sample = load_emoji()
    n = len(sample) if max_images is None else min(max_images, len(sample))
    to_pixels = image_transform(ImageTransformConfig(resize=image_size, crop=image_size, random_flip=False))
    pixels = torch.stack([to_pixels(sample.image(i)) for i in range(n)])
    texts, owner = [], []
    for i in range(n):
        captions = sample.texts(i)
        texts += captions
        owner += [i] * len(captions)
    classnames = sample.categories if level == "category" else sample.subcategories
    ids = sample.category_ids if level == "category" else sample.subcategory_ids
    names = sample.table.column("file_name").to_pylist()[:n]
    return EvalSet(pixels, texts, torch.tensor(owner), torch.as_tensor(ids[:n]), tuple(classnames), {}, names)


def evaluate(model: torch.nn.Module, tokenize: Callable, data: EvalSet,
             templates: Sequence[str] = ("a photo of a {}.",),
             ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k both ways over all images and captions, and, when ``data`` has classes, zero-shot
    top-1/top-5 over its labelled images. Numbers in [0, 1], plus the set's sizes."""
    images = embed_images(model, data.pixels, progress_desc="embed images")
    texts = embed_texts(model, tokenize, data.texts, progress_desc="embed captions")
    out: dict[str, float] = {"images": float(len(images)), "captions": float(len(texts))}
    out.update(retrieval_recall(images, texts, data.text_to_image, ks))
    if data.labels is not None and data.classnames:
        keep = torch.nonzero(data.labels >= 0).flatten()
        if len(keep):
            classifier = build_classifier(model, tokenize, data.classnames, templates)
            top = topk_accuracy(images[keep] @ classifier.T, data.labels[keep], (1, 5))
            out.update(zero_shot_top1=top[1], zero_shot_top5=top[5], classes=float(len(data.classnames)),
                       classified_images=float(len(keep)))
    return out
