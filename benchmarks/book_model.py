"""The book's shipped real-data model: the CPU recipe trained well past the 3-minute budget.

    python benchmarks/book_model.py [--steps 8000] [--checkpoints 4] [--threads 2]

Chapters 5 and 6 train the real-data model for 600 steps (about 2.5 minutes on 2 cores,
:func:`align_lite.emoji_experiments.trained_emoji_model`). This script trains the *same* recipe
on the *same* pairs (the English labels of the Noto and OpenMoji drawings, four fifths of the
concepts) for ``--steps`` steps (default 8,000: about half an hour on 2 cores), scores it on the
held-out style (Twemoji) at ``--checkpoints`` evenly spaced steps, and writes

* the final model, in ``data_samples/emoji_model/`` (``model.safetensors`` + ``config.json`` +
  the tokenizer + ``record.json`` with the curve and the command): a few MB, shipped, loaded by
  :func:`align_lite.emoji_experiments.book_emoji_model` with nothing downloaded;
* ``emoji_book_model.md`` / ``.json`` under ``book/appendix/generated/``: the curve.

Nothing is chosen on the held-out scores: the model shipped is the last step's, whatever the
curve does. Training on 2 CPU threads is deterministic for a given machine and torch, so a
rerun there reproduces the weights; on another CPU expect the same scores to a point or so.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import replace
from pathlib import Path

import torch

from align_lite.data.emoji_corpus import EmojiPairs, EmojiSplit, load_emoji_corpus
from align_lite.emoji_experiments import (EMOJI_BOOK_KINDS, EMOJI_BOOK_LANGUAGES, EMOJI_BOOK_MODEL, EmojiEval,
                                          corpus_digest, emoji_tokenizer, score, train_pairs)
from align_lite.models.checkpoint import save_pretrained
from align_lite.train import Trainer
from report import cpu_name, experiment_args, pct, train_to_checkpoints, write_report  # benchmarks/report.py

MODEL_DIR = Path(__file__).resolve().parents[1] / "data_samples" / "emoji_model"
LANGUAGES = ("en", "de", "fr", "es", "ru", "hi", "ja", "zh", "ko", "th")


def run(steps: int, checkpoints: int) -> tuple[dict, torch.nn.Module, object]:
    corpus, split = load_emoji_corpus(), EmojiSplit()
    pairs = train_pairs(corpus, split, list(EMOJI_BOOK_LANGUAGES), list(EMOJI_BOOK_KINDS))
    data = EmojiPairs.of(corpus, pairs)
    config = replace(EMOJI_BOOK_MODEL, max_steps=steps, eval_every=0)
    tokenizer = emoji_tokenizer(data.texts, config.vocab_size, config.text_length)
    evaluation = EmojiEval.of(corpus, split, LANGUAGES)
    trainer = Trainer(config, data, tokenizer=tokenizer)
    points = []
    for trained in train_to_checkpoints(trainer, steps, checkpoints):
        scores = score(trainer.model, tokenizer, evaluation)
        points.append({"step": trainer.step, "seconds": round(trained, 1),
                       "epochs": round(trainer.step * config.batch_size / len(data), 1),
                       "temperature": float(trainer.model.temperature.detach()),
                       "scores": {k: round(v, 4) for k, v in scores.items()}})
        print(trainer.step, round(trained), scores["en/t2i_r10"], scores["zero_shot_subgroup_top1"], flush=True)
    record = {"config": config.to_dict(), "languages": list(EMOJI_BOOK_LANGUAGES),
              "kinds": list(EMOJI_BOOK_KINDS), "train_pairs": len(data), "images": len(evaluation.rows),
              "subgroups": len(evaluation.subgroup_names), "eval_languages": LANGUAGES,
              "corpus_manifest_sha256": corpus_digest(corpus.root), "points": points}
    return record, trainer.model.eval(), tokenizer


def markdown(record: dict) -> str:
    n, last = record["images"], record["points"][-1]
    lines = [
        f"The shipped real-data model (`data_samples/emoji_model/`): `EMOJI_RECIPE` for {last['step']:,} steps of "
        f"64 pairs on the English labels of the Noto + OpenMoji drawings ({record['train_pairs']:,} pairs), "
        f"{record['threads']} threads, {record['cpu']}, torch {record['torch']}. Scored on the held-out style, "
        f"Twemoji ({n:,} base emoji; chance R@10 {pct(10 / n)} %, subgroup top-1 {pct(1 / record['subgroups'])} %).",
        "", "| step | s | epochs | σ | T→I R@1 en | T→I R@10 en | I→T R@1 en | I→T R@10 en | "
        "subgroup top-1 | T→I R@10, mean of 10 languages |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in record["points"]:
        s = p["scores"]
        lines.append(f"| {p['step']:,} | {p['seconds']:.0f} | {p['epochs']} | {p['temperature']:.4f} | "
                     f"{pct(s['en/t2i_r1'])} | {pct(s['en/t2i_r10'])} | {pct(s['en/i2t_r1'])} | "
                     f"{pct(s['en/i2t_r10'])} | {pct(s['zero_shot_subgroup_top1'])} | {pct(s['mean/t2i_r10'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = experiment_args(__doc__, steps=8000, checkpoints=4)
    record, model, tokenizer = run(args.steps, args.checkpoints)
    record.update(threads=args.threads, cpu=cpu_name(), machine=platform.machine(), torch=torch.__version__,
                  command=" ".join(["python", "benchmarks/book_model.py", *sys.argv[1:]]))
    folder = save_pretrained(model, MODEL_DIR, tokenizer)
    (folder / "record.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    write_report(args.out, "emoji_book_model", record, markdown(record), indent=1)


if __name__ == "__main__":
    main()
