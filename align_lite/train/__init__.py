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

import importlib
from typing import Any

# Loaded on first use (PEP 562), so that importing align_lite.train.config (the command line's
# flags) does not import torch and the trainer with it.
_EXPORTS = {
    "STATE_JSON": "checkpoint", "STATE_TENSORS": "checkpoint", "checkpoint_problem": "checkpoint",
    "find_checkpoints": "checkpoint",
    "PRECISIONS": "config", "TrainConfig": "config", "resume_fields": "config",
    "Collate": "data", "SkipBadSamples": "data", "StepBatchSampler": "data", "build_dataset": "data",
    "hard_negative_batches": "data", "image_size_of": "data", "is_shard_source": "data",
    "transform_config": "data", "world_transform_config": "data",
    "METRIC_FIELDS": "trainer", "TrainResult": "trainer", "Trainer": "trainer", "train": "trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'align_lite.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"align_lite.train.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
