"""ALIGN's filters on a stream of shards (Chapter 7): the per-sample rules, and the pre-pass the
frequency rules need.

The per-sample rules (shorter side > 200 px, aspect ratio < 3, 3..20
alt-text words) need nothing but the sample. The frequency rules need counts over the whole data
set — how many distinct images share an alt-text (> 10: dropped), how many alt-texts an image has
(> 1000: dropped), which tokens are outside the top-K unigrams+bigrams — so they take a pre-pass:
:func:`count_pass` reads every shard once (cheaply: raw bytes are hashed, images are not decoded)
and :class:`StreamFilter` then applies those rules too. At scale, run :func:`count_shard` on
each shard in parallel (one job per shard) and combine with :func:`merge_counts`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from align_lite.data.filters import RULES, FilterConfig
from align_lite.data.unigrams import unigrams
from align_lite.data.records import SkipLog
from align_lite.data.sources import IMAGE_EXTENSIONS, _webdataset_text
from align_lite.data.streaming import shard_list, shard_samples

Sample = dict[str, Any]


# --------------------------------------------------------------------------------------------
# ALIGN's filters on a stream
# --------------------------------------------------------------------------------------------


def words_of(text: str, segment_unspaced: bool = True) -> list[str]:
    """The unigrams of an alt-text, as the filters count them (:func:`~align_lite.data.unigrams.unigrams`:
    lower-cased, split on non-word characters, words of unspaced scripts split by ICU)."""
    return unigrams(text, segment_unspaced)


def normalized_text(text: str) -> str:
    """The key under which alt-texts are compared (:mod:`align_lite.data.unigrams`' convention)."""
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


__all__ = ["ShardCounts", "StreamFilter", "count_pass", "count_shard", "merge_counts", "normalized_text", "words_of"]
