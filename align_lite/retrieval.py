"""Retrieval: exact top-k search, Recall@K both ways, and image+text queries (Chapter 6).

A trained dual encoder maps images and texts to unit vectors, so retrieval is nearest-neighbour
search by inner product (= cosine similarity). This module holds the three pieces the book needs,
all pure torch on embeddings that were computed elsewhere (no model code in here):

* :func:`exact_search` — exact top-k by inner product, chunked over the keys so that a gallery of
  100k vectors is searched in bounded memory; ties go to the lower key index, so results are
  deterministic.
* :func:`retrieval_recall` — Recall@K for image→text and text→image with several captions per
  image, following CLIP_benchmark's ``zeroshot_retrieval.py``: an image query is a hit at k when
  *any* of its captions is among its k nearest texts; a caption query is a hit when *its* image is
  among its k nearest images.
* :func:`compose_query` — ALIGN §7's image+text queries: ``normalise(w_i·x̂ + w_t·t̂)`` with
  x̂, t̂ the unit image and text embeddings, 2 (text) : 1 (image) by default; a negative text
  weight subtracts a concept ("… without the flowers").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

#: Queries are searched this many at a time, so a score tile holds at most
#: ``QUERY_BLOCK × (chunk + k)`` entries however many queries and keys there are.
QUERY_BLOCK = 1024


def _check_embeddings(name: str, x: torch.Tensor) -> None:
    """Raise ValueError unless ``x`` is a finite 2-D floating tensor (rows = vectors)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 2-D tensor (count, dim), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of embeddings, got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _merge_topk(best_scores: torch.Tensor, best_indices: torch.Tensor, scores: torch.Tensor,
                indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k best of the running list (B, ≤k) and a new chunk (B, c) of later keys.

    The running list is ordered by (score descending, index ascending) and every key in the chunk
    has a higher index than every key already seen. A *stable* descending sort of
    ``[running | chunk]`` therefore puts, among equal scores, running entries (lower indices)
    before chunk entries, and chunk entries in index order — the whole list ends up ordered by
    (score descending, index ascending), and its first k are the k best with ties to the lower
    index. Returns ((B, min(k, ≤k + c)) scores, same-shape long indices)."""
    all_scores = torch.cat([best_scores, scores], dim=1)
    all_indices = torch.cat([best_indices, indices], dim=1)
    order = torch.sort(all_scores, dim=1, descending=True, stable=True).indices[:, :k]
    return all_scores.gather(1, order), all_indices.gather(1, order)


def _search_block(queries: torch.Tensor, keys: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of one block of queries (B, D) against all keys (N, D), walking the keys in chunks.
    Returns ((B, k) scores, (B, k) long indices)."""
    best_scores = queries.new_empty(queries.shape[0], 0)
    best_indices = torch.empty(queries.shape[0], 0, dtype=torch.long, device=queries.device)
    for start in range(0, keys.shape[0], chunk):
        scores = queries @ keys[start:start + chunk].T  # (B, c)
        indices = torch.arange(start, start + scores.shape[1], device=queries.device).expand_as(scores)
        best_scores, best_indices = _merge_topk(best_scores, best_indices, scores, indices, k)
    return best_scores, best_indices


@torch.no_grad()
def exact_search(queries: torch.Tensor, keys: torch.Tensor, k: int,
                 chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k inner-product (cosine, for unit vectors) search.

    Args:
        queries: (Q, D) float query embeddings.
        keys: (N, D) float key embeddings (the gallery), on the same device as ``queries``.
        k: how many neighbours per query, 1 ≤ k ≤ N.
        chunk: keys scored at a time; memory is O(min(Q, QUERY_BLOCK) · (chunk + k)), not O(Q · N).

    Returns:
        ``(scores, indices)``: (Q, k) inner products in descending order and the (Q, k) long
        indices of those keys. Equal scores are ordered by ascending key index (a stable sort
        over keys visited in index order), so ties always go to the lower index and results do
        not depend on ``chunk``. Mixed float dtypes are promoted (e.g. float16 with float32 →
        float32).
    """
    _check_embeddings("queries", queries)
    _check_embeddings("keys", keys)
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"embedding dimensions differ: queries have D={queries.shape[1]}, "
                         f"keys have D={keys.shape[1]}")
    if queries.device != keys.device:
        raise ValueError(f"queries are on {queries.device} but keys are on {keys.device}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= keys.shape[0]:
        raise ValueError(f"k must be an integer with 1 <= k <= N = {keys.shape[0]} keys, got k={k!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    dtype = torch.promote_types(queries.dtype, keys.dtype)
    queries, keys = queries.to(dtype), keys.to(dtype)
    blocks = [_search_block(queries[s:s + QUERY_BLOCK], keys, k, chunk)
              for s in range(0, queries.shape[0], QUERY_BLOCK)]
    if not blocks:  # Q = 0
        return queries.new_empty(0, k), torch.empty(0, k, dtype=torch.long, device=queries.device)
    return torch.cat([s for s, _ in blocks]), torch.cat([i for _, i in blocks])


def _check_captions(text_to_image: torch.Tensor, n_images: int, n_texts: int) -> None:
    """Raise ValueError unless ``text_to_image`` is an (N_txt,) integer tensor of image indices in
    [0, N_img) that gives every image at least one caption."""
    if not isinstance(text_to_image, torch.Tensor) or text_to_image.shape != (n_texts,):
        shape = tuple(text_to_image.shape) if isinstance(text_to_image, torch.Tensor) else type(text_to_image).__name__
        raise ValueError(f"text_to_image must have shape (N_txt,) = ({n_texts},), got {shape}")
    if text_to_image.is_floating_point() or text_to_image.is_complex() or text_to_image.dtype == torch.bool:
        raise ValueError(f"text_to_image must be an integer (long) tensor, got dtype {text_to_image.dtype}")
    outside = ((text_to_image < 0) | (text_to_image >= n_images)).sum().item()
    if outside:
        raise ValueError(f"{outside} of {n_texts} text_to_image entries are outside [0, {n_images}) "
                         f"(N_img = {n_images} images)")
    captions_per_image = torch.bincount(text_to_image.long().cpu(), minlength=n_images)
    missing = (captions_per_image == 0).nonzero().flatten()
    if len(missing):
        raise ValueError(f"{len(missing)} of {n_images} images have no caption "
                         f"(first: {missing[:5].tolist()}); every image needs at least one")


def _check_ks(ks: Sequence[int]) -> list[int]:
    """The ks as a list of positive ints, or ValueError."""
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    return ks


@torch.no_grad()
def retrieval_recall(image_embeds: torch.Tensor, text_embeds: torch.Tensor, text_to_image: torch.Tensor,
                     ks: Sequence[int] = (1, 5, 10), chunk: int = 4096) -> dict[str, float]:
    """Recall@K for image→text and text→image retrieval, several captions per image.

    Args:
        image_embeds: (N_img, D) unit image embeddings.
        text_embeds: (N_txt, D) unit caption embeddings.
        text_to_image: (N_txt,) long; ``text_to_image[j]`` is the index of caption j's image.
            Every image needs at least one caption.
        ks: the cut-offs K. A K larger than the number of candidates counts as all of them (so it
            is a hit for every query); CLIP_benchmark would fail there instead.
        chunk: passed to :func:`exact_search`.

    Returns:
        ``{"i2t_r1": …, "i2t_r5": …, "t2i_r1": …, …}`` — fractions in [0, 1]. ``i2t_rK``: share of
        images with at least one of their captions among their K nearest texts. ``t2i_rK``: share
        of captions whose own image is among their K nearest images. Ties between candidates go to
        the lower index (see :func:`exact_search`).
    """
    _check_embeddings("image_embeds", image_embeds)
    _check_embeddings("text_embeds", text_embeds)
    if image_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(f"embedding dimensions differ: image_embeds have D={image_embeds.shape[1]}, "
                         f"text_embeds have D={text_embeds.shape[1]}")
    n_images, n_texts = image_embeds.shape[0], text_embeds.shape[0]
    _check_captions(text_to_image, n_images, n_texts)
    ks = _check_ks(ks)
    owner = text_to_image.long().to(image_embeds.device)  # (N_txt,)

    _, nearest_texts = exact_search(image_embeds, text_embeds, min(max(ks), n_texts), chunk)  # (N_img, K)
    i2t_hits = owner[nearest_texts] == torch.arange(n_images, device=owner.device)[:, None]  # (N_img, K)
    _, nearest_images = exact_search(text_embeds, image_embeds, min(max(ks), n_images), chunk)  # (N_txt, K)
    t2i_hits = nearest_images == owner[:, None]  # (N_txt, K)

    recall: dict[str, float] = {}
    for direction, hits in (("i2t", i2t_hits), ("t2i", t2i_hits)):
        for k in ks:
            recall[f"{direction}_r{k}"] = hits[:, :k].any(dim=1).float().mean().item()
    return recall


@torch.no_grad()
def caption_match_top1(model: torch.nn.Module, batch: dict[str, Any], device: torch.device | str = "cpu",
                       chunk: int = 256) -> dict[str, float]:
    """The trainer's held-out check: top-1 in-batch retrieval both ways, where a hit is a retrieved
    item whose alt-text *equals* the query's (the generated world repeats captions, so an image
    of "a red star" that finds another image's identical "a red star" is right).

    Not :func:`retrieval_recall`'s Recall@1, which counts only the pair's own partner: on data
    with repeated captions this score is the higher of the two. ``batch`` holds ``image``
    (N, 3, S, S), ``input_ids`` / ``attention_mask`` (N, L) and ``text`` (N captions); ``model``
    has ``encode_image`` / ``encode_text``. Returns ``{"eval_i2t_top1", "eval_t2i_top1",
    "eval_pairs"}``."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    try:
        images = torch.cat([model.encode_image(batch["image"][i:i + chunk].to(device))
                            for i in range(0, len(batch["image"]), chunk)])
        texts = torch.cat([model.encode_text(batch["input_ids"][i:i + chunk].to(device),
                                             batch["attention_mask"][i:i + chunk].to(device))
                           for i in range(0, len(batch["input_ids"]), chunk)])
    finally:
        model.train(was_training)
    sims = images.float() @ texts.float().T  # (N, N)
    caption = batch["text"]
    ids = {t: i for i, t in enumerate(dict.fromkeys(caption))}
    label = torch.tensor([ids[t] for t in caption], device=sims.device)
    i2t = (label[sims.argmax(1)] == label).float().mean().item()
    t2i = (label[sims.argmax(0)] == label).float().mean().item()
    return {"eval_i2t_top1": i2t, "eval_t2i_top1": t2i, "eval_pairs": float(len(caption))}


def compose_query(image_embed: torch.Tensor, text_embed: torch.Tensor, text_weight: float = 2.0,
                  image_weight: float = 1.0) -> torch.Tensor:
    """ALIGN §7 image+text query: ``normalise(image_weight · x̂ + text_weight · t̂)``.

    Args:
        image_embed: (D,) or (B, D) image embedding(s); normalised here, so any non-zero scale works.
        text_embed: the same shape as ``image_embed``; normalised here too.
        text_weight: weight of the text; negative subtracts the concept ("remove"). The paper's
            best mix is 2 (text) : 1 (image).
        image_weight: weight of the image.

    Returns:
        The unit query vector(s), the same shape as the inputs.
    """
    if not isinstance(image_embed, torch.Tensor) or not isinstance(text_embed, torch.Tensor):
        raise ValueError("image_embed and text_embed must be tensors")
    if image_embed.shape != text_embed.shape or image_embed.ndim not in (1, 2):
        raise ValueError(f"image_embed and text_embed must have the same shape, (D,) or (B, D); "
                         f"got {tuple(image_embed.shape)} and {tuple(text_embed.shape)}")
    if not all(math.isfinite(w) for w in (text_weight, image_weight)):
        raise ValueError(f"weights must be finite, got text_weight={text_weight}, image_weight={image_weight}")
    if text_weight == 0 and image_weight == 0:
        raise ValueError("text_weight and image_weight are both 0: the query would be the zero vector")
    for name, x in (("image_embed", image_embed), ("text_embed", text_embed)):
        if not x.is_floating_point() or not torch.isfinite(x).all():
            raise ValueError(f"{name} must be a finite floating tensor")
        if (x.norm(dim=-1) == 0).any():
            raise ValueError(f"{name} has a zero vector, which has no direction to normalise")
    mixed = image_weight * F.normalize(image_embed, dim=-1) + text_weight * F.normalize(text_embed, dim=-1)
    norm = mixed.norm(dim=-1, keepdim=True)  # (…, 1)
    if (norm <= 1e-6 * (abs(text_weight) + abs(image_weight))).any():
        raise ValueError("the weighted image and text cancel out (e.g. the same direction with opposite "
                         "weights): the composed query has no direction")
    return mixed / norm


def edit_success(image_embeds: torch.Tensor, text_embed: torch.Tensor, sources: torch.Tensor,
                 targets: torch.Tensor, text_weight: float = 2.0, image_weight: float = 1.0) -> dict[str, float]:
    """How often an image+text query that edits one attribute finds the edited image (ALIGN §7).

    For each pair i, the query is :func:`compose_query` of image ``sources[i]`` and the text
    (e.g. "dark skin tone"); a success is ``targets[i]`` ranked first among all ``image_embeds``
    other than the source itself. Two ablations score the same pairs: the image alone (its
    nearest other image) and the text alone (the text's nearest image).

    Args:
        image_embeds: (N, D) unit image embeddings, the gallery.
        text_embed: (D,) the attribute's text embedding.
        sources: (P,) long, the images to edit; targets: (P,) long, their edited versions.

    Returns:
        ``{"image+text": …, "image only": …, "text only": …, "pairs": P}``, fractions in [0, 1].
    """
    _check_embeddings("image_embeds", image_embeds)
    if sources.shape != targets.shape or sources.ndim != 1 or len(sources) == 0:
        raise ValueError(f"sources and targets must be equal, non-empty 1-D index tensors, got "
                         f"{tuple(sources.shape)} and {tuple(targets.shape)}")
    if bool((sources == targets).any()):
        raise ValueError("a source is its own target: the edit would change nothing")
    queries = {
        "image+text": compose_query(image_embeds[sources], text_embed.expand(len(sources), -1),
                                    text_weight, image_weight),
        "image only": image_embeds[sources],
        "text only": F.normalize(text_embed, dim=-1).expand(len(sources), -1),
    }
    out: dict[str, float] = {}
    for name, query in queries.items():
        scores = query @ image_embeds.T  # (P, N)
        scores[torch.arange(len(sources)), sources] = float("-inf")  # never the source itself
        out[name] = (scores.argmax(1) == targets).float().mean().item()
    return {**out, "pairs": float(len(sources))}
