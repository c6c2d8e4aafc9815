"""What a model knows about the generated world beyond its 64 classes (Chapters 5 and 6).

Zero-shot top-1 over the "colour shape" classes says nothing about counting or spatial
relations, and retrieval recall says nothing about whether an image+text query moves the right
attribute. Three probes on a held-out world (:func:`~align_lite.evaluate.world_eval_set`, whose
``scenes`` carry every image's attributes) ask each question on its own:

* **counting** (:func:`count_probe`): for a one-kind scene ("three red stars") the candidate
  captions are the same colour and shape at every count ("a red star", "two red stars", …); a hit
  when the true count scores highest. Colour and shape are given, so only the count is tested.
* **relations** (:func:`relation_probe`): for a two-kind scene the candidates are "A to the left
  of B", "A to the right of B", "A above B", "A below B"; chance is 1/4.
* **compositional edits** (:func:`edit_success`, the paper's §7): the query is
  ``compose_query(image, word)``: a red circle + "blue" should retrieve a blue circle. A success
  is a top-1 hit (the query image itself excluded) with the target value *and* the other
  attribute kept. ``remove colour`` subtracts the image's own colour word (negative weight).

Both choice probes are zero-shot classification with image-specific prompts (the classes are the
counts or the relations); :func:`choice_accuracy` is the shared core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from align_lite.data.world import COLOR_NAMES, NUMBER_WORDS, PLURALS, RELATIONS, SHAPES, article
from align_lite.evaluate import EvalSet
from align_lite.retrieval import compose_query
from align_lite.zero_shot import embed_images, embed_texts

Tokenize = Callable[[list[str]], "dict[str, torch.Tensor]"]
RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
EDIT_KINDS = ("colour", "shape", "remove colour")


def count_prompts(color: str, shape: str, max_count: int) -> list[str]:
    """["a red star", "two red stars", …] for counts 1..max_count (index k-1 is count k)."""
    if not 1 <= max_count < len(NUMBER_WORDS):
        raise ValueError(f"max_count must be in 1..{len(NUMBER_WORDS) - 1}, got {max_count}")
    return [f"{article(color)} {color} {shape}" if k == 1 else f"{NUMBER_WORDS[k]} {color} {PLURALS[shape]}"
            for k in range(1, max_count + 1)]


def relation_prompts(color: str, shape: str, other_color: str, other_shape: str) -> list[str]:
    """One caption per relation in :data:`~align_lite.data.world.RELATIONS` order:
    "a red star to the left of a blue heart", "… to the right of …", "… above …", "… below …"."""
    first, second = f"{article(color)} {color} {shape}", f"{article(other_color)} {other_color} {other_shape}"
    return [f"{first} {RELATION_WORDS[r]} {second}" for r in RELATIONS]


@dataclass(frozen=True)
class ChoiceResult:
    """``accuracy`` over ``n`` images; ``chance`` = 1/K for K candidates; ``predicted`` and
    ``truth`` (n,) candidate indices; ``images`` (n,) the images' positions in the eval set."""

    accuracy: float
    chance: float
    n: int
    predicted: torch.Tensor
    truth: torch.Tensor
    images: torch.Tensor


def choice_accuracy(model: torch.nn.Module, tokenize: Tokenize, pixels: torch.Tensor,
                    candidates: Sequence[Sequence[str]], truth: torch.Tensor,
                    images: torch.Tensor | None = None) -> ChoiceResult:
    """Each image ``pixels[i]`` (N, 3, S, S) picks its best caption among its own ``candidates[i]``
    (K each); a hit when that is ``truth[i]`` (N,)."""
    n = len(pixels)
    if n == 0 or len(candidates) != n or truth.shape != (n,):
        raise ValueError(f"need N >= 1 images with N candidate lists and N truths; got {n}, {len(candidates)}, "
                         f"{tuple(truth.shape)}")
    k = len(candidates[0])
    if k < 2 or any(len(c) != k for c in candidates):
        raise ValueError("every image needs the same number (>= 2) of candidate captions")
    if int(truth.min()) < 0 or int(truth.max()) >= k:
        raise ValueError(f"truth indices must lie in 0..{k - 1}")
    image_embeds = embed_images(model, pixels)  # (N, D)
    text_embeds = embed_texts(model, tokenize, [t for c in candidates for t in c]).reshape(n, k, -1)  # (N, K, D)
    scores = torch.einsum("nd,nkd->nk", image_embeds, text_embeds)
    predicted = scores.argmax(1).cpu()
    return ChoiceResult(accuracy=(predicted == truth).float().mean().item(), chance=1 / k, n=n,
                        predicted=predicted, truth=truth.clone(),
                        images=torch.arange(n) if images is None else images)


def _scenes(data: EvalSet) -> list[dict]:
    if data.scenes is None:
        raise ValueError("this probe needs a world eval set with scene attributes (align_lite.evaluate.world_eval_set)")
    return data.scenes


def count_probe(model: torch.nn.Module, tokenize: Tokenize, data: EvalSet,
                max_count: int | None = None) -> ChoiceResult:
    """Counting on the one-kind scenes of ``data``: which of "a red star" … "four red stars" fits?"""
    scenes = _scenes(data)
    keep = [i for i, s in enumerate(scenes) if s["relation"] is None]
    if not keep:
        raise ValueError("no one-kind scenes to count in this eval set")
    max_count = max_count or max(scenes[i]["count"] for i in keep)
    if any(scenes[i]["count"] > max_count for i in keep):
        raise ValueError(f"scenes with more than max_count={max_count} objects")
    candidates = [count_prompts(scenes[i]["color"], scenes[i]["shape"], max_count) for i in keep]
    truth = torch.tensor([scenes[i]["count"] - 1 for i in keep])
    index = torch.tensor(keep)
    return choice_accuracy(model, tokenize, data.pixels[index], candidates, truth, index)


def relation_probe(model: torch.nn.Module, tokenize: Tokenize, data: EvalSet) -> ChoiceResult:
    """Spatial relations on the two-kind scenes of ``data``: left of, right of, above or below?"""
    scenes = _scenes(data)
    keep = [i for i, s in enumerate(scenes) if s["relation"] is not None]
    if not keep:
        raise ValueError("no two-kind scenes in this eval set")
    candidates = [relation_prompts(scenes[i]["color"], scenes[i]["shape"], scenes[i]["other_color"],
                                   scenes[i]["other_shape"]) for i in keep]
    truth = torch.tensor([RELATIONS.index(scenes[i]["relation"]) for i in keep])
    index = torch.tensor(keep)
    return choice_accuracy(model, tokenize, data.pixels[index], candidates, truth, index)


# ---------------------------------------------------------------------------------------------
# Compositional edits (image + text queries)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditResult:
    """Rates over ``queries`` edit queries: ``success`` (target reached, other attribute kept),
    ``target`` (the edited attribute is right), ``kept`` (the other attribute is unchanged).
    ``query_images``, ``targets`` and ``hits`` (Q,) are eval-set positions / target words /
    the top-1 image of each query, for pictures."""

    kind: str
    text_weight: float
    image_weight: float
    queries: int
    success: float
    target: float
    kept: float
    query_images: torch.Tensor
    targets: tuple[str, ...]
    hits: torch.Tensor


def _edit_queries(kind: str, scenes: list[dict], gallery: list[int]) -> list[tuple[int, str]]:
    """(eval-set position, word) pairs: every other colour / shape, or the image's own colour."""
    if kind == "remove colour":
        return [(i, scenes[i]["color"]) for i in gallery]
    edited, values = ("color", COLOR_NAMES) if kind == "colour" else ("shape", SHAPES)
    return [(i, v) for i in gallery for v in values if v != scenes[i][edited]]


def _edit_outcome(kind: str, query: dict, word: str, hit: dict) -> tuple[bool, bool]:
    """(target reached, other attribute kept) for one query scene and its top-1 hit."""
    if kind == "colour":
        return hit["color"] == word, hit["shape"] == query["shape"]
    if kind == "shape":
        return hit["shape"] == word, hit["color"] == query["color"]
    return hit["color"] != query["color"], hit["shape"] == query["shape"]


def edit_success(model: torch.nn.Module, tokenize: Tokenize, data: EvalSet, kind: str = "colour",
                 text_weight: float = 2.0, image_weight: float = 1.0, prompt: str = "{}",
                 max_query_images: int | None = None) -> EditResult:
    """Success rate of image+text edits over the one-kind scenes of ``data`` (the gallery).

    ``kind``: ``"colour"`` (a red circle + "blue" → a blue circle), ``"shape"`` (+ "square" →
    a red square) or ``"remove colour"`` (− "red" → a circle of another colour; pass a negative
    ``text_weight``). The query image is never its own hit. ``text_weight=0`` is the image alone,
    ``image_weight=0`` the text alone: the two baselines an edit must beat.
    """
    if kind not in EDIT_KINDS:
        raise ValueError(f"kind must be one of {EDIT_KINDS}, got {kind!r}")
    if prompt.count("{}") != 1:
        raise ValueError("prompt needs exactly one '{}' for the word, e.g. '{}' or 'a {} shape'")
    scenes = _scenes(data)
    gallery = [i for i, s in enumerate(scenes) if s["relation"] is None]
    if len(gallery) < 2:
        raise ValueError("edits need at least two one-kind scenes in the eval set")
    query_images = gallery[:max_query_images] if max_query_images else gallery
    queries = _edit_queries(kind, scenes, query_images)
    image_embeds = embed_images(model, data.pixels[torch.tensor(gallery)])  # (G, D)
    words = sorted({w for _, w in queries})
    word_embeds = dict(zip(words, embed_texts(model, tokenize, [prompt.format(w) for w in words])))
    position = {i: g for g, i in enumerate(gallery)}
    query_rows = torch.tensor([position[i] for i, _ in queries])
    composed = compose_query(image_embeds[query_rows], torch.stack([word_embeds[w] for _, w in queries]),
                             text_weight, image_weight)  # (Q, D)
    scores = composed @ image_embeds.T  # (Q, G)
    scores[torch.arange(len(queries)), query_rows] = float("-inf")  # never the query image itself
    hits = torch.tensor(gallery)[scores.argmax(1)]
    outcomes = [_edit_outcome(kind, scenes[i], w, scenes[int(h)]) for (i, w), h in zip(queries, hits)]
    target = torch.tensor([t for t, _ in outcomes], dtype=torch.float)
    kept = torch.tensor([k for _, k in outcomes], dtype=torch.float)
    return EditResult(kind=kind, text_weight=text_weight, image_weight=image_weight, queries=len(queries),
                      success=(target * kept).mean().item(), target=target.mean().item(), kept=kept.mean().item(),
                      query_images=torch.tensor([i for i, _ in queries]), targets=tuple(w for _, w in queries),
                      hits=hits)
