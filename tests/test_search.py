"""VectorIndex (Milvus Lite) against exact torch search: same top-k, metadata and filters, rows that
survive a process restart, and every bad input refused before anything reaches Milvus."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("milvus_lite", reason="Milvus Lite has no Windows build")

from align_lite import search as search_module  # noqa: E402
from align_lite.search import Hit, VectorIndex, require_index_backend  # noqa: E402

N, D, K = 2000, 64, 10


def unit_vectors(n: int, d: int, seed: int) -> torch.Tensor:
    """(n, d) float32 random directions, rows L2-normalised."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=-1)


def exact_topk(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product top-k: scores and indices, both (Q, k)."""
    return (queries @ keys.T).topk(k, dim=-1)


def meta(i: int) -> dict:
    return {"kind": "image" if i % 2 == 0 else "text", "caption": f"caption {i}", "file_name": f"{i:05d}.png"}


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("milvus") / "sub" / "index.db"


@pytest.fixture(scope="module")
def keys() -> torch.Tensor:
    return unit_vectors(N, D, seed=0)


@pytest.fixture(scope="module")
def index(db, keys):
    with VectorIndex(db, collection="shared", dim=D) as idx:
        idx.add(keys, metadata=[meta(i) for i in range(N)], batch_size=500)
        yield idx


@pytest.fixture
def fresh(db, request):
    """An empty index of its own (a new collection in the same Milvus Lite database)."""
    name = request.node.name
    idx = VectorIndex(db, collection=f"t_{name.split('[')[0]}_{abs(hash(name)) % 10**6}", dim=4)
    yield idx
    if idx._client is not None:
        idx.drop()


def test_topk_ids_and_scores_match_exact_torch_search(index, keys):
    queries = torch.cat([keys[:5], unit_vectors(45, D, seed=1)])
    hits = index.search(queries, k=K)
    scores, ids = exact_topk(queries, keys, K)
    assert len(index) == N and len(hits) == len(queries)
    assert [[h.id for h in row] for row in hits] == ids.tolist()
    got = torch.tensor([[h.score for h in row] for row in hits])
    torch.testing.assert_close(got, scores, atol=1e-5, rtol=0)
    assert [row[0].id for row in hits[:5]] == [0, 1, 2, 3, 4]  # a stored vector finds itself first


def test_batched_queries_give_the_same_answer(index):
    # The same hits in the same order; scores equal to float32 round-off only, since Milvus may
    # compute a batch of 4 queries with other kernels than a batch of 23 (seen: 1 ulp apart).
    queries = unit_vectors(23, D, seed=2).numpy()
    batched, whole = index.search(queries, k=3, batch_size=4), index.search(queries, k=3)
    def ids_and_metadata(rows):
        return [[(h.id, h.metadata) for h in row] for row in rows]

    assert ids_and_metadata(batched) == ids_and_metadata(whole)
    torch.testing.assert_close(torch.tensor([[h.score for h in row] for row in batched]),
                               torch.tensor([[h.score for h in row] for row in whole]), atol=1e-6, rtol=0)


def test_metadata_round_trips_and_filter_matches_exact_search_on_the_subset(index, keys):
    queries = unit_vectors(8, D, seed=3)
    hits = index.search(queries, k=5, filter='kind == "image"')
    images = torch.arange(0, N, 2)
    _, sub = exact_topk(queries, keys[images], 5)
    assert [[h.id for h in row] for row in hits] == images[sub].tolist()
    for row in hits:
        for hit in row:
            assert isinstance(hit, Hit) and hit.metadata == meta(hit.id)
    assert [h.id for h in index.search(keys[7:8], k=3, filter="id in [7, 9]")[0]] == [7, 9]
    assert index.search(keys[:1], k=3, filter='caption == "no such caption"') == [[]]


def test_hit_is_frozen():
    with pytest.raises(AttributeError):
        Hit(1, 0.5, {}).id = 2  # type: ignore[misc]


def test_rows_survive_a_process_restart(tmp_path, keys):
    path = tmp_path / "restart.db"
    np.save(tmp_path / "keys.npy", keys[:300].numpy())
    writer = textwrap.dedent(f"""
        import json, numpy as np
        from align_lite.search import VectorIndex
        keys = np.load({str(tmp_path / "keys.npy")!r})
        with VectorIndex({str(path)!r}, dim={D}) as index:
            ids = index.add(keys[:200], metadata=[{{"kind": "image", "n": i}} for i in range(200)])
            ids += index.add(keys[200:], metadata=[{{"kind": "text", "n": i}} for i in range(200, 300)])
        print(json.dumps(ids))
    """)
    done = subprocess.run([sys.executable, "-c", writer], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == list(range(300))
    with VectorIndex(path) as index:  # dim, metric and index type come from the stored collection
        assert (len(index), index.dim, index.metric, index.index_type) == (300, D, "IP", "FLAT")
        hits = index.search(keys[:300], k=1)
        assert [row[0].id for row in hits] == list(range(300))
        assert hits[250][0].metadata == {"kind": "text", "n": 250}
        assert index.add(keys[300:302]) == [300, 301]  # auto ids continue after a restart
    with pytest.raises(ValueError, match="dim=64, not 32"):
        VectorIndex(path, dim=32)
    with pytest.raises(ValueError, match="metric"):
        VectorIndex(path, metric="L2")


def test_dimension_mismatch_raises_before_milvus_is_called(index, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("Milvus was called")

    before = len(index)
    for name in ("insert", "query", "search", "upsert", "get_collection_stats"):
        monkeypatch.setattr(index.client, name, boom)
    with pytest.raises(ValueError, match="dimension 65 but the index has dimension 64"):
        index.add(torch.randn(3, D + 1))
    with pytest.raises(ValueError, match="dimension 32"):
        index.add(np.zeros((3, 32), dtype=np.float32), ids=[10**6, 10**6 + 1, 10**6 + 2])
    with pytest.raises(ValueError, match="queries have dimension 63"):
        index.search(torch.randn(2, D - 1))
    monkeypatch.undo()
    assert len(index) == before == N


def test_non_finite_vectors_are_rejected_and_nothing_is_inserted(fresh):
    fresh.add(torch.eye(4)[:2])
    bad = torch.ones(5, 4)
    bad[3, 1] = float("nan")
    bad[4, 0] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or inf in 2 row\(s\), first at rows \[3, 4\]"):
        fresh.add(bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        fresh.search(bad)
    assert len(fresh) == 2


def test_auto_ids_continue_and_id_clashes_are_refused(fresh):
    assert fresh.add(torch.eye(4)[:3]) == [0, 1, 2]
    assert fresh.add(np.eye(4, dtype=np.float64)[:2], metadata=[{"a": 1}, {"a": 2}]) == [3, 4]
    assert fresh.add(torch.eye(4)[:2], ids=[10, np.int64(11)]) == [10, 11]
    with pytest.raises(ValueError, match=r"duplicate ids within one add\(\) call: \[7\]"):
        fresh.add(torch.eye(4)[:3], ids=[7, 8, 7])
    with pytest.raises(ValueError, match=r"already in the index, e.g. \[4, 10\]"):
        fresh.add(torch.eye(4)[:3], ids=[4, 10, 20])
    assert len(fresh) == 7  # ids 0-4, 10, 11
    with pytest.raises(ValueError, match="auto ids continue"):
        fresh.add(torch.eye(4)[:4])  # would be 7, 8, 9, 10: 10 is taken
    assert len(fresh) == 7
    assert fresh.add(torch.zeros(0, 4)) == []


@pytest.mark.parametrize("call, error, match", [
    (lambda ix: ix.add(torch.ones(4)), ValueError, r"shape \(N, 4\)"),
    (lambda ix: ix.add([[1.0, 0, 0, 0]]), TypeError, "torch.Tensor or numpy.ndarray"),
    (lambda ix: ix.add(np.array([["a"] * 4])), TypeError, "real-valued"),
    (lambda ix: ix.add(torch.eye(4), ids=[1, 2]), ValueError, "2 ids for 4 embeddings"),
    (lambda ix: ix.add(torch.eye(4)[:1], ids=[1.5]), TypeError, "ids must be integers"),
    (lambda ix: ix.add(torch.eye(4)[:1], ids=[2**63]), ValueError, "int64"),
    (lambda ix: ix.add(torch.eye(4)[:2], metadata=[{}]), ValueError, "1 metadata entries for 2"),
    (lambda ix: ix.add(torch.eye(4)[:1], metadata=[{"id": 3}]), ValueError, "key 'id'"),
    (lambda ix: ix.add(torch.eye(4)[:1], metadata=[{"x": object()}]), ValueError, "JSON"),
    (lambda ix: ix.add(torch.eye(4)[:1], metadata=["image"]), TypeError, "must be a dict"),
    (lambda ix: ix.add(torch.eye(4), batch_size=0), ValueError, "batch_size"),
    (lambda ix: ix.search(torch.eye(4), k=0), ValueError, "k must be"),
    (lambda ix: ix.search(torch.eye(4), k=10**6), ValueError, "at most"),
    (lambda ix: ix.search(torch.eye(4), filter=3), TypeError, "filter"),
    (lambda ix: ix.search(torch.eye(4), search_params=[("ef", 8)]), TypeError, "search_params"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_is_refused_and_inserts_nothing(fresh, call, error, match):
    with pytest.raises(error, match=match):
        call(fresh)
    assert len(fresh) == 0


def test_bad_construction_arguments(tmp_path, db):
    with pytest.raises(ValueError, match="ending in '.db'"):
        VectorIndex(tmp_path / "index.sqlite", dim=4)
    with pytest.raises(ValueError, match="pass dim="):
        VectorIndex(db, collection="never_created")
    with pytest.raises(ValueError, match="metric must be one of"):
        VectorIndex(db, collection="x", dim=4, metric="hamming")
    with pytest.raises(ValueError, match="index_type must be one of"):
        VectorIndex(db, collection="x", dim=4, index_type="DISKANN")
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        VectorIndex(db, collection="x", dim=0)


def test_close_context_manager_and_drop(db):
    with VectorIndex(db, collection="lifetime", dim=4, metric="cosine") as index:
        index.add(torch.eye(4))
        assert index.metric == "COSINE" and "dim=4" in repr(index)
    with pytest.raises(RuntimeError, match="closed"):
        len(index)
    index.close()  # a second close is harmless
    again = VectorIndex(db, collection="lifetime")
    assert len(again) == 4 and again.metric == "COSINE"
    again.drop()
    with pytest.raises(RuntimeError, match="closed"):
        again.search(torch.eye(4))
    with pytest.raises(ValueError, match="pass dim="):
        VectorIndex(db, collection="lifetime")


def test_ann_index_is_refused_on_milvus_lite_without_faiss(tmp_path, monkeypatch):
    # Milvus Lite would accept it, fail to build it in a background thread and search by brute force.
    monkeypatch.setattr(search_module, "faiss_available", lambda: False)
    with pytest.raises(ImportError, match="faiss"):
        VectorIndex(tmp_path / "ann.db", dim=4, index_type="hnsw")
    with pytest.raises(ImportError, match="faiss"):
        require_index_backend("IVF_FLAT", str(tmp_path / "ann.db"))
    require_index_backend("HNSW", "http://localhost:19530")  # a server builds its own indexes
    require_index_backend("FLAT", str(tmp_path / "ann.db"))


@pytest.mark.parametrize("index_type, tuning", [("HNSW", {"ef": 256}), ("IVF_FLAT", {"nprobe": 128})])
def test_ann_index_is_built_by_add_and_used_by_search(tmp_path, keys, index_type, tuning):
    pytest.importorskip("faiss")
    path = tmp_path / "ann.db"
    with VectorIndex(path, dim=D, index_type=index_type) as index:
        index.add(keys[:1500])
        sidecars = sorted(f.name for f in path.rglob("*.idx"))
        assert sidecars and all(f".{index_type.lower()}." in name for name in sidecars), sidecars
        assert index.add(keys[1500:]) == list(range(1500, N))  # a second add() still works
        assert len(index) == N
        queries = unit_vectors(20, D, seed=4)
        hits = index.search(queries, k=K, search_params=tuning)
        _, exact = exact_topk(queries, keys, K)
        found = sum(len({h.id for h in row} & set(ref)) for row, ref in zip(hits, exact.tolist()))
        assert found / exact.numel() >= 0.95
        assert [row[0].id for row in index.search(keys[:20], k=1, search_params=tuning)] == list(range(20))
    with VectorIndex(path) as again:  # reopening loads the stored index type and its sidecars
        assert again.index_type == index_type and len(again) == N


def test_inner_product_scores_are_cosines_whatever_the_length(fresh):
    # Before: the ×1000 row outranked the exact match, and zero vectors were stored.
    fresh.add(torch.tensor([[1.0, 0, 0, 0], [1000.0, 1000.0, 0, 0], [0, 0.001, 0, 0.001]]))
    hits = fresh.search(torch.tensor([[3.0, 0, 0, 0]]), k=3)[0]
    assert [h.id for h in hits] == [0, 1, 2]
    assert [h.score for h in hits] == pytest.approx([1.0, 2 ** -0.5, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match=r"2 zero vector\(s\), first at rows \[0, 2\]"):
        fresh.add(torch.tensor([[0.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="zero vector"):
        fresh.search(torch.zeros(1, 4))
    assert len(fresh) == 3


def test_a_filter_milvus_cannot_parse_is_one_clear_error(fresh, capfd):
    fresh.add(torch.eye(4), metadata=[{"kind": "image"}] * 4)
    with pytest.raises(ValueError, match=r"could not apply the filter 'kind == == \"image\"'"):
        fresh.search(torch.eye(4)[:1], filter='kind == == "image"')
    assert "Traceback" not in capfd.readouterr().err
    assert len(fresh.search(torch.eye(4)[:1], k=4, filter='kind == "image"')[0]) == 4


def test_a_database_that_cannot_be_opened_is_one_clear_error(tmp_path, capfd):
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database")  # a Milvus Lite .db is a folder
    with pytest.raises(ValueError, match="could not open the Milvus database .*garbage.db"):
        VectorIndex(garbage, dim=4)
    assert "Traceback" not in capfd.readouterr().err


def test_a_filter_on_a_field_no_row_has_is_an_error_not_an_empty_answer(db, fresh):
    fresh.add(torch.eye(4)[:2], metadata=[{"kind": "image"}, {"kind": "text", "lang": "de"}])
    with pytest.raises(ValueError, match=r"names knid, which no row .* \(fields: id, kind, lang\)"):
        fresh.search(torch.eye(4)[:1], filter='knid == "image"')
    # words inside strings, operators and functions are not fields; known keys pass
    assert len(fresh.search(torch.eye(4)[:1], k=4, filter='kind in ["image", "lang x"] and id >= 0')[0]) == 1
    assert len(fresh.search(torch.eye(4)[:1], k=4, filter='lang == "de"')[0]) == 1
    fresh.close()
    with VectorIndex(db, collection=fresh.collection) as again:  # the keys are kept with the collection
        assert again.metadata_keys == {"kind", "lang"}
        again.add(torch.eye(4)[2:3], metadata=[{"colour": "red"}])
        assert again.search(torch.eye(4)[2:3], k=1, filter='colour == "red"')[0][0].id == 2
        again.drop()


def test_filter_fields_reads_names_not_strings_or_functions():
    from align_lite.search import filter_fields

    expression = 'kind == "a and b" and json_contains(tags, \'x\') or NOT size > 1e5 and $meta["k"] like "q%"'
    assert filter_fields(expression) == {"kind", "tags", "size"}
