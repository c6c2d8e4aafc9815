"""Descriptive statistics of a pair table: what ``align-lite data stats`` prints.

Counts, the distribution of alt-text lengths in unigrams, and how alt-texts are shared between
images (and images between alt-texts) — the quantities ALIGN's filters threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from align_lite.data.filters import image_keys, images_per_text
from align_lite.data.unigrams import encode, normalized_texts, text_bytes


@dataclass
class PairStats:
    rows: int
    images: int
    distinct_texts: int
    length_histogram: dict[int, int]  # unigrams per alt-text → rows
    images_per_text: np.ndarray  # (distinct texts,) distinct images of each alt-text
    texts_per_image: np.ndarray  # (images,) alt-texts (rows) of each image
    top_shared: list[tuple[str, int]]  # most shared alt-texts and their image counts

    def shared_by_more_than(self, k: int) -> int:
        """Distinct alt-texts used by more than ``k`` images."""
        return int((self.images_per_text > k).sum())

    def format(self) -> str:
        lengths = np.repeat(list(self.length_histogram), list(self.length_histogram.values()))
        lines = [
            f"rows (pairs)          {self.rows:>12,}",
            f"distinct images       {self.images:>12,}",
            f"distinct alt-texts    {self.distinct_texts:>12,}",
            f"unigrams per alt-text mean {lengths.mean():.1f}, median {np.median(lengths):.0f}, "
            f"min {lengths.min()}, max {lengths.max()}",
            "length histogram (unigrams: rows)",
        ]
        peak = max(self.length_histogram.values())
        for length, count in sorted(self.length_histogram.items()):
            bar = "#" * max(1, round(40 * count / peak))
            lines.append(f"  {length:>3}: {count:>9,} {bar}")
        lines += [
            f"alt-texts shared by > 1 image   {self.shared_by_more_than(1):>9,}",
            f"alt-texts shared by > 10 images {self.shared_by_more_than(10):>9,}",
            f"max images per alt-text         {int(self.images_per_text.max()):>9,}",
            f"images with > 1 alt-text        {int((self.texts_per_image > 1).sum()):>9,}",
            f"max alt-texts per image         {int(self.texts_per_image.max()):>9,}",
            "most shared alt-texts:",
        ]
        lines += [f"  {n:>7,} images  {text!r}" for text, n in self.top_shared]
        return "\n".join(lines)


def pair_stats(table: pa.Table, top: int = 5) -> PairStats:
    """Statistics of ``table`` (columns ``text`` and ``image_key`` or ``file_name``)."""
    if table.num_rows == 0:
        raise ValueError("no rows to describe")
    tb = text_bytes(table.column("text"))
    text_ids, texts = encode(normalized_texts(tb))
    image_ids, images = encode(image_keys(table))
    per_text = images_per_text(image_ids, text_ids)
    per_image = np.bincount(image_ids, minlength=len(images))
    lengths, counts = np.unique(tb.words_per_row, return_counts=True)
    order = np.argsort(-per_text, kind="stable")[:top]
    return PairStats(
        rows=table.num_rows,
        images=len(images),
        distinct_texts=len(texts),
        length_histogram={int(k): int(v) for k, v in zip(lengths, counts)},
        images_per_text=per_text,
        texts_per_image=per_image,
        top_shared=[(texts[int(i)].as_py(), int(per_text[i])) for i in order],
    )
