"""Multilingual ALIGN, small: one model, every language's emoji names, scored per language.

    python benchmarks/emoji_multilingual.py [--steps 6000] [--checkpoints 3] [--threads 2]

The paper's §7 trains one ALIGN on alt-texts in 100+ languages and scores retrieval in each.
Here: the CPU recipe (:data:`align_lite.emoji_experiments.EMOJI_RECIPE`) on the *labels* of the
training styles (Noto + OpenMoji, four fifths of the concepts) in all 28 languages, one
WordPiece vocabulary, for ``--steps`` steps of 64 pairs (the cleanest multilingual set the corpus
has: one name per emoji and language, no tags). At ``--checkpoints`` evenly spaced steps it
scores, on the held-out style (Twemoji) and for each of ten languages:

* text→image and image→text Recall@1/5/10 with that language's labels as the captions;
* zero-shot top-1/top-5 over the 98 subgroups with the subgroups' names *in that language* as
  the prompts (:func:`~align_lite.emoji_experiments.zero_shot_by_language`).

Each (image, language) label is seen about ``steps × 64 / pairs`` times; the table says how many,
because that, not the language, is what the numbers follow. Writes ``emoji_multilingual.md``
and ``.json`` under ``book/appendix/generated/``.
"""

from __future__ import annotations

import platform
from dataclasses import replace

import torch

from align_lite.data.emoji_corpus import EmojiPairs, EmojiSplit, load_emoji_corpus
from align_lite.emoji_experiments import (EMOJI_RECIPE, EmojiEval, emoji_tokenizer, score, train_pairs,
                                          zero_shot_by_language)
from align_lite.train import Trainer
from report import experiment_args, pct, train_to_checkpoints, write_report  # benchmarks/report.py

LANGUAGES = ("en", "de", "fr", "es", "ru", "hi", "ja", "zh", "ko", "th")


def run(steps: int, checkpoints: int) -> dict:
    corpus, split = load_emoji_corpus(), EmojiSplit()
    pairs = train_pairs(corpus, split, kinds=["label"])
    data = EmojiPairs.of(corpus, pairs)
    tokenizer = emoji_tokenizer(data.texts)
    evaluation = EmojiEval.of(corpus, split, LANGUAGES)
    config = replace(EMOJI_RECIPE, max_steps=steps, eval_every=0)
    trainer = Trainer(config, data, tokenizer=tokenizer)
    points = []
    for trained in train_to_checkpoints(trainer, steps, checkpoints):
        model = trainer.model
        point = {"step": trainer.step, "seconds": round(trained, 1),
                 "views_per_pair": round(trainer.step * config.batch_size / len(data), 2),
                 "retrieval": {k: round(v, 4) for k, v in score(model, tokenizer, evaluation).items()},
                 "zero_shot": zero_shot_by_language(model, tokenizer, corpus, evaluation, LANGUAGES)}
        print(point["step"], point["seconds"], point["retrieval"]["en/t2i_r10"],
              point["retrieval"]["mean/t2i_r10"], flush=True)
        points.append(point)
    return {"config": config.to_dict(), "pairs": len(data), "images": len(evaluation.rows),
            "subgroups": len(evaluation.subgroup_names), "languages": LANGUAGES, "points": points}


def markdown(result: dict) -> str:
    n, last = result["images"], result["points"][-1]
    lines = [
        f"Multilingual ALIGN, small: `EMOJI_RECIPE` trained on the labels of the Noto + OpenMoji drawings in all "
        f"28 languages ({result['pairs']:,} pairs), {result['threads']} threads, {result['machine']}, torch "
        f"{result['torch']}. Scored on the held-out style, Twemoji ({n:,} base emoji; chance R@10 "
        f"{pct(10 / n)} %, subgroup top-1 {pct(1 / result['subgroups'])} %). Per checkpoint: step, training "
        "seconds, and how often each (image, language) label had been seen.", "",
        "| step | s | views per label | T→I R@10 en | T→I R@10, mean of 10 | subgroup top-1 en | "
        "subgroup top-1, mean of 10 |", "|---|---|---|---|---|---|---|"]
    for p in result["points"]:
        zero = [p["zero_shot"][lang]["top1"] for lang in result["languages"]]
        lines.append(f"| {p['step']} | {p['seconds']:.0f} | {p['views_per_pair']:.1f} | "
                     f"{pct(p['retrieval']['en/t2i_r10'])} | {pct(p['retrieval']['mean/t2i_r10'])} | "
                     f"{pct(p['zero_shot']['en']['top1'])} | {pct(sum(zero) / len(zero))} |")
    lines += ["", f"By language at step {last['step']} (percent; zero-shot prompts are the subgroup names in "
              "that language):", "",
              "| language | T→I R@1 | T→I R@5 | T→I R@10 | I→T R@1 | I→T R@10 | subgroup top-1 | subgroup top-5 |",
              "|---|---|---|---|---|---|---|---|"]
    for lang in result["languages"]:
        r, z = last["retrieval"], last["zero_shot"][lang]
        lines.append(f"| {lang} | {pct(r[f'{lang}/t2i_r1'])} | {pct(r[f'{lang}/t2i_r5'])} | "
                     f"{pct(r[f'{lang}/t2i_r10'])} | {pct(r[f'{lang}/i2t_r1'])} | {pct(r[f'{lang}/i2t_r10'])} | "
                     f"{pct(z['top1'])} | {pct(z['top5'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = experiment_args(__doc__, steps=6000, checkpoints=3)
    result = run(args.steps, args.checkpoints)
    result.update(threads=args.threads, machine=platform.machine(), torch=torch.__version__)
    write_report(args.out, "emoji_multilingual", result, markdown(result), indent=1)


if __name__ == "__main__":
    main()
