"""``align-lite eval``: retrieval and zero-shot scores of a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from align_lite.cli.common import CommandError, load_model, model_folder


def add_commands(commands) -> None:
    _add_eval(commands)


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
                   help="world: captions per image, its own plus paraphrases "
                        "(default %(default)s, as in the benchmarks)")
    p.add_argument("--level", default="category", choices=("category", "subcategory"),
                   help="emoji: the classes for zero-shot (default %(default)s)")
    p.add_argument("--max-images", type=int, help="pair data: evaluate on the first N images")
    p.add_argument("--templates", default="single",
                   help="prompt set: single, imagenet_7, imagenet_80, world (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_run_eval)




def _run_eval(args: argparse.Namespace) -> None:
    import json

    from align_lite.evaluate import emoji_eval_set, evaluate, load_eval_set, world_eval_set
    from align_lite.zero_shot import TEMPLATE_SETS, load_templates

    if args.templates not in TEMPLATE_SETS:
        raise CommandError(f"--templates must be one of {', '.join(TEMPLATE_SETS)}")
    folder = model_folder(args.run)
    model, tokenizer = load_model(folder)
    size = model.config.image.image_size
    if args.data == "world":
        if args.n < 1 or args.captions < 1:
            raise CommandError("--n and --captions must be positive")
        data = world_eval_set(args.n, image_size=size, captions_per_image=args.captions)
    elif args.data == "emoji":
        data = emoji_eval_set(size, args.level, args.max_images)
    else:
        data = load_eval_set(args.data, size, args.max_images)
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
