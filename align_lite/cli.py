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
import os
import sys
from collections.abc import Sequence
from dataclasses import fields, replace
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
    _add_shards(data_commands)
    _add_train(commands)
    _add_recipes(commands)
    _add_experiment(commands)
    _add_eval(commands)
    _add_index(commands)
    _add_search(commands)
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
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out (refused otherwise)")
    p.set_defaults(handler=_run_make)


def _run_make(args: argparse.Namespace) -> None:
    from align_lite.data.records import DataFormatError
    from align_lite.data.world import WorldConfig, write_world

    if args.n < 1:
        raise CommandError("--n must be at least 1")
    config = (WorldConfig.clean if args.clean else WorldConfig.noisy)(n=args.n, seed=args.seed)
    try:
        out = write_world(config, args.out, overwrite=args.overwrite)
    except DataFormatError as err:
        raise CommandError(str(err)) from err
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
    from align_lite.data.curate import curate, load_eval_set
    from align_lite.data.filters import FilterConfig
    from align_lite.data.records import DataFormatError, SkipLog

    config = FilterConfig(**{f.name: getattr(args, f.name) for f in fields(FilterConfig)})
    try:
        eval_log = SkipLog()
        eval_set = load_eval_set(args.eval_set, log=eval_log) if args.eval_set else None
        result = curate(args.input, args.out, config, eval_set, args.near_duplicate_cosine, args.workers,
                        overwrite=args.overwrite, link=args.link)
    except DataFormatError as err:
        raise CommandError(str(err)) from err
    report = result.report
    if eval_log.total:
        print(f"eval set: {eval_log.summary()} (these eval images are not protected)")
    print(report.to_markdown())
    if result.skipped.total:
        _print_skips(result.skipped)
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

    from align_lite.data.records import DataFormatError, SkipLog
    from align_lite.data.streaming import write_shards

    log = SkipLog()
    try:
        shards = write_shards(args.input, args.out, max_count=args.max_count, log=log,
                              check_images=not args.no_check)
    except DataFormatError as err:
        raise CommandError(str(err)) from err
    print(f"wrote {len(shards):,} shards: {shards[0] if shards else '-'} .. {shards[-1] if shards else '-'}")
    _print_skips(log)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({"shards": shards, "skipped": log.to_dict()}, indent=1,
                                          ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"report -> {args.report}")


def _print_skips(log) -> None:
    """``bad input: none``, or the count by reason with the first example of each."""
    if not log.total:
        print("bad input: none")
        return
    print(f"bad input: {log.summary()}")
    for reason, examples in sorted(log.examples.items()):
        if examples:
            print(f"  e.g. {reason}: {examples[0]}")


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------

_RECIPES = ("cpu-tiny", "gpu-small", "paper")


def _add_train(commands) -> None:
    # No imports of torch-backed modules here: building the parser must stay instant (`--help`).
    # Values are checked by get_preset and TrainConfig, whose errors become one-line messages.
    p = commands.add_parser(
        "train", help="contrastive training of a dual encoder (also: torchrun -m align_lite.train)",
        description="Train ALIGN's dual encoder. Without --data, on the generated world drawn in memory. "
                    "Writes RUN/checkpoint-NNNNNNN/ (model, tokenizer, trainer state), RUN/final/ "
                    "(from_pretrained), RUN/metrics.jsonl. Unset options take the recipe's values.",
    )
    p.add_argument("--preset",
                   help="model preset: tiny, tiny-wide, b3-mini, b5-base, b7-base, l2-large (default: the recipe's)")
    p.add_argument("--recipe", default="cpu-tiny", choices=_RECIPES, help="training defaults (default %(default)s)")
    p.add_argument("--config", help="a recipe for a real run instead: a shipped name (see `align-lite recipes`) or "
                                    "a .toml file; --batch-size sets the per-device batch, accumulation follows")
    p.add_argument("--devices", type=int,
                   help="--config: processes the global batch is split over (default: $WORLD_SIZE, else 1)")
    p.add_argument("--data", default="world",
                   help="'world' (default), a pair folder / .jsonl / .parquet, webdataset shards "
                        "('dir/shard-{000000..000099}.tar', streamed; with --eval-size the last shard is held out), "
                        "or hf:NAME, a Hugging Face data set streamed (hub name, local .parquet/.jsonl or folder)")
    p.add_argument("--hf-split", default="train", help="hf:NAME data: the split (default %(default)s)")
    p.add_argument("--image-column", default="image", help="hf:NAME data: the image column (default %(default)s)")
    p.add_argument("--text-column", default="text",
                   help="hf:NAME data: the caption column, a string or a list of captions (default %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--max-steps", type=int, help="optimizer steps (also the schedule's length)")
    limit.add_argument("--max-seconds", type=float,
                       help="stop after this much training time (the schedule keeps the recipe's length)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the newest readable checkpoint in --out, or from CHECKPOINT")
    p.add_argument("--max-bad-share", type=float,
                   help="stop when more than this share of rows (0..1) is unusable (default: never stop)")
    p.add_argument("--batch-size", type=int, help="pairs per micro-batch per process")
    p.add_argument("--accum-steps", type=int, help="micro-batches per step (negatives = all of them)")
    p.add_argument("--lr", type=float)
    p.add_argument("--image-lr-scale", type=float, help="the image tower's lr = lr x this (cpu-tiny: 5)")
    p.add_argument("--text-pooling", choices=("cls", "mean"), help="override the preset's text pooling")
    p.add_argument("--hard-negatives", metavar="COLS:COL",
                   help="hard-negative batches: runs of rows sharing the columns COLS (comma-separated) and differing "
                        "in COL, e.g. color,count:shape (cpu-tiny's on the generated world); 'none': plain "
                        "shuffling (the default for --data other than the world)")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--optimizer", help="adamw or lamb")
    p.add_argument("--schedule", help="linear, cosine or constant")
    p.add_argument("--precision", help="auto, fp32, bf16 or fp16")
    p.add_argument("--grad-clip", type=float, help="max gradient norm; 0 turns clipping off")
    p.add_argument("--seed", type=int)
    p.add_argument("--temperature", type=float, help="initial (learnable) or fixed temperature")
    p.add_argument("--fixed-temperature", action="store_true", help="do not learn the temperature")
    p.add_argument("--world-n", type=int, help="rows of the generated world")
    p.add_argument("--noisy-world", action="store_true", help="train on the noisy world")
    p.add_argument("--text-length", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--ckpt-every", type=int, help="checkpoint every N steps (0: at the end only)")
    p.add_argument("--eval-every", type=int)
    p.add_argument("--eval-size", type=int, help="held-out pairs for the retrieval check (0: none)")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--no-tensorboard", action="store_true")
    p.set_defaults(handler=_run_train)


def _hard_negatives(spec: str) -> tuple[tuple[str, ...], str | None]:
    """``"color,count:shape"`` -> (("color", "count"), "shape"); ``"none"`` -> ((), None)."""
    if spec.strip().lower() == "none":
        return (), None
    share, sep, vary = spec.partition(":")
    columns = tuple(c.strip() for c in share.split(",") if c.strip())
    if not sep or not columns or not vary.strip():
        raise CommandError(f"--hard-negatives {spec!r}: expected COLS:COL (e.g. color,count:shape) or none")
    return columns, vary.strip()


def _replace(config, **changes):
    try:
        return replace(config, **changes)
    except ValueError as err:
        raise CommandError(str(err)) from err


def _load_recipe(name_or_path: str):
    from align_lite.recipes import load_recipe

    try:
        return load_recipe(name_or_path)
    except (ValueError, FileNotFoundError) as err:
        raise CommandError(str(err)) from err


def _add_recipes(commands) -> None:
    p = commands.add_parser(
        "recipes", help="list the shipped recipes for real runs and their batch arithmetic",
        description="Each recipe is a TOML file of TrainConfig fields plus the global batch; "
                    "`align-lite train --config NAME` (or torchrun -m align_lite.train --config NAME) runs it.",
    )
    p.add_argument("--devices", type=int, default=8, help="devices to split the global batch over (default %(default)s)")
    p.set_defaults(handler=_run_recipes)


def _run_recipes(args: argparse.Namespace) -> None:
    from align_lite.recipes import list_recipes

    for name in list_recipes():
        recipe = _load_recipe(name)
        t = recipe.train
        try:
            batch = recipe.arithmetic(args.devices)
        except ValueError as err:
            batch = f"(does not divide: {err})"
        print(f"{name}: {recipe.description}\n  {t.get('optimizer')}, lr {t.get('lr')}, warm-up {t.get('warmup_steps'):,}, "
              f"{t.get('max_steps'):,} steps; {batch}\n  data: {recipe.data}\n  from: {recipe.source}")


def _run_train(args: argparse.Namespace) -> None:
    from align_lite.models import PRESETS
    from align_lite.train import TrainConfig, train

    if args.preset is not None and args.preset not in PRESETS:
        raise CommandError(f"unknown model preset {args.preset!r}; valid presets: {', '.join(PRESETS)}")
    overrides = {} if args.preset is None else {"model": args.preset}
    for name in ("batch_size", "accum_steps", "lr", "image_lr_scale", "text_pooling", "warmup_steps", "weight_decay",
                 "optimizer", "schedule", "precision", "seed", "temperature", "world_n", "text_length", "log_every", "ckpt_every",
                 "eval_every", "eval_size", "num_workers", "device", "max_steps", "max_seconds", "max_bad_share"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.grad_clip is not None:
        overrides["grad_clip"] = args.grad_clip if args.grad_clip > 0 else None
    if args.fixed_temperature:
        overrides["learnable_temperature"] = False
    if args.noisy_world:
        overrides["world_noisy"] = True
    if args.compile:
        overrides["compile"] = True
    if args.gradient_checkpointing:
        overrides["gradient_checkpointing"] = True
    if args.no_tensorboard:
        overrides["tensorboard"] = False
    if args.config is not None:
        if args.accum_steps is not None:
            raise CommandError("--accum-steps follows from the recipe's global batch with --config; set --batch-size "
                               "or --devices instead")
        recipe_file = _load_recipe(args.config)
        devices = args.devices or int(os.environ.get("WORLD_SIZE", "1"))
        batch = overrides.pop("batch_size", None)
        try:
            recipe = recipe_file.config(devices, **({"batch_size": batch} if batch else {}))
            print(f"recipe {recipe_file.name}: {recipe_file.arithmetic(devices, batch)}", flush=True)
        except ValueError as err:
            raise CommandError(str(err)) from err
    else:
        recipe = {"cpu-tiny": TrainConfig.cpu_tiny, "gpu-small": TrainConfig.gpu_small,
                  "paper": TrainConfig.paper}[args.recipe]()
    if "max_steps" in overrides and overrides["max_steps"] < recipe.warmup_steps and "warmup_steps" not in overrides:
        overrides["warmup_steps"] = overrides["max_steps"]  # a short run still gets a full schedule
    config = replace(recipe, **overrides)
    if args.hard_negatives is not None:
        share, vary = _hard_negatives(args.hard_negatives)
        config = _replace(config, hard_negative_share=share, hard_negative_vary=vary)
    elif args.data != "world" and config.hard_negative_share:
        config = replace(config, hard_negative_share=(), hard_negative_vary=None)  # the world's columns
        print("hard-negative batches: off (they group the generated world's columns; --hard-negatives COLS:COL "
              "groups yours)", flush=True)
    from align_lite.train import is_shard_source

    if args.data == "world":
        data = None
    elif args.data.startswith("hf:"):
        from align_lite.data.streaming import HFStream

        if args.eval_size is None:
            config = replace(config, eval_size=0)  # a stream has no held-out pairs
        try:
            data = HFStream(args.data[3:], split=args.hf_split, image_column=args.image_column,
                            text_column=args.text_column, seed=config.seed)
        except KeyError as err:
            raise CommandError(str(err.args[0])) from err
    elif is_shard_source(args.data):
        data = args.data  # tar shards: a brace pattern or glob, expanded by the stream
    else:
        data = Path(args.data)
        if not data.exists():
            raise CommandError(f"--data {data}: no such file or folder")
    from align_lite.data.records import DataFormatError

    if args.out.exists() and not args.out.is_dir():
        raise CommandError(f"--out {args.out} is a file, not a run folder")
    try:
        result = train(config, data=data, out_dir=args.out, resume=args.resume)
    except DataFormatError as err:
        raise CommandError(str(err)) from err
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
    last = next((r for r in reversed(result.history) if "loss" in r), {})
    summary = f"trained {result.step} steps"
    if last:
        summary += f": loss {last['loss']:.4f}, temperature {last['temperature']:.4f}, {last['images_per_s']:.0f} images/s"
    if result.skipped_steps:
        summary += f" ({result.skipped_steps} steps skipped: non-finite loss or gradients)"
    print(summary)
    print(_data_report_line(result.data_report))
    if result.eval:
        print("held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in result.eval.items() if k != "eval_pairs"))
    print(f"model -> {result.final_dir} (align_lite.models.from_pretrained); checkpoint -> {result.checkpoint}")


def _data_report_line(report: dict) -> str:
    """The run's unusable rows by reason, in a line or three (``Trainer.data_report``)."""
    def by_reason(counts: dict) -> str:
        return ", ".join(f"{reason}: {n:,}" for reason, n in counts.items())

    lines = []
    rows = report.get("rows")
    dropped = report.get("dropped_while_reading") or {}
    head = f"data: {rows:,} rows" if rows is not None else "data: streamed"
    lines.append(head + (f"; {sum(dropped.values()):,} dropped while reading ({by_reason(dropped)})" if dropped
                         else "; none dropped while reading"))
    bad = report.get("bad_images") or {}
    if bad:
        lines.append(f"  bad images met {report['bad_images_total']:,} times, {report['bad_images_were']} "
                     f"({by_reason(bad)})")
    held_out = report.get("held_out_unreadable") or {}
    if held_out:
        lines.append(f"  held-out pairs left out: {sum(held_out.values()):,} ({by_reason(held_out)})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# experiment
# --------------------------------------------------------------------------------------------


def _add_experiment(commands) -> None:
    p = commands.add_parser(
        "experiment", help="Chapter 4's experiments: the temperature ablation, noise vs scale",
        description="Train the tiny model several times on the generated world and score each run on a "
                    "held-out world (zero-shot top-1/top-5 over 64 classes, top-1 retrieval both ways). "
                    "'temperature': fixed 1/128, 1/64, 1/32 and learnable from 1.0 (paper Table 8). "
                    "'noise-scale': a clean set against noisy sets 1x-8x its size after the paper's filters, "
                    "same steps (paper Tables 9/10). Prints a Markdown table; --out also writes JSON.",
    )
    p.add_argument("name", choices=("temperature", "noise-scale"))
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per run (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, help="peak learning rate (default: the cpu-tiny recipe's)")
    p.add_argument("--world-n", type=int, default=4096, help="temperature: rows of the clean world (default %(default)s)")
    p.add_argument("--clean-n", type=int, default=1024, help="noise-scale: rows of the clean set (default %(default)s)")
    p.add_argument("--ratios", default="1,2,4,8", help="noise-scale: noisy set sizes as multiples of --clean-n")
    p.add_argument("--eval-n", type=int, default=512, help="held-out world rows (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the runs (curves included) as JSON")
    p.set_defaults(handler=_run_experiment)


def _run_experiment(args: argparse.Namespace) -> None:
    import time

    from align_lite import experiments as ex
    from align_lite.train import TrainConfig

    if args.steps < 1 or args.batch_size < 1 or args.eval_n < 1:
        raise CommandError("--steps, --batch-size and --eval-n must be positive")
    try:
        ratios = [int(r) for r in args.ratios.split(",") if r.strip()]
    except ValueError:
        raise CommandError(f"--ratios must be comma-separated integers, got {args.ratios!r}") from None
    if not ratios or min(ratios) < 1:
        raise CommandError("--ratios needs at least one integer >= 1")
    overrides = dict(max_steps=args.steps, batch_size=args.batch_size, warmup_steps=min(20, args.steps),
                     world_n=args.world_n, seed=args.seed, world_seed=args.seed, log_every=max(1, args.steps // 20))
    if args.lr is not None:
        overrides["lr"] = args.lr
    base = TrainConfig.cpu_tiny(**overrides)
    eval_data = ex.WorldEval.from_world(n=args.eval_n)
    start = time.perf_counter()
    if args.name == "temperature":
        runs = ex.temperature_ablation(base, eval_data)
        print(ex.runs_table(runs, ex.PAPER_TABLE8))
    else:
        runs = ex.noise_vs_scale(base, clean_n=args.clean_n, noisy_ratios=ratios, eval_data=eval_data)
        print(ex.runs_table(runs))
    seconds = time.perf_counter() - start
    print(f"{len(runs)} runs of {args.steps} steps in {seconds:.0f} s")
    if args.out is not None:
        ex.save_runs(runs, args.out, experiment=args.name, command=" ".join(sys.argv), seconds=seconds,
                     eval_images=len(eval_data.texts), eval_classified=len(eval_data.classified))
        print(f"runs -> {args.out}")


# --------------------------------------------------------------------------------------------
# eval
# --------------------------------------------------------------------------------------------


def _add_eval(commands) -> None:
    p = commands.add_parser(
        "eval", help="zero-shot top-1/top-5 and Recall@1/5/10 both ways of a trained model",
        description="Score RUN (a training run folder, its final/ is used, or a checkpoint folder) on --data: "
                    "'world' (a held-out generated world) or a pair folder / .jsonl / .parquet. Rows sharing "
                    "a file_name are captions of one image; a 'label' column enables zero-shot classification. "
                    "Unreadable images are skipped and counted.",
    )
    p.add_argument("run", type=Path)
    p.add_argument("--data", default="world", help="'world' (default), 'emoji' (the shipped sample) or pair data")
    p.add_argument("--n", type=int, default=512, help="world: rows of the held-out world (default %(default)s)")
    p.add_argument("--captions", type=int, default=5,
                   help="world: captions per image, its own plus paraphrases (default %(default)s, as in the benchmarks)")
    p.add_argument("--level", default="category", choices=("category", "subcategory"),
                   help="emoji: the classes for zero-shot (default %(default)s)")
    p.add_argument("--max-images", type=int, help="pair data: evaluate on the first N images")
    p.add_argument("--templates", default="single", help="prompt set: single, imagenet_7, imagenet_80, world (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_run_eval)


def _model_folder(run: Path) -> Path:
    for candidate in (run / "final", run):
        if (candidate / "config.json").is_file():
            return candidate
    raise CommandError(f"{run}: no model here (expected {run / 'final'} or a folder with config.json)")


def _load_model(folder: Path):
    """(model, tokenizer) saved in ``folder``; a one-line error when the tokenizer is missing."""
    from align_lite.models import from_pretrained, load_tokenizer

    model, tokenizer = from_pretrained(folder), load_tokenizer(folder)
    if tokenizer is None:
        raise CommandError(f"{folder}: the model has no tokenizer files")
    return model, tokenizer


def _run_eval(args: argparse.Namespace) -> None:
    import json

    from align_lite.evaluate import emoji_eval_set, evaluate, load_eval_set, world_eval_set
    from align_lite.zero_shot import TEMPLATE_SETS, load_templates

    if args.templates not in TEMPLATE_SETS:
        raise CommandError(f"--templates must be one of {', '.join(TEMPLATE_SETS)}")
    folder = _model_folder(args.run)
    model, tokenizer = _load_model(folder)
    size = model.config.image.image_size
    if args.data == "world":
        if args.n < 1 or args.captions < 1:
            raise CommandError("--n and --captions must be positive")
        data = world_eval_set(args.n, image_size=size, captions_per_image=args.captions)
    elif args.data == "emoji":
        data = emoji_eval_set(size, args.level, args.max_images)
    else:
        from align_lite.data.records import DataFormatError

        try:
            data = load_eval_set(args.data, size, args.max_images)
        except DataFormatError as err:
            raise CommandError(str(err)) from err
    scores = evaluate(model, tokenizer, data, load_templates(args.templates))
    if data.scenes is not None:
        from align_lite.world_probes import count_probe, relation_probe

        scores.update(counting=count_probe(model, tokenizer, data).accuracy,
                      relations=relation_probe(model, tokenizer, data).accuracy)
    if args.json:
        print(json.dumps({"model": str(folder), "data": args.data, "skipped": data.skipped or {}, **scores}, indent=1))
        return
    print(f"{folder} on {args.data}: {int(scores['images'])} images, {int(scores['captions'])} captions"
          + (f", skipped {sum(data.skipped.values())} rows ({data.skipped})" if data.skipped else ""))
    if "zero_shot_top1" in scores:
        print(f"zero-shot over {int(scores['classes'])} classes ({int(scores['classified_images'])} images): "
              f"top-1 {scores['zero_shot_top1']:.1%}, top-5 {scores['zero_shot_top5']:.1%}")
    for direction, name in (("i2t", "image→text"), ("t2i", "text→image")):
        print(f"{name}: " + ", ".join(f"R@{k} {scores[f'{direction}_r{k}']:.1%}" for k in (1, 5, 10)))
    if "counting" in scores:
        print(f"counting {scores['counting']:.1%}, spatial relations {scores['relations']:.1%} (chance 25 % each)")


# --------------------------------------------------------------------------------------------
# index and search
# --------------------------------------------------------------------------------------------


def _add_index(commands) -> None:
    p = commands.add_parser(
        "index", help="embed a pair data set's images and captions into a Milvus (Lite) index",
        description="Embed every readable image (kind=image) and every caption (kind=text) of --data with the "
                    "model of RUN and store them, with file_name and text as metadata, in --db: a local .db "
                    "file (Milvus Lite) or an http(s):// Milvus server URI. PATH.json beside a .db records "
                    "which model made the vectors, so that `align-lite search` embeds queries with it.",
    )
    p.add_argument("run", type=Path)
    p.add_argument("--data", required=True, help="pair folder / .jsonl / .parquet")
    p.add_argument("--db", required=True, help="Milvus Lite file (.db) or Milvus server URI")
    p.add_argument("--collection", default="align_lite")
    p.add_argument("--max-images", type=int)
    again = p.add_mutually_exclusive_group()
    again.add_argument("--append", action="store_true",
                       help="add the rows to a collection that already has some (same model only)")
    again.add_argument("--overwrite", action="store_true", help="replace a collection that already has rows")
    p.set_defaults(handler=_run_index)


def _index_card(db: str) -> Path:
    return Path(db + ".json") if not db.startswith(("http://", "https://")) else Path("align_lite_index.json")


def _run_index(args: argparse.Namespace) -> None:
    import json

    import torch

    from align_lite.evaluate import load_eval_set
    from align_lite.search import VectorIndex
    from align_lite.zero_shot import embed_images, embed_texts

    folder = _model_folder(args.run)
    model, tokenizer = _load_model(folder)
    card = _index_card(args.db)
    with VectorIndex(args.db, args.collection, dim=model.config.embed_dim) as index:  # opened before embedding
        stored = len(index)
        if stored and not (args.append or args.overwrite):
            raise CommandError(f"collection {args.collection!r} in {args.db} already holds {stored} vectors; "
                               "pass --overwrite to replace them or --append to add to them")
        if stored and args.append and card.is_file():
            made_by = json.loads(card.read_text()).get("model")
            if made_by != str(folder.resolve()):
                raise CommandError(f"{args.db} was indexed with the model {made_by}, not {folder.resolve()}: "
                                   "vectors of two models cannot be searched together (use --overwrite)")
        if stored and args.overwrite:
            index.drop()
            index = VectorIndex(args.db, args.collection, dim=model.config.embed_dim)
        data = load_eval_set(args.data, model.config.image.image_size, args.max_images)
        names = data.image_names
        images = embed_images(model, data.pixels, progress_desc="embed images")
        texts = embed_texts(model, tokenizer, data.texts, progress_desc="embed captions")
        rows = [{"kind": "image", "file_name": names[i], "text": ""} for i in range(len(images))]
        rows += [{"kind": "text", "file_name": names[int(j)], "text": t}
                 for t, j in zip(data.texts, data.text_to_image)]
        ids = index.add(torch.cat([images, texts]), metadata=rows)
        total = len(index)
        index.close()
    card.write_text(json.dumps({"model": str(folder.resolve()), "collection": args.collection,
                                "dim": int(images.shape[1])}, indent=1) + "\n")
    skipped = sum((data.skipped or {}).values())
    print(f"indexed {len(images)} images and {len(texts)} captions ({len(ids)} vectors, {total} in the collection)"
          + (f"; skipped {skipped} unreadable rows" if skipped else "") + f" -> {args.db}")


def _add_search(commands) -> None:
    p = commands.add_parser(
        "search", help="query an index made by `align-lite index` with a text, an image, or both",
        description="--text T finds images; --image FILE finds captions; --image FILE --text T finds images "
                    "for the composed query (ALIGN §7: unit image + 2 x unit text, renormalised; a negative "
                    "--text-weight removes the concept). --kind overrides what is searched.",
    )
    p.add_argument("--db", required=True)
    p.add_argument("--text")
    p.add_argument("--image", type=Path)
    p.add_argument("--text-weight", type=float, default=2.0)
    p.add_argument("--kind", choices=("image", "text", "any"), help="what to retrieve")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--run", type=Path, help="model to embed the query with (default: the one recorded by index)")
    p.add_argument("--collection", help="the collection to search (default: the one recorded by index)")
    p.set_defaults(handler=_run_search)


def _run_search(args: argparse.Namespace) -> None:
    import json

    from align_lite.data.images import BadImageError, ImageTransformConfig, image_transform, open_rgb
    from align_lite.retrieval import compose_query
    from align_lite.search import VectorIndex
    from align_lite.zero_shot import embed_images, embed_texts

    if not args.text and args.image is None:
        raise CommandError("give --text, --image, or both")
    card = _index_card(args.db)
    recorded = json.loads(card.read_text()) if card.is_file() else {}
    if args.run is not None:
        folder = _model_folder(args.run)
        if recorded.get("model") and recorded["model"] != str(folder.resolve()):
            print(f"warning: {args.db} was indexed with the model {recorded['model']}; queries embedded with "
                  f"{folder.resolve()} may not be comparable with its vectors", file=sys.stderr)
    elif recorded:
        folder = Path(recorded["model"])
    else:
        raise CommandError(f"no {card} (written by `align-lite index`): pass --run to say which model made the index")
    collection = args.collection or recorded.get("collection", "align_lite")
    model, tokenizer = _load_model(folder)
    query = None
    if args.image is not None:
        try:
            image = open_rgb(args.image)
        except BadImageError as err:
            raise CommandError(f"--image {args.image}: {err}") from err
        pixels = image_transform(ImageTransformConfig.tiny(model.config.image.image_size))(image)[None]
        query = embed_images(model, pixels)
    if args.text:
        text = embed_texts(model, tokenizer, [args.text])
        query = text if query is None else compose_query(query, text, text_weight=args.text_weight)
    kind = args.kind or ("text" if args.image is not None and not args.text else "image")
    with VectorIndex(args.db, collection) as index:
        hits = index.search(query, k=args.k, filter=None if kind == "any" else f'kind == "{kind}"')[0]
    for rank, hit in enumerate(hits, 1):
        meta = hit.metadata
        print(f"{rank:2d}. {hit.score:.3f}  {meta.get('kind', '?'):5s}  {meta.get('file_name', '')}  {meta.get('text', '')}")


if __name__ == "__main__":
    raise SystemExit(main())
