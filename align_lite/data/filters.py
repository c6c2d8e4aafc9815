"""ALIGN's frequency-based filters, vectorised over an Arrow table of image–text pairs.

The paper (§3, App. A) keeps its 1.8 B pairs with a handful of cheap rules instead of heavy
curation. Each rule here is a boolean mask over the *raw* table (``True`` = the row fails the
rule); statistics such as "how many images share this alt-text" are counted on the raw data, as
the paper does. :func:`apply_filters` then attributes every dropped row to the *first* rule it
fails, so the report's per-rule counts add up exactly: ``kept + Σ removed == rows in``.

Rules, in order, with the paper's thresholds as defaults (:class:`FilterConfig`):

========================  ======================================================================
``image_size``            keep only images whose shorter side is > 200 px
``aspect_ratio``          keep only images with aspect ratio (long/short side) < 3
``image_alt_texts``       discard images associated with > 1000 alt-texts (pairs)
``alt_text_sharing``      discard alt-texts shared by > 10 distinct images
``text_length``           discard alt-texts with < 3 or > 20 unigrams
``rare_tokens``           discard alt-texts with any unigram outside the top-K most frequent
                          unigrams + bigrams of the raw corpus (paper: K = 100 M)
========================  ======================================================================

Further masks computed elsewhere (e.g. near-duplicates of eval images, :mod:`.dedup`) are passed
to :func:`apply_filters` as ``extra_rules`` and attributed after these.

Text conventions (shared by the vectorised rules and the plain-Python reference
:func:`reference_filter_masks`): an alt-text is lower-cased, every run of characters that are not
letters, digits or ``_`` becomes one space; its *unigrams* are the remaining space-separated
words, its *bigrams* the adjacent unigram pairs. Two alt-texts are "the same" when these
normalised forms are equal. Images are identified by the ``image_key`` column if present
(e.g. a content hash), else by ``file_name``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: The table rules in the order they are attributed.
RULES: tuple[str, ...] = (
    "image_size",
    "aspect_ratio",
    "image_alt_texts",
    "alt_text_sharing",
    "text_length",
    "rare_tokens",
)

RULE_DESCRIPTIONS: dict[str, str] = {
    "bad_input": "unreadable image or text (counted while reading)",
    "image_size": "shorter side <= {min_image_side} px",
    "aspect_ratio": "aspect ratio >= {max_aspect_ratio:g}",
    "image_alt_texts": "image has > {max_alt_texts_per_image} alt-texts",
    "alt_text_sharing": "alt-text shared by > {max_images_per_alt_text} images",
    "text_length": "< {min_unigrams} or > {max_unigrams} unigrams",
    "rare_tokens": "a unigram outside the top {rare_token_top_k:,} unigrams+bigrams",
    "eval_duplicate": "exact or near duplicate of an eval image",
}



@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of ALIGN's filters; the defaults are the paper's."""

    min_image_side: int = 200
    max_aspect_ratio: float = 3.0
    max_alt_texts_per_image: int = 1000
    max_images_per_alt_text: int = 10
    min_unigrams: int = 3
    max_unigrams: int = 20
    rare_token_top_k: int = 100_000_000

    def __post_init__(self) -> None:
        if self.min_image_side < 0 or self.max_aspect_ratio < 1:
            raise ValueError("min_image_side must be >= 0 and max_aspect_ratio >= 1")
        if self.max_alt_texts_per_image < 1 or self.max_images_per_alt_text < 1:
            raise ValueError("sharing thresholds must be >= 1")
        if not 0 <= self.min_unigrams <= self.max_unigrams:
            raise ValueError("need 0 <= min_unigrams <= max_unigrams")
        if self.rare_token_top_k < 1:
            raise ValueError("rare_token_top_k must be >= 1")

    @classmethod
    def paper(cls) -> FilterConfig:
        """The paper's thresholds (the defaults)."""
        return cls()

    def describe(self, rule: str) -> str:
        return RULE_DESCRIPTIONS.get(rule, rule).format(**asdict(self))


# --------------------------------------------------------------------------------------------
# Text normalisation, vectorised over the raw UTF-8 bytes
# --------------------------------------------------------------------------------------------

#: Bytes that belong to words: ASCII letters, digits and ``_``, and every byte of a non-ASCII
#: character (so accented and non-Latin words stay whole). Everything else separates words.
_WORD_BYTE = np.zeros(256, dtype=bool)
for _lo, _hi in ((ord("0"), ord("9")), (ord("A"), ord("Z")), (ord("a"), ord("z")), (0x80, 0xFF)):
    _WORD_BYTE[_lo : _hi + 1] = True
_WORD_BYTE[ord("_")] = True
#: The same rule as a Python regular expression (used by the plain-Python reference).
WORD_PATTERN = re.compile(r"[0-9A-Za-z_\u0080-\U0010ffff]+")


@dataclass(frozen=True)
class TextBytes:
    """A text column as one UTF-8 byte buffer, lower-cased, with word boundaries located.

    ``data``: (B,) uint8; ``offsets``: (N+1,) int64 row boundaries into ``data``;
    ``starts``/``ends``: (T,) int64 first and one-past-last byte of every word;
    ``rows``: (T,) int64 row of every word (non-decreasing); ``word``: (B,) bool word bytes.
    """

    data: np.ndarray
    offsets: np.ndarray
    word: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    rows: np.ndarray

    @property
    def words_per_row(self) -> np.ndarray:
        """(N,) number of unigrams in each row."""
        return np.bincount(self.rows, minlength=len(self.offsets) - 1)


def text_bytes(texts: pa.Array | pa.ChunkedArray) -> TextBytes:
    """Lower-case ``texts`` (nulls → ``""``) and find every word's byte span."""
    lower = pc.utf8_lower(pc.fill_null(texts, ""))
    if isinstance(lower, pa.ChunkedArray):
        lower = lower.combine_chunks()
    lower = lower.cast(pa.large_string())
    offsets_buf, data_buf = lower.buffers()[1:3]
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[lower.offset : lower.offset + len(lower) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    data, offsets = data[offsets[0] : offsets[-1]], offsets - offsets[0]
    word = _WORD_BYTE[data]
    boundary = np.zeros(len(data) + 1, dtype=bool)  # True where a row starts or ends
    boundary[offsets] = True
    prev_word = np.concatenate([[False], word[:-1]]) & ~boundary[:-1]
    next_word = np.concatenate([word[1:], [False]]) & ~boundary[1:]
    starts = np.flatnonzero(word & ~prev_word)
    ends = np.flatnonzero(word & ~next_word) + 1
    words_per_row = np.diff(np.searchsorted(starts, offsets))
    rows = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), words_per_row)
    return TextBytes(data, offsets, word, starts, ends, rows)


def _string_array(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(
        pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def normalized_texts(tb: TextBytes) -> pa.Array:
    """Each row's words joined by single spaces: the key under which alt-texts are compared."""
    lengths = tb.ends - tb.starts
    last_in_row = np.ones(len(tb.rows), dtype=bool)
    last_in_row[:-1] = tb.rows[1:] != tb.rows[:-1]
    has_separator = ~last_in_row
    # Where each word starts in the output: all earlier words and separators.
    step = lengths + has_separator
    out_starts = np.cumsum(step) - step
    keep = tb.word.copy()
    keep[tb.ends[has_separator]] = True  # the byte after a word becomes its separator
    data = tb.data[keep]
    data[(out_starts + lengths)[has_separator]] = ord(" ")
    per_row = np.bincount(tb.rows, weights=step, minlength=len(tb.offsets) - 1).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(per_row)])
    return _string_array(data, offsets)


def word_array(tb: TextBytes) -> pa.Array:
    """(T,) every unigram occurrence as a string, in order."""
    lengths = tb.ends - tb.starts
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    return _string_array(tb.data[tb.word], offsets)


@dataclass(frozen=True)
class Unigrams:
    """All unigrams of a text column, dictionary-encoded.

    ``ids``: (T,) int64 index into ``vocab`` for each unigram occurrence;
    ``rows``: (T,) int64 row of each occurrence (non-decreasing); ``vocab``: distinct unigrams.
    """

    ids: np.ndarray
    rows: np.ndarray
    vocab: pa.Array


def encode_unigrams(tb: TextBytes) -> Unigrams:
    ids, vocab = encode(word_array(tb))
    return Unigrams(ids=ids, rows=tb.rows, vocab=vocab)


# --------------------------------------------------------------------------------------------
# The rules, each a boolean mask over the raw table (True = fails the rule)
# --------------------------------------------------------------------------------------------


def image_size_mask(width: np.ndarray, height: np.ndarray, config: FilterConfig) -> np.ndarray:
    """(N,) bool: the shorter side is not > ``min_image_side``."""
    return np.minimum(width, height) <= config.min_image_side


def aspect_ratio_mask(width: np.ndarray, height: np.ndarray, config: FilterConfig) -> np.ndarray:
    """(N,) bool: long/short side >= ``max_aspect_ratio`` (a zero side counts as infinite)."""
    short = np.minimum(width, height).astype(np.float64)
    long = np.maximum(width, height).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(short > 0, long / np.where(short > 0, short, 1), np.inf)
    return aspect >= config.max_aspect_ratio


def encode(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Dictionary-encode: (N,) int64 codes and the distinct values."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def images_per_text(image_ids: np.ndarray, text_ids: np.ndarray) -> np.ndarray:
    """(n_texts,) number of distinct images each normalised alt-text appears with.

    ``image_ids``/``text_ids``: (N,) int64 codes of each row's image and normalised alt-text.
    """
    n_images = int(image_ids.max(initial=-1)) + 1
    pairs = _sorted_unique(text_ids * n_images + image_ids)
    return np.bincount(pairs // n_images, minlength=int(text_ids.max(initial=-1)) + 1)


def sharing_counts(image_ids: np.ndarray, text_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (alt-texts of its image, distinct images of its alt-text), both (N,).

    An image's alt-texts are all the rows (pairs) it appears in: on the web every page that
    shows an image associates one more alt-text with it, repeated or not.
    """
    return np.bincount(image_ids)[image_ids], images_per_text(image_ids, text_ids)[text_ids]


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by sort + compare (several times faster than ``np.unique`` on numpy 2.x)."""
    values = np.sort(values)
    first = np.ones(len(values), dtype=bool)
    first[1:] = values[1:] != values[:-1]
    return values[first]


def text_length_mask(words_per_row: np.ndarray, config: FilterConfig) -> np.ndarray:
    """(N,) bool: fewer than ``min_unigrams`` or more than ``max_unigrams`` unigrams."""
    return (words_per_row < config.min_unigrams) | (words_per_row > config.max_unigrams)


def frequency_threshold(unigrams: Unigrams, top_k: int) -> int:
    """The count a unigram needs to be among the top-K unigrams+bigrams of the corpus.

    Unigram and bigram counts are pooled and ranked together; the threshold is the K-th largest
    count (ties at the boundary are all kept). Returns 0 when the corpus has at most K distinct
    unigrams+bigrams, i.e. when nothing can be rare.
    """
    unigram_counts = np.bincount(unigrams.ids, minlength=len(unigrams.vocab))
    same_row = unigrams.rows[1:] == unigrams.rows[:-1]
    if top_k >= len(unigram_counts) + int(same_row.sum()):  # upper bound on distinct entries
        return 0
    n_vocab = len(unigram_counts)
    bigram_codes = unigrams.ids[:-1][same_row] * n_vocab + unigrams.ids[1:][same_row]
    bigram_counts = pc.value_counts(pa.array(bigram_codes)).field("counts").to_numpy()
    counts = np.concatenate([unigram_counts, bigram_counts])
    if top_k >= len(counts):
        return 0
    return int(np.partition(counts, len(counts) - top_k)[len(counts) - top_k])


def could_be_rare(tb: TextBytes, top_k: int) -> bool:
    """False when the corpus cannot hold more than K distinct unigrams+bigrams (cheap bound)."""
    n_words = len(tb.rows)
    n_bigrams = int((tb.rows[1:] == tb.rows[:-1]).sum()) if n_words else 0
    return top_k < n_words + n_bigrams


def rare_token_mask(tb: TextBytes, config: FilterConfig) -> np.ndarray:
    """(N,) bool: some unigram of the row is outside the corpus's top-K unigrams+bigrams."""
    n_rows = len(tb.offsets) - 1
    if not could_be_rare(tb, config.rare_token_top_k):
        return np.zeros(n_rows, dtype=bool)
    unigrams = encode_unigrams(tb)
    threshold = frequency_threshold(unigrams, config.rare_token_top_k)
    unigram_counts = np.bincount(unigrams.ids, minlength=len(unigrams.vocab))
    rare = unigram_counts[unigrams.ids] < threshold
    return np.bincount(unigrams.rows[rare], minlength=n_rows) > 0


def filter_masks(table: pa.Table, config: FilterConfig = FilterConfig()) -> dict[str, np.ndarray]:
    """Every rule's (N,) bool mask on the raw table, in :data:`RULES` order.

    ``table`` needs ``text``, ``width``, ``height`` and ``image_key`` or ``file_name``.
    """
    _require(table, ("text", "width", "height"))
    width = table.column("width").to_numpy()
    height = table.column("height").to_numpy()
    tb = text_bytes(table.column("text"))
    with ThreadPoolExecutor(max_workers=2) as pool:  # two hash passes that release the GIL
        text_codes = pool.submit(encode, normalized_texts(tb))
        image_codes = pool.submit(encode, image_keys(table))
        alt_texts_of_image, images_of_text = sharing_counts(
            image_codes.result()[0], text_codes.result()[0]
        )
    return {
        "image_size": image_size_mask(width, height, config),
        "aspect_ratio": aspect_ratio_mask(width, height, config),
        "image_alt_texts": alt_texts_of_image > config.max_alt_texts_per_image,
        "alt_text_sharing": images_of_text > config.max_images_per_alt_text,
        "text_length": text_length_mask(tb.words_per_row, config),
        "rare_tokens": rare_token_mask(tb, config),
    }


def image_keys(table: pa.Table) -> pa.Array:
    """The column that identifies an image: ``image_key`` if present, else ``file_name``."""
    name = "image_key" if "image_key" in table.column_names else "file_name"
    _require(table, (name,))
    column = table.column(name)
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    return column.combine_chunks()


def _require(table: pa.Table, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(
            f"the pair table lacks column(s) {', '.join(missing)}; it has {table.column_names}"
        )


# --------------------------------------------------------------------------------------------
# Applying the rules and reporting
# --------------------------------------------------------------------------------------------


@dataclass
class RuleOutcome:
    """One rule's line in the report."""

    rule: str
    description: str
    removed: int  # rows dropped by this rule and by no earlier one
    failed: int  # rows failing this rule, whatever earlier rules said
    examples: list[str] = field(default_factory=list)


@dataclass
class FilterReport:
    """What :func:`apply_filters` did: ``rows_in == kept + Σ removed``."""

    rows_in: int
    kept: int
    rules: list[RuleOutcome]

    @property
    def removed(self) -> int:
        return sum(r.removed for r in self.rules)

    def to_dict(self) -> dict:
        return {
            "rows_in": self.rows_in,
            "kept": self.kept,
            "removed": {r.rule: r.removed for r in self.rules},
            "failed": {r.rule: r.failed for r in self.rules},
            "rules": [asdict(r) for r in self.rules],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_markdown(self) -> str:
        lines = [
            "| rule | what it removes | removed (in order) | fails (alone) |",
            "|---|---|---:|---:|",
        ]
        lines += [
            f"| {r.rule} | {r.description} | {r.removed:,} | {r.failed:,} |" for r in self.rules
        ]
        lines.append(f"| **kept** | | **{self.kept:,}** of {self.rows_in:,} | |")
        return "\n".join(lines)


@dataclass
class FilterResult:
    kept: pa.Table
    report: FilterReport
    first_failed: np.ndarray  # (N,) int8: index of the first failed rule, -1 when kept


def apply_filters(
    table: pa.Table,
    config: FilterConfig = FilterConfig(),
    extra_rules: Mapping[str, np.ndarray] | None = None,
    skipped: Mapping[str, int] | None = None,
    n_examples: int = 3,
) -> FilterResult:
    """Run every rule, attribute each dropped row to the first rule it fails, keep the rest.

    ``extra_rules``: more (N,) bool masks, attributed after the table rules, in the given order.
    ``skipped``: rows dropped before the table existed (bad input while reading), reported as
    the ``bad_input`` rule so that the report covers every input row.
    """
    masks = filter_masks(table, config)
    for name, mask in (extra_rules or {}).items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (table.num_rows,):
            raise ValueError(f"extra rule {name!r}: mask of shape {mask.shape}, need ({table.num_rows},)")
        masks[name] = mask
    first_failed = first_failing_rule(list(masks.values()))
    texts = table.column("text")
    outcomes = [_bad_input_outcome(skipped)] if skipped else []
    for index, (name, mask) in enumerate(masks.items()):
        removed_rows = np.flatnonzero(first_failed == index)
        examples = [texts[int(i)].as_py() for i in removed_rows[:n_examples]]
        outcomes.append(
            RuleOutcome(name, config.describe(name), len(removed_rows), int(mask.sum()), examples)
        )
    keep = first_failed < 0
    kept = table.filter(pa.array(keep))
    rows_in = table.num_rows + (sum(skipped.values()) if skipped else 0)
    return FilterResult(kept, FilterReport(rows_in, kept.num_rows, outcomes), first_failed)


def first_failing_rule(masks: list[np.ndarray]) -> np.ndarray:
    """(N,) int8: index of the first mask that is True in each row, -1 where none is."""
    n = len(masks[0]) if masks else 0
    first = np.full(n, -1, dtype=np.int8)
    for index in reversed(range(len(masks))):
        first[masks[index]] = index
    return first


def _bad_input_outcome(skipped: Mapping[str, int]) -> RuleOutcome:
    detail = [f"{reason}: {n}" for reason, n in sorted(skipped.items())]
    return RuleOutcome("bad_input", RULE_DESCRIPTIONS["bad_input"], sum(skipped.values()),
                       sum(skipped.values()), detail)


# --------------------------------------------------------------------------------------------
# A plain-Python reference of the same rules (for tests and the benchmark)
# --------------------------------------------------------------------------------------------


def reference_filter_masks(rows: list[dict], config: FilterConfig = FilterConfig()) -> dict[str, np.ndarray]:
    """The rules written as plain loops over ``rows`` (dicts), for checking the vectorised ones."""
    key = "image_key" if rows and "image_key" in rows[0] else "file_name"
    words = [WORD_PATTERN.findall((row["text"] or "").lower()) for row in rows]
    norm = [" ".join(w) for w in words]
    texts_of_image: Counter = Counter(row[key] for row in rows)
    images_of_text: dict[str, set] = {}
    for row, text in zip(rows, norm):
        images_of_text.setdefault(text, set()).add(row[key])
    vocab_ok = _reference_vocabulary_test(words, config.rare_token_top_k)
    out: dict[str, list[bool]] = {rule: [] for rule in RULES}
    for row, text, w in zip(rows, norm, words):
        short, long = min(row["width"], row["height"]), max(row["width"], row["height"])
        out["image_size"].append(short <= config.min_image_side)
        out["aspect_ratio"].append(short == 0 or long / short >= config.max_aspect_ratio)
        out["image_alt_texts"].append(texts_of_image[row[key]] > config.max_alt_texts_per_image)
        out["alt_text_sharing"].append(len(images_of_text[text]) > config.max_images_per_alt_text)
        out["text_length"].append(not config.min_unigrams <= len(w) <= config.max_unigrams)
        out["rare_tokens"].append(not all(vocab_ok(t) for t in w))
    return {rule: np.array(values, dtype=bool) for rule, values in out.items()}


def _reference_vocabulary_test(words: list[list[str]], top_k: int):
    counts: Counter = Counter()
    for w in words:
        counts.update(w)
        counts.update(zip(w, w[1:]))
    ranked = sorted(counts.values(), reverse=True)
    threshold = ranked[top_k - 1] if top_k <= len(ranked) else 0
    return lambda token: counts[token] >= threshold
