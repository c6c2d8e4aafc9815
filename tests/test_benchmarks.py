"""The benchmark scripts' measuring code, at toy size (their numbers live in the book's appendix)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
throughput = pytest.importorskip("throughput")


def test_throughput_measures_every_phase_and_counts_flops():
    row = throughput.measure("tiny", batch_size=4, steps=1, warmup=0, precision="fp32", peak=1.0)
    for phase in ("data", "forward", "backward", "optimizer"):
        assert row[f"{phase}_ms"] > 0
    assert row["step_ms"] == pytest.approx(sum(row[f"{p}_ms"] for p in ("data", "forward", "backward", "optimizer")))
    assert row["images_per_s"] == pytest.approx(4 / (row["step_ms"] / 1000))
    # tiny at 64 px: ~20 MFLOPs forward per pair, x3 for training. Counting the backward with
    # FlopCounterMode would give ~3x more (it counts depthwise-conv backward as dense).
    assert 0.03 < row["gflops_per_step"] / 4 < 0.12
    assert 0 < row["mfu"] and 0.2 < row["parameters_m"] < 1.7  # tiny; the word-piece table is sized to the world's vocabulary
    table = throughput.to_markdown({"device": "cpu", "torch": "x", "threads": 1, "peak_tflops": 1.0,
                                    "peak_is": "given", "results": [row]})
    assert f"| tiny | {row['parameters_m']:.1f} | 64 | 4 | fp32 |" in table

