"""The settings of a training run: :class:`TrainConfig` and its presets (Chapter 4).

One frozen dataclass holds every choice of a run besides its data; :meth:`TrainConfig.cpu_tiny`
(the book's CPU run), :meth:`~TrainConfig.gpu_small` and :meth:`~TrainConfig.paper` (ALIGN's
recipe) are presets, and the TOML recipes of :mod:`align_lite.recipes` are files of its fields.
Fields whose metadata says ``resume`` fix the model's shape or the data's order: a resumed run
must share them with its checkpoint (:func:`resume_fields`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

# No torch here (the towers, loss and optimizer modules are imported where they are used): the
# command line builds its `train` flags from these fields, and `align-lite --help` stays instant.
if TYPE_CHECKING:
    from align_lite.loss import LossConfig
    from align_lite.optim import OptimizerConfig, Schedule

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def knob(default: Any, help: str, *, resume: bool = False, cli: bool = True, flag: str | None = None,
         group: str | None = None) -> Any:
    """A :class:`TrainConfig` field with what the command line needs to offer it: its ``help``;
    ``resume`` (a resumed run must keep the value); ``cli=False`` (no flag of its own); ``flag``
    (another name than ``--field-name``); ``group`` (flags of one group exclude each other)."""
    return field(default=default, metadata={"help": help, "resume": resume, "cli": cli, "flag": flag,
                                            "group": group})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides its data. Presets: :meth:`cpu_tiny` (the book's
    default), :meth:`gpu_small`, :meth:`paper` (the paper's recipe, for reference and scaling).

    Batch sizes are per process: ``batch_size`` pairs per micro-batch, ``accum_steps``
    micro-batches per optimizer step, so a step sees ``batch_size * accum_steps * processes``
    pairs, all of them negatives of one another.
    """

    # The model and the batch (a resumed run must keep these: model shape and data order).
    model: str = knob("tiny", "model preset: tiny, tiny-wide, b3-mini, b5-base, b7-base, l2-large",
                      resume=True, flag="--preset")
    batch_size: int = knob(64, "pairs per micro-batch per process", resume=True)
    accum_steps: int = knob(1, "micro-batches per step (negatives = all of them)", resume=True)
    # Optimisation (paper: LAMB, peak lr 1e-3, weight decay 1e-5, linear warm-up then decay).
    lr: float = knob(1e-3, "peak learning rate (the paper's: 1e-3)")
    warmup_steps: int = knob(20, "linear warm-up steps")
    max_steps: int = knob(200, "optimizer steps (also the schedule's length)", group="limit")
    schedule_steps: int | None = knob(None, "length of the lr schedule (default: max_steps)")
    max_seconds: float | None = knob(None, "stop after this much training time (the schedule keeps its length)",
                                     group="limit")
    weight_decay: float = knob(1e-5, "weight decay (the paper's: 1e-5)")
    optimizer: str = knob("adamw", "adamw or lamb (the paper's)")
    betas: tuple[float, float] = knob((0.9, 0.999), "Adam/LAMB betas")
    eps: float = knob(1e-6, "Adam/LAMB epsilon")
    schedule: str = knob("linear", "linear (the paper's), cosine or constant")
    precision: str = knob("auto", "auto (bf16, else fp16, on CUDA; fp32 on CPU), fp32, bf16 or fp16")
    grad_clip: float | None = knob(1.0, "max global gradient norm; 0 or None: no clipping")
    seed: int = knob(0, "seed of the data order, the held-out split and the weights", resume=True)
    # The temperature and the loss.
    temperature: float = knob(1.0, "initial (learnable) or fixed temperature (the paper's start: 1.0)")
    learnable_temperature: bool = knob(True, "learn the temperature (--fixed-temperature: do not)")
    temperature_lr_scale: float = knob(1.0, "the temperature's lr = lr x this (see align_lite.optim)")
    image_lr_scale: float = knob(1.0, "the image tower's lr = lr x this (see align_lite.optim)")
    label_smoothing: float = knob(0.1, "label smoothing of the loss (the paper's: 0.1)")
    loss_reduction: str = knob("sum", "sum (the paper's L_i2t + L_t2i) or mean of the two directions")
    # Texts, images and towers.
    text_length: int = knob(64, "tokens per alt-text (the paper's: 64)", resume=True)
    vocab_size: int = knob(8_000, "word pieces learnt from the training texts (the paper's: 100 k)", resume=True)
    augment: bool = knob(True, "random crops of pair-folder images (never flipped: captions say left and right; "
                               "the world is never cropped)")
    text_dropout: float | None = knob(None, "override the preset's BERT dropout")
    text_pooling: str | None = knob(None, "override the preset's text pooling: cls or mean")
    stochastic_depth: float | None = knob(None, "override the preset's EfficientNet drop-path rate")
    # The generated world (when training on it).
    world_n: int = knob(4096, "rows of the generated world", resume=True)
    world_seed: int = knob(0, "seed of the generated world", resume=True)
    world_noisy: bool = knob(False, "the noisy world (as scraped) instead of the clean one (also --noisy-world)",
                             resume=True)
    # Hard-negative batches (align_lite.data.hard_negatives): the data's table columns that each
    # run of rows in a batch shares, and the column whose values differ within a run.
    # () and None: plainly shuffled batches, as in the paper. The CLI sets both with --hard-negatives.
    hard_negative_share: tuple[str, ...] = knob((), "columns each run of a batch shares", resume=True, cli=False)
    hard_negative_vary: str | None = knob(None, "the column that varies within a run", resume=True, cli=False)
    # Evaluation, logging, checkpoints.
    eval_size: int = knob(0, "held-out pairs for the retrieval check (0: none)", resume=True)
    eval_every: int = knob(0, "run the eval hooks every N steps (0: only at the end)")
    log_every: int = knob(10, "log every N steps")
    ckpt_every: int = knob(0, "checkpoint every N steps (0: at the end only)")
    keep_checkpoints: int | None = knob(None, "keep the newest N checkpoints (default: all)")
    # Where and how it runs.
    num_workers: int = knob(0, "DataLoader worker processes")
    gradient_checkpointing: bool = knob(False, "recompute activations in the backward pass (less memory)")
    compile: bool = knob(False, "torch.compile the model")
    channels_last: bool = knob(True, "NHWC images and convolutions (~1.8x faster EfficientNet, on CPU too)")
    device: str = knob("auto", "auto, cpu, cuda, cuda:1, ...")
    tensorboard: bool = knob(True, "write TensorBoard events when the package is installed")
    max_bad_share: float | None = knob(None, "stop when more than this share (0..1) of the rows is unusable: dropped "
                                             "while reading, or images replaced (default: never stop)")

    def __post_init__(self) -> None:
        from align_lite.loss import LossConfig
        from align_lite.models.text_tower import POOLINGS
        from align_lite.optim import OPTIMIZERS, SCHEDULES

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
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds the schedule "
                             f"({self.total_schedule_steps} steps)")
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

        It departs from the paper where a run of minutes needs it: hard-negative batches
        (``hard_negative_share``/``hard_negative_vary``: the world's colour and count shared,
        shape varied; off for other data), the temperature starting at 0.1 and learning 20x faster,
        the image tower learning 5x faster, and no dropout in the text tower. Why each, and what
        each is worth, is the appendix section "The CPU recipe, one departure at a time"
        (``benchmarks/tiny_recipe.py``)."""
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

    def optimizer_config(self) -> OptimizerConfig:
        from align_lite.optim import OptimizerConfig

        return OptimizerConfig(self.optimizer, self.lr, self.weight_decay, self.betas, self.eps,
                               self.temperature_lr_scale, self.image_lr_scale)

    def loss_config(self) -> LossConfig:
        """ALIGN's loss with this run's smoothing and reduction, gathered across processes."""
        from align_lite.loss import LossConfig

        return LossConfig(self.label_smoothing, self.loss_reduction, gather=True)

    def lr_schedule(self) -> Schedule:
        from align_lite.optim import Schedule

        return Schedule(self.schedule, self.warmup_steps, self.total_schedule_steps)

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


def resume_fields() -> tuple[str, ...]:
    """The :class:`TrainConfig` fields a resumed run must share with its checkpoint."""
    return tuple(f.name for f in fields(TrainConfig) if f.metadata.get("resume"))


__all__ = ["PRECISIONS", "TrainConfig", "resume_fields"]
