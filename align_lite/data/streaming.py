"""Streaming image–text pairs at scale: webdataset tar shards and ``datasets`` streaming.

The map-style loaders (:class:`~align_lite.data.sources.PairDataset` + the trainer's
``StepBatchSampler``) need the whole pair table in memory. At web scale the pairs live in tar
shards instead, read sequentially; this module streams them.

* :func:`shard_list` — expand ``"data/shard-{000000..000099}.tar"`` or a glob into paths.
* :class:`ShardStream` — a ``torch`` ``IterableDataset`` over shards, split per rank and per
  ``DataLoader`` worker, one pass or endlessly resampled (deterministic), bad samples and broken
  shards counted and skipped.
* :mod:`align_lite.data.stream_filter` — ALIGN's filters on a stream, and the sharded pre-pass
  (:func:`~align_lite.data.stream_filter.count_pass`) that the frequency rules need.
* :mod:`align_lite.data.hf_stream` — a Hugging Face data set streamed and split by node.
* :func:`write_shards` — pair folder / ``.jsonl`` / ``.parquet`` → tar shards
  (``align-lite data shards SRC --out 'DIR/shard-%06d.tar'``).

**Getting real web data** (documented here, not reimplemented; needs the network):

* URL + caption lists (CC3M/CC12M TSVs, COYO-700M or LAION parquet files) → webdataset shards
  with `img2dataset <https://github.com/rom1504/img2dataset>`_::

      pip install img2dataset
      img2dataset --url_list coyo-700m/parquets --input_format parquet \\
          --url_col url --caption_col text --output_format webdataset \\
          --output_folder coyo-shards --image_size 346 --resize_mode keep_ratio \\
          --processes_count 16 --thread_count 64 --enable_wandb False

  It writes ``coyo-shards/{00000..NNNNN}.tar`` with ``{key}.jpg`` + ``{key}.txt`` + ``{key}.json``
  members, which :class:`ShardStream` reads as they are:
  ``ShardStream("coyo-shards/{00000..01234}.tar", resample=True)``. Failed downloads leave gaps in
  the numbering: pass ``missing_ok=True`` to :func:`shard_list`.
* A data set on the Hugging Face hub: :func:`~align_lite.data.hf_stream.hf_stream` (``datasets.load_dataset(...,
  streaming=True)``) streams it without downloading it first, e.g.
  ``hf_stream("kakaobrain/coyo-700m", ...)`` for the metadata, or any image–text set with an image
  column.

Shapes: samples are dicts ``{"image": PIL RGB image or transform(image), "text": str,
"key": str, "url": str, "skipped": int, "skip_reasons": {reason: int}}``; with
``transform=image_transform(...)`` the image is a (3, S, S) float32 tensor. ``skipped`` is the
number of bad samples the stream passed over just before this one (``skip_reasons``: how many
for each reason), so :class:`align_lite.train.Collate` reports them as ``n_skipped`` and the
trainer's end-of-run data report counts them by reason, even from ``DataLoader`` worker
processes (where the stream's own :class:`SkipLog` is a worker's copy).
"""

from __future__ import annotations

import glob
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from align_lite.data.images import BadImageError, open_rgb
from align_lite.data.records import SkipLog
from align_lite.data.sources import IMAGE_EXTENSIONS, _webdataset_text, write_webdataset

Sample = dict[str, Any]


class SampleFilter(Protocol):
    """Anything that says whether to keep a decoded sample (``{"image": PIL RGB, "text", ...}``)."""

    def keep(self, sample: Sample) -> bool: ...

# --------------------------------------------------------------------------------------------
# Shard lists and the split per rank / worker
# --------------------------------------------------------------------------------------------


def _is_remote(url: str) -> bool:
    return "://" in url or url.startswith("pipe:")


def shard_list(pattern_or_list: str | Sequence[str], missing_ok: bool = False) -> list[str]:
    """Expand brace patterns (``"d/shard-{000000..000009}.tar"``) and local globs into shard paths.

    A list is expanded element by element. Remote URLs (``http://``, ``s3://``, ``pipe:``) are
    kept as they are; local paths must exist unless ``missing_ok`` (then they are dropped).
    Raises ``ValueError`` when nothing is left, or (``missing_ok=False``) when a shard is missing.
    """
    import webdataset as wds

    patterns = [pattern_or_list] if isinstance(pattern_or_list, (str, Path)) else list(pattern_or_list)
    urls: list[str] = []
    for pattern in patterns:
        for url in wds.shardlists.expand_urls(str(pattern)):
            if not _is_remote(url) and any(c in url for c in "*?["):
                urls.extend(sorted(glob.glob(url)))
            else:
                urls.append(url)
    missing = [u for u in urls if not _is_remote(u) and not Path(u).is_file()]
    if missing and not missing_ok:
        raise ValueError(f"{len(missing)} of {len(urls)} shards do not exist, e.g. {missing[0]} "
                         "(pass missing_ok=True to skip them)")
    urls = [u for u in urls if u not in set(missing)] if missing else urls
    if not urls:
        raise ValueError(f"no shards match {pattern_or_list!r}")
    return urls


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """The given (rank, world_size), else torch.distributed's when initialised, else (0, 1)."""
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


def worker_slot() -> tuple[int, int]:
    """(worker id, number of workers) of the current ``DataLoader`` worker; (0, 1) in-process."""
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def split_shards(shards: Sequence[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The shards one (rank, worker) reads in a pass: every ``world_size·num_workers``-th one.

    The R·W slots partition the list, so no two read the same shard. Raises ``ValueError`` when
    there are fewer shards than slots (some slot would read nothing).
    """
    slots = world_size * num_workers
    if len(shards) < slots:
        raise ValueError(
            f"{len(shards)} shards cannot feed {world_size} ranks x {num_workers} workers = {slots} readers "
            "in one pass: write more, smaller shards, use fewer workers, or resample=True"
        )
    return list(shards[rank * num_workers + worker :: slots])


# --------------------------------------------------------------------------------------------
# Reading one shard
# --------------------------------------------------------------------------------------------


def shard_samples(url: str, log: SkipLog) -> Iterator[Sample]:
    """Raw webdataset samples (``{"__key__", ext: bytes, ...}``) of one tar shard.

    A missing, truncated or corrupt shard is counted once in ``log`` (``corrupt_shard``); the
    samples read before the damage are kept, the rest of the shard is skipped.
    """
    import webdataset as wds

    errors: list[str] = []

    def note(err: Exception) -> bool:  # webdataset's handler protocol: True = go on
        errors.append(f"{type(err).__name__}: {err}")
        return True

    yield from wds.tariterators.tarfile_samples([{"url": url}], handler=note)
    if errors:
        log.skip("corrupt_shard", f"{url}: {errors[0]}")


def decode_sample(raw: Sample, log: SkipLog) -> Sample | None:
    """A raw shard sample → ``{"image": PIL RGB, "text", "key", "url", "image_key"}``, or ``None``
    (counted in ``log``: ``missing_file``, ``empty_text``, ``corrupt_image``, ...).

    ``image_key`` is the sha256 of the encoded image bytes (what
    :func:`~align_lite.data.stream_filter.count_pass` counts).
    """
    key = raw.get("__key__", "?")
    image_bytes = next((raw[e] for e in IMAGE_EXTENSIONS if e in raw), None)
    if image_bytes is None:
        log.skip("missing_file", f"{key}: no image member")
        return None
    text = _webdataset_text(raw)
    if text is None:
        log.skip("empty_text", f"{key}: no usable caption")
        return None
    try:
        image = open_rgb(image_bytes, name=key)
    except BadImageError as err:
        log.skip(err.reason, f"{key}: {err}")
        return None
    return {"image": image, "text": text, "key": key, "url": raw.get("__url__", ""),
            "image_key": hashlib.sha256(image_bytes).hexdigest()}


def stream_texts(shards: str | Sequence[str], limit: int | None = None, log: SkipLog | None = None) -> list[str]:
    """The alt-texts of the first ``limit`` samples of ``shards`` (all when ``None``), in shard
    order, read without decoding a single image: what a tokenizer is learnt from."""
    log = log if log is not None else SkipLog()
    texts: list[str] = []
    for url in shard_list(shards):
        for raw in shard_samples(url, log):
            text = _webdataset_text(raw)
            if text is not None:
                texts.append(text)
                if limit is not None and len(texts) >= limit:
                    return texts
    return texts


# --------------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------------


class ShardStream(IterableDataset):
    """Image–text pairs streamed from webdataset tar shards.

    Yields ``{"image": PIL RGB or transform(image), "text": str, "key": str, "url": str,
    "skipped": int, "skip_reasons": dict}`` (see the module docstring for ``skipped``).

    * ``resample=False``: one pass. Shards are split over ranks × ``DataLoader`` workers
      (:func:`split_shards`), so every shard is read by exactly one reader; with ``shuffle`` the
      shard order is first permuted by (seed, epoch), identically on every rank. Ranks may get
      different numbers of samples: for DDP training prefer ``resample=True`` and a fixed number
      of steps.
    * ``resample=True``: endless. Each reader draws shards with replacement from all shards, with
      a generator seeded by (seed, rank, worker, epoch): deterministic, and different per reader.
      Fewer shards than readers is fine here.

    ``rank``/``world_size`` default to torch.distributed's (when initialised), else 0/1.
    ``filter`` (e.g. a :class:`~align_lite.data.stream_filter.StreamFilter`) sees the decoded PIL
    image before ``transform``.
    Bad samples are counted in ``self.log`` (this process's copy) and skipped, never raised;
    filtered samples are counted in ``filter.counts`` (ditto).
    Call :meth:`set_epoch` before each epoch's iterator is made (non-persistent workers).
    """

    def __init__(
        self,
        shards: str | Sequence[str],
        transform: Callable[[Image.Image], Any] | None = None,
        resample: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        filter: SampleFilter | None = None,
        missing_ok: bool = False,
    ):
        super().__init__()
        self.shards = shard_list(shards, missing_ok=missing_ok)
        self.transform, self.resample, self.shuffle, self.seed = transform, resample, shuffle, seed
        self.rank, self.world_size = rank_and_world(rank, world_size)
        self.filter = filter
        self.epoch = 0
        self.log = SkipLog()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def texts(self, limit: int | None = None) -> list[str]:
        """The alt-texts of the first ``limit`` samples of all shards (images not decoded, filter
        not applied): what ``train()`` learns a tokenizer from when given this stream."""
        return stream_texts(self.shards, limit)

    def shard_order(self, worker: int = 0, num_workers: int = 1) -> Iterator[str]:
        """The shards this (rank, worker) reads, in order (endless when resampling)."""
        if self.resample:
            rng = np.random.default_rng([self.seed, self.rank, worker, self.epoch])
            while True:
                yield self.shards[int(rng.integers(len(self.shards)))]
        shards = self.shards
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(shards))
            shards = [shards[i] for i in order]
        yield from split_shards(shards, self.rank, self.world_size, worker, num_workers)

    def __iter__(self) -> Iterator[Sample]:
        counted = Counter(self.log.counts)  # bad samples up to the last one yielded
        for url in self.shard_order(*worker_slot()):
            for raw in shard_samples(url, self.log):
                sample = decode_sample(raw, self.log)
                if sample is None or (self.filter is not None and not self.filter.keep(sample)):
                    continue
                if self.transform is not None:
                    sample["image"] = self.transform(sample["image"])
                del sample["image_key"]
                yield with_skips(sample, self.log, counted)


def with_skips(sample: Sample, log: SkipLog, counted: Counter) -> Sample:
    """``sample`` with the bad samples met since the last one yielded: ``skipped`` (how many) and
    ``skip_reasons`` (how many by reason); ``counted`` is brought up to date."""
    reasons = log.since(counted)
    counted.update(reasons)
    sample["skipped"], sample["skip_reasons"] = sum(reasons.values()), reasons
    return sample


def write_shards(source: str | Path, pattern: str, max_count: int = 10_000, log: SkipLog | None = None,
                 check_images: bool = True) -> list[str]:
    """Pair folder / ``.jsonl`` / ``.parquet`` → tar shards (``pattern`` like ``out/shard-%06d.tar``,
    ``max_count`` pairs each); returns the shard paths. See
    :func:`align_lite.data.sources.write_webdataset` (bad rows, and with ``check_images`` images
    that do not decode, are counted in ``log``)."""
    try:
        pattern % 0
    except TypeError as err:
        raise ValueError(f"shard pattern {pattern!r} needs one %d-style field, e.g. out/shard-%06d.tar") from err
    if max_count < 1:
        raise ValueError("max_count must be at least 1")
    return write_webdataset(source, pattern, max_count=max_count, log=log, check_images=check_images)


__all__ = [
    "ShardStream", "decode_sample", "rank_and_world", "shard_list", "shard_samples", "split_shards", "stream_texts",
    "with_skips", "worker_slot", "write_shards",
]
