"""Chapter 4's two experiments on real alt-text: the temperature ablation and noise vs scale,
on the emoji corpus, scored on the held-out style.

    python benchmarks/emoji_chapter4.py [--steps 600] [--threads 2] [--only temperature|noise-scale]

:func:`align_lite.emoji_experiments.temperature_ablation` trains ``EMOJI_RECIPE`` on every
training pair (all 28 languages) with the temperature fixed at 1/128, 1/64, 1/32 and learnt from
1.0 (the paper's Table 8); :func:`~align_lite.emoji_experiments.noise_vs_scale` spends the same
steps on a small clean set (one good English caption per image, one style), on the same for both
styles, on the noisy corpus as scraped (every tag, every language) and on what ALIGN's text
filters keep of it (the paper's Tables 9/10 ask whether more noisy data beats less clean data).
Writes ``emoji_temperature.{json,md}`` and ``emoji_noise_vs_scale.{json,md}`` under
``book/appendix/generated/``.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import replace

import torch

from align_lite import emoji_experiments as ee
from align_lite.data.emoji_corpus import load_emoji_corpus
from report import experiment_args, write_report  # benchmarks/report.py

LANGUAGES = ("en", "ja")


def main() -> None:
    args = experiment_args(__doc__, ("temperature", "noise-scale"))
    config = replace(ee.EMOJI_RECIPE, max_steps=args.steps, log_every=max(1, args.steps // 30))
    corpus = load_emoji_corpus()
    eval_data = ee.EmojiEval.of(corpus, languages=("en", "de", "fr", "es", "ru", "hi", "ja", "zh", "ko", "th"))
    jobs = {"temperature": ("emoji_temperature", ee.temperature_ablation),
            "noise-scale": ("emoji_noise_vs_scale", ee.noise_vs_scale)}
    for name, (stem, job) in jobs.items():
        if args.only and args.only != name:
            continue
        start = time.perf_counter()
        runs = job(config, corpus, eval_data)
        seconds = time.perf_counter() - start
        head = (f"{len(runs)} runs of {args.steps} steps x batch {config.batch_size} (`EMOJI_RECIPE`), "
                f"{args.threads} threads, {platform.machine()}, torch {torch.__version__}, {seconds / 60:.1f} min "
                f"in all. Held-out: Twemoji's {len(eval_data.rows):,} base emoji (chance R@1 "
                f"{100 / len(eval_data.rows):.2f} %, R@10 {1000 / len(eval_data.rows):.1f} %); scores in percent.")
        summary = {"experiment": name, "steps": args.steps, "threads": args.threads, "seconds": seconds,
                   "runs": [dataclasses.asdict(r) for r in runs]}
        write_report(args.out, stem, summary, head + "\n\n" + ee.runs_table(runs, LANGUAGES) + "\n", indent=1)


if __name__ == "__main__":
    main()
