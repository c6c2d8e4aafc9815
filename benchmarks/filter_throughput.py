"""Filter throughput: the vectorised rules against a plain-Python loop of the same rules.

    python benchmarks/filter_throughput.py [--rows 1000000] [--repeats 3]

Generates the noisy world's pair table (metadata only, no images), times
``align_lite.data.filters.apply_filters`` (best of ``--repeats``) with the paper's thresholds
(K = 100 M, where the rare-token rule provably removes nothing at this size) and with a scaled
K at which the rule is active, then times ``reference_filter_masks`` (a loop over rows) once,
checks that both give identical masks, and writes a Markdown table (plus JSON) under
``book/appendix/generated/``, which the book's appendix includes.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from align_lite.data.filters import RULES, FilterConfig, apply_filters, filter_masks, reference_filter_masks
from align_lite.data.world import WorldConfig, make_world_table
from report import OUT_DIR, cpu_name, write_report  # benchmarks/report.py

TARGET_PAIRS_PER_SECOND = 2_000_000


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(rows: int, repeats: int, scaled_k: int) -> dict:
    table = make_world_table(WorldConfig.noisy(n=rows, seed=0))
    configs = {"paper (K = 100 M)": FilterConfig(),
               f"rare-token rule active (K = {scaled_k:,})": FilterConfig(rare_token_top_k=scaled_k)}
    results = []
    for name, config in configs.items():
        apply_filters(table, config)  # warm-up
        seconds = best_time(lambda: apply_filters(table, config), repeats)
        kept = apply_filters(table, config).report.kept
        results.append({"method": f"align_lite, vectorised: {name}", "rows": rows, "seconds": seconds,
                        "pairs_per_second": rows / seconds, "kept": kept})
    plain_rows = table.to_pylist()
    for name, config in configs.items():
        start = time.perf_counter()
        slow = reference_filter_masks(plain_rows, config)
        seconds = time.perf_counter() - start
        fast = filter_masks(table, config)
        identical = all(np.array_equal(fast[r], slow[r]) for r in RULES)
        results.append({"method": f"plain-Python loop: {name}", "rows": rows, "seconds": seconds,
                        "pairs_per_second": rows / seconds, "identical_masks": identical})
    return {
        "benchmark": "filter_throughput",
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "target_pairs_per_second": TARGET_PAIRS_PER_SECOND,
        "results": results,
    }


def to_markdown(summary: dict) -> str:
    lines = [
        f"Filter throughput on {summary['results'][0]['rows']:,} generated pairs "
        f"({summary['machine']}; Python {summary['python']}, pyarrow {summary['pyarrow']}, "
        f"numpy {summary['numpy']}). Target: {summary['target_pairs_per_second']:,} pairs/s.",
        "",
        "| method | seconds | pairs/s | meets target |",
        "|---|---:|---:|:---:|",
    ]
    for r in summary["results"]:
        meets = "yes" if r["pairs_per_second"] >= summary["target_pairs_per_second"] else "no"
        lines.append(f"| {r['method']} | {r['seconds']:.2f} | {r['pairs_per_second']:,.0f} | {meets} |")
    loops = [r for r in summary["results"] if "identical_masks" in r]
    same = all(r["identical_masks"] for r in loops)
    lines += ["", f"Vectorised and loop masks identical for every rule: {'yes' if same else 'NO'}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scaled-k", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    summary = run(args.rows, args.repeats, args.scaled_k)
    write_report(args.out, "filter_throughput", summary, to_markdown(summary))


if __name__ == "__main__":
    main()
