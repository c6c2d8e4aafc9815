"""Recipes for real training runs (Chapter 7): the paper's and COYO-ALIGN's settings as files.

A recipe is a TOML file: a ``[train]`` table of :class:`~align_lite.train.TrainConfig` fields (its
``batch_size`` is the batch per device and micro-batch) and the run's ``global_batch``, the number
of pairs whose embeddings are each other's negatives in one step. For ``devices`` processes the
gradient-accumulation factor follows from

    global_batch = batch_size × devices × accum_steps

so the same recipe runs on 8 or 64 GPUs with the same contrastive batch (``accum_steps`` uses
cached-feature accumulation, :mod:`align_lite.train`, so all its micro-batches are negatives).

Shipped recipes (``list_recipes()``; load by name or by path with :func:`load_recipe`):

* ``b3-mini-cc3m``: EfficientNet-B3 + BERT-mini on CC-3M-like data (COYO-ALIGN's small run);
* ``b7-base-coyo700m``: EfficientNet-B7 + BERT-base on COYO-700M-like data (COYO-ALIGN);
* ``l2-large-align``: EfficientNet-L2 + BERT-large, the paper's model and schedule.

One command per recipe::

    torchrun --nproc_per_node 8 -m align_lite.train --config b3-mini-cc3m \\
        --data 'shards/{000000..000299}.tar' --out runs/b3
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from align_lite.train import TrainConfig

SUFFIX = ".toml"


@dataclass(frozen=True)
class Recipe:
    """A named run: ``train`` holds TrainConfig fields (``batch_size`` per device), ``global_batch``
    the pairs per optimizer step over all devices; ``source`` says where the numbers come from."""

    name: str
    description: str
    source: str
    data: str
    global_batch: int
    train: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(self.train) - known)
        if unknown:
            raise ValueError(f"recipe {self.name!r}: unknown [train] keys {unknown}")
        if "accum_steps" in self.train:
            raise ValueError(f"recipe {self.name!r}: accum_steps follows from global_batch; do not set it")
        if not isinstance(self.global_batch, int) or self.global_batch < 1:
            raise ValueError(f"recipe {self.name!r}: global_batch must be a positive integer")

    @property
    def per_device_batch(self) -> int:
        return int(self.train.get("batch_size", TrainConfig.batch_size))

    def accumulation(self, devices: int, per_device_batch: int | None = None) -> int:
        """Micro-batches per step so that per-device batch × devices × accumulation = global batch."""
        if devices < 1:
            raise ValueError(f"devices must be >= 1, got {devices}")
        batch = per_device_batch or self.per_device_batch
        per_step = batch * devices
        if self.global_batch % per_step:
            raise ValueError(
                f"recipe {self.name!r}: global batch {self.global_batch:,} is not a multiple of per-device batch "
                f"{batch} x {devices} devices = {per_step:,}; pick a per-device batch (--batch-size) or device count "
                f"that divides it")
        return self.global_batch // per_step

    def config(self, devices: int = 1, **overrides: Any) -> TrainConfig:
        """The TrainConfig for ``devices`` processes (``overrides`` win, except ``accum_steps``,
        which always follows from the global batch)."""
        batch = overrides.get("batch_size", self.per_device_batch)
        accum = self.accumulation(devices, batch)
        return TrainConfig.from_dict({**self.train, **overrides, "batch_size": batch, "accum_steps": accum})

    def arithmetic(self, devices: int, per_device_batch: int | None = None) -> str:
        """"256 per device × 8 devices × 8 accumulation = 16,384 pairs per step"."""
        batch = per_device_batch or self.per_device_batch
        accum = self.accumulation(devices, batch)
        return (f"{batch} per device × {devices} device{'s' if devices > 1 else ''} × {accum} accumulation "
                f"= {self.global_batch:,} pairs per step")


def list_recipes() -> list[str]:
    """Names of the shipped recipes."""
    folder = resources.files(__name__)
    return sorted(p.name[: -len(SUFFIX)] for p in folder.iterdir() if p.name.endswith(SUFFIX))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (``"b3-mini-cc3m"``) or any recipe file by path."""
    path = Path(name_or_path)
    if path.suffix == SUFFIX or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {path}: no such file")
        text, where = path.read_text(), str(path)
    else:
        shipped = resources.files(__name__) / f"{name_or_path}{SUFFIX}"
        if not shipped.is_file():
            raise ValueError(f"unknown recipe {str(name_or_path)!r}; shipped recipes: {', '.join(list_recipes())} "
                             "(or pass a .toml file)")
        text, where = shipped.read_text(), str(name_or_path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"recipe {where}: not valid TOML ({err})") from err
    missing = [k for k in ("name", "global_batch", "train") if k not in data]
    if missing:
        raise ValueError(f"recipe {where}: missing {missing}")
    return Recipe(name=data["name"], description=data.get("description", ""), source=data.get("source", ""),
                  data=data.get("data", ""), global_batch=data["global_batch"], train=dict(data["train"]))


__all__ = ["Recipe", "list_recipes", "load_recipe"]
