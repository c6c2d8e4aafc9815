"""Streaming image–text pairs at scale: webdataset tar shards and ``datasets`` streaming.

The map-style loaders (:class:`~align_lite.data.sources.PairDataset` + the trainer's
``StepBatchSampler``) need the whole pair table in memory. At web scale the pairs live in tar
shards instead, read sequentially; this module streams them.

* :func:`shard_list` — expand ``"data/shard-{000000..000099}.tar"`` or a glob into paths.
* :class:`ShardStream` — a ``torch`` ``IterableDataset`` over shards, split per rank and per
  ``DataLoader`` worker, one pass or endlessly resampled (deterministic), bad samples and broken
  shards counted and skipped.
* :class:`StreamFilter` — ALIGN's per-sample filters on the stream, with the paper's thresholds
  from :class:`~align_lite.data.filters.FilterConfig`.
* :func:`count_pass` — the sharded pre-pass that the frequency rules need.
* :func:`hf_stream` — a Hugging Face data set streamed and split by node.
* :func:`write_shards` — pair folder / ``.jsonl`` / ``.parquet`` → tar shards
  (``align-lite data shards SRC --out 'DIR/shard-%06d.tar'``).

**Filters on a stream.** The per-sample rules (shorter side > 200 px, aspect ratio < 3, 3..20
alt-text words) need nothing but the sample. The frequency rules need counts over the whole data
set — how many distinct images share an alt-text (> 10: dropped), how many alt-texts an image has
(> 1000: dropped), which tokens are outside the top-K unigrams+bigrams — so they take a pre-pass:
:func:`count_pass` reads every shard once (cheaply: raw bytes are hashed, images are not decoded)
and :class:`StreamFilter` then applies those rules too. At scale, run :func:`count_shard` on
each shard in parallel (one job per shard) and combine with :func:`merge_counts`.

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
* A data set on the Hugging Face hub: :func:`hf_stream` (``datasets.load_dataset(...,
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from align_lite.data.filters import RULES, FilterConfig, unigrams
from align_lite.data.images import BadImageError, open_rgb
from align_lite.data.records import SkipLog
from align_lite.data.sources import IMAGE_EXTENSIONS, _text_of, _webdataset_text, row_pairs, write_webdataset

Sample = dict[str, Any]

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

    ``image_key`` is the sha256 of the encoded image bytes (what :func:`count_pass` counts).
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
    ``filter`` (a :class:`StreamFilter`) sees the decoded PIL image before ``transform``.
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
        filter: StreamFilter | None = None,
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
                yield _with_skips(sample, self.log, counted)


def _with_skips(sample: Sample, log: SkipLog, counted: Counter) -> Sample:
    """``sample`` with the bad samples met since the last one yielded: ``skipped`` (how many) and
    ``skip_reasons`` (how many by reason); ``counted`` is brought up to date."""
    reasons = log.since(counted)
    counted.update(reasons)
    sample["skipped"], sample["skip_reasons"] = sum(reasons.values()), reasons
    return sample


# --------------------------------------------------------------------------------------------
# ALIGN's filters on a stream
# --------------------------------------------------------------------------------------------


def words_of(text: str, segment_unspaced: bool = True) -> list[str]:
    """The unigrams of an alt-text, as filters.py counts them (:func:`~align_lite.data.filters.unigrams`:
    lower-cased, split on non-word characters, words of unspaced scripts split by ICU)."""
    return unigrams(text, segment_unspaced)


def normalized_text(text: str) -> str:
    """The key under which alt-texts are compared (filters.py's convention)."""
    return " ".join(words_of(text))


@dataclass
class ShardCounts:
    """Whole-data counts of one or more shards.

    ``images_of_text``: normalised alt-text → set of image hashes (sha256 of the bytes);
    ``alt_texts_of_image``: image hash → number of pairs; ``tokens``: unigram (str) and bigram
    ((str, str)) counts; ``pairs``: pairs counted; ``log``: samples left out (no image member,
    no caption, broken shard). Images are not decoded: an undecodable image is still counted.
    """

    images_of_text: dict[str, set[str]] = field(default_factory=dict)
    alt_texts_of_image: Counter = field(default_factory=Counter)
    tokens: Counter = field(default_factory=Counter)
    pairs: int = 0
    log: SkipLog = field(default_factory=SkipLog)

    def add(self, text: str, image_key: str) -> None:
        words = words_of(text)
        self.images_of_text.setdefault(" ".join(words), set()).add(image_key)
        self.alt_texts_of_image[image_key] += 1
        self.tokens.update(words)
        self.tokens.update(zip(words, words[1:]))
        self.pairs += 1

    def merge(self, other: ShardCounts) -> None:
        for text, images in other.images_of_text.items():
            self.images_of_text.setdefault(text, set()).update(images)
        self.alt_texts_of_image.update(other.alt_texts_of_image)
        self.tokens.update(other.tokens)
        self.pairs += other.pairs
        self.log.merge(other.log)


def count_shard(url: str) -> ShardCounts:
    """Count one shard (see :class:`ShardCounts`): run one per shard in parallel at scale."""
    counts = ShardCounts()
    for raw in shard_samples(url, counts.log):
        key = raw.get("__key__", "?")
        image_bytes = next((raw[e] for e in IMAGE_EXTENSIONS if e in raw), None)
        text = _webdataset_text(raw)
        if image_bytes is None:
            counts.log.skip("missing_file", f"{key}: no image member")
        elif text is None:
            counts.log.skip("empty_text", f"{key}: no usable caption")
        else:
            counts.add(text, hashlib.sha256(image_bytes).hexdigest())
    return counts


def merge_counts(parts: Sequence[ShardCounts]) -> dict[str, Any]:
    """Combine per-shard counts into the dict :func:`count_pass` returns."""
    total = ShardCounts()
    for part in parts:
        total.merge(part)
    return {
        "images_per_text": Counter({t: len(images) for t, images in total.images_of_text.items()}),
        "alt_texts_per_image": total.alt_texts_of_image,
        "tokens": total.tokens,
        "pairs": total.pairs,
        "skipped": total.log.to_dict(),
    }


def count_pass(shards: str | Sequence[str]) -> dict[str, Any]:
    """The pre-pass of the frequency rules, over all ``shards``.

    Returns ``{"images_per_text": Counter(normalised alt-text → distinct images),
    "alt_texts_per_image": Counter(image sha256 → pairs), "tokens": Counter(unigram or bigram →
    occurrences), "pairs": int, "skipped": SkipLog.to_dict()}``; pass it to :class:`StreamFilter`.
    """
    return merge_counts([count_shard(url) for url in shard_list(shards)])


class StreamFilter:
    """ALIGN's filters, one sample at a time, with :class:`FilterConfig`'s thresholds.

    Without ``counts``: the per-sample rules ``image_size``, ``aspect_ratio``, ``text_length``.
    With ``counts`` from :func:`count_pass`: also ``image_alt_texts``, ``alt_text_sharing`` and
    ``rare_tokens``. Rules are tried in :data:`~align_lite.data.filters.RULES` order and a dropped
    sample is attributed to the first it fails: ``seen == kept + sum(removed.values())``.
    """

    def __init__(self, config: FilterConfig = FilterConfig(), counts: dict[str, Any] | None = None):
        self.config, self.counts = config, counts
        self.rules = [r for r in RULES if counts is not None or r in ("image_size", "aspect_ratio", "text_length")]
        self.token_threshold = _top_k_threshold(counts["tokens"], config.rare_token_top_k) if counts else 0
        self.removed: Counter = Counter()
        self.seen = 0

    @property
    def kept(self) -> int:
        return self.seen - sum(self.removed.values())

    def failed_rule(self, width: int, height: int, text: str, image_key: str | None = None) -> str | None:
        """The first rule the pair fails, or ``None``; counts nothing."""
        c = self.config
        short, long = min(width, height), max(width, height)
        words = words_of(text)
        for rule in self.rules:
            if rule == "image_size" and short <= c.min_image_side:
                return rule
            if rule == "aspect_ratio" and (short == 0 or long / short >= c.max_aspect_ratio):
                return rule
            if rule == "image_alt_texts" and image_key is not None and \
                    self.counts["alt_texts_per_image"][image_key] > c.max_alt_texts_per_image:
                return rule
            if rule == "alt_text_sharing" and \
                    self.counts["images_per_text"][" ".join(words)] > c.max_images_per_alt_text:
                return rule
            if rule == "text_length" and not c.min_unigrams <= len(words) <= c.max_unigrams:
                return rule
            if rule == "rare_tokens" and self.token_threshold > 1 and \
                    any(self.counts["tokens"][w] < self.token_threshold for w in words):
                return rule
        return None

    def keep(self, sample: Sample) -> bool:
        """Count ``sample`` (``image`` PIL, ``text``, optional ``image_key``); True to keep it."""
        image = sample["image"]
        rule = self.failed_rule(image.width, image.height, sample["text"], sample.get("image_key"))
        self.seen += 1
        if rule is not None:
            self.removed[rule] += 1
        return rule is None

    def report(self) -> dict[str, Any]:
        return {"rows_in": self.seen, "kept": self.kept, "removed": {r: self.removed[r] for r in self.rules}}


def _top_k_threshold(tokens: Counter, top_k: int) -> int:
    """The count a token needs to be among the top-K unigrams+bigrams (0: nothing is rare)."""
    if top_k >= len(tokens):
        return 0
    counts = np.fromiter(tokens.values(), dtype=np.int64, count=len(tokens))
    return int(np.partition(counts, len(counts) - top_k)[len(counts) - top_k])


# --------------------------------------------------------------------------------------------
# Hugging Face streaming, and writing shards
# --------------------------------------------------------------------------------------------


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
                    yield _with_skips(sample, self.log, counted)
            epoch += 1


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
    "HFStream", "ShardCounts", "ShardStream", "StreamFilter", "count_pass", "count_shard", "decode_sample",
    "hf_stream", "merge_counts", "normalized_text", "rank_and_world", "shard_list", "shard_samples",
    "split_shards", "stream_texts", "worker_slot", "write_shards",
]
