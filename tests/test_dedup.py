"""Eval-set de-duplication (align_lite.data.dedup): exact by hash, near by cosine > 0.975."""

from __future__ import annotations

import numpy as np
import pytest

from align_lite.data.dedup import (
    ProtectedImages,
    eval_duplicate_mask,
    exact_duplicate_mask,
    max_cosine,
    near_duplicate_mask,
    normalize_rows,
)


def brute_force_max_cosine(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    best = np.empty(len(x))
    for i, row in enumerate(x):
        best[i] = max(float(row @ col) / (np.linalg.norm(row) * np.linalg.norm(col)) for col in y)
    return best


def with_cosine(anchor: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A vector whose cosine with ``anchor`` is exactly ``cosine`` (up to float error)."""
    a = anchor / np.linalg.norm(anchor)
    r = rng.normal(size=a.shape)
    ortho = r - (r @ a) * a
    ortho /= np.linalg.norm(ortho)
    return cosine * a + np.sqrt(1 - cosine**2) * ortho


# ------------------------------------------------------------------------------- exact


def test_exact_mask_by_hash():
    eval_set = ProtectedImages.from_parts(["aa", "bb"], np.eye(2))
    mask = exact_duplicate_mask(["bb", "cc", "aa", "AA", "", "bb"], eval_set)
    assert mask.dtype == bool
    assert mask.tolist() == [True, False, True, False, False, True]


def test_exact_mask_accepts_a_generator_and_empty_input():
    eval_set = ProtectedImages.from_parts(iter(["h1"]), np.eye(2))
    assert eval_set.hashes == frozenset({"h1"})
    assert exact_duplicate_mask((h for h in ["h0", "h1"]), eval_set).tolist() == [False, True]
    empty = exact_duplicate_mask([], eval_set)
    assert empty.shape == (0,) and empty.dtype == bool


# ------------------------------------------------------------------------------- ProtectedImages / normalize


def test_eval_set_normalises_and_checks_shape():
    eval_set = ProtectedImages.from_parts([], np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert eval_set.embeddings.dtype == np.float32
    np.testing.assert_allclose(eval_set.embeddings, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    with pytest.raises(ValueError, match=r"\(M, D\)"):
        ProtectedImages.from_parts([], np.ones(5))
    with pytest.raises(ValueError):
        ProtectedImages.from_parts([], np.ones((2, 3, 4)))


def test_normalize_rows_keeps_zero_rows_zero():
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [-5.0, 0.0, 0.0]])
    out = normalize_rows(x)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, [[0, 0, 0], [1 / 3, 2 / 3, 2 / 3], [-1, 0, 0]])


# ------------------------------------------------------------------------------- max_cosine


@pytest.mark.parametrize("n,m,d,block", [(50, 7, 16, 4096), (103, 11, 8, 10), (9, 1, 3, 1), (64, 5, 4, 64)])
def test_max_cosine_matches_brute_force(n, m, d, block):
    rng = np.random.default_rng(n * 1000 + m)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=(n, 1))  # not normalised
    y = rng.normal(size=(m, d)) * rng.uniform(0.1, 10, size=(m, 1))
    got = max_cosine(x, y, block=block)
    assert got.shape == (n,) and got.dtype == np.float32
    np.testing.assert_allclose(got, brute_force_max_cosine(x, y), atol=1e-5)


def test_max_cosine_block_size_does_not_change_the_result():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(257, 12)), rng.normal(size=(31, 12))
    reference = max_cosine(x, y)
    for block in (1, 2, 16, 100, 256, 257, 10_000):
        np.testing.assert_allclose(max_cosine(x, y, block=block), reference, atol=1e-6)  # BLAS rounding


def test_max_cosine_identical_and_opposite_vectors():
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    x = np.array([[2.0, 0.0], [-1.0, 0.0], [-1.0, -1.0]])
    np.testing.assert_allclose(max_cosine(x, y), [1.0, 0.0, -np.sqrt(0.5)], atol=1e-6)


def test_max_cosine_with_empty_eval_set_is_minus_inf():
    out = max_cosine(np.ones((3, 4)), np.zeros((0, 4)))
    assert out.shape == (3,)
    assert np.isneginf(out).all()


def test_max_cosine_dim_mismatch():
    with pytest.raises(ValueError, match="dims differ"):
        max_cosine(np.ones((3, 4)), np.ones((2, 5)))
    eval_set = ProtectedImages.from_parts([], np.ones((2, 5)))
    with pytest.raises(ValueError, match="dims differ"):
        near_duplicate_mask(np.ones((3, 4)), eval_set)


# ------------------------------------------------------------------------------- near duplicates


def test_near_duplicate_threshold_boundary():
    rng = np.random.default_rng(0)
    d = 48
    anchors = rng.normal(size=(3, d))
    eval_set = ProtectedImages.from_parts([], anchors)
    cosines = [0.99, 0.976, 0.9755, 0.9745, 0.974, 0.5]
    rows = np.stack([with_cosine(anchors[i % 3], c, rng) * rng.uniform(0.5, 3) for i, c in enumerate(cosines)])
    # the construction really has those cosines with its anchor (and no closer eval image)
    np.testing.assert_allclose(max_cosine(rows, anchors), cosines, atol=2e-4)
    mask = near_duplicate_mask(rows, eval_set)
    assert mask.dtype == bool
    assert mask.tolist() == [True, True, True, False, False, False]


def test_near_duplicate_threshold_is_strict_and_configurable():
    eval_set = ProtectedImages.from_parts([], np.array([[1.0, 0.0]]))
    x = np.array([[1.0, 0.0], [0.8, 0.6]])  # cosines 1.0 and 0.8
    assert near_duplicate_mask(x, eval_set, threshold=0.8 - 1e-4).tolist() == [True, True]
    assert near_duplicate_mask(x, eval_set, threshold=0.8 + 1e-4).tolist() == [True, False]
    assert near_duplicate_mask(x, eval_set, threshold=1.0).tolist() == [False, False]


def test_zero_embedding_is_never_a_near_duplicate():
    eval_set = ProtectedImages.from_parts([], np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert near_duplicate_mask(np.zeros((2, 2)), eval_set).tolist() == [False, False]


# ------------------------------------------------------------------------------- both


def test_eval_duplicate_mask_is_the_or_of_both():
    rng = np.random.default_rng(3)
    anchors = rng.normal(size=(2, 16))
    eval_set = ProtectedImages.from_parts(["h-eval-0", "h-eval-1"], anchors)
    far = rng.normal(size=16)
    far = far - (far @ anchors[0]) * anchors[0] / (anchors[0] @ anchors[0])
    embeddings = np.stack([
        anchors[0] * 2,  # near only
        far,  # exact only (hash matches, embedding unrelated)
        anchors[1],  # both
        far * -1,  # neither
    ])
    hashes = ["h-train-0", "h-eval-1", "h-eval-1", "h-train-3"]
    exact = exact_duplicate_mask(hashes, eval_set)
    near = near_duplicate_mask(embeddings, eval_set)
    assert exact.tolist() == [False, True, True, False]
    assert near.tolist() == [True, False, True, False]
    both = eval_duplicate_mask(hashes, embeddings, eval_set)
    assert both.tolist() == [True, True, True, False]
    np.testing.assert_array_equal(both, exact | near)
    # a looser threshold is passed through to the near test
    assert eval_duplicate_mask(hashes, embeddings, eval_set, threshold=-1.0).all()


def test_eval_duplicate_mask_length_mismatch_is_an_error():
    eval_set = ProtectedImages.from_parts(["h"], np.eye(3))
    with pytest.raises(ValueError):
        eval_duplicate_mask(["h"], np.eye(3)[[0, 1, 2, 0]], eval_set)  # 1 hash, 4 embeddings
