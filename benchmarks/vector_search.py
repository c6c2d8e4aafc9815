"""Vector search: ``align_lite.search.VectorIndex`` (Milvus Lite) against exact torch search.

    python benchmarks/vector_search.py [--rows 10000 100000] [--dim 128] [--queries 100] [--repeats 5]

Draws seeded random unit vectors (D = 128, the tiny model's embedding width), inserts them into a
fresh Milvus Lite database per index type (timing ``add``), runs the same ``--queries`` queries
through ``VectorIndex.search`` (median of ``--repeats`` batches, after one warm-up) and through
an exact torch matrix product + ``topk``, and reports recall@10 against the exact answer. Writes
a Markdown table (plus JSON) under ``book/appendix/generated/``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import pymilvus
import torch

from align_lite.search import VectorIndex
from report import OUT_DIR, write_report  # benchmarks/report.py

K = 10
TARGET_RECALL = 0.99
TARGET_MS = 100.0  # for the batch of queries over the largest collection


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def unit_vectors(n: int, dim: int, seed: int) -> torch.Tensor:
    """(n, dim) float32 random directions, rows L2-normalised."""
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=-1)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def recall_at_k(got: list[list[int]], exact: torch.Tensor) -> float:
    """Mean fraction of each query's exact top-k ids (Q, k) found in its returned ids."""
    found = sum(len(set(row) & set(ref)) for row, ref in zip(got, exact.tolist()))
    return found / exact.numel()


def run_one(keys: torch.Tensor, queries: torch.Tensor, index_type: str, repeats: int, workdir: Path) -> dict:
    n, dim = keys.shape
    exact_ids = (queries @ keys.T).topk(K, dim=-1).indices
    exact_ms = median_ms(lambda: (queries @ keys.T).topk(K, dim=-1), repeats)
    with VectorIndex(workdir / f"{index_type}_{n}.db", dim=dim, index_type=index_type) as index:
        start = time.perf_counter()
        index.add(keys, batch_size=5000)
        insert_s = time.perf_counter() - start
        hits = index.search(queries, k=K)
        search_ms = median_ms(lambda: index.search(queries, k=K), repeats)
        rows = len(index)
    return {"index_type": index_type, "rows": rows, "dim": dim, "queries": len(queries), "k": K,
            "insert_s": insert_s, "search_ms": search_ms, "exact_torch_ms": exact_ms,
            "recall_at_10": recall_at_k([[h.id for h in row] for row in hits], exact_ids)}


def run(rows: list[int], dim: int, n_queries: int, repeats: int, index_types: list[str]) -> dict:
    queries = unit_vectors(n_queries, dim, seed=1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in rows:
            keys = unit_vectors(n, dim, seed=0)
            for index_type in index_types:
                results.append(run_one(keys, queries, index_type, repeats, Path(tmp)))
                print(results[-1], flush=True)
    return {
        "benchmark": "vector_search",
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pymilvus": pymilvus.__version__,
        "milvus_lite": milvus_lite_version(),
        "torch_threads": torch.get_num_threads(),
        "target_recall_at_10": TARGET_RECALL,
        "target_search_ms": TARGET_MS,
        "results": results,
    }


def milvus_lite_version() -> str:
    try:
        from importlib.metadata import version
        return version("milvus-lite")
    except Exception:  # noqa: BLE001 — reporting only
        return "unknown"


def targets(summary: dict) -> tuple[bool, bool]:
    """(recall target met by every run, latency target met at the largest size) for FLAT."""
    flat = [r for r in summary["results"] if r["index_type"] == "FLAT"] or summary["results"]
    largest = max(r["rows"] for r in flat)
    recall_ok = all(r["recall_at_10"] >= summary["target_recall_at_10"] for r in flat)
    speed_ok = all(r["search_ms"] <= summary["target_search_ms"] for r in flat if r["rows"] == largest)
    return recall_ok, speed_ok


def to_markdown(summary: dict) -> str:
    r0 = summary["results"][0]
    lines = [
        f"Vector search: {r0['queries']} queries, top-{r0['k']}, random unit vectors, D = {r0['dim']} "
        f"({summary['machine']}; Python {summary['python']}, torch {summary['torch']}, "
        f"pymilvus {summary['pymilvus']}, milvus-lite {summary['milvus_lite']}). Search time is the median "
        f"for the whole batch of queries; exact = torch matrix product + topk.",
        "",
        "| index | rows | insert (s) | search, Milvus Lite (ms) | exact torch (ms) | recall@10 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in summary["results"]:
        lines.append(f"| {r['index_type']} | {r['rows']:,} | {r['insert_s']:.1f} | {r['search_ms']:.0f} | "
                     f"{r['exact_torch_ms']:.1f} | {r['recall_at_10']:.3f} |")
    recall_ok, speed_ok = targets(summary)
    lines += ["", f"Target recall@10 ≥ {summary['target_recall_at_10']} (FLAT): {'met' if recall_ok else 'not met'}.",
              f"Target {r0['queries']} queries over the largest collection in ≤ {summary['target_search_ms']:.0f} ms "
              f"(FLAT): {'met' if speed_ok else 'not met'}.",
              "", "Milvus Lite 3.x runs in-process in Python (gRPC + NumPy/FAISS per segment), so most of the "
              "search time is per-request overhead, not distance computation; HNSW shows no speed-up at these "
              "sizes (its recall of 1.000 suggests the searched segments were not HNSW-indexed; not "
              "investigated)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--index-types", nargs="+", default=["FLAT", "HNSW"])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    summary = run(args.rows, args.dim, args.queries, args.repeats, args.index_types)
    write_report(args.out, "vector_search", summary, to_markdown(summary))


if __name__ == "__main__":
    main()
