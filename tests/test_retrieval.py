"""Retrieval: exact search against brute force (chunked, with ties), Recall@K on hand-made
embeddings and against a plain-Python reference, and ALIGN's image+text queries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import align_lite.retrieval as retrieval
from align_lite.retrieval import compose_query, exact_search, retrieval_recall


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    """Random unit rows in float64 (so near-ties between random scores cannot flip an order)."""
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


# ---------------------------------------------------------------- exact_search

@pytest.mark.parametrize("k", [1, 5, 101])
@pytest.mark.parametrize("chunk", [1, 7, 50, 101, 4096])
def test_exact_search_equals_brute_force_topk(k, chunk):
    queries, keys = unit(13, 8, seed=1), unit(101, 8, seed=2)
    scores, indices = exact_search(queries, keys, k, chunk=chunk)
    expected = (queries @ keys.T).topk(k, dim=1)
    assert scores.shape == indices.shape == (13, k) and indices.dtype == torch.long
    torch.testing.assert_close(scores, expected.values)
    assert torch.equal(indices, expected.indices)


def test_exact_search_over_query_blocks(monkeypatch):
    monkeypatch.setattr(retrieval, "QUERY_BLOCK", 4)  # 10 queries → blocks of 4, 4, 2
    queries, keys = unit(10, 6, seed=3), unit(30, 6, seed=4)
    _, indices = exact_search(queries, keys, 3, chunk=8)
    assert torch.equal(indices, (queries @ keys.T).topk(3, dim=1).indices)


def test_exact_search_on_a_gallery_of_100k():
    queries, keys = unit(3, 8, seed=5), unit(100_000, 8, seed=6)
    scores, indices = exact_search(queries, keys, 5)
    expected = (queries @ keys.T).topk(5, dim=1)
    torch.testing.assert_close(scores, expected.values)
    assert torch.equal(indices, expected.indices)


def test_ties_go_to_the_lower_index_whatever_the_chunk():
    # Exactly representable keys: e0 at indices 2, 5, 7, 11; e1 elsewhere; scores are exact.
    keys = torch.zeros(12, 2)
    keys[:, 1] = 1.0
    keys[[2, 5, 7, 11]] = torch.tensor([1.0, 0.0])
    query = torch.tensor([[1.0, 0.0]])
    for chunk in (1, 3, 4, 5, 12):
        _, indices = exact_search(query, keys, 6, chunk=chunk)
        # Four ties at score 1 (ascending index), then ties at 0: indices 0, 1 come first.
        assert indices.tolist() == [[2, 5, 7, 11, 0, 1]], chunk


def test_ties_match_a_sort_by_score_then_index():
    generator = torch.Generator().manual_seed(7)
    keys = torch.randint(-2, 3, (40, 3), generator=generator).float()  # many exactly equal scores
    queries = torch.randint(-2, 3, (6, 3), generator=generator).float()
    _, indices = exact_search(queries, keys, 15, chunk=6)
    sims = (queries @ keys.T).tolist()
    for q, row in enumerate(sims):
        expected = sorted(range(len(row)), key=lambda j: (-row[j], j))[:15]
        assert indices[q].tolist() == expected


def test_exact_search_with_no_queries():
    scores, indices = exact_search(torch.empty(0, 4), unit(5, 4).float(), 2)
    assert scores.shape == indices.shape == (0, 2)


def test_exact_search_rejects_bad_input():
    queries, keys = unit(2, 8), unit(5, 8)
    with pytest.raises(ValueError, match=r"1 <= k <= N = 5 keys, got k=6"):
        exact_search(queries, keys, 6)
    with pytest.raises(ValueError, match=r"got k=0"):
        exact_search(queries, keys, 0)
    with pytest.raises(ValueError, match=r"queries have D=8, keys have D=6"):
        exact_search(queries, unit(5, 6), 1)
    with pytest.raises(ValueError, match=r"queries must be a 2-D tensor"):
        exact_search(queries[0], keys, 1)
    with pytest.raises(ValueError, match=r"keys contains NaN"):
        exact_search(queries, torch.full((5, 8), float("nan")), 1)
    with pytest.raises(ValueError, match=r"chunk must be a positive integer"):
        exact_search(queries, keys, 1, chunk=0)


# ---------------------------------------------------------------- retrieval_recall

def hand_made():
    """3 images (e0, e1, e2) with 2 captions each, owners [0, 0, 1, 1, 2, 2]:

    caption  vector           owner  nearest image (t2i R@1)     t2i R@2
    t0       e0               0      i0 (1)        hit           hit
    t1       (e1 + e0/2)/|·|  0      i1 (.894)     miss          i1, i0: hit
    t2       e1               1      i1 (1)        hit           hit
    t3       e2               1      i2 (1)        miss          i2, then i0/i1 tie at 0 → i0: miss
    t4       (e0 + e2/2)/|·|  2      i0 (.894)     miss          i0, i2: hit
    t5       (e2 + e1/2)/|·|  2      i2 (.894)     hit           hit
    → t2i R@1 = 3/6 = 1/2, R@2 = 5/6, R@3 = 1.

    image  best text          i2t R@1   second text
    i0     t0 (1, own)        hit
    i1     t2 (1, own)        hit
    i2     t3 (1, image 1's)  miss      t5 (.894, own): R@2 hit
    → i2t R@1 = 2/3, R@2 = 1."""
    e = torch.eye(3)
    images = e.clone()
    texts = F.normalize(torch.stack([e[0], e[1] + e[0] / 2, e[1], e[2], e[0] + e[2] / 2, e[2] + e[1] / 2]), dim=1)
    return images, texts, torch.tensor([0, 0, 1, 1, 2, 2])


def test_recall_on_hand_made_embeddings():
    images, texts, owners = hand_made()
    recall = retrieval_recall(images, texts, owners, ks=(1, 2, 3, 10))
    assert recall == pytest.approx({"i2t_r1": 2 / 3, "i2t_r2": 1.0, "i2t_r3": 1.0, "i2t_r10": 1.0,
                                    "t2i_r1": 1 / 2, "t2i_r2": 5 / 6, "t2i_r3": 1.0, "t2i_r10": 1.0})
    assert list(recall) == ["i2t_r1", "i2t_r2", "i2t_r3", "i2t_r10", "t2i_r1", "t2i_r2", "t2i_r3", "t2i_r10"]


def reference_recall(images: torch.Tensor, texts: torch.Tensor, owners: list[int], k: int) -> tuple[float, float]:
    """Plain-Python Recall@k (i2t, t2i) from the similarity matrix, ties to the lower index."""
    sims = (images @ texts.T).tolist()  # [N_img][N_txt]

    def top(row: list[float]) -> list[int]:
        return sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]

    i2t = [any(owners[j] == i for j in top(sims[i])) for i in range(len(sims))]
    t2i = [owners[j] in top([sims[i][j] for i in range(len(sims))]) for j in range(len(owners))]
    return sum(i2t) / len(i2t), sum(t2i) / len(t2i)


def test_recall_matches_a_python_loop_on_random_data():
    generator = torch.Generator().manual_seed(8)
    images = unit(40, 16, seed=9)
    owners = torch.repeat_interleave(torch.arange(40), torch.randint(1, 6, (40,), generator=generator))
    owners = owners[torch.randperm(len(owners), generator=generator)]  # captions in shuffled order
    noise = torch.randn(len(owners), 16, generator=generator, dtype=torch.float64)
    texts = F.normalize(images[owners] + 0.35 * noise, dim=1)  # captions near their image, not on it
    recall = retrieval_recall(images, texts, owners, ks=(1, 5, 10), chunk=7)
    for k in (1, 5, 10):
        i2t, t2i = reference_recall(images, texts, owners.tolist(), k)
        assert recall[f"i2t_r{k}"] == pytest.approx(i2t)
        assert recall[f"t2i_r{k}"] == pytest.approx(t2i)
    assert 0 < recall["t2i_r1"] < 1 and 0 < recall["i2t_r1"] < 1  # the data is neither trivial nor hopeless


def test_recall_rejects_bad_input():
    images, texts, owners = hand_made()
    with pytest.raises(ValueError, match=r"1 of 3 images have no caption \(first: \[1\]\)"):
        retrieval_recall(images, texts, torch.tensor([0, 0, 2, 2, 2, 0]))
    with pytest.raises(ValueError, match=r"2 of 6 text_to_image entries are outside \[0, 3\)"):
        retrieval_recall(images, texts, torch.tensor([0, 1, 2, 3, -1, 0]))
    with pytest.raises(ValueError, match=r"shape \(N_txt,\) = \(6,\), got \(5,\)"):
        retrieval_recall(images, texts, owners[:5])
    with pytest.raises(ValueError, match=r"integer"):
        retrieval_recall(images, texts, owners.float())
    with pytest.raises(ValueError, match=r"image_embeds have D=3, text_embeds have D=2"):
        retrieval_recall(images, texts[:, :2], owners)
    with pytest.raises(ValueError, match=r"ks must be a non-empty"):
        retrieval_recall(images, texts, owners, ks=())


# ---------------------------------------------------------------- compose_query

def test_compose_query_is_the_renormalised_weighted_sum():
    image, text = 3 * unit(5, 8, seed=10), 0.5 * unit(5, 8, seed=11)  # scales must not matter
    query = compose_query(image, text)
    manual = F.normalize(F.normalize(image, dim=1) + 2.0 * F.normalize(text, dim=1), dim=1)
    torch.testing.assert_close(query, manual)
    torch.testing.assert_close(query.norm(dim=1), torch.ones(5, dtype=torch.float64))
    single = compose_query(image[0], text[0], text_weight=1.0, image_weight=1.0)
    assert single.shape == (8,)
    torch.testing.assert_close(single, F.normalize(image[0] / 3 + text[0] / 0.5, dim=0))


def test_zero_text_weight_gives_the_image():
    image, text = 2 * unit(4, 8, seed=12), unit(4, 8, seed=13)
    torch.testing.assert_close(compose_query(image, text, text_weight=0.0), F.normalize(image, dim=1))


def test_negative_text_weight_moves_away_from_the_text():
    image, text = unit(6, 8, seed=14), unit(6, 8, seed=15)
    before = (image * text).sum(1)
    removed = (compose_query(image, text, text_weight=-0.5) * text).sum(1)
    added = (compose_query(image, text, text_weight=0.5) * text).sum(1)
    assert (removed < before).all() and (added > before).all()


def test_compose_query_rejects_bad_input():
    image, text = unit(2, 8), unit(2, 8, seed=1)
    with pytest.raises(ValueError, match=r"both 0"):
        compose_query(image, text, text_weight=0.0, image_weight=0.0)
    with pytest.raises(ValueError, match=r"same shape.*\(2, 8\) and \(8,\)"):
        compose_query(image, text[0])
    with pytest.raises(ValueError, match=r"cancel out"):
        compose_query(image, image, text_weight=-1.0, image_weight=1.0)
    with pytest.raises(ValueError, match=r"text_embed has a zero vector"):
        compose_query(image, torch.zeros(2, 8, dtype=torch.float64))


def test_edit_success_on_a_toy_gallery_with_a_known_answer():
    """Images are a concept direction plus an optional attribute direction. Adding the attribute's
    text to a neutral image must find its edited version; the image alone finds a look-alike
    (a closer neutral image of another concept), the text alone one image for every query."""
    from align_lite.retrieval import edit_success

    torch.manual_seed(0)
    d, concepts = 32, 6
    basis = torch.linalg.qr(torch.randn(d, d))[0]
    attribute = basis[0]
    concept = basis[1:concepts + 1]
    close = concept + 0.05 * basis[concepts + 1]  # a near twin of every concept, neutral
    neutral = F.normalize(concept, dim=1)
    edited = F.normalize(concept + 0.8 * attribute, dim=1)
    gallery = torch.cat([neutral, edited, F.normalize(close, dim=1)])  # (18, d)
    sources, targets = torch.arange(concepts), torch.arange(concepts) + concepts
    scores = edit_success(gallery, attribute, sources, targets)
    assert scores["image+text"] == 1.0 and scores["pairs"] == concepts
    assert scores["image only"] == 0.0  # each neutral image's nearest other image is its twin
    assert scores["text only"] <= 1 / concepts + 1e-6  # one nearest image for every query
    with pytest.raises(ValueError, match="its own target"):
        edit_success(gallery, attribute, sources, sources)
    with pytest.raises(ValueError, match="non-empty"):
        edit_success(gallery, attribute, sources[:0], targets[:0])
