"""What a run reads, batch by batch: datasets, the step sampler, bad-sample handling, collation.

* :func:`build_dataset` turns ``data`` (the generated world, a pair folder, tar shards, a stream
  or any dataset with ``texts``) into (train dataset, eval dataset, texts to learn a tokenizer from).
* :class:`StepBatchSampler` makes the data order a pure function of (seed, step): each epoch's
  shuffle is cut into global batches, and process r takes micro-batches r·k … r·k+k-1 of each,
  so a resumed run sees exactly the batches an uninterrupted one would have.
* :class:`SkipBadSamples` replaces a row whose image cannot be used by the next readable one
  (batches stay full), and says why; :class:`Collate` tokenises and counts the replacements.
* :func:`hard_negative_batches`: the book's CPU recipe composes batches of near misses
  (:mod:`align_lite.data.hard_negatives`).
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from align_lite.data.hard_negatives import hard_negative_order
from align_lite.data.images import CropToPixels, ImageTransformConfig, image_transform
from align_lite.data.records import DataFormatError, SkipLog
from align_lite.data.resolve import is_shard_source, resolve_source
from align_lite.data.sources import PairDataset, collate_pairs
from align_lite.data.hf_stream import HFStream
from align_lite.data.tokenizer import AltTextTokenizer, trim_padding
from align_lite.data.world import WorldConfig, WorldDataset
from align_lite.models import get_preset
from align_lite.train.config import TrainConfig

WORLD_CACHE_BYTES = 2**30  # a generated world up to this size is drawn once and kept as uint8
TOKENIZER_TEXTS = 1_000_000  # alt-texts a tokenizer is learnt from when training on streamed shards


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
        held_out_stream = ShardStream(held_out, transform=eval_tf, rank=0, world_size=1)
        eval_ds = list(itertools.islice(held_out_stream, config.eval_size))
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
    """(train dataset, eval dataset, texts) for ``data``, whatever
    :func:`~align_lite.data.resolve.resolve_source` says it is: the generated world (of
    ``config.world_*`` when not given), a pair folder / ``.jsonl`` / ``.parquet``, webdataset tar
    shards (streamed, see :func:`_shard_datasets`), ``"hf:NAME"`` or any ``IterableDataset``
    (streamed; no held-out pairs), or a dataset whose items are ``{"image": (3, S, S) tensor,
    "text": str}`` (or ``None``) and which has a ``texts`` list (used as is for training and
    evaluation)."""
    tcfg = transform_config(image_size_of(config.model))
    train_tf = image_transform(tcfg, train=config.augment)
    eval_tf = image_transform(tcfg, train=False)
    source = resolve_source(data)
    if source.kind == "world":
        return _world_datasets(config, source.value, tcfg.crop)
    if source.kind == "shards":
        return _shard_datasets(config, source.value, train_tf, eval_tf)
    if source.kind in ("hf", "stream"):
        stream = HFStream(source.value, seed=config.seed) if source.kind == "hf" else source.value
        return _stream_datasets(stream, train_tf)
    if source.kind == "pairs":
        train_ds = PairDataset(source.value, transform=train_tf)
        eval_ds = copy.copy(train_ds)
        eval_ds.transform = eval_tf
        return train_ds, eval_ds, list(train_ds.texts)
    texts = getattr(data, "texts", None)
    if texts is None:
        raise TypeError("a dataset passed to train() needs a `texts` list (to learn the tokenizer)")
    return data, data, list(texts)


def _world_datasets(config: TrainConfig, world: WorldConfig | None, size: int) -> tuple[Any, Any, list[str]]:
    """The generated world (``config.world_*`` unless given), drawn at the model's ``size``,
    uncropped; cached as uint8 when it fits (1 GiB), so that after the first epoch a step's data
    work is a copy and a tokenization. The eval dataset shares the cache."""
    if world is None:
        make = WorldConfig.noisy if config.world_noisy else WorldConfig.clean
        world = make(n=config.world_n, seed=config.world_seed)
    wcfg = world_transform_config(size)
    cache = world.n * 3 * wcfg.resize**2 <= WORLD_CACHE_BYTES
    transform = CropToPixels(wcfg) if cache else image_transform(wcfg)
    train_ds = WorldDataset(world, image_size=wcfg.resize, transform=transform, cache=cache)
    eval_ds = copy.copy(train_ds)  # the same transform: the world is never cropped
    return train_ds, eval_ds, train_ds.table["text"].to_pylist()


def _stream_datasets(stream: Any, train_tf) -> tuple[Any, list, Iterable[str]]:
    """A stream trains as it is (its transform set when it has none); it has no held-out pairs,
    and its tokenizer texts are read lazily (only by the process that learns the tokenizer)."""
    if getattr(stream, "transform", False) is None:
        stream.transform = train_tf
    texts = getattr(stream, "texts", None)
    if texts is None:
        raise TypeError("a stream passed to train() needs texts(limit) or a texts list (to learn the tokenizer)")
    return stream, [], _lazy(lambda: texts(TOKENIZER_TEXTS)) if callable(texts) else list(texts)


__all__ = ["Collate", "SkipBadSamples", "StepBatchSampler", "TOKENIZER_TEXTS", "WORLD_CACHE_BYTES", "build_dataset",
           "hard_negative_batches", "image_size_of", "is_shard_source", "transform_config", "world_transform_config"]
