"""``align-lite train|recipes|experiment``: training runs, the paper-scale recipes, and the
temperature and noise-against-scale experiments."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from align_lite.cli.common import CommandError


def add_commands(commands) -> None:
    _add_train(commands)
    _add_recipes(commands)
    _add_experiment(commands)



# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------

_RECIPES = ("cpu-tiny", "gpu-small", "paper")


def _add_train(commands) -> None:
    # Values are checked by get_preset and TrainConfig, whose errors become one-line messages.
    p = commands.add_parser(
        "train", help="contrastive training of a dual encoder (also: torchrun -m align_lite.train)",
        description="Train ALIGN's dual encoder. Without --data, on the generated world drawn in memory. "
                    "Writes RUN/checkpoint-NNNNNNN/ (model, tokenizer, trainer state), RUN/final/ "
                    "(from_pretrained), RUN/metrics.jsonl and RUN/data_report.json. Unset options take the "
                    "recipe's values; every TrainConfig field has a flag.",
    )
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
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the newest readable checkpoint in --out, or from CHECKPOINT")
    p.add_argument("--hard-negatives", metavar="COLS:COL",
                   help="hard-negative batches: runs of rows sharing the columns COLS (comma-separated) and differing "
                        "in COL, e.g. color,count:shape (cpu-tiny's on the generated world); 'none': plain "
                        "shuffling (the default for --data other than the world)")
    _add_config_flags(p)
    # Older spellings, kept: they set the same fields as --no-learnable-temperature / --world-noisy.
    p.add_argument("--fixed-temperature", dest="learnable_temperature", action="store_const", const=False,
                   help="do not learn the temperature")
    p.add_argument("--noisy-world", dest="world_noisy", action="store_const", const=True,
                   help="train on the noisy world")
    p.set_defaults(handler=_run_train)


_FLAG_TYPES = {"int": int, "float": float, "str": str}


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`~align_lite.train.config.TrainConfig` field (``--field-name``, or the
    field's own ``flag``), typed from its annotation, helped by its metadata, default ``None`` (=
    the recipe's value)."""
    from dataclasses import fields as dataclass_fields

    from align_lite.train.config import TrainConfig

    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f in dataclass_fields(TrainConfig):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        group = meta.get("group")
        if group and group not in groups:
            groups[group] = p.add_mutually_exclusive_group()
        target = groups[group] if group else p
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        kind = f.type.replace(" | None", "")
        metavar = flag.lstrip("-").replace("-", "_").upper()
        if kind == "bool":
            target.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=meta["help"])
        elif kind == "tuple[float, float]":
            target.add_argument(flag, dest=f.name, type=float, nargs=2, default=None, metavar=("B1", "B2"),
                                help=meta["help"])
        else:
            target.add_argument(flag, dest=f.name, type=_FLAG_TYPES[kind], default=None, metavar=metavar,
                                help=meta["help"])


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
    p.add_argument("--devices", type=int, default=8,
                   help="devices to split the global batch over (default %(default)s)")
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
        print(f"{name}: {recipe.description}\n  {t.get('optimizer')}, lr {t.get('lr')}, "
              f"warm-up {t.get('warmup_steps'):,}, "
              f"{t.get('max_steps'):,} steps; {batch}\n  data: {recipe.data}\n  from: {recipe.source}")


def _run_train(args: argparse.Namespace) -> None:
    """Settings, then data, then the run, then its report (process 0 only)."""
    from align_lite.train import train

    config = _train_config(args)
    config, data = _train_data(args, config)
    if args.out.exists() and not args.out.is_dir():
        raise CommandError(f"--out {args.out} is a file, not a run folder")
    result = train(config, data=data, out_dir=args.out, resume=args.resume)
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
        _print_result(result)


def _train_config(args: argparse.Namespace):
    """The recipe (``--recipe`` or ``--config``) with the flags given laid over it."""
    from dataclasses import fields as dataclass_fields

    from align_lite.models import PRESETS
    from align_lite.train import TrainConfig

    if args.model is not None and args.model not in PRESETS:
        raise CommandError(f"unknown model preset {args.model!r}; valid presets: {', '.join(PRESETS)}")
    given = {f.name: getattr(args, f.name, None) for f in dataclass_fields(TrainConfig)}
    overrides = {name: value for name, value in given.items() if value is not None}
    if "betas" in overrides:
        overrides["betas"] = tuple(overrides["betas"])
    if overrides.get("grad_clip") == 0:
        overrides["grad_clip"] = None  # --grad-clip 0 turns clipping off
    if args.config is not None:
        recipe = _config_recipe(args, overrides)
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
    return config


def _config_recipe(args: argparse.Namespace, overrides: dict):
    """``--config NAME``: the recipe's TrainConfig for ``--devices`` processes (``--batch-size``,
    taken out of ``overrides``, is the per-device batch; accumulation follows)."""
    if args.accum_steps is not None:
        raise CommandError("--accum-steps follows from the recipe's global batch with --config; set --batch-size "
                           "or --devices instead")
    recipe_file = _load_recipe(args.config)
    devices = args.devices or int(os.environ.get("WORLD_SIZE", "1"))
    batch = overrides.pop("batch_size", None)
    try:
        recipe = recipe_file.config(devices, **({"batch_size": batch} if batch else {}))
    except ValueError as err:
        raise CommandError(str(err)) from err
    print(f"recipe {recipe_file.name}: {recipe_file.arithmetic(devices, batch)}", flush=True)
    return recipe


def _train_data(args: argparse.Namespace, config):
    """(config, data) for ``--data``, resolved by :func:`align_lite.data.resolve.resolve_source`;
    ``hf:NAME`` gets the CLI's split and columns, and no held-out pairs unless asked."""
    from align_lite.data.resolve import resolve_source

    try:
        source = resolve_source(args.data)
    except FileNotFoundError as err:
        raise CommandError(f"--data {args.data}: no such file or folder") from err
    if source.kind != "hf":
        return config, source.value
    from align_lite.data.hf_stream import HFStream

    if args.eval_size is None:
        config = replace(config, eval_size=0)  # a stream has no held-out pairs
    try:
        stream = HFStream(source.value, split=args.hf_split, image_column=args.image_column,
                          text_column=args.text_column, seed=config.seed)
    except KeyError as err:
        raise CommandError(str(err.args[0])) from err
    return config, stream


def _print_result(result) -> None:
    last = next((r for r in reversed(result.history) if "loss" in r), {})
    summary = f"trained {result.step} steps"
    if last:
        summary += (f": loss {last['loss']:.4f}, temperature {last['temperature']:.4f}, "
                    f"{last['images_per_s']:.0f} images/s")
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
                    "held-out world (zero-shot top-1/top-5 over 64 classes, Recall@1 both ways). "
                    "'temperature': fixed 1/128, 1/64, 1/32 and learnable from 1.0 (paper Table 8). "
                    "'noise-scale': a clean set against noisy sets 1x-8x its size after the paper's filters, "
                    "same steps (paper Tables 9/10). Prints a Markdown table; --out also writes JSON.",
    )
    p.add_argument("name", choices=("temperature", "noise-scale"))
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per run (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, help="peak learning rate (default: the cpu-tiny recipe's)")
    p.add_argument("--world-n", type=int, default=4096,
                   help="temperature: rows of the clean world (default %(default)s)")
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
