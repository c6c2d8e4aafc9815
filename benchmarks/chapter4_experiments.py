"""Chapter 4's recorded experiments: the temperature ablation and noise vs scale at full CPU size.

    python benchmarks/chapter4_experiments.py [--steps 600] [--seeds 0 1 2] [--threads 2]
                                              [--only temperature|noise-scale]

Runs :func:`align_lite.experiments.temperature_ablation` (fixed 1/128, 1/64, 1/32, learnable from
1.0; the clean world of 4,096 rows) and :func:`align_lite.experiments.noise_vs_scale` (1,024 clean
rows against noisy worlds 1x, 2x, 4x, 8x as large after the paper's filters), ``--steps`` steps of
batch 64 each, once per seed of ``--seeds``, scored on the 512-image held-out world. Writes ``temperature_ablation`` and
``noise_vs_scale`` ``.json`` (curves included; Chapter 4 plots them) and ``.md`` (the appendix
includes them) under ``book/appendix/generated/``. The same runs from the command line:
``align-lite experiment temperature --steps 600 --out FILE.json`` (and ``noise-scale``).
"""

from __future__ import annotations

import platform
import time

import torch

from align_lite import experiments as ex
from align_lite.train import TrainConfig
from report import experiment_args, seeds_text  # benchmarks/report.py



def describe(runs, seconds: float, steps: int, threads: int, eval_data: ex.WorldEval, seeds=(0,)) -> str:
    return (f"{len(runs)} runs of {steps} steps x batch 64 (tiny preset, AdamW, `TrainConfig.cpu_tiny`), "
            f"{threads} threads, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
            f"{seconds / 60:.1f} min in all. Held-out: {len(eval_data.texts)} images of another world, "
            f"{len(eval_data.classified)} one-kind scenes scored zero-shot over 64 classes (chance 1.6 %; "
            "colour and shape: chance 12.5 %). Scores in percent. " + seeds_text(seeds))


def main() -> None:
    args = experiment_args(__doc__, ("temperature", "noise-scale"), seeds=(0, 1, 2))
    base = TrainConfig.cpu_tiny(max_steps=args.steps, log_every=max(1, args.steps // 30))
    eval_data = ex.WorldEval.from_world()
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = " ".join(map(str, args.seeds))
    command = f"python benchmarks/chapter4_experiments.py --steps {args.steps} --seeds {seeds}"
    jobs = {
        "temperature": ("temperature_ablation", lambda config: ex.temperature_ablation(config, eval_data),
                        ex.PAPER_TABLE8),
        "noise-scale": ("noise_vs_scale", lambda config: ex.noise_vs_scale(config, clean_n=1024,
                                                                          noisy_ratios=(1, 2, 4, 8),
                                                                          eval_data=eval_data), None),
    }
    for name, (stem, job, paper) in jobs.items():
        if args.only and args.only != name:
            continue
        start = time.perf_counter()
        runs = ex.over_seeds(job, base, args.seeds)
        seconds = time.perf_counter() - start
        ex.save_runs(runs, args.out / f"{stem}.json", experiment=name, command=command, seconds=seconds,
                     steps=args.steps, threads=args.threads, machine=platform.processor() or platform.machine(),
                     torch=torch.__version__, seeds=args.seeds)
        text = (describe(runs, seconds, args.steps, args.threads, eval_data, args.seeds) + "\n\n"
                + ex.runs_table(runs, paper) + "\n")
        (args.out / f"{stem}.md").write_text(text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
