"""Contrastive training of the dual encoder, from one CPU to many GPUs (Chapter 4).

One code path serves a laptop and a cluster. :func:`train` takes a :class:`TrainConfig` and data
(the generated world by default, drawn in memory; or a pair folder) and returns a
:class:`TrainResult`; ``align-lite train`` and ``torchrun -m align_lite.train`` call it.

What happens in one optimizer step, with B = ``batch_size`` pairs per micro-batch, k =
``accum_steps`` micro-batches per step and W processes (global batch G = B·k·W):

1. **Embed.** Each micro-batch goes through both towers under autocast (bf16/fp16 on GPU, fp32 on
   CPU by default); embeddings are L2-normalised and cast to float32 for the loss.
2. **Loss.** ALIGN's two-way normalised-softmax loss (:class:`~align_lite.loss.ContrastiveLoss`,
   sum of both directions, label smoothing 0.1) with *all G pairs* as in-batch negatives: across
   processes the embeddings are all-gathered with gradient.
3. **Gradient accumulation, done honestly** (open_clip's recipe). With k > 1 we first embed all k
   micro-batches *without* gradient and cache the embeddings; then we recompute micro-batch j
   with gradient and take the loss of the whole B·k batch, micro-batch j live and the others
   cached, and backpropagate. Summed over j this is exactly the gradient of the big-batch loss, so
   the negatives per step are B·k·W, not B. Two details keep it exact: the random state (dropout,
   stochastic depth) is rewound so the recomputation reproduces the cached pass, and the
   temperature receives its gradient in one pass only (it enters the loss directly; open_clip
   counts it k times). Batch norm normalises each micro-batch with its own statistics (a
   "virtual batch" of B, as kakaobrain's COYO-ALIGN used 16 and as ALIGN's per-core batch norm
   did); the no-gradient pass leaves the running statistics alone. The cost is one extra
   forward pass per micro-batch.
4. **Update.** Gradients are unscaled (fp16), their global norm is measured and clipped; a
   non-finite loss or gradient skips the update (counted as ``skipped_steps``), otherwise
   AdamW/LAMB steps (:mod:`align_lite.optim`: weight decay 1e-5, none on biases, norms and the
   temperature). The learning rate follows warm-up then linear decay (or cosine) per step.

Distributed: launch with ``torchrun``; the process group is set up from the environment
(``env://``), NCCL on GPUs, gloo on CPUs. Without ``torchrun`` (no ``WORLD_SIZE``) the very same
code runs as a single process. The data order is a pure function of (seed, step): the sampler
shuffles the training rows once per epoch and hands process r the micro-batches r·k … r·k+k-1 of
each global batch, so a resumed run sees exactly the batches the interrupted one would have.

    # one node, 4 GPUs
    torchrun --standalone --nproc_per_node 4 -m align_lite.train --preset b3-mini --out runs/b3
    # two nodes (run on each; node ranks 0 and 1; HOST = the first node's address)
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HOST:29500 -m align_lite.train --preset b7-base --out runs/b7

Run folder (``out_dir``)::

    train_config.json              the TrainConfig of the latest invocation
    metrics.jsonl                  one JSON record per logged step (see ``METRIC_FIELDS``)
    tb/                            TensorBoard events (if the ``tensorboard`` package is installed)
    checkpoint-0000200/            every ``ckpt_every`` steps and at the end:
        config.json, model.safetensors, tokenizer.json, tokenizer_config.json
                                   (loads with align_lite.models.from_pretrained / load_tokenizer)
        trainer_state.json         step, config, optimizer groups, schedule, scaler, Python and
                                   NumPy random states, data position, counters
        trainer_state.safetensors  optimizer moments, torch/CUDA random states
    final/                         the model and tokenizer at the end (from_pretrained)
    data_report.json               every row the run could not use, by reason (Trainer.data_report)

Checkpoints are written into a hidden staging folder and appear by one rename, so an interrupted
save never leaves a half checkpoint. A run that fails before its first checkpoint removes the run
folder it made (nothing in it could be resumed). ``resume=True`` picks up the newest readable
``checkpoint-*`` (``resume=PATH``: that checkpoint): weights,
optimizer, schedule, loss scaler, every random state and the data position, so that (with
``num_workers=0``) an interrupted-and-resumed run ends with the same weights as an uninterrupted
one. With worker processes the batches are still the same but random crops are drawn in the
workers and are not replayed exactly.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import nn

from align_lite import __version__
from align_lite.data.hard_negatives import hard_negative_order
from align_lite.data.images import CropToPixels, ImageTransformConfig, image_transform
from align_lite.data.records import DataFormatError, SkipLog
from align_lite.data.sources import PairDataset, collate_pairs
from align_lite.data.tokenizer import AltTextTokenizer, TokenizerConfig, train_tokenizer, trim_padding
from align_lite.data.world import WorldConfig, WorldDataset
from align_lite.loss import ContrastiveLoss, LossConfig
from align_lite.models import AlignDualEncoder, from_pretrained, get_preset, load_tokenizer, save_pretrained
from align_lite.models.checkpoint import WEIGHTS_FILE, CheckpointError, fsync_tree, read_config
from align_lite.models.image_tower import frozen_batchnorm_stats
from align_lite.models.text_tower import POOLINGS
from align_lite.optim import OPTIMIZERS, SCHEDULES, Schedule, build_optimizer, build_scheduler
from align_lite.progress import progress

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
WORLD_CACHE_BYTES = 2**30  # a generated world up to this size is drawn once and kept as uint8
TOKENIZER_TEXTS = 1_000_000  # alt-texts a tokenizer is learnt from when training on streamed shards
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.json"
CHECKPOINT_PREFIX = "checkpoint-"
DATA_REPORT = "data_report.json"
STATE_FORMAT_VERSION = 1
METRIC_FIELDS = (
    "step", "loss", "lr", "temperature", "images_per_s", "step_time_s", "grad_norm",
    "skipped_steps", "skipped_samples", "global_batch", "epoch", "elapsed_s",
)
# TrainConfig fields a resumed run must share with its checkpoint (model shape and data order).
_RESUME_MUST_MATCH = ("model", "batch_size", "accum_steps", "seed", "text_length", "vocab_size",
                      "world_n", "world_seed", "world_noisy", "eval_size", "hard_negative_share",
                      "hard_negative_vary")

EvalFn = Callable[[AlignDualEncoder, int], "dict[str, float] | None"]
LogFn = Callable[[dict], None]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides its data. Presets: :meth:`cpu_tiny` (the book's
    default), :meth:`gpu_small`, :meth:`paper` (the paper's recipe, for reference and scaling).

    Batch sizes are per process: ``batch_size`` pairs per micro-batch, ``accum_steps``
    micro-batches per optimizer step, so a step sees ``batch_size * accum_steps * processes``
    pairs, all of them negatives of one another.
    """

    model: str = "tiny"  # a model preset (align_lite.models.list_presets())
    batch_size: int = 64
    accum_steps: int = 1
    lr: float = 1e-3  # the paper's peak learning rate
    warmup_steps: int = 20
    max_steps: int = 200
    schedule_steps: int | None = None  # length of the lr schedule; None: max_steps
    max_seconds: float | None = None  # stop early after this much training time
    weight_decay: float = 1e-5  # the paper's
    optimizer: str = "adamw"  # "adamw" or "lamb" (the paper's)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    schedule: str = "linear"  # "linear" (the paper's), "cosine", "constant"
    precision: str = "auto"  # "auto": bf16 (else fp16) on CUDA, fp32 on CPU
    grad_clip: float | None = 1.0  # max global gradient norm; None: no clipping
    seed: int = 0
    temperature: float = 1.0  # initial value if learnable (paper: 1.0), else the fixed value
    learnable_temperature: bool = True
    temperature_lr_scale: float = 1.0  # the temperature's lr = lr x this (see align_lite.optim)
    image_lr_scale: float = 1.0  # the image tower's lr = lr x this (see align_lite.optim)
    label_smoothing: float = 0.1  # the paper's
    loss_reduction: str = "sum"  # the paper's L_i2t + L_t2i
    text_length: int = 64  # tokens per alt-text (paper: 64)
    vocab_size: int = 8_000  # wordpieces learnt from the training texts (paper: 100 k)
    augment: bool = True  # random crop of pair-folder images (never a flip: captions say left/right; the world is never cropped)
    text_dropout: float | None = None  # override the preset's BERT dropout
    text_pooling: str | None = None  # override the preset's text pooling ("cls" or "mean")
    stochastic_depth: float | None = None  # override the preset's EfficientNet drop-path rate
    world_n: int = 4096  # rows of the generated world (when training on it)
    world_seed: int = 0
    world_noisy: bool = False  # the noisy world (as scraped) instead of the clean one
    # Hard-negative batches (align_lite.data.hard_negatives): the data's table columns that each
    # run of rows in a batch shares, and the column whose values differ within a run.
    # () and None: plainly shuffled batches, as in the paper.
    hard_negative_share: tuple[str, ...] = ()
    hard_negative_vary: str | None = None
    eval_size: int = 0  # held-out pairs for the built-in retrieval check (0: none)
    eval_every: int = 0  # run the eval hooks every N steps (0: only at the end)
    log_every: int = 10
    ckpt_every: int = 0  # checkpoint every N steps (0: only at the end)
    keep_checkpoints: int | None = None  # keep the newest N checkpoints (None: all)
    num_workers: int = 0
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the model
    channels_last: bool = True  # NHWC images and convolutions (~1.8x faster EfficientNet on CPU too)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    tensorboard: bool = True  # write TensorBoard events when the package is installed
    # Stop with a DataFormatError when more than this share of the rows is bad: rows dropped
    # while reading the pair table, or images that had to be replaced (None: never stop).
    max_bad_share: float | None = None

    def __post_init__(self) -> None:
        positive = ("batch_size", "accum_steps", "max_steps", "text_length", "vocab_size", "world_n", "log_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "eval_size", "eval_every", "ckpt_every", "num_workers", "seed", "world_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be an integer >= 0, got {value!r}")
        if self.schedule_steps is not None and self.schedule_steps < 1:
            raise ValueError(f"TrainConfig.schedule_steps must be >= 1 or None, got {self.schedule_steps}")
        if self.warmup_steps > self.total_schedule_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds the schedule ({self.total_schedule_steps} steps)")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"TrainConfig.max_seconds must be > 0 or None, got {self.max_seconds}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.text_pooling is not None and self.text_pooling not in POOLINGS:
            raise ValueError(f"TrainConfig.text_pooling must be None or one of {POOLINGS}, got {self.text_pooling!r}")
        if self.temperature <= 0 or self.temperature_lr_scale <= 0 or self.image_lr_scale <= 0:
            raise ValueError(f"TrainConfig.temperature, temperature_lr_scale and image_lr_scale must be > 0, got "
                             f"{self.temperature}, {self.temperature_lr_scale}, {self.image_lr_scale}")
        if bool(self.hard_negative_share) != (self.hard_negative_vary is not None):
            raise ValueError("TrainConfig.hard_negative_share and hard_negative_vary go together (both set, or "
                             f"() and None), got {self.hard_negative_share!r} and {self.hard_negative_vary!r}")
        if not isinstance(self.hard_negative_share, tuple) or self.hard_negative_vary in self.hard_negative_share:
            raise ValueError("TrainConfig.hard_negative_share must be a tuple of column names without "
                             f"hard_negative_vary, got {self.hard_negative_share!r}")
        if self.max_bad_share is not None and not 0 <= self.max_bad_share < 1:
            raise ValueError(f"TrainConfig.max_bad_share must be in [0, 1) or None, got {self.max_bad_share}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ValueError(f"TrainConfig.keep_checkpoints must be >= 1 or None, got {self.keep_checkpoints}")
        LossConfig(label_smoothing=self.label_smoothing, reduction=self.loss_reduction)  # validates

    @property
    def total_schedule_steps(self) -> int:
        return self.schedule_steps if self.schedule_steps is not None else self.max_steps

    @classmethod
    def cpu_tiny(cls, **overrides) -> TrainConfig:
        """The book's CPU run: the ``tiny`` preset on the clean world, AdamW at the paper's peak
        learning rate 1e-3, 32-token texts (the world's alt-texts need ~16), a held-out batch of
        256 checked every 50 steps.

        Five departures from the paper, because the run is hundreds of steps of 64 pairs, not
        1.2 M steps of 16,384 (the sixth, mean pooling in the text tower, belongs to the ``tiny``
        preset itself, see :mod:`align_lite.models.presets`):

        * hard-negative batches (:mod:`align_lite.data.hard_negatives`): each batch is made of runs
          of rows with the same colour and number of objects and different shapes, so that within
          a run only the shape tells the pairs apart. A shuffled batch of 64 holds about two such
          near misses per pair (a shuffled batch of ALIGN's 16,384 would hold hundreds), a composed
          one about eight. This needs the world's ``color``/``count``/``shape`` columns: on other data, set
          ``hard_negative_share=()`` and ``hard_negative_vary=None`` (the CLI does so for
          ``--data``);
        * the temperature starts at 0.1, not 1.0, and learns 20x faster (``temperature_lr_scale``;
          Adam moves log σ by about one learning rate a step, so at 1e-3 it would take
          ln 10 / 1e-3 ≈ 2,300 steps to get from 1.0 to 0.1, see :mod:`align_lite.optim`). Even at
          20x, a start at 1.0 spends the first ~100 steps on soft logits (σ > 0.3) that teach little;
          every run here ends near σ ≈ 0.1 anyway;
        * the image tower learns 5x faster (``image_lr_scale``): the ``tiny`` tower learns shape
          from labels in a few hundred steps at 3e-3 and far slower at 1e-3
          (``benchmarks/shape_learning.py``); with hard-negative batches 5e-3 is faster still,
          while the text tower does worse at 3e-3;
        * no dropout in the text tower (``text_dropout=0``): in a run this short it only slows
          the text tower down.

        What each is worth (the recipe with one departure undone at a time) is
        ``benchmarks/tiny_recipe.py``'s table; the temperature's also shows in the recorded
        temperature ablation (``benchmarks/chapter4_experiments.py``, which starts its learnable
        run at the paper's 1.0); both are in the book's appendix."""
        base = dict(model="tiny", batch_size=64, lr=1e-3, warmup_steps=20, max_steps=200, text_length=32,
                    temperature=0.1, temperature_lr_scale=20.0, image_lr_scale=5.0, text_dropout=0.0, eval_size=256,
                    eval_every=50, log_every=10, hard_negative_share=("color", "count"), hard_negative_vary="shape")
        return cls(**{**base, **overrides})

    @classmethod
    def gpu_small(cls, **overrides) -> TrainConfig:
        """One GPU, minutes: ``tiny-wide`` on a 100 k-row world, bf16, 4 data workers."""
        base = dict(model="tiny-wide", batch_size=512, lr=1e-3, warmup_steps=200, max_steps=3000,
                    text_length=32, world_n=100_000, eval_size=1024, eval_every=500, log_every=50,
                    ckpt_every=1000, keep_checkpoints=2, num_workers=4)
        return cls(**{**base, **overrides})

    @classmethod
    def paper(cls, processes: int = 1024, **overrides) -> TrainConfig:
        """ALIGN's recipe: EfficientNet-L2 + BERT-large, LAMB, lr 1e-3 warmed up over 10 k steps
        and decayed linearly to 0 at 1.2 M steps, weight decay 1e-5, batch 16 384 (16 per core on
        1024 TPUv3 cores, here ``16384 // processes`` per process), 64 tokens, 100 k wordpieces."""
        base = dict(model="l2-large", batch_size=16_384 // processes, optimizer="lamb", lr=1e-3,
                    warmup_steps=10_000, max_steps=1_200_000, text_length=64, vocab_size=100_000,
                    precision="bf16", log_every=100, ckpt_every=10_000, keep_checkpoints=3)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {unknown}")
        data = dict(data)
        for name in ("betas", "hard_negative_share"):
            if name in data:
                data[name] = tuple(data[name])
        return cls(**data)


@dataclass
class TrainResult:
    """What :func:`train` returns. ``history`` holds the logged records (``METRIC_FIELDS`` plus
    any ``eval_*`` numbers); ``model`` is the trained model in eval mode on its device."""

    model: AlignDualEncoder
    tokenizer: AltTextTokenizer
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    step: int = 0
    skipped_steps: int = 0
    skipped_samples: int = 0
    eval: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None  # the last checkpoint written
    final_dir: Path | None = None  # out_dir / "final"
    seconds: float = 0.0  # training time of this invocation
    data_report: dict[str, Any] = field(default_factory=dict)  # see Trainer.data_report

    def _column(self, key: str) -> list[float]:
        return [r[key] for r in self.history if key in r and "loss" in r]

    @property
    def steps(self) -> list[int]:
        return [int(s) for s in self._column("step")]

    @property
    def losses(self) -> list[float]:
        return self._column("loss")

    @property
    def temperatures(self) -> list[float]:
        """The learnt temperature at each logged step (the paper's: 1.0 → about 1/64)."""
        return self._column("temperature")


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


class StepBatchSampler:
    """Micro-batches of row indices, a pure function of (seed, step).

    Each epoch shuffles ``indices`` with a generator seeded by (seed, epoch); global batch t of
    the epoch is rows ``t·G … t·G+G-1`` of that order (G = batch·accum·world; the last partial
    batch is dropped), and process ``rank`` gets its micro-batches ``rank·accum … rank·accum+accum-1``.
    Iteration starts at ``start_step`` and never ends.

    ``order``, if given, replaces the shuffle: ``order(rng)`` returns a permutation of
    ``0 … len(indices)-1`` drawn from the epoch's generator, e.g. a
    :func:`~align_lite.data.hard_negatives.hard_negative_order` (hard-negative batches).
    """

    def __init__(self, indices: Sequence[int], batch_size: int, accum_steps: int = 1, rank: int = 0,
                 world_size: int = 1, seed: int = 0, start_step: int = 0,
                 order: Callable[[np.random.Generator], np.ndarray] | None = None):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.order = order
        self.batch_size, self.accum_steps = batch_size, accum_steps
        self.rank, self.world_size, self.seed, self.start_step = rank, world_size, seed, start_step
        self.global_batch = batch_size * accum_steps * world_size
        self.steps_per_epoch = len(self.indices) // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(self.indices)} training pairs cannot fill one global batch of {self.global_batch} "
                f"(batch_size {batch_size} x accum_steps {accum_steps} x {world_size} processes); "
                "use more data or a smaller batch"
            )

    def position(self, step: int) -> dict[str, int]:
        epoch, batch = divmod(step, self.steps_per_epoch)
        return {"epoch": epoch, "batch_in_epoch": batch, "samples_seen": step * self.global_batch}

    def _order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        return self.indices[self.order(rng) if self.order is not None else rng.permutation(len(self.indices))]

    def __iter__(self) -> Iterator[list[int]]:
        step, epoch, order = self.start_step, -1, None
        while True:
            e, t = divmod(step, self.steps_per_epoch)
            if e != epoch:
                epoch, order = e, self._order(e)
            for j in range(self.accum_steps):
                start = t * self.global_batch + (self.rank * self.accum_steps + j) * self.batch_size
                yield order[start:start + self.batch_size].tolist()
            step += 1


class SkipBadSamples(torch.utils.data.Dataset):
    """Wraps a dataset whose items may be ``None`` (an unreadable image): a bad row is replaced
    by the next readable one, and the item records that it is a replacement (``"skipped"``: 1,
    else 0) and why the row drawn was bad (``"skip_reasons"``, from the dataset's
    :class:`SkipLog` ``log`` when it has one, else ``unreadable``). Counting the rows drawn, not
    the rows crossed to find a replacement, makes ``skipped / samples`` an unbiased estimate of
    the data's bad share, however the bad rows cluster.

    Replacing rather than dropping keeps every batch full, which matters twice over here: the
    number of negatives stays fixed, and processes can all-gather equal-sized batches. Any run of
    bad rows is crossed (rows found bad are remembered with their reason, so a long run is read
    once); only a data set with no readable row at all is an error."""

    def __init__(self, dataset):
        self.dataset = dataset
        self._bad: dict[int, str] = {}  # row -> why it is unusable

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.dataset)
        reasons: Counter = Counter()
        for tries in range(n):
            row = (index + tries) % n
            if row not in self._bad:
                sample, reason = self._read(row)
                if sample is not None:
                    drawn = {self._bad[index]: 1} if tries else {}
                    return {**sample, "skipped": int(tries > 0), "skip_reasons": drawn}
                self._bad[row] = reason
            reasons[self._bad[row]] += 1
        raise DataFormatError(f"none of the {n} rows of the training data has a readable image "
                              f"({', '.join(f'{r}: {k}' for r, k in sorted(reasons.items()))})")

    def _read(self, row: int) -> tuple[dict[str, Any] | None, str]:
        log = getattr(self.dataset, "log", None)
        before = Counter(log.counts) if isinstance(log, SkipLog) else None
        sample = self.dataset[row]
        if sample is not None or before is None:
            return sample, "unreadable"
        new = log.since(before)
        return None, max(new, key=new.get) if new else "unreadable"


class Collate:
    """``collate_pairs`` + tokenization, padded to the batch's longest text
    (:func:`~align_lite.data.tokenizer.trim_padding`); ``n_skipped`` counts the rows
    :class:`SkipBadSamples` replaced (or a stream passed over) and ``skip_reasons`` counts them
    by reason. Picklable, for DataLoader workers."""

    def __init__(self, tokenizer: AltTextTokenizer, trim: bool = True):
        self.tokenizer, self.trim = tokenizer, trim

    def __call__(self, samples: Sequence[dict | None]) -> dict[str, Any]:
        replaced = sum(s.pop("skipped", 0) for s in samples if s is not None)
        reasons: Counter = Counter()
        for s in samples:
            reasons.update(s.pop("skip_reasons", {}) if s is not None else {"unreadable": 1})
        batch = collate_pairs(samples, self.tokenizer)
        if self.trim and "input_ids" in batch:
            batch.update(trim_padding(batch))
        batch["n_skipped"] += replaced
        batch["skip_reasons"] = dict(reasons)
        return batch


def image_size_of(model: str) -> int:
    return get_preset(model).image.image_size


def transform_config(image_size: int) -> ImageTransformConfig:
    """The paper's resize→crop at ``image_size`` (resize = size·346/289), never flipped."""
    return replace(ImageTransformConfig.tiny(image_size), random_flip=False)


def world_transform_config(image_size: int) -> ImageTransformConfig:
    """The generated world is drawn at the model's size and never cropped: a crop cuts objects
    and moves them away from the corner their caption names (measured: a supervised probe of the
    tiny tower reaches 72 % on the 64 classes after 300 steps uncropped, 61 % with 64-of-77 crops)."""
    return ImageTransformConfig(resize=image_size, crop=image_size, random_flip=False)


def is_shard_source(data: Any) -> bool:
    """Whether ``data`` names webdataset tar shards: ``"dir/shard-{000000..000099}.tar"``, a glob,
    one ``.tar`` file, or a list of them."""
    if isinstance(data, (list, tuple)):
        return bool(data) and all(str(d).endswith(".tar") for d in data)
    return isinstance(data, (str, Path)) and str(data).endswith(".tar")


def _shard_datasets(config: TrainConfig, data: Any, train_tf, eval_tf) -> tuple[Any, list, list[str]]:
    """A resampled :class:`~align_lite.data.streaming.ShardStream` for training; with
    ``eval_size`` the last shard is held out and its first ``eval_size`` pairs are the eval set;
    the tokenizer's texts are the first :data:`TOKENIZER_TEXTS` alt-texts of the training shards."""
    from align_lite.data.streaming import ShardStream, shard_list, stream_texts

    shards = shard_list(data)
    held_out = shards[-1:] if config.eval_size else []
    train_shards = shards[:len(shards) - len(held_out)]
    if not train_shards:
        raise ValueError(f"{len(shards)} shard(s): with eval_size > 0 the last shard is held out for evaluation, "
                         "which leaves none to train on (add shards or set eval_size 0)")
    train_ds = ShardStream(train_shards, transform=train_tf, resample=True, seed=config.seed)
    eval_ds = []
    if held_out:  # every process reads the held-out shard whole (rank 0 of 1)
        eval_ds = list(itertools.islice(ShardStream(held_out, transform=eval_tf, rank=0, world_size=1), config.eval_size))
    return train_ds, eval_ds, _lazy(lambda: stream_texts(train_shards, limit=TOKENIZER_TEXTS))


def _lazy(make: Callable[[], Iterable[str]]) -> Iterator[str]:
    """The texts of ``make()``, read only if iterated: a stream's alt-texts are read by the process
    that learns the tokenizer (process 0), not by every process."""
    yield from make()


def hard_negative_batches(config: TrainConfig, dataset: Any, indices: Sequence[int],
                          streaming: bool = False) -> Callable[[np.random.Generator], np.ndarray] | None:
    """The epoch order for ``config``'s hard-negative batches over ``dataset``'s rows
    ``indices`` (:func:`~align_lite.data.hard_negatives.hard_negative_order` of the columns
    ``hard_negative_share`` and ``hard_negative_vary`` of ``dataset.table``), or None for plain
    shuffling. Data without those columns is an error, not a silent fallback."""
    if not config.hard_negative_share:
        return None
    names = (*config.hard_negative_share, config.hard_negative_vary)
    table = None if streaming else getattr(dataset, "table", None)
    have = [] if table is None else list(table.column_names)
    if table is None or any(name not in have for name in names) or table.num_rows != len(dataset):
        raise ValueError(
            f"hard-negative batches group rows by the columns {list(names)}, which the training data "
            f"does not have (its table: {have or 'none'}{'; streamed data has none' if streaming else ''}). "
            "Train with plain shuffling: hard_negative_share=() and hard_negative_vary=None "
            "(CLI: --hard-negatives none)")
    columns = [table[name].to_pylist() for name in names]
    shared = [tuple(c[i] for c in columns[:-1]) for i in indices]
    shared = [None if None in key else key for key in shared]
    varied = [columns[-1][i] for i in indices]
    return functools.partial(hard_negative_order, shared, varied)


def build_dataset(config: TrainConfig, data: Any = None) -> tuple[Any, Any, Iterable[str]]:
    """(train dataset, eval dataset, texts) for ``data``: ``None``/``"world"`` (the generated
    world of ``config.world_*``), a :class:`WorldConfig`, a pair folder / ``.jsonl`` / ``.parquet``
    path, webdataset tar shards (:func:`is_shard_source`; streamed, see :func:`_shard_datasets`),
    an ``IterableDataset`` such as :class:`~align_lite.data.streaming.HFStream` (streamed; no
    held-out pairs), or a dataset whose items are ``{"image": (3, S, S) tensor, "text": str}`` (or ``None``)
    and which has a ``texts`` list (used as is for training and evaluation)."""
    tcfg = transform_config(image_size_of(config.model))
    train_tf = image_transform(tcfg, train=config.augment)
    eval_tf = image_transform(tcfg, train=False)
    if data is None or (isinstance(data, str) and data == "world"):
        maker = WorldConfig.noisy if config.world_noisy else WorldConfig.clean
        data = maker(n=config.world_n, seed=config.world_seed)
    if isinstance(data, WorldConfig):
        # Drawn at the model's size, uncropped; cached as uint8 when it fits (1 GiB), so that after
        # the first epoch a step's data work is a copy and a tokenization.
        wcfg = world_transform_config(tcfg.crop)
        cache = data.n * 3 * wcfg.resize**2 <= WORLD_CACHE_BYTES
        train_tf = eval_tf = CropToPixels(wcfg) if cache else image_transform(wcfg)
        train_ds = WorldDataset(data, image_size=wcfg.resize, transform=train_tf, cache=cache)
        eval_ds = copy.copy(train_ds)  # shares the cache
        eval_ds.transform = eval_tf
        return train_ds, eval_ds, train_ds.table["text"].to_pylist()
    if is_shard_source(data):
        return _shard_datasets(config, data, train_tf, eval_tf)
    if isinstance(data, torch.utils.data.IterableDataset):  # e.g. data.streaming.HFStream
        if getattr(data, "transform", False) is None:
            data.transform = train_tf
        texts = getattr(data, "texts", None)
        if texts is None:
            raise TypeError("a stream passed to train() needs texts(limit) or a texts list (to learn the tokenizer)")
        return data, [], _lazy(lambda: texts(TOKENIZER_TEXTS)) if callable(texts) else list(texts)
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"training data {path}: no such file or folder")
        train_ds = PairDataset(path, transform=train_tf)
        eval_ds = copy.copy(train_ds)
        eval_ds.transform = eval_tf
        return train_ds, eval_ds, list(train_ds.texts)
    texts = getattr(data, "texts", None)
    if texts is None:
        raise TypeError("a dataset passed to train() needs a `texts` list (to learn the tokenizer)")
    return data, data, list(texts)


# ---------------------------------------------------------------------------------------------
# Distributed set-up, random states, small helpers
# ---------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group (and will destroy it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the ``torchrun`` process group if the environment describes one (``env://``)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA GPU is visible to PyTorch here (torch.cuda.is_available() "
                         "is False); use device 'cpu' or 'auto'")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        if precision in ("fp16",) and device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def get_rng_state(device: torch.device) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _fork_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """The torch (and CUDA) generator states, which drive dropout and drop-path."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _join_rng(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@torch.no_grad()
def retrieval_accuracy(model: AlignDualEncoder, batch: dict[str, Any], device: torch.device | str = "cpu",
                       chunk: int = 256) -> dict[str, float]:
    """Top-1 in-batch retrieval on a held-out batch, both ways. A hit is a retrieved item whose
    alt-text equals the query's (the world repeats captions, so identical ones count as correct).
    Returns ``{"eval_i2t_top1", "eval_t2i_top1", "eval_pairs"}``."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    try:
        images = torch.cat([model.encode_image(batch["image"][i:i + chunk].to(device))
                            for i in range(0, len(batch["image"]), chunk)])
        texts = torch.cat([model.encode_text(batch["input_ids"][i:i + chunk].to(device),
                                             batch["attention_mask"][i:i + chunk].to(device))
                           for i in range(0, len(batch["input_ids"]), chunk)])
    finally:
        model.train(was_training)
    sims = images.float() @ texts.float().T  # (N, N)
    caption = batch["text"]
    ids = {t: i for i, t in enumerate(dict.fromkeys(caption))}
    label = torch.tensor([ids[t] for t in caption], device=sims.device)
    i2t = (label[sims.argmax(1)] == label).float().mean().item()
    t2i = (label[sims.argmax(0)] == label).float().mean().item()
    return {"eval_i2t_top1": i2t, "eval_t2i_top1": t2i, "eval_pairs": float(len(caption))}


def find_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete ``checkpoint-*`` folders in ``out_dir``, oldest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for p in out_dir.iterdir():
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / STATE_JSON).is_file():
            try:
                found.append((int(p.name[len(CHECKPOINT_PREFIX):]), p))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


def checkpoint_problem(directory: str | Path) -> str | None:
    """Why ``directory`` cannot be resumed from (a truncated or corrupt file, named), or None when
    its trainer state, weights and config all read back."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / STATE_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{directory / STATE_JSON}: {err}"
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        return f"{directory / STATE_JSON}: no step recorded"
    for name in (STATE_TENSORS, WEIGHTS_FILE):
        try:
            with safe_open(str(directory / name), framework="pt"):
                pass  # opening parses the header and checks the file holds every tensor's bytes
        except (OSError, SafetensorError) as err:
            return f"{directory / name}: {err}"
    try:
        read_config(directory)
    except (OSError, CheckpointError) as err:
        return str(err)
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def _notice(message: str) -> None:
    print(f"align-lite: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class Trainer:
    """Holds the model, optimizer, data and bookkeeping of one run; :meth:`fit` runs it.

    Most users call :func:`train`. The pieces are public for tests and notebooks:
    :meth:`train_step` (one optimizer step on a list of micro-batches), :meth:`save_checkpoint`,
    :meth:`load_checkpoint`, ``loss_fn`` (a :class:`ContrastiveLoss`, replaceable).
    """

    def __init__(self, config: TrainConfig, data: Any = None, out_dir: str | Path | None = None,
                 resume: bool | str | Path = False, eval_fns: Sequence[EvalFn] = (),
                 tokenizer: AltTextTokenizer | None = None, log_fns: Sequence[LogFn] = ()):
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.eval_fns = list(eval_fns)
        self.log_fns = list(log_fns)
        probe = resolve_device(config.device)
        self.dist = init_distributed(probe.type)
        self.device = resolve_device(config.device, self.dist.local_rank)
        self.precision = resolve_precision(config.precision, self.device)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

        # Where we resume from (decided before anything random happens).
        self.resume_from: Path | None = None
        if isinstance(resume, (str, Path)):
            if self.out_dir is None:
                raise ValueError("resume=PATH needs an out_dir")
            self.resume_from = Path(resume)
            problem = checkpoint_problem(self.resume_from) if self.resume_from.is_dir() else "no such folder"
            if problem is not None:
                raise ValueError(f"--resume {self.resume_from}: cannot resume from it ({problem})")
        elif resume:
            if self.out_dir is None:
                raise ValueError("resume=True needs an out_dir")
            found = find_checkpoints(self.out_dir)
            self.resume_from = self._newest_readable(found)
            if not found and self.dist.main:
                _notice(f"--resume: no checkpoint in {self.out_dir}, starting from scratch")
        elif self.out_dir is not None and find_checkpoints(self.out_dir):
            raise ValueError(f"{self.out_dir} already holds checkpoints of another run; resume it "
                             "(--resume) or choose a new output folder")

        # Data and the held-out split (a fixed function of the seed).
        self.train_ds, eval_ds, texts = build_dataset(config, data)
        self.streaming = isinstance(self.train_ds, torch.utils.data.IterableDataset)
        read_log = getattr(self.train_ds, "log", None)
        self.dropped_while_reading = dict(read_log.counts) if isinstance(read_log, SkipLog) and not self.streaming else {}
        dropped = sum(self.dropped_while_reading.values())
        self._check_bad_share(dropped, None if self.streaming else len(self.train_ds) + dropped,
                              "dropped while reading the pair table")
        if self.streaming:  # shards: the eval set is the held-out shard's first pairs
            if config.eval_size and not eval_ds:
                raise ValueError("a stream passed as data has no held-out pairs: set eval_size 0 (evaluate with "
                                 "eval_fns), or train on tar shards, whose last shard is held out")
            self.eval_indices, self.train_indices = list(range(len(eval_ds))), []
            tokenizer_texts = texts
        else:
            n = len(self.train_ds)
            order = np.random.default_rng([config.seed, 2**31 - 1]).permutation(n)
            if config.eval_size >= n:
                raise ValueError(f"eval_size {config.eval_size} leaves no training data out of {n} pairs "
                                 "(lower eval_size, --eval-size)")
            self.eval_indices = np.sort(order[:config.eval_size]).tolist()
            self.train_indices = np.sort(order[config.eval_size:]).tolist()
            tokenizer_texts = [texts[i] for i in self.train_indices]
        self.batch_order = hard_negative_batches(config, self.train_ds, self.train_indices, self.streaming)

        # Tokenizer: the checkpoint's when resuming, else the one given, else learnt from the
        # training texts by process 0 and sent to the others (one process reads the texts).
        if self.resume_from is not None:
            self.tokenizer = load_tokenizer(self.resume_from)
            if self.tokenizer is None:
                raise FileNotFoundError(f"{self.resume_from}: checkpoint has no tokenizer")
        elif tokenizer is not None:
            self.tokenizer = tokenizer
        else:
            tok_config = TokenizerConfig(vocab_size=config.vocab_size, max_length=config.text_length)
            self.tokenizer = train_tokenizer(tokenizer_texts, tok_config) if self.dist.main else None
            if self.dist.enabled:
                payload = [self.tokenizer.tokenizer.to_str() if self.dist.main else None]
                dist.broadcast_object_list(payload, src=0)
                if not self.dist.main:
                    self.tokenizer = AltTextTokenizer(Tokenizer.from_str(payload[0]), tok_config)
        if self.tokenizer.config.max_length != config.text_length:
            raise ValueError(f"the tokenizer pads to {self.tokenizer.config.max_length} tokens but "
                             f"text_length is {config.text_length}")

        # Model: the preset, sized to the tokenizer, with the temperature and dropout overrides.
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        random.seed(config.seed)
        if self.resume_from is not None:
            self.model = from_pretrained(self.resume_from, map_location="cpu")
        else:
            self.model = AlignDualEncoder(self.model_config())
        self.model.to(self.device).train()
        if config.gradient_checkpointing:
            self.model.set_gradient_checkpointing(True)
        self.use_channels_last = config.channels_last
        if self.use_channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward_model: nn.Module = self.model
        self.ddp: nn.Module | None = None
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            self.forward_model = self.ddp
        if config.compile:
            self.forward_model = torch.compile(self.forward_model)
        # Different dropout/crop draws on each process (the model itself is identical).
        torch.manual_seed(config.seed + self.dist.rank)

        self.loss_fn: nn.Module = ContrastiveLoss(LossConfig(config.label_smoothing, config.loss_reduction, gather=True))
        self.optimizer = build_optimizer(self.model, config.optimizer, config.lr, config.weight_decay,
                                         config.betas, config.eps, config.temperature_lr_scale,
                                         config.image_lr_scale)
        self.scheduler = build_scheduler(
            self.optimizer, Schedule(config.schedule, config.warmup_steps, config.total_schedule_steps))
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

        self.step = 0
        self.skipped_steps = 0
        self.skipped_samples = 0
        self.skip_reasons: Counter = Counter()  # the skipped_samples by reason (all processes)
        self.held_out_unreadable: dict[str, int] = {}
        self.history: list[dict] = []
        self.last_eval: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        self.data_generator = torch.Generator().manual_seed(config.seed + 7919 * self.dist.rank)
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
        self.collate = Collate(self.tokenizer)
        self.eval_batch = self._eval_batch(eval_ds) if self.eval_indices else None

    # -- construction helpers ------------------------------------------------------------------

    def model_config(self):
        c = self.config
        mc = get_preset(c.model).with_vocab_size(self.tokenizer.vocab_size)
        if c.text_length > mc.text.max_position_embeddings:
            raise ValueError(f"text_length {c.text_length} exceeds the model's {mc.text.max_position_embeddings} positions")
        if c.text_dropout is not None:
            mc = replace(mc, text=replace(mc.text, dropout=c.text_dropout))
        if c.text_pooling is not None:
            mc = replace(mc, text=replace(mc.text, pooling=c.text_pooling))
        if c.stochastic_depth is not None:
            mc = replace(mc, image=replace(mc.image, stochastic_depth_prob=c.stochastic_depth))
        lo, hi = min(mc.temperature_min, c.temperature), max(mc.temperature_max, c.temperature)
        return replace(mc, temperature_init=c.temperature, learnable_temperature=c.learnable_temperature,
                       temperature_min=lo, temperature_max=hi)

    def _eval_batch(self, eval_ds) -> dict[str, Any] | None:
        log = getattr(eval_ds, "log", None)
        before = Counter(log.counts) if isinstance(log, SkipLog) else Counter()
        samples = [eval_ds[i] for i in self.eval_indices]
        if isinstance(log, SkipLog):
            self.held_out_unreadable = log.since(before)
        elif any(s is None for s in samples):
            self.held_out_unreadable = {"unreadable": sum(s is None for s in samples)}
        batch = collate_pairs(samples, self.tokenizer)
        return batch if len(batch["text"]) else None

    def _check_bad_share(self, bad: int, total: int | None, what: str) -> None:
        """Stop when ``bad / total`` passes ``config.max_bad_share``."""
        share = self.config.max_bad_share
        if share is None or not total or bad <= share * total:
            return
        raise DataFormatError(f"{bad:,} of {total:,} rows ({bad / total:.1%}) were {what}, more "
                              f"than max_bad_share {share:.1%} (--max-bad-share) allows")

    def data_report(self) -> dict[str, Any]:
        """Every row the run could not use, by reason: ``dropped_while_reading`` (bad JSON, not
        UTF-8, empty text, a missing file name, a malformed value: rows the pair table never
        held), ``bad_images`` (images that did not decode or were missing or unsafe, each time
        one was drawn: replaced by the next readable row in a pair table, passed over in a
        stream) and ``held_out_unreadable`` (held-out pairs left out of the retrieval check)."""
        return {
            "rows": None if self.streaming else len(self.train_ds),
            "dropped_while_reading": dict(sorted(self.dropped_while_reading.items())),
            "bad_images": dict(sorted(self.skip_reasons.items())),
            "bad_images_total": self.skipped_samples,
            "bad_images_were": "passed over (stream)" if self.streaming else "replaced by the next readable row",
            "held_out_unreadable": dict(sorted(self.held_out_unreadable.items())),
        }

    def loader(self, start_step: int) -> Iterator[dict[str, Any]]:
        c = self.config
        if self.streaming:
            return self._stream_loader(start_step)
        sampler = StepBatchSampler(self.train_indices, c.batch_size, c.accum_steps, self.dist.rank,
                                   self.dist.world_size, c.seed, start_step, order=self.batch_order)
        self.sampler = sampler
        return iter(torch.utils.data.DataLoader(
            SkipBadSamples(self.train_ds), batch_sampler=sampler, collate_fn=self.collate,
            num_workers=c.num_workers, generator=self.data_generator,
            pin_memory=self.device.type == "cuda", persistent_workers=c.num_workers > 0,
        ))

    def _stream_loader(self, start_step: int) -> Iterator[dict[str, Any]]:
        """Micro-batches from the resampled shard stream. Its shard draws are seeded by (seed,
        rank, worker, start step), so a resumed run reads a fresh, reproducible sequence of
        shards: statistically the same data, not a replay of the interrupted order."""
        c = self.config
        self.train_ds.set_epoch(start_step)
        return iter(torch.utils.data.DataLoader(
            self.train_ds, batch_size=c.batch_size, collate_fn=self.collate, num_workers=c.num_workers,
            drop_last=True, pin_memory=self.device.type == "cuda", persistent_workers=c.num_workers > 0,
        ))

    @property
    def global_batch(self) -> int:
        c = self.config
        return c.batch_size * c.accum_steps * self.dist.world_size

    # -- one optimizer step --------------------------------------------------------------------

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def embed(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, D) image and text embeddings (float32, unit norm) and the temperature σ of one batch,
        exactly as a training step computes them (device, channels-last, autocast)."""
        pixels = batch["image"].to(self.device, non_blocking=True)
        if self.use_channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        ids = batch["input_ids"].to(self.device, non_blocking=True)
        mask = batch["attention_mask"].to(self.device, non_blocking=True)
        with self._autocast():
            out = self.forward_model(pixels, ids, mask)
        return out.image_embeds.float(), out.text_embeds.float(), out.temperature.float()

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, through the fp16 loss scaler when there is one."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def train_step(self, micro_batches: Sequence[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over ``micro_batches`` (k of them: honest accumulation, see the
        module docstring). Gradients are left in ``.grad`` until the next step (for inspection).
        Returns ``loss`` (this process's loss of the whole k·B batch), ``grad_norm`` (before
        clipping), ``lr`` (used for this step) and ``skipped`` (1.0 if the update was skipped)."""
        self.optimizer.zero_grad(set_to_none=True)
        k = len(micro_batches)
        sync_last = self.ddp.no_sync if self.ddp is not None else contextlib.nullcontext
        if k == 1:
            image, text, temperature = self.embed(micro_batches[0])
            loss = self.loss_fn(image, text, temperature)
            self.backward(loss)
        else:
            cached, states = [], []
            with torch.no_grad(), frozen_batchnorm_stats(self.model):
                for batch in micro_batches:
                    states.append(_fork_rng(self.device))
                    image, text, _ = self.embed(batch)
                    cached.append((image, text))
            for j, batch in enumerate(micro_batches):
                _join_rng(states[j], self.device)  # same dropout as the cached pass
                last = j == k - 1
                with contextlib.nullcontext() if last else sync_last():  # DDP all-reduces once
                    image, text, temperature = self.embed(batch)
                    if not last:
                        temperature = temperature.detach()  # σ gets its gradient once
                    images = torch.cat([c[0] for c in cached[:j]] + [image] + [c[0] for c in cached[j + 1:]])
                    texts = torch.cat([c[1] for c in cached[:j]] + [text] + [c[1] for c in cached[j + 1:]])
                    loss = self.loss_fn(images, texts, temperature)
                    self.backward(loss)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
        bad = torch.stack([~torch.isfinite(loss.detach()), ~torch.isfinite(grad_norm.detach().to(loss.device))]).any()
        bad = bad.float()
        if self.dist.enabled:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)  # every process skips, or none
        skipped = bool(bad.item())
        lr = self.scheduler.get_last_lr()[0]
        if skipped:
            self.skipped_steps += 1
            if self.scaler is not None:
                self.scaler.update()  # lowers the loss scale after an overflow
        elif self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "lr": lr, "skipped": float(skipped)}

    # -- the loop ------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        c, main = self.config, self.dist.main
        writer = self._open_outputs() if main else None
        tb = self._tensorboard() if main else None
        data = self.loader(self.step)
        bar = progress(total=c.max_steps, initial=self.step, desc="train", unit="step",
                       disable=True if not main else None)
        self.model.train()
        start = last_time = time.perf_counter()
        window = self._new_window()
        try:
            while self.step < c.max_steps:
                micro = [next(data) for _ in range(c.accum_steps)]
                window["skipped_samples"] += sum(int(b["n_skipped"]) for b in micro)
                for b in micro:
                    window["skip_reasons"].update(b.get("skip_reasons", {}))
                stats = self.train_step(micro)
                if math.isfinite(stats["loss"]):
                    window["loss_sum"] += stats["loss"]
                    window["loss_n"] += 1
                window["images"] += self.global_batch
                bar.update(1)
                time_up = c.max_seconds is not None and self._time_is_up(time.perf_counter() - start)
                last = time_up or self.step == c.max_steps
                record: dict[str, Any] = {}
                if self.step % c.log_every == 0 or last:
                    now = time.perf_counter()
                    record = self._log_record(stats, window, now - last_time, now - start)
                    last_time = now
                    window = self._new_window()
                    bar.set_postfix(loss=f"{record['loss']:.3f}", temp=f"{record['temperature']:.4f}")
                if c.eval_every and self.step % c.eval_every == 0 and not last:
                    record = {"step": self.step, **record, **self.evaluate()}
                if record:
                    self._write(record, writer, tb)
                if c.ckpt_every and self.step % c.ckpt_every == 0 and not last:
                    self.save_checkpoint()
                if time_up:
                    break
            seconds = time.perf_counter() - start
            final_eval = self.evaluate()
            if final_eval:
                self._write({"step": self.step, **final_eval}, writer, tb)
            if self.out_dir is not None:
                if self.last_checkpoint is None or not self.last_checkpoint.name.endswith(f"{self.step:07d}"):
                    self.save_checkpoint()
                if main:
                    save_pretrained(self.model, self.out_dir / "final", self.tokenizer)
                    (self.out_dir / DATA_REPORT).write_text(json.dumps(self.data_report(), indent=1) + "\n")
                self._barrier()
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            if tb is not None:
                tb.close()
        self.model.eval()
        return TrainResult(
            model=self.model, tokenizer=self.tokenizer, config=c, history=list(self.history), step=self.step,
            skipped_steps=self.skipped_steps, skipped_samples=self.skipped_samples, eval=dict(self.last_eval),
            checkpoint=self.last_checkpoint, final_dir=self.out_dir / "final" if self.out_dir else None,
            seconds=seconds, data_report=self.data_report(),
        )

    @staticmethod
    def _new_window() -> dict[str, Any]:
        return {"loss_sum": 0.0, "loss_n": 0, "images": 0, "skipped_samples": 0, "skip_reasons": Counter()}

    def _time_is_up(self, elapsed: float) -> bool:
        flag = torch.tensor([float(elapsed >= self.config.max_seconds)], device=self.device)
        if self.dist.enabled:
            dist.broadcast(flag, src=0)  # process 0's clock decides for everyone
        return bool(flag.item())

    def _log_record(self, stats: dict[str, float], window: dict, interval: float, elapsed: float) -> dict:
        totals = torch.tensor([window["loss_sum"], window["loss_n"], window["skipped_samples"]],
                              dtype=torch.float64, device=self.device)
        if self.dist.enabled:
            dist.all_reduce(totals)
        loss_sum, loss_n, skipped_samples = totals.tolist()
        self.skipped_samples += int(skipped_samples)
        reasons = [window["skip_reasons"]]
        if self.dist.enabled:
            reasons = [None] * self.dist.world_size
            dist.all_gather_object(reasons, window["skip_reasons"])
        for part in reasons:
            self.skip_reasons.update(part)
        drawn = self.step * self.global_batch + (self.skipped_samples if self.streaming else 0)
        self._check_bad_share(self.skipped_samples, drawn, "bad images met in training (missing, unreadable or unsafe)")
        n_steps = max(1, window["images"] // self.global_batch)
        return {
            "step": self.step,
            "loss": loss_sum / loss_n if loss_n else float("nan"),
            "lr": stats["lr"],
            "temperature": float(self.model.temperature.detach()),
            "images_per_s": window["images"] / interval if interval > 0 else float("nan"),
            "step_time_s": interval / n_steps,
            "grad_norm": stats["grad_norm"],
            "skipped_steps": self.skipped_steps,
            "skipped_samples": self.skipped_samples,
            "global_batch": self.global_batch,
            "epoch": self.step / self.sampler.steps_per_epoch if not self.streaming else None,
            "elapsed_s": elapsed,
        }

    def evaluate(self) -> dict[str, float]:
        """The built-in held-out retrieval check and the user's eval hooks (process 0 only)."""
        out: dict[str, float] = {}
        if self.dist.main:
            if self.eval_batch is not None:
                out.update(retrieval_accuracy(self.model, self.eval_batch, self.device))
            for fn in self.eval_fns:
                self.model.eval()
                try:
                    result = fn(self.model, self.step)
                finally:
                    self.model.train()
                if result:
                    out.update({k: float(v) for k, v in result.items()})
        self._barrier()
        if out:
            self.last_eval = out
        return out

    def _barrier(self) -> None:
        if self.dist.enabled:
            dist.barrier()

    # -- outputs -------------------------------------------------------------------------------

    def _open_outputs(self):
        if self.out_dir is None:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        path = self.out_dir / METRICS_FILE
        if self.resume_from is not None and path.is_file():  # drop records after the checkpoint
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= self.step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue
            path.write_text("".join(line + "\n" for line in kept))
            self.history = [json.loads(line) for line in kept]
        elif self.resume_from is None:
            path.write_text("")
        return path.open("a", encoding="utf-8")

    def _tensorboard(self):
        if self.out_dir is None or not self.config.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            _notice("TensorBoard logging skipped (pip install tensorboard to enable it)")
            return None
        return SummaryWriter(str(self.out_dir / "tb"))

    def _write(self, record: dict, writer, tb) -> None:
        self.history.append(record)
        for fn in self.log_fns:
            fn(record)
        if writer is not None:
            writer.write(json.dumps(record) + "\n")
            writer.flush()
        if tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    tb.add_scalar(f"train/{key}" if not key.startswith("eval_") else f"eval/{key[5:]}",
                                  value, record["step"])

    # -- checkpoints ---------------------------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        """``out_dir/checkpoint-<step>``: model + tokenizer (``save_pretrained``) + trainer state,
        staged and renamed into place. All processes must call it (random states are gathered)."""
        if self.out_dir is None:
            return None
        rng = get_rng_state(self.device)
        if self.dist.enabled:
            states: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        final = self.out_dir / f"{CHECKPOINT_PREFIX}{self.step:07d}"
        if self.dist.main:
            staging = self.out_dir / f".{final.name}.tmp-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                save_pretrained(self.model, staging, self.tokenizer)
                tensors, meta = self._trainer_state(states)
                save_file(tensors, str(staging / STATE_TENSORS))
                (staging / STATE_JSON).write_text(json.dumps(meta, indent=1) + "\n")
                fsync_tree(staging)
                if final.exists():
                    shutil.rmtree(final)
                os.rename(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self._prune_checkpoints()
        self._barrier()
        self.last_checkpoint = final
        return final

    def _newest_readable(self, found: list[Path]) -> Path | None:
        """The newest of ``found`` that reads back; each newer, unreadable one is reported (a run
        killed while the disk filled, say). Raises ``ValueError`` when none reads back."""
        problems = []
        for candidate in reversed(found):
            problem = checkpoint_problem(candidate)
            if problem is None:
                if problems and self.dist.main:
                    _notice(f"--resume: {len(problems)} newer checkpoint(s) cannot be read ({problems[0]}); "
                            f"resuming from {candidate.name}")
                return candidate
            problems.append(problem)
        if found:
            raise ValueError(f"--resume: none of the {len(found)} checkpoints in {self.out_dir} can be read; "
                             f"the newest: {problems[0]}")
        return None

    def _prune_checkpoints(self) -> None:
        keep = self.config.keep_checkpoints
        if keep is None:
            return
        for old in find_checkpoints(self.out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _trainer_state(self, rng_states: list[dict]) -> tuple[dict[str, torch.Tensor], dict]:
        tensors: dict[str, torch.Tensor] = {}
        opt = self.optimizer.state_dict()
        opt_meta: dict[str, dict] = {}
        for idx, state in opt["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous()
                else:
                    opt_meta.setdefault(str(idx), {})[key] = _jsonable(value)
        rng_meta = []
        for r, state in enumerate(rng_states):
            tensors[f"rng.{r}.torch"] = state["torch"].cpu()
            if "cuda" in state:
                tensors[f"rng.{r}.cuda"] = state["cuda"].cpu()
            name, keys, pos, has_gauss, cached = state["numpy"]
            tensors[f"rng.{r}.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
            version, internal, gauss = state["python"]
            rng_meta.append({"python": [version, list(internal), gauss],
                             "numpy": [name, int(pos), int(has_gauss), float(cached)]})
        tensors["data.generator"] = self.data_generator.get_state()
        scheduler = {k: _jsonable(v) for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"}
        meta = {
            "format_version": STATE_FORMAT_VERSION,
            "align_lite_version": __version__,
            "step": self.step,
            "world_size": self.dist.world_size,
            "config": self.config.to_dict(),
            "optimizer": {"param_groups": _jsonable(opt["param_groups"]), "state": opt_meta},
            "scheduler": scheduler,
            "scaler": _jsonable(self.scaler.state_dict()) if self.scaler is not None else None,
            "rng": rng_meta,
            "data": ({"samples_seen": self.step * self.global_batch, "stream_epoch": self.step} if self.streaming else
                     StepBatchSampler(self.train_indices, self.config.batch_size, self.config.accum_steps,
                                      0, self.dist.world_size, self.config.seed).position(self.step)),
            "skipped_steps": self.skipped_steps,
            "skipped_samples": self.skipped_samples,
            "skip_reasons": dict(self.skip_reasons),
            "last_eval": self.last_eval,
        }
        return tensors, meta

    def load_checkpoint(self, directory: str | Path) -> None:
        """Restore optimizer, schedule, scaler, random states and counters from a checkpoint
        (the weights were loaded with ``from_pretrained`` when the model was built)."""
        directory = Path(directory)
        problem = checkpoint_problem(directory)
        if problem is not None:
            raise ValueError(f"cannot resume from {directory}: {problem}")
        meta = json.loads((directory / STATE_JSON).read_text(encoding="utf-8"))
        if meta.get("format_version", 0) > STATE_FORMAT_VERSION:
            raise ValueError(f"{directory}: trainer state format {meta.get('format_version')} is newer "
                             "than this align_lite reads")
        saved = meta["config"]
        clash = [k for k in _RESUME_MUST_MATCH if k in saved and _jsonable(getattr(self.config, k)) != saved[k]]
        if clash:
            detail = ", ".join(f"{k}: {saved[k]!r} -> {getattr(self.config, k)!r}" for k in clash)
            raise ValueError(f"cannot resume from {directory}: the run's settings changed ({detail})")
        tensors = load_file(str(directory / STATE_TENSORS))
        state: dict[int, dict[str, Any]] = {}
        for name, value in tensors.items():
            if name.startswith("optimizer."):
                _, idx, key = name.split(".", 2)
                state.setdefault(int(idx), {})[key] = value
        for idx, values in meta["optimizer"]["state"].items():
            state.setdefault(int(idx), {}).update(values)
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
        # the multipliers come from the current config, the position from the checkpoint
        self.scheduler.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(self.scheduler.lr_lambdas)})
        if self.scaler is not None and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.step = int(meta["step"])
        self.skipped_steps = int(meta["skipped_steps"])
        self.skipped_samples = int(meta["skipped_samples"])
        self.skip_reasons = Counter(meta.get("skip_reasons") or {})
        self.last_eval = meta.get("last_eval") or {}
        self.last_checkpoint = directory
        if "data.generator" in tensors:
            self.data_generator.set_state(tensors["data.generator"])
        r = self.dist.rank
        if meta["world_size"] == self.dist.world_size and f"rng.{r}.torch" in tensors:
            python, numpy = meta["rng"][r]["python"], meta["rng"][r]["numpy"]
            rng = {
                "python": (python[0], tuple(python[1]), python[2]),
                "numpy": (numpy[0], tensors[f"rng.{r}.numpy"].numpy().astype(np.uint32), numpy[1], numpy[2], numpy[3]),
                "torch": tensors[f"rng.{r}.torch"],
            }
            if f"rng.{r}.cuda" in tensors:
                rng["cuda"] = tensors[f"rng.{r}.cuda"]
            set_rng_state(rng, self.device)
        else:  # a different number of processes: the data order changes anyway
            if self.dist.main:
                _notice(f"resuming {meta['world_size']}-process state on {self.dist.world_size} processes: "
                        "random states re-seeded, batches differ from an uninterrupted run")
            torch.manual_seed(self.config.seed + self.dist.rank + 104729 * self.step)

    def close(self) -> None:
        if self.dist.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def train(config: TrainConfig = TrainConfig.cpu_tiny(), data: Any = None, out_dir: str | Path | None = None,
          resume: bool | str | Path = False, eval_fns: Sequence[EvalFn] = (),
          tokenizer: AltTextTokenizer | None = None, log_fns: Sequence[LogFn] = ()) -> TrainResult:
    """Train a dual encoder; the one entry point for notebooks, the CLI and ``torchrun``.

    ``data``: ``None``/``"world"`` (the generated world, drawn in memory), a ``WorldConfig``, a
    pair folder / ``.jsonl`` / ``.parquet`` path, or a dataset (see :func:`build_dataset`).
    ``out_dir``: where checkpoints, metrics and ``final/`` go; ``None`` writes nothing (short
    notebook runs); a run that fails before its first checkpoint removes the ``out_dir`` it made.
    ``resume``: ``True`` continues from the newest readable checkpoint in ``out_dir`` (a newer,
    damaged one is named and passed over); a path continues from that checkpoint.
    ``eval_fns``: callables ``fn(model, step) -> {name: number}`` run (on process 0, model in
    eval mode) every ``config.eval_every`` steps and at the end; their numbers join the metrics.
    ``tokenizer``: use this one instead of learning one from the training texts (its
    ``max_length`` must equal ``config.text_length``).
    ``log_fns``: callables ``fn(record)`` given every record written to the metrics (process 0),
    e.g. :class:`align_lite.plots.LiveCurves` to redraw curves in a notebook while training.
    """
    existed = out_dir is not None and Path(out_dir).is_dir()
    made = out_dir is not None and (not existed or not any(Path(out_dir).iterdir()))
    try:
        trainer = Trainer(config, data, out_dir, resume, eval_fns, tokenizer, log_fns)
        try:
            return trainer.fit()
        finally:
            trainer.close()
    except BaseException:
        if made:
            _remove_half_made_run(Path(out_dir), existed)
        raise


def _remove_half_made_run(out_dir: Path, existed: bool) -> None:
    """Delete what a failed run wrote into the folder it made, when no checkpoint got written
    (metrics and a config without weights only mislead); process 0 only, like every write."""
    if int(os.environ.get("RANK", "0")) != 0 or not out_dir.is_dir() or find_checkpoints(out_dir):
        return
    for entry in out_dir.iterdir():  # the folder itself stays if the user made it (empty)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()
    if not existed:
        out_dir.rmdir()
    _notice(f"the run failed before its first checkpoint: removed what it wrote to {out_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m align_lite.train ARGS`` = ``align-lite train ARGS`` (for ``torchrun -m``)."""
    from align_lite.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


__all__ = [
    "METRIC_FIELDS", "PRECISIONS", "Collate", "SkipBadSamples", "StepBatchSampler", "TrainConfig",
    "TrainResult", "Trainer", "build_dataset", "find_checkpoints", "frozen_batchnorm_stats",
    "retrieval_accuracy", "train",
]

if __name__ == "__main__":
    raise SystemExit(main())
