"""``align-lite data make|filter|stats|shards``: making, filtering, describing and packing pairs."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from align_lite.cli.common import CommandError, print_skips


def add_commands(commands) -> None:
    data = commands.add_parser("data", help="make, filter and describe image-text pair data")
    data_commands = data.add_subparsers(title="data commands", metavar="ACTION")
    _add_make(data_commands)
    _add_filter(data_commands)
    _add_stats(data_commands)
    _add_shards(data_commands)


# --------------------------------------------------------------------------------------------
# data make
# --------------------------------------------------------------------------------------------


def _add_make(commands) -> None:
    p = commands.add_parser("make", help="draw the generated image-text world to a folder")
    p.add_argument("--n", type=int, required=True, help="number of pairs (rows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output folder (images/ + metadata.jsonl)")
    p.add_argument("--clean", action="store_true", help="no alt-text or image noise")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (refused otherwise)")
    p.set_defaults(handler=_run_make)


def _run_make(args: argparse.Namespace) -> None:
    from align_lite.data.world import WorldConfig, write_world

    if args.n < 1:
        raise CommandError("--n must be at least 1")
    config = (WorldConfig.clean if args.clean else WorldConfig.noisy)(n=args.n, seed=args.seed)
    out = write_world(config, args.out, overwrite=args.overwrite)
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
    "segment_unspaced": "unigrams of Chinese/Japanese/Thai/...: ICU's dictionary words (no-: spaces only)",
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
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (refused otherwise)")
    p.add_argument("--link", action="store_true",
                   help="hard-link the kept images instead of copying them (an edit of one changes the other)")
    defaults = FilterConfig()
    for f in fields(FilterConfig):
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        switch = isinstance(default, bool)  # --segment-unspaced / --no-segment-unspaced
        kind = {"action": argparse.BooleanOptionalAction} if switch else {"type": type(default)}
        p.add_argument(flag, **kind, default=default,
                       help=f"{_THRESHOLD_HELP[f.name]} (default %(default)s)")
    p.set_defaults(handler=_run_filter)


def _run_filter(args: argparse.Namespace) -> None:
    from align_lite.data.curate import curate, load_protected_images
    from align_lite.data.filters import FilterConfig
    from align_lite.data.records import SkipLog

    config = FilterConfig(**{f.name: getattr(args, f.name) for f in fields(FilterConfig)})
    eval_log = SkipLog()
    eval_set = load_protected_images(args.eval_set, log=eval_log) if args.eval_set else None
    result = curate(args.input, args.out, config, eval_set, args.near_duplicate_cosine, args.workers,
                    overwrite=args.overwrite, link=args.link)
    report = result.report
    if eval_log.total:
        print(f"eval set: {eval_log.summary()} (these eval images are not protected)")
    print(report.to_markdown())
    if result.skipped.total:
        print_skips(result.skipped)
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
    from align_lite.data.records import SkipLog, read_pairs
    from align_lite.data.stats import pair_stats

    log = SkipLog()
    table, _ = read_pairs(args.input, log)
    print(pair_stats(table).format())
    if log.total:
        print(f"bad input: {log.summary()}")


# --------------------------------------------------------------------------------------------
# data shards
# --------------------------------------------------------------------------------------------


def _add_shards(commands) -> None:
    p = commands.add_parser("shards", help="write a pair folder (or .jsonl/.parquet) as webdataset tar shards")
    p.add_argument("input", type=Path, metavar="IN")
    p.add_argument("--out", required=True, help="shard path pattern with one %%d field, e.g. 'DIR/shard-%%06d.tar'")
    p.add_argument("--max-count", type=int, default=10_000, help="pairs per shard (default %(default)s)")
    p.add_argument("--report", type=Path, help="write the skipped rows by reason, with examples, here (JSON)")
    p.add_argument("--no-check", action="store_true",
                   help="pack image bytes without decoding them (data a filter has already checked)")
    p.set_defaults(handler=_run_shards)


def _run_shards(args: argparse.Namespace) -> None:
    import json

    from align_lite.data.records import SkipLog
    from align_lite.data.streaming import write_shards

    log = SkipLog()
    shards = write_shards(args.input, args.out, max_count=args.max_count, log=log,
                          check_images=not args.no_check)
    print(f"wrote {len(shards):,} shards: {shards[0] if shards else '-'} .. {shards[-1] if shards else '-'}")
    print_skips(log)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({"shards": shards, "skipped": log.to_dict()}, indent=1,
                                          ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"report -> {args.report}")
