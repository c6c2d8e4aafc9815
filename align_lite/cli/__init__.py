"""The ``align-lite`` command.

    align-lite data make   --n N --seed S --out DIR [--clean] [--overwrite]
    align-lite data filter IN --out OUT [--report FILE] [--eval-set DIR] [--overwrite] [--link] [threshold options]
    align-lite data stats  IN
    align-lite data shards IN --out 'DIR/shard-%06d.tar' [--max-count N]
    align-lite train --preset P [--data DIR|world] --out RUN [--max-steps N | --max-seconds S] [--resume]
    align-lite experiment temperature|noise-scale [--steps N] [--batch-size B] [--out FILE.json]
    align-lite eval RUN [--data world|DIR] [--templates SET] [--json]
    align-lite index RUN --data DIR --db PATH.db
    align-lite search --db PATH.db (--text T | --image FILE [--text T]) [--k K]

Exit status 0 on success; 1 with a one-line ``align-lite: error: ...`` on unusable input;
2 for a malformed command line (argparse's convention).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from align_lite import __version__
from align_lite.cli import data, search, train
from align_lite.cli import eval as evaluation
from align_lite.cli.common import CommandError, run_handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    return run_handler(args)


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser; each command group builds its own (no torch import: ``--help``
    stays instant)."""
    parser = argparse.ArgumentParser(prog="align-lite", description="ALIGN, rebuilt small.")
    parser.add_argument("--version", action="version", version=f"align-lite {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    data.add_commands(commands)
    train.add_commands(commands)
    evaluation.add_commands(commands)
    search.add_commands(commands)
    return parser


__all__ = ["CommandError", "build_parser", "main"]
