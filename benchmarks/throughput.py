"""Training throughput per model preset: images/s, where a step's time goes, memory and MFU.

    python benchmarks/throughput.py [--presets tiny tiny-wide b3-mini] [--batch 64 64 8] [--steps 5]
        [--warmup 2] [--threads 2] [--precision auto] [--out DIR]

For each preset a :class:`align_lite.train.Trainer` on the clean generated world (drawn at the
preset's resolution) runs ``--warmup`` untimed and ``--steps`` timed optimizer steps of one
micro-batch each, split into

* **data**: the next batch from the trainer's DataLoader (draw or cache hit, tokenize, pad);
* **forward**: both towers (``Trainer.embed``, as a step computes them) and the contrastive loss;
* **backward**: ``loss.backward()``;
* **optimizer**: gradient clipping, the optimizer and schedule step, ``zero_grad``.

On a GPU every phase ends with ``torch.cuda.synchronize()``. FLOPs per step are the forward
pass counted with ``torch.utils.flop_counter.FlopCounterMode``, times 3 for forward + backward
(see :func:`flops_per_step`; the optimizer's few FLOPs are left out, as usual), so **MFU** = FLOPs
per step / step time / peak. The peak is the
datasheet's dense bf16/fp16 tensor-core figure for known GPUs (``--peak-tflops`` overrides),
and on a CPU the fp32 matmul rate measured on this machine (a 2048² matmul), so the CPU column
says how close a step gets to the machine's own best, not to a datasheet. Peak memory is
``torch.cuda.max_memory_allocated`` on a GPU and the process' peak resident set on a CPU.
Writes ``throughput.md``/``.json`` (``throughput_gpu`` on a GPU) under ``book/appendix/generated/``.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from align_lite.train import TrainConfig, Trainer
from report import OUT_DIR, cpu_name, write_report  # benchmarks/report.py

# Dense bf16/fp16 tensor-core peaks from the vendors' datasheets (TFLOP/s, no sparsity).
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0,
                   "T4": 65.0, "V100": 125.0}
DEFAULT_BATCH = {"tiny": 64, "tiny-wide": 64, "b3-mini": 8, "b5-base": 4, "b7-base": 4, "l2-large": 2}
GPU_BATCH = {"tiny": 512, "tiny-wide": 512, "b3-mini": 256, "b5-base": 64, "b7-base": 64, "l2-large": 16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_matmul_tflops(n: int = 2048, repeats: int = 5) -> float:
    """The fp32 matmul rate this process reaches on this CPU (TFLOP/s), best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def peak_tflops(device: torch.device, override: float | None) -> tuple[float, str]:
    """(peak TFLOP/s, what it is) for MFU."""
    if override:
        return override, "given with --peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_TFLOPS.items():
            if key in name:
                return value, f"{key} dense bf16 datasheet peak"
        return math.nan, f"unknown GPU {name!r}: pass --peak-tflops"
    return cpu_matmul_tflops(), "fp32 matmul rate measured on this CPU"


def flops_per_step(trainer: Trainer, batch: dict) -> float:
    """Training FLOPs of one step on ``batch``: the forward pass counted, times 3.

    The backward pass costs about twice the forward (a gradient for the input and one for the
    weights), the usual convention for MFU. It is not counted directly because
    ``FlopCounterMode`` counts a grouped convolution's backward as if it were dense: for a
    depthwise 3×3 convolution over 64 channels it reports 65× the forward instead of 2× (checked
    with torch 2.14), and EfficientNet is made of depthwise convolutions."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        image, text, temperature = trainer.embed(batch)
        trainer.loss_fn(image, text, temperature)
    return 3.0 * counter.get_total_flops()


def timed_step(trainer: Trainer, loader) -> dict[str, float]:
    """One optimizer step, seconds per phase."""
    device, times = trainer.device, {}
    start = time.perf_counter()
    batch = next(loader)
    sync(device)
    times["data"] = time.perf_counter() - start
    start = time.perf_counter()
    image, text, temperature = trainer.embed(batch)
    loss = trainer.loss_fn(image, text, temperature)
    sync(device)
    times["forward"] = time.perf_counter() - start
    start = time.perf_counter()
    trainer.backward(loss)
    sync(device)
    times["backward"] = time.perf_counter() - start
    start = time.perf_counter()
    clip = trainer.config.grad_clip or math.inf
    torch.nn.utils.clip_grad_norm_(trainer.trainable, clip)
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    sync(device)
    times["optimizer"] = time.perf_counter() - start
    return times


def measure(preset: str, batch_size: int, steps: int, warmup: int, precision: str, peak: float) -> dict:
    config = TrainConfig.cpu_tiny(model=preset, batch_size=batch_size, max_steps=steps + warmup + 1, warmup_steps=1,
                                  world_n=batch_size * (steps + warmup + 2), eval_size=0, eval_every=0,
                                  precision=precision, tensorboard=False, vocab_size=8000)
    trainer = Trainer(config)
    trainer.model.train()
    loader = trainer.loader(0)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    flops = flops_per_step(trainer, next(loader))
    for _ in range(warmup):
        timed_step(trainer, loader)
    phases = [timed_step(trainer, loader) for _ in range(steps)]
    median = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    step_s = sum(median.values())
    memory = (torch.cuda.max_memory_allocated(trainer.device) if trainer.device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    compute_s = median["forward"] + median["backward"] + median["optimizer"]
    return {"preset": preset, "image_size": trainer.model.config.image.image_size,
            "parameters_m": trainer.model.num_parameters()["total"] / 1e6,
            "batch": batch_size, "precision": trainer.precision, "steps": steps,
            "images_per_s": batch_size / step_s, "step_ms": 1000 * step_s,
            **{f"{k}_ms": 1000 * v for k, v in median.items()},
            "peak_memory_gib": memory / 2**30, "gflops_per_step": flops / 1e9,
            "achieved_tflops": flops / compute_s / 1e12, "mfu": flops / step_s / 1e12 / peak}


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu_name()}, {os.cpu_count()} cores"


def to_markdown(summary: dict) -> str:
    lines = [f"Training throughput on {summary['device']} (torch {summary['torch']}, {summary['threads']} threads): "
             f"median of {summary['results'][0]['steps']} steps after warm-up, one micro-batch per step, the clean "
             f"world at each preset's resolution. MFU is against {summary['peak_tflops']:.2f} TFLOP/s "
             f"({summary['peak_is']}); FLOPs per step = 3 × the forward pass counted by torch's FlopCounterMode.",
             "",
             "| preset | params (M) | px | batch | precision | images/s | step (ms) | data | forward | backward | "
             "optimizer | peak memory (GiB) | GFLOP/step | MFU |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["results"]:
        lines.append(f"| {r['preset']} | {r['parameters_m']:.1f} | {r['image_size']} | {r['batch']} "
                     f"| {r['precision']} | "
                     f"{r['images_per_s']:.1f} | {r['step_ms']:.0f} | {r['data_ms']:.0f} | {r['forward_ms']:.0f} | "
                     f"{r['backward_ms']:.0f} | {r['optimizer_ms']:.0f} | {r['peak_memory_gib']:.2f} | "
                     f"{r['gflops_per_step']:.0f} | {100 * r['mfu']:.1f} % |")
    lines += ["", "Phase columns are milliseconds per step. On a CPU the peak memory is the whole process' peak "
              "resident set (it only grows, so later rows include earlier ones)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=None, help="default: tiny tiny-wide b3-mini on CPU, all on GPU")
    parser.add_argument("--batch", type=int, nargs="+", help="per preset (default: a size that fits the device)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16")
    parser.add_argument("--peak-tflops", type=float)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gpu = torch.cuda.is_available()
    presets = args.presets or (list(GPU_BATCH) if gpu else ["tiny", "tiny-wide", "b3-mini"])
    batches = args.batch or [(GPU_BATCH if gpu else DEFAULT_BATCH)[p] for p in presets]
    if len(batches) != len(presets):
        parser.error("--batch needs one value per preset")
    device = torch.device("cuda" if gpu else "cpu")
    peak, peak_is = peak_tflops(device, args.peak_tflops)
    results = []
    for preset, batch in zip(presets, batches):
        results.append(measure(preset, batch, args.steps, args.warmup, args.precision, peak))
        print(results[-1], flush=True)
    summary = {"benchmark": "throughput", "device": device_name(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "peak_tflops": peak, "peak_is": peak_is, "results": results}
    write_report(args.out, "throughput_gpu" if gpu else "throughput", summary, to_markdown(summary))


if __name__ == "__main__":
    main()
