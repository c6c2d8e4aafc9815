"""A Hugging Face ``datasets`` data set streamed for training (Chapter 7): :func:`hf_stream` and
:class:`HFStream`, the counterpart of :class:`~align_lite.data.streaming.ShardStream`. Hub names
work where the hub is reachable (Colab); local ``.parquet`` / ``.jsonl`` files and folders work
everywhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import IterableDataset

from align_lite.data.records import SkipLog
from align_lite.data.sources import _text_of, row_pairs
from align_lite.data.streaming import Sample, rank_and_world, with_skips


def _load_streaming(name_or_path: str | Path, split: str, **load_kwargs: Any):
    """``datasets.load_dataset(..., streaming=True)`` for a hub name, a local ``.parquet``/
    ``.jsonl`` file (or glob) or a folder (read as ``imagefolder``)."""
    import datasets

    text_path = str(name_or_path)
    builder = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}.get(Path(text_path).suffix.lower())
    if builder and not load_kwargs.get("data_files"):
        return datasets.load_dataset(builder, data_files=text_path, split=split, streaming=True, **load_kwargs)
    if Path(text_path).is_dir() and not load_kwargs.get("data_dir"):
        return datasets.load_dataset("imagefolder", data_dir=text_path, split=split, streaming=True, **load_kwargs)
    return datasets.load_dataset(text_path, split=split, streaming=True, **load_kwargs)


def _checked_columns(dataset, name: Any, image_column: str, text_column: str):
    """The data set with its image column left undecoded; a clear KeyError for a missing column."""
    import datasets

    features = dataset.features or {}
    for column in (image_column, text_column):
        if features and column not in features:
            raise KeyError(f"{name}: no column {column!r}; columns are {list(features)}")
    if isinstance(features.get(image_column), datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


def hf_stream(
    name_or_path: str | Path,
    split: str = "train",
    image_column: str = "image",
    text_column: str = "text",
    rank: int | None = None,
    world_size: int | None = None,
    log: SkipLog | None = None,
    **load_kwargs: Any,
) -> Iterator[Sample]:
    """Stream ``{"image": PIL RGB, "text": str, "index": int}`` from a ``datasets`` data set,
    this rank's part only (``datasets.distributed.split_dataset_by_node``), one pass.

    ``name_or_path``: a hub name, a local ``.parquet``/``.jsonl`` file (or a glob of them), or a
    folder (read as ``imagefolder``). ``index`` counts rows of this rank's part. Bad rows are
    counted in ``log`` and skipped; a list of captions gives one pair per caption.
    ``split_dataset_by_node`` gives each rank whole files when their number divides by
    ``world_size``, else every ``world_size``-th row.
    """
    from datasets.distributed import split_dataset_by_node

    rank, world_size = rank_and_world(rank, world_size)
    log = log if log is not None else SkipLog()
    dataset = _checked_columns(_load_streaming(name_or_path, split, **load_kwargs), name_or_path, image_column,
                               text_column)
    for i, row in enumerate(split_dataset_by_node(dataset, rank=rank, world_size=world_size)):
        yield from row_pairs(row, i, image_column, text_column, log)


class HFStream(IterableDataset):
    """A ``datasets`` data set streamed for training, the counterpart of :class:`ShardStream`.

    Yields ``{"image": PIL RGB or transform(image), "text": str, "skipped": int}``, split per rank
    (``split_dataset_by_node``) and per ``DataLoader`` worker (by ``datasets`` itself, which hands
    each worker whole files: with fewer files than workers, some workers stay idle), epoch after
    epoch (``epochs=None``: endless), each epoch shuffled with a buffer seeded by (seed, epoch).
    A list of captions gives one pair per caption. ``texts(limit)`` reads only the text column,
    for learning a tokenizer. ``align-lite train --data hf:NAME`` trains on one.
    """

    def __init__(self, name_or_path: str | Path, split: str = "train", image_column: str = "image",
                 text_column: str = "text", transform: Callable[[Image.Image], Any] | None = None, seed: int = 0,
                 shuffle_buffer: int = 1_000, epochs: int | None = None, rank: int | None = None,
                 world_size: int | None = None, **load_kwargs: Any):
        super().__init__()
        self.name, self.split, self.load_kwargs = name_or_path, split, load_kwargs
        self.image_column, self.text_column, self.transform = image_column, text_column, transform
        self.seed, self.shuffle_buffer, self.epochs, self.epoch = seed, shuffle_buffer, epochs, 0
        self.rank, self.world_size = rank_and_world(rank, world_size)
        self.log = SkipLog()
        _checked_columns(self._load(), name_or_path, image_column, text_column)  # fail early, in the main process

    def _load(self):
        return _load_streaming(self.name, self.split, **self.load_kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def texts(self, limit: int | None = None) -> list[str]:
        """The alt-texts of the first ``limit`` rows (all rows when ``None``), images not read."""
        out: list[str] = []
        for row in self._load().select_columns([self.text_column]):
            cell = row[self.text_column]
            out += [t for t in (_text_of(c) for c in (cell if isinstance(cell, (list, tuple)) else [cell])) if t]
            if limit is not None and len(out) >= limit:
                return out[:limit]
        return out

    def __iter__(self) -> Iterator[Sample]:
        from datasets.distributed import split_dataset_by_node

        epoch, counted = self.epoch, Counter(self.log.counts)
        while self.epochs is None or epoch < self.epoch + self.epochs:
            dataset = _checked_columns(self._load(), self.name, self.image_column, self.text_column)
            if self.shuffle_buffer > 1:
                dataset = dataset.shuffle(seed=int(np.random.default_rng([self.seed, epoch]).integers(2**31)),
                                          buffer_size=self.shuffle_buffer)
            part = split_dataset_by_node(dataset, rank=self.rank, world_size=self.world_size)  # workers: by datasets
            for i, row in enumerate(part):
                for sample in row_pairs(row, i, self.image_column, self.text_column, self.log):
                    if self.transform is not None:
                        sample["image"] = self.transform(sample["image"])
                    yield with_skips(sample, self.log, counted)
            epoch += 1


__all__ = ["HFStream", "hf_stream"]
