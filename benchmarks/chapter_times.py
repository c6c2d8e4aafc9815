"""How long each chapter took to run, read from the stored notebooks (no chapter is run here).

    python benchmarks/chapter_times.py

`jupyter execute` (nbclient) stamps every code cell it runs with the times its kernel started
and finished it (``metadata.execution``). A chapter's time is its first cell's start to its last
cell's finish: the kernel's start-up is not in it; training a model the chapter did not find in
the cache (``$ALIGN_LITE_CACHE``) at that run is. Writes ``chapter_times.md``/``.json``
under ``book/appendix/generated/``; ``book/appendix/reproduce.md`` includes the table.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from report import OUT_DIR, write_report  # benchmarks/report.py

BOOK = Path(__file__).resolve().parents[1] / "book"


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def chapter_time(path: Path) -> dict:
    """{"chapter", "cells", "seconds", "executed"} of one stored notebook; ValueError when a code
    cell has no timing (a notebook saved by hand, not by ``jupyter execute``)."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    timings = [c["metadata"].get("execution", {}) for c in cells]
    if not cells or not all("iopub.execute_input" in t and "shell.execute_reply" in t for t in timings):
        raise ValueError(f"{path.name}: not every code cell carries jupyter execute's timing")
    start, end = stamp(timings[0]["iopub.execute_input"]), stamp(timings[-1]["shell.execute_reply"])
    return {"chapter": path.stem, "cells": len(cells), "seconds": round((end - start).total_seconds(), 1),
            "executed": start.date().isoformat()}


def markdown(rows: list[dict]) -> str:
    lines = ["| chapter | code cells | seconds | executed on |", "|---|---|---|---|"]
    lines += [f"| {r['chapter']} | {r['cells']} | {r['seconds']:.0f} | {r['executed']} |" for r in rows]
    total = sum(r["seconds"] for r in rows)
    lines.append(f"| all chapters | {sum(r['cells'] for r in rows)} | {total:.0f} | |")
    return ("Each chapter's run as `jupyter execute` stamped it in the stored notebook: from its first "
            "cell's start to its last cell's end, without the kernel's start-up, with the training of any "
            "model the chapter did not find in its cache at that run.\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    rows = [chapter_time(path) for path in sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))]
    write_report(OUT_DIR, "chapter_times", {"chapters": rows}, markdown(rows))


if __name__ == "__main__":
    main()
