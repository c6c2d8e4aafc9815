"""The training loop: :class:`Trainer` and :func:`train` (Chapter 4).

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
import json
import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tokenizers import Tokenizer
from torch import nn

from align_lite import __version__
from align_lite.data.records import DataFormatError, SkipLog
from align_lite.data.sources import collate_pairs
from align_lite.data.tokenizer import AltTextTokenizer, TokenizerConfig, train_tokenizer
from align_lite.loss import ContrastiveLoss
from align_lite.models import AlignDualEncoder, from_pretrained, get_preset, load_tokenizer, save_pretrained
from align_lite.models.image_tower import frozen_batchnorm_stats
from align_lite.optim import build_optimizer, build_scheduler
from align_lite.progress import progress
from align_lite.retrieval import caption_match_top1
from align_lite.train.checkpoint import (
    STATE_FORMAT_VERSION, checkpoint_name, checkpoint_problem, find_checkpoints, jsonable, load_optimizer_state,
    newest_readable, optimizer_state, prune_checkpoints, read_trainer_state, rng_state_of, rng_states,
    write_checkpoint,
)
from align_lite.train.config import TrainConfig, resume_fields
from align_lite.train.data import Collate, SkipBadSamples, StepBatchSampler, build_dataset, hard_negative_batches
from align_lite.train.distributed import (
    barrier, fork_rng, get_rng_state, init_distributed, join_rng, resolve_device, resolve_precision, set_rng_state,
)

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.json"
DATA_REPORT = "data_report.json"
METRIC_FIELDS = (
    "step", "loss", "lr", "temperature", "images_per_s", "step_time_s", "grad_norm",
    "skipped_steps", "skipped_samples", "global_batch", "epoch", "elapsed_s",
)
# Seed offsets: each stream of random numbers gets its own, so that none repeats another.
HELD_OUT_KEY = 2**31 - 1  # with the seed, keys the generator that picks the held-out pairs
DATA_SEED_STRIDE = 7919  # process r's DataLoader generator: seed + 7919·r
RESEED_STRIDE = 104729  # resuming on another number of processes: seed + rank + 104729·step

EvalFn = Callable[[AlignDualEncoder, int], "dict[str, float] | None"]
LogFn = Callable[[dict], None]


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
        # The order of these steps is part of a run's reproducibility: each draws random numbers.
        self.resume_from = self._resume_point(resume)  # decided before anything random happens
        eval_ds, tokenizer_texts = self._split_data(data)
        self.tokenizer = self._tokenizer(tokenizer, tokenizer_texts)
        self._build_model()
        self._build_optimisation()
        self.step = 0
        self.skipped_steps = 0
        self.skipped_samples = 0
        self.skip_reasons: Counter = Counter()  # the skipped_samples by reason (all processes)
        self.held_out_unreadable: dict[str, int] = {}
        self.history: list[dict] = []
        self.last_eval: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        self.data_generator = torch.Generator().manual_seed(config.seed + DATA_SEED_STRIDE * self.dist.rank)
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
        self.collate = Collate(self.tokenizer)
        self.eval_batch = self._eval_batch(eval_ds) if self.eval_indices else None

    # -- construction steps --------------------------------------------------------------------

    def _resume_point(self, resume: bool | str | Path) -> Path | None:
        """The checkpoint to continue from: the one named, the newest readable one in ``out_dir``
        (``resume=True``), or none; an ``out_dir`` holding another run's checkpoints is refused."""
        if resume is not False and self.out_dir is None:
            raise ValueError(f"resume={resume!r} needs an out_dir")
        if isinstance(resume, (str, Path)):
            path = Path(resume)
            problem = checkpoint_problem(path) if path.is_dir() else "no such folder"
            if problem is not None:
                raise ValueError(f"--resume {path}: cannot resume from it ({problem})")
            return path
        found = find_checkpoints(self.out_dir) if self.out_dir is not None else []
        if resume:
            if not found and self.dist.main:
                _notice(f"--resume: no checkpoint in {self.out_dir}, starting from scratch")
            return newest_readable(found, _notice if self.dist.main else None)
        if found:
            raise ValueError(f"{self.out_dir} already holds checkpoints of another run; resume it "
                             "(--resume) or choose a new output folder")
        return None

    def _split_data(self, data: Any) -> tuple[Any, Iterable[str]]:
        """Build the datasets, count what reading dropped, hold out ``eval_size`` pairs (a fixed
        function of the seed) and fix the batch order; returns (eval dataset, tokenizer texts)."""
        config = self.config
        self.train_ds, eval_ds, texts = build_dataset(config, data)
        self.streaming = isinstance(self.train_ds, torch.utils.data.IterableDataset)
        read_log = getattr(self.train_ds, "log", None)
        counted = isinstance(read_log, SkipLog) and not self.streaming
        self.dropped_while_reading = dict(read_log.counts) if counted else {}
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
            order = np.random.default_rng([config.seed, HELD_OUT_KEY]).permutation(n)
            if config.eval_size >= n:
                raise ValueError(f"eval_size {config.eval_size} leaves no training data out of {n} pairs "
                                 "(lower eval_size, --eval-size)")
            self.eval_indices = np.sort(order[:config.eval_size]).tolist()
            self.train_indices = np.sort(order[config.eval_size:]).tolist()
            tokenizer_texts = [texts[i] for i in self.train_indices]
        self.batch_order = hard_negative_batches(config, self.train_ds, self.train_indices, self.streaming)
        return eval_ds, tokenizer_texts

    def _tokenizer(self, given: AltTextTokenizer | None, texts: Iterable[str]) -> AltTextTokenizer:
        """The checkpoint's tokenizer when resuming, else the one given, else one learnt from the
        training texts by process 0 and sent to the others (one process reads the texts)."""
        config = self.config
        if self.resume_from is not None:
            tokenizer = load_tokenizer(self.resume_from)
            if tokenizer is None:
                raise FileNotFoundError(f"{self.resume_from}: checkpoint has no tokenizer")
        elif given is not None:
            tokenizer = given
        else:
            tok_config = TokenizerConfig(vocab_size=config.vocab_size, max_length=config.text_length)
            tokenizer = train_tokenizer(texts, tok_config) if self.dist.main else None
            if self.dist.enabled:
                payload = [tokenizer.tokenizer.to_str() if self.dist.main else None]
                dist.broadcast_object_list(payload, src=0)
                if not self.dist.main:
                    tokenizer = AltTextTokenizer(Tokenizer.from_str(payload[0]), tok_config)
        if tokenizer.config.max_length != config.text_length:
            raise ValueError(f"the tokenizer pads to {tokenizer.config.max_length} tokens but "
                             f"text_length is {config.text_length}")
        return tokenizer

    def _build_model(self) -> None:
        """The preset sized to the tokenizer (or the checkpoint's weights), on the device, in
        channels-last, wrapped in DDP and ``torch.compile`` when asked."""
        config = self.config
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

    def _build_optimisation(self) -> None:
        """The loss, the optimizer (:mod:`align_lite.optim`), the schedule and the fp16 scaler."""
        c = self.config
        self.loss_fn: nn.Module = ContrastiveLoss(c.loss_config())
        self.optimizer = build_optimizer(self.model, c.optimizer_config())
        self.scheduler = build_scheduler(self.optimizer, c.lr_schedule())
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    # -- construction helpers ------------------------------------------------------------------

    def model_config(self):
        c = self.config
        mc = get_preset(c.model).with_vocab_size(self.tokenizer.vocab_size)
        if c.text_length > mc.text.max_position_embeddings:
            raise ValueError(f"text_length {c.text_length} exceeds the model's "
                             f"{mc.text.max_position_embeddings} positions")
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
                    states.append(fork_rng(self.device))
                    image, text, _ = self.embed(batch)
                    cached.append((image, text))
            for j, batch in enumerate(micro_batches):
                join_rng(states[j], self.device)  # same dropout as the cached pass
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
        """The loop: step, log, evaluate, checkpoint, until ``max_steps`` or ``max_seconds``; then
        the final evaluation, checkpoint, ``final/`` and data report. (About 60 lines, kept in one
        piece on purpose: this is the loop a reader of Chapter 4 looks for.)"""
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
                out.update(caption_match_top1(self.model, self.eval_batch, self.device))
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
        barrier(self.dist)

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
        """``out_dir/checkpoint-<step>`` (:func:`~align_lite.train.checkpoint.write_checkpoint`):
        model, tokenizer and trainer state. All processes must call it (random states are gathered)."""
        if self.out_dir is None:
            return None
        rng = get_rng_state(self.device)
        if self.dist.enabled:
            states: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        final = self.out_dir / checkpoint_name(self.step)
        if self.dist.main:
            tensors, meta = self._trainer_state(states)
            write_checkpoint(final, self.model, self.tokenizer, tensors, meta)
            prune_checkpoints(self.out_dir, self.config.keep_checkpoints)
        self._barrier()
        self.last_checkpoint = final
        return final

    def _trainer_state(self, states: list[dict]) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything but the weights that a resumed run needs, as (tensors, JSON)."""
        opt_tensors, opt_meta = optimizer_state(self.optimizer)
        rng_tensors, rng_meta = rng_states(states)
        tensors = {**opt_tensors, **rng_tensors, "data.generator": self.data_generator.get_state()}
        c = self.config
        position = ({"samples_seen": self.step * self.global_batch, "stream_epoch": self.step} if self.streaming else
                    StepBatchSampler(self.train_indices, c.batch_size, c.accum_steps, 0, self.dist.world_size,
                                     c.seed).position(self.step))
        meta = {
            "format_version": STATE_FORMAT_VERSION,
            "align_lite_version": __version__,
            "step": self.step,
            "world_size": self.dist.world_size,
            "config": c.to_dict(),
            "optimizer": opt_meta,
            "scheduler": {k: jsonable(v) for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"},
            "scaler": jsonable(self.scaler.state_dict()) if self.scaler is not None else None,
            "rng": rng_meta,
            "data": position,
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
        meta, tensors = read_trainer_state(directory)
        saved = meta["config"]
        clash = [k for k in resume_fields() if k in saved and jsonable(getattr(self.config, k)) != saved[k]]
        if clash:
            detail = ", ".join(f"{k}: {saved[k]!r} -> {getattr(self.config, k)!r}" for k in clash)
            raise ValueError(f"cannot resume from {directory}: the run's settings changed ({detail})")
        load_optimizer_state(self.optimizer, tensors, meta["optimizer"])
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
        rng = rng_state_of(self.dist.rank, tensors, meta["rng"]) if meta["world_size"] == self.dist.world_size else None
        if rng is not None:
            set_rng_state(rng, self.device)
        else:  # a different number of processes: the data order changes anyway
            if self.dist.main:
                _notice(f"resuming {meta['world_size']}-process state on {self.dist.world_size} processes: "
                        "random states re-seeded, batches differ from an uninterrupted run")
            torch.manual_seed(self.config.seed + self.dist.rank + RESEED_STRIDE * self.step)

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
    if not existed:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:  # the user made the (empty) folder: it stays, emptied
        for entry in out_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    _notice(f"the run failed before its first checkpoint: removed what it wrote to {out_dir}")


__all__ = ["CONFIG_FILE", "DATA_REPORT", "METRICS_FILE", "METRIC_FIELDS", "TrainResult", "Trainer", "train"]
