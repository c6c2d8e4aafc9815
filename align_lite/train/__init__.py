"""Contrastive training of the dual encoder, from one CPU to many GPUs (Chapter 4).

One idea per module, read in this order:

* :mod:`~align_lite.train.config` — :class:`TrainConfig`, every setting of a run, and its presets;
* :mod:`~align_lite.train.data` — datasets, the step sampler, bad-sample handling, collation;
* :mod:`~align_lite.train.distributed` — process group, device, precision, random states;
* :mod:`~align_lite.train.checkpoint` — atomic checkpoints, found, checked and read back;
* :mod:`~align_lite.train.trainer` — the loop: :class:`Trainer` and :func:`train`.

``align-lite train``, ``python -m align_lite.train`` and ``torchrun -m align_lite.train`` all
call :func:`train` (the last two through ``__main__``, which is the only place the package meets
the command line).
"""

from align_lite.train.checkpoint import STATE_JSON, STATE_TENSORS, checkpoint_problem, find_checkpoints
from align_lite.train.config import PRECISIONS, TrainConfig, resume_fields
from align_lite.train.data import (
    Collate, SkipBadSamples, StepBatchSampler, build_dataset, hard_negative_batches, image_size_of,
    is_shard_source, transform_config, world_transform_config,
)
from align_lite.train.trainer import METRIC_FIELDS, TrainResult, Trainer, train

__all__ = [
    "METRIC_FIELDS", "PRECISIONS", "STATE_JSON", "STATE_TENSORS", "Collate", "SkipBadSamples", "StepBatchSampler",
    "TrainConfig", "TrainResult", "Trainer", "build_dataset", "checkpoint_problem", "find_checkpoints",
    "hard_negative_batches", "image_size_of", "is_shard_source", "resume_fields", "train",
    "transform_config", "world_transform_config",
]
