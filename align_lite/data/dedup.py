"""Removing training images that duplicate evaluation images (paper, App. A).

ALIGN removes exact and near duplicates of the test images of every downstream eval set, so that
zero-shot numbers are not inflated by memorised test images. The paper embeds images with a
separate model, and calls two images near-duplicates when their cosine similarity exceeds 0.975
(it uses k-means buckets only to avoid comparing 1.8 B × |eval| pairs). At our scale an exact
search over all pairs is affordable, so we skip the buckets and compare everything, in blocks.

Two tests, both against an eval set:

* exact: the SHA-256 of the encoded file bytes matches an eval image's;
* near: cosine(train embedding, eval embedding) > ``threshold`` for some eval image. The default
  embedding is :func:`align_lite.data.images.thumbnail_embedding`; any (N, D) embedding works.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

PAPER_NEAR_DUPLICATE_COSINE = 0.975


@dataclass(frozen=True)
class ProtectedImages:
    """The images to protect: their content hashes and (M, D) L2-normalised embeddings."""

    hashes: frozenset[str]
    embeddings: np.ndarray

    @classmethod
    def from_parts(cls, hashes: Iterable[str], embeddings: np.ndarray) -> ProtectedImages:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2:
            raise ValueError(f"eval embeddings must be (M, D), got shape {embeddings.shape}")
        return cls(frozenset(hashes), normalize_rows(embeddings))


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """(N, D) → rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def exact_duplicate_mask(hashes: Iterable[str], eval_set: ProtectedImages) -> np.ndarray:
    """(N,) bool: the image's content hash is one of the eval set's."""
    return np.array([h in eval_set.hashes for h in hashes], dtype=bool)


def max_cosine(embeddings: np.ndarray, eval_embeddings: np.ndarray, block: int = 4096) -> np.ndarray:
    """(N,) float32: each row's highest cosine similarity to any eval embedding.

    ``embeddings`` (N, D) and ``eval_embeddings`` (M, D) need not be normalised. Computed in
    blocks of ``block`` rows so memory stays at block × M.
    """
    x = normalize_rows(np.asarray(embeddings, dtype=np.float32))
    y = normalize_rows(np.asarray(eval_embeddings, dtype=np.float32))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"embedding dims differ: {x.shape[1]} vs eval {y.shape[1]}")
    if len(y) == 0:
        return np.full(len(x), -np.inf, dtype=np.float32)
    best = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), block):
        best[start : start + block] = (x[start : start + block] @ y.T).max(axis=1)
    return best


def near_duplicate_mask(
    embeddings: np.ndarray, eval_set: ProtectedImages, threshold: float = PAPER_NEAR_DUPLICATE_COSINE
) -> np.ndarray:
    """(N,) bool: cosine similarity to some eval image > ``threshold``."""
    return max_cosine(embeddings, eval_set.embeddings) > threshold


def eval_duplicate_mask(
    hashes: Iterable[str],
    embeddings: np.ndarray,
    eval_set: ProtectedImages,
    threshold: float = PAPER_NEAR_DUPLICATE_COSINE,
) -> np.ndarray:
    """(N,) bool: exact or near duplicate of an eval image."""
    exact = exact_duplicate_mask(hashes, eval_set)
    near = near_duplicate_mask(embeddings, eval_set, threshold)
    if exact.shape != near.shape:  # a length-1 side would otherwise broadcast silently
        raise ValueError(f"{len(exact)} hashes but {len(near)} embeddings")
    return exact | near
