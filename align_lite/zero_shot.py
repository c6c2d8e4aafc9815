"""Zero-shot classification: class names and prompt templates become a classifier (Chapter 5).

A dual encoder classifies without a classification head. Each class name c is written into
prompt templates ("a photo of a {}."), the texts are embedded and L2-normalised, their mean is
renormalised into one unit vector w_c per class (prompt *ensembling*; a single template is the
special case of one prompt), and an image x is assigned

    ŷ(x) = argmax_c  xᵀ w_c            W = [w_1 … w_C] : (C, D)

A class may also be given its own list of prompts (:func:`classifier_from_prompts`), for what
one template cannot say: the world's "a red star" and "three red stars" differ in the noun, not
the frame around it.

The temperature does not change the argmax, so it is left out. Works with any model that has
``encode_image(pixels) → (N, D)`` and ``encode_text(input_ids, attention_mask) → (M, D)`` (unit
vectors), given a ``tokenize(list[str]) → {"input_ids", "attention_mask"}`` callable: an
align_lite :class:`~align_lite.models.AlignDualEncoder` with its
:class:`~align_lite.data.tokenizer.AltTextTokenizer`, or
:class:`~align_lite.models.pretrained.PretrainedAlign` with its ``tokenize``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from importlib import resources

import torch
import torch.nn.functional as F

from align_lite.progress import progress

Tokenize = Callable[[list[str]], "dict[str, torch.Tensor]"]
TEMPLATE_SETS = ("imagenet_80", "imagenet_7", "single", "world")


def load_templates(name: str = "imagenet_80") -> tuple[str, ...]:
    """Prompt templates shipped as data (``align_lite/data/prompt_templates.json``): CLIP's 80
    ImageNet templates (``"imagenet_80"``), the 7 its authors picked from them (``"imagenet_7"``),
    ``"single"`` ("a photo of a {}."), or 12 in the generated world's own words (``"world"``:
    CLIP's templates are mostly out of a world model's vocabulary). Each has one ``{}`` for the
    class name."""
    table = json.loads(resources.files("align_lite.data").joinpath("prompt_templates.json").read_text())
    if name not in TEMPLATE_SETS:
        raise KeyError(f"unknown template set {name!r}; choose one of {', '.join(TEMPLATE_SETS)}")
    return tuple(table[name])


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(n: int, batch_size: int, desc: str | None) -> Iterable[int]:
    """The start of each batch; shown as a progress bar when ``desc`` is given."""
    starts = range(0, n, batch_size)
    return starts if desc is None else progress(starts, desc=desc, unit="batch")


@torch.no_grad()
def embed_texts(model: torch.nn.Module, tokenize: Tokenize, texts: Sequence[str], batch_size: int = 256,
                progress_desc: str | None = None) -> torch.Tensor:
    """Texts → (M, D) float32 unit text embeddings, in batches, model in eval mode (with
    ``progress_desc``, a progress bar of that name over the batches)."""
    if not texts:
        raise ValueError("embed_texts needs at least one text")
    device, was_training = _device_of(model), model.training
    model.eval()
    try:
        chunks = []
        for start in _batches(len(texts), batch_size, progress_desc):
            encoded = tokenize(list(texts[start:start + batch_size]))
            chunks.append(model.encode_text(encoded["input_ids"].to(device),
                                            encoded["attention_mask"].to(device)).float())
    finally:
        model.train(was_training)
    return torch.cat(chunks)


@torch.no_grad()
def embed_images(model: torch.nn.Module, pixels: torch.Tensor, batch_size: int = 256,
                 progress_desc: str | None = None) -> torch.Tensor:
    """(N, 3, S, S) preprocessed pixels → (N, D) float32 unit image embeddings, model in eval mode
    (with ``progress_desc``, a progress bar of that name over the batches)."""
    device, was_training = _device_of(model), model.training
    model.eval()
    try:
        chunks = [model.encode_image(pixels[start:start + batch_size].to(device)).float()
                  for start in _batches(len(pixels), batch_size, progress_desc)]
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


def build_classifier(model: torch.nn.Module, tokenize: Tokenize, classnames: Sequence[str],
                     templates: Sequence[str] = ("{}",), batch_size: int = 256) -> torch.Tensor:
    """(C, D) unit class vectors: each class's prompt embeddings averaged, then renormalised.

    ``templates`` are format strings with one ``{}`` (where the class name goes)."""
    if not classnames:
        raise ValueError("build_classifier needs at least one class name")
    if not templates or any(t.count("{}") != 1 for t in templates):
        raise ValueError("every template needs exactly one '{}' for the class name, e.g. 'a photo of a {}.'")
    return classifier_from_prompts(model, tokenize, [[t.format(name) for t in templates] for name in classnames],
                                   batch_size)


def classifier_from_prompts(model: torch.nn.Module, tokenize: Tokenize, prompts: Sequence[Sequence[str]],
                            batch_size: int = 256) -> torch.Tensor:
    """(C, D) unit class vectors from ``prompts[c]``, class c's own list of prompts (any number
    per class: e.g. the class name in the singular and in the plural, where one template cannot
    say both); each class's unit prompt embeddings are averaged, then renormalised."""
    if not prompts or any(not isinstance(p, (list, tuple)) or not p for p in prompts):
        raise ValueError("classifier_from_prompts needs a non-empty list of prompts for every class")
    flat = [text for per_class in prompts for text in per_class]
    text = F.normalize(embed_texts(model, tokenize, flat, batch_size), dim=-1)  # (P, D)
    owner = torch.arange(len(prompts)).repeat_interleave(torch.tensor([len(p) for p in prompts])).to(text.device)
    per_class = torch.zeros(len(prompts), text.shape[1], device=text.device).index_add_(0, owner, text)  # (C, D) sums
    return F.normalize(per_class, dim=-1)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows of ``scores`` (N, C) whose true class ``labels`` (N,) is among the k
    highest, for each k (k larger than C counts as C)."""
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(f"need scores (N, C) and labels (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}")
    if scores.shape[0] == 0:
        raise ValueError("topk_accuracy needs at least one row")
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices  # (N, K)
    hits = ranked == labels.to(ranked.device)[:, None]
    return {k: hits[:, :k].any(1).float().mean().item() for k in ks}


def zero_shot_accuracy(model: torch.nn.Module, tokenize: Tokenize, pixels: torch.Tensor, labels: torch.Tensor,
                       classnames: Sequence[str], templates: Sequence[str] = ("{}",),
                       ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k zero-shot accuracy of ``model`` on images ``pixels`` (N, 3, S, S) with true class
    indices ``labels`` (N,) into ``classnames``: ``{"zero_shot_top1": …, "zero_shot_top5": …}``."""
    classifier = build_classifier(model, tokenize, classnames, templates)
    scores = embed_images(model, pixels) @ classifier.T  # (N, C)
    return {f"zero_shot_top{k}": acc for k, acc in topk_accuracy(scores, labels, ks).items()}
