"""What each of the CPU recipe's departures from the paper is worth: the recipe, and the recipe
with one departure undone at a time.

    python benchmarks/tiny_recipe.py [--steps 600] [--seeds 0 1 2] [--threads 2]

The recipe is ``TrainConfig.cpu_tiny()`` on the ``tiny`` preset: hard-negative batches (runs of
rows with the same colour and count and different shapes; the paper: shuffled batches), mean
pooling in the text tower (the paper: [CLS]), the image tower at 5x the learning rate, no text
dropout (BERT's: 0.1), the temperature started at 0.1 (the paper: 1.0) and learnt 20x faster
(Chapter 4's temperature ablation covers the rate, and its learnable run starts at 1.0). Each run has the
same world (4,096 clean rows), tokenizer and ``--steps`` steps of batch 64, once per seed of
``--seeds``, and is scored on
the 512-image held-out world (:func:`align_lite.experiments.score_world`). Writes ``tiny_recipe.md``
and ``.json`` under ``book/appendix/generated/``.
"""

from __future__ import annotations

import platform
import time

import torch

from align_lite import experiments as ex
from align_lite.train import TrainConfig
from report import experiment_args, seeds_text  # benchmarks/report.py

SHUFFLED = {"hard_negative_share": (), "hard_negative_vary": None}
UNDONE = {  # run name -> the fields that undo one departure
    "recipe (cpu_tiny)": {},
    "shuffled batches": SHUFFLED,
    "[CLS] pooling": {"text_pooling": "cls"},
    "image lr x1": {"image_lr_scale": 1.0},
    "text dropout 0.1": {"text_dropout": 0.1},
    "temperature from 1.0": {"temperature": 1.0},
    "all five undone": {**SHUFFLED, "text_pooling": "cls", "image_lr_scale": 1.0, "text_dropout": 0.1,
                        "temperature": 1.0},
}


def ablation(base: TrainConfig, eval_data: ex.WorldEval, names=tuple(UNDONE)) -> list[ex.RunSummary]:
    return ex.variants(base, {name: UNDONE[name] for name in names}, eval_data, eval_points=3)


def markdown(runs: list[ex.RunSummary], steps: int, threads: int, seconds: float, eval_data: ex.WorldEval,
             seeds=(0,)) -> str:
    return (f"The CPU recipe with each departure undone in turn: {len(runs)} runs of {steps} steps x batch 64 "
            f"(`TrainConfig.cpu_tiny`, learnt temperature), {threads} threads, "
            f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {seconds / 60:.1f} min in all. "
            f"Held-out: {len(eval_data.texts)} images of another world, {len(eval_data.classified)} one-kind scenes "
            "scored zero-shot over 64 classes. Scores in percent. " + seeds_text(seeds) + "\n\n"
            + ex.runs_table(runs) + "\n")


def main() -> None:
    args = experiment_args(__doc__, steps=600, seeds=(0, 1, 2))
    base = TrainConfig.cpu_tiny(max_steps=args.steps, eval_size=0, eval_every=0, log_every=max(1, args.steps // 30),
                                tensorboard=False)
    eval_data = ex.WorldEval.from_world()
    start = time.perf_counter()
    runs = ex.over_seeds(lambda config: ablation(config, eval_data), base, args.seeds)
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    command = f"python benchmarks/tiny_recipe.py --steps {args.steps} --seeds {' '.join(map(str, args.seeds))}"
    ex.save_runs(runs, args.out / "tiny_recipe.json", command=command, seconds=seconds, steps=args.steps,
                 threads=args.threads, machine=platform.processor() or platform.machine(), torch=torch.__version__,
                 seeds=args.seeds)
    text = markdown(runs, args.steps, args.threads, seconds, eval_data, args.seeds)
    (args.out / "tiny_recipe.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
