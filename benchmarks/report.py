"""Where the benchmark scripts write, and how: ``STEM.json`` (the numbers) and ``STEM.md`` (the
table the book's appendix includes) under ``book/appendix/generated/``."""

from __future__ import annotations

import json
import platform
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parents[1] / "book" / "appendix" / "generated"


def write_report(out_dir: Path, stem: str, summary: dict, markdown: str, indent: int = 2) -> None:
    """Write ``summary`` as JSON and ``markdown`` as the table, then print the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(summary, indent=indent) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown)
    print(markdown)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def experiment_args(doc: str, experiments: tuple[str, ...] = (), steps: int = 600, checkpoints: int | None = None,
                    seeds: tuple[int, ...] | None = None):
    """The command line of the scripts that train for a number of steps (``--steps``,
    ``--threads``, ``--out``; ``--only`` one of ``experiments`` when there are several,
    ``--checkpoints`` and ``--seeds`` when given defaults), parsed; sets torch's threads and quiet
    progress bars."""
    import argparse
    import os

    import torch

    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--threads", type=int, default=2)
    if experiments:
        parser.add_argument("--only", choices=experiments)
    if checkpoints is not None:
        parser.add_argument("--checkpoints", type=int, default=checkpoints)
    if seeds is not None:
        parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds),
                            help="train every run once per seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ALIGN_PROGRESS", "0")
    return args


def pct(value: float) -> str:
    """A fraction as a percentage with one decimal: 0.1234 -> "12.3"."""
    return f"{100 * value:.1f}"


def train_to_checkpoints(trainer, steps: int, checkpoints: int):
    """Train ``trainer`` (an :class:`align_lite.train.Trainer`) to ``steps`` in ``checkpoints``
    even parts; after each part yield the seconds spent training so far (scoring excluded), with
    the model in eval mode for the caller to score."""
    import time

    batches, trained = trainer.loader(0), 0.0
    for mark in (round(steps * (i + 1) / checkpoints) for i in range(checkpoints)):
        trainer.model.train()
        start = time.perf_counter()
        while trainer.step < mark:
            trainer.train_step([next(batches)])
        trained += time.perf_counter() - start
        trainer.model.eval()
        yield trained


def seeds_text(seeds) -> str:
    """How a table of runs over ``seeds`` reads, for the line above it."""
    if len(seeds) < 2:
        return f"One seed ({seeds[0]})."
    return (f"Each run trained once per seed ({', '.join(map(str, seeds))}: the weights' initialisation and the "
            "batch order; the data and the held-out set stay); a cell reads mean (min–max) over the seeds.")

