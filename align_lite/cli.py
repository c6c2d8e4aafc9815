"""The ``align-lite`` command.

    align-lite data make   --n N --seed S --out DIR [--clean]
    align-lite data filter IN --out OUT [--report FILE] [--eval-set DIR] [threshold options]
    align-lite data stats  IN

Exit status 0 on success; 1 with a one-line ``align-lite: error: ...`` on unusable input;
2 for a malformed command line (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from align_lite import __version__


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        args.handler(args)
    except (CommandError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        print(f"align-lite: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("align-lite: interrupted", file=sys.stderr)
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="align-lite", description="ALIGN, rebuilt small.")
    parser.add_argument("--version", action="version", version=f"align-lite {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    data = commands.add_parser("data", help="make, filter and describe image-text pair data")
    data_commands = data.add_subparsers(title="data commands", metavar="ACTION")
    _add_make(data_commands)
    _add_filter(data_commands)
    _add_stats(data_commands)
    return parser


# --------------------------------------------------------------------------------------------
# data make
# --------------------------------------------------------------------------------------------


def _add_make(commands) -> None:
    p = commands.add_parser("make", help="draw the generated image-text world to a folder")
    p.add_argument("--n", type=int, required=True, help="number of pairs (rows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output folder (images/ + metadata.jsonl)")
    p.add_argument("--clean", action="store_true", help="no alt-text or image noise")
    p.set_defaults(handler=_run_make)


def _run_make(args: argparse.Namespace) -> None:
    from align_lite.data.world import WorldConfig, write_world

    if args.n < 1:
        raise CommandError("--n must be at least 1")
    config = (WorldConfig.clean if args.clean else WorldConfig.noisy)(n=args.n, seed=args.seed)
    out = write_world(config, args.out)
    print(f"wrote {args.n:,} pairs to {out}")


# --------------------------------------------------------------------------------------------
# data filter
# --------------------------------------------------------------------------------------------

_THRESHOLD_HELP = {
    "min_image_side": "keep images whose shorter side is > this (px)",
    "max_aspect_ratio": "keep images whose aspect ratio is < this",
    "max_alt_texts_per_image": "drop images with more alt-texts than this",
    "max_images_per_alt_text": "drop alt-texts shared by more images than this",
    "min_unigrams": "drop alt-texts with fewer unigrams",
    "max_unigrams": "drop alt-texts with more unigrams",
    "rare_token_top_k": "vocabulary size K of the rare-token rule",
}


def _add_filter(commands) -> None:
    from align_lite.data.filters import FilterConfig

    p = commands.add_parser(
        "filter", help="apply ALIGN's filters to a pair folder (or .jsonl/.parquet)",
        description="Apply ALIGN's filters; defaults are the paper's thresholds.",
    )
    p.add_argument("input", type=Path, metavar="IN", help="folder with metadata.jsonl, or a .jsonl/.parquet")
    p.add_argument("--out", type=Path, required=True, help="folder for the kept rows and images")
    p.add_argument("--report", type=Path, help="write the per-rule report here (JSON)")
    p.add_argument("--eval-set", type=Path, help="remove exact/near duplicates of these images")
    p.add_argument("--near-duplicate-cosine", type=float, default=0.975)
    p.add_argument("--workers", type=int, default=2, help="threads decoding images")
    defaults = FilterConfig()
    for f in fields(FilterConfig):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name),
                       help=f"{_THRESHOLD_HELP[f.name]} (default %(default)s)")
    p.set_defaults(handler=_run_filter)


def _run_filter(args: argparse.Namespace) -> None:
    from align_lite.data.curate import curate, load_eval_set
    from align_lite.data.filters import FilterConfig
    from align_lite.data.records import DataFormatError

    config = FilterConfig(**{f.name: getattr(args, f.name) for f in fields(FilterConfig)})
    try:
        eval_set = load_eval_set(args.eval_set) if args.eval_set else None
        result = curate(args.input, args.out, config, eval_set, args.near_duplicate_cosine, args.workers)
    except DataFormatError as err:
        raise CommandError(str(err)) from err
    report = result.report
    print(report.to_markdown())
    if result.skipped.total:
        print(f"bad input: {result.skipped.summary()}")
        for reason, examples in sorted(result.skipped.examples.items()):
            print(f"  e.g. {reason}: {examples[0]}")
    print(f"kept {report.kept:,} of {report.rows_in:,} rows -> {result.output}")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report.to_json() + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# data stats
# --------------------------------------------------------------------------------------------


def _add_stats(commands) -> None:
    p = commands.add_parser("stats", help="counts, alt-text lengths and sharing of a pair data set")
    p.add_argument("input", type=Path, metavar="IN")
    p.set_defaults(handler=_run_stats)


def _run_stats(args: argparse.Namespace) -> None:
    from align_lite.data.records import DataFormatError, SkipLog, read_pairs
    from align_lite.data.stats import pair_stats

    log = SkipLog()
    try:
        table, _ = read_pairs(args.input, log)
    except DataFormatError as err:
        raise CommandError(str(err)) from err
    print(pair_stats(table).format())
    if log.total:
        print(f"bad input: {log.summary()}")


if __name__ == "__main__":
    raise SystemExit(main())
