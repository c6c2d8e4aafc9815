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
:func:`reference_filter_masks`; :func:`unigrams` shows them on one text): an alt-text is
lower-cased, every run of ASCII characters that are not letters, digits or ``_`` becomes one
space, and the remaining space-separated pieces are its words. A word that holds a character of a
script written without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar:
:data:`UNSPACED_PATTERN`) is then split into dictionary words by ICU's word breaker (root locale:
the filters do not know a text's language), keeping the pieces with a letter, digit or ``_``.
The resulting words are the alt-text's *unigrams*, adjacent pairs its *bigrams*; joined by single
spaces they are its normalised form, and two alt-texts are "the same" when these are equal.

Why: the paper counts the unigrams of mostly English alt-text, where words are space-separated.
"にっこり笑う" or "หน้ายิ้มยิงฟัน" has no space, so split on spaces alone it is *one* unigram and
the length rule drops nearly every Japanese, Chinese or Thai alt-text, while the rare-token rule
treats whole phrases as tokens. Counting characters instead would make a two-character Chinese
word ("笑脸") two unigrams; ICU's dictionary words ("にっこり" "笑う", "หน้า" "ยิ้ม" "ยิงฟัน") are
the closest match to what the paper counts. Korean is written with spaces and is left alone.
``FilterConfig(segment_unspaced=False)`` restores the whitespace-only convention, for comparison.

Images are identified by the ``image_key`` column if present (e.g. a content hash), else by
``file_name``. :func:`report_by` breaks a result's report down by the values of a column
(e.g. ``language``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from align_lite.data.filter_report import FilterReport, FilterResult, RuleOutcome, report_by
from align_lite.data.records import require_columns
from align_lite.data.unigrams import (
    TextBytes, Unigrams, encode, encode_unigrams, normalized_texts, text_bytes, unigrams,
)

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
    #: split words of scripts written without spaces into dictionary words (module docstring)
    segment_unspaced: bool = True

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
# The rules, each a boolean mask over the raw table (True = fails the rule)
# --------------------------------------------------------------------------------------------


def image_size_mask(width: np.ndarray, height: np.ndarray, config: FilterConfig) -> np.ndarray:
    """(N,) bool: the shorter side is not > ``min_image_side``.

    Paper §3, image-based filtering: keep only images whose shorter side is larger than 200 px."""
    return np.minimum(width, height) <= config.min_image_side


def aspect_ratio_mask(width: np.ndarray, height: np.ndarray, config: FilterConfig) -> np.ndarray:
    """(N,) bool: long/short side >= ``max_aspect_ratio`` (a zero side counts as infinite).

    Paper §3, image-based filtering: keep only images whose aspect ratio is smaller than 3."""
    short = np.minimum(width, height).astype(np.float64)
    long = np.maximum(width, height).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(short > 0, long / np.where(short > 0, short, 1), np.inf)
    return aspect >= config.max_aspect_ratio


def images_per_text(image_ids: np.ndarray, text_ids: np.ndarray) -> np.ndarray:
    """(n_texts,) number of distinct images each normalised alt-text appears with.

    ``image_ids``/``text_ids``: (N,) int64 codes of each row's image and normalised alt-text.
    """
    n_images = int(image_ids.max(initial=-1)) + 1
    n_texts = int(text_ids.max(initial=-1)) + 1
    # A row whose image is in no other row is a distinct (text, image) pair by itself; only
    # the rows of repeated images need sorting to find their distinct pairs.
    repeated = np.bincount(image_ids, minlength=n_images)[image_ids] > 1
    single = np.bincount(text_ids[~repeated], minlength=n_texts)
    pairs = _sorted_unique(text_ids[repeated] * n_images + image_ids[repeated])
    return single + np.bincount(pairs // n_images, minlength=n_texts)


def sharing_counts(image_ids: np.ndarray, text_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (alt-texts of its image, distinct images of its alt-text), both (N,).

    The counts behind two of the paper's rules (§3): discard images associated with more than
    1000 alt-texts (image-based), and alt-texts shared by more than 10 images (text-based). An
    image's alt-texts are all the rows (pairs) it appears in: on the web every page that shows an
    image associates one more alt-text with it, repeated or not.
    """
    return np.bincount(image_ids)[image_ids], images_per_text(image_ids, text_ids)[text_ids]


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` by sort + compare (several times faster than ``np.unique`` on numpy 2.x)."""
    values = np.sort(values)
    first = np.ones(len(values), dtype=bool)
    first[1:] = values[1:] != values[:-1]
    return values[first]


def text_length_mask(words_per_row: np.ndarray, config: FilterConfig) -> np.ndarray:
    """(N,) bool: fewer than ``min_unigrams`` or more than ``max_unigrams`` unigrams.

    Paper §3, text-based filtering: discard alt-texts that are too short (< 3 unigrams) or too
    long (> 20 unigrams)."""
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
    words = tb.words_per_row
    n_words, n_bigrams = int(words.sum()), int(np.maximum(words - 1, 0).sum())
    return top_k < n_words + n_bigrams


def rare_token_mask(tb: TextBytes, config: FilterConfig) -> np.ndarray:
    """(N,) bool: some unigram of the row is outside the corpus's top-K unigrams+bigrams.

    Paper §3, text-based filtering: discard alt-texts that contain any rare token, one outside
    the 100 million most frequent unigrams and bigrams of the raw data set."""
    if not could_be_rare(tb, config.rare_token_top_k):
        return np.zeros(tb.n_rows, dtype=bool)
    unigrams = encode_unigrams(tb)
    threshold = frequency_threshold(unigrams, config.rare_token_top_k)
    if threshold <= 1:  # every unigram of the corpus occurs at least once
        return np.zeros(tb.n_rows, dtype=bool)
    rare_in_vocab = np.bincount(unigrams.ids, minlength=len(unigrams.vocab)) < threshold
    return np.bincount(unigrams.rows[rare_in_vocab[unigrams.ids]], minlength=tb.n_rows) > 0


def filter_masks(table: pa.Table, config: FilterConfig = FilterConfig()) -> dict[str, np.ndarray]:
    """Every rule's (N,) bool mask on the raw table, in :data:`RULES` order.

    ``table`` needs ``text``, ``width``, ``height`` and ``image_key`` or ``file_name``.
    """
    require_columns(table, ("text", "width", "height"))
    width = table.column("width").to_numpy()
    height = table.column("height").to_numpy()
    # Two threads (Arrow and NumPy release the GIL): one hashes the images, then counts the
    # words, while the other normalises and hashes the texts.
    with ThreadPoolExecutor(max_workers=1) as pool:
        image_codes = pool.submit(lambda: encode(image_keys(table))[0])
        tb = text_bytes(table.column("text"), config.segment_unspaced)
        normalized = normalized_texts(tb)  # finds the clean rows, used by words_per_row
        words_per_row = pool.submit(lambda: tb.words_per_row)
        text_codes = encode(normalized)[0]
        alt_texts_of_image, images_of_text = sharing_counts(image_codes.result(), text_codes)
        words_per_row.result()
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
    require_columns(table, (name,))
    column = table.column(name)
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    return column.combine_chunks()


def apply_filters(
    table: pa.Table,
    config: FilterConfig = FilterConfig(),
    extra_rules: Mapping[str, np.ndarray] | None = None,
    skipped: Mapping[str, int] | None = None,
    n_examples: int = 3,
    group_by: str | None = None,
) -> FilterResult:
    """Run every rule, attribute each dropped row to the first rule it fails, keep the rest.

    ``extra_rules``: more (N,) bool masks, attributed after the table rules, in the given order.
    ``skipped``: rows dropped before the table existed (bad input while reading), reported as
    the ``bad_input`` rule so that the report covers every input row.
    ``group_by``: a column (e.g. ``"language"``) whose values the report is broken down by
    (:func:`report_by`, stored as ``report.by_group``).
    """
    if group_by is not None:
        require_columns(table, (group_by,))
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
    kept = _filter_rows(table, first_failed < 0)
    rows_in = table.num_rows + (sum(skipped.values()) if skipped else 0)
    report = FilterReport(rows_in, kept.num_rows, outcomes, bad_input_by_reason=dict(skipped or {}))
    result = FilterResult(kept, report, first_failed)
    if group_by is not None:
        result.report.by_group = report_by(table, result, group_by)
    return result


def _filter_rows(table: pa.Table, keep: np.ndarray) -> pa.Table:
    """``table.filter(keep)`` for ``keep`` (N,) bool, two columns at a time in threads."""
    mask = pa.array(keep)
    with ThreadPoolExecutor(max_workers=2) as pool:
        columns = list(pool.map(lambda column: column.filter(mask), table.columns))
    return pa.Table.from_arrays(columns, schema=table.schema)


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
    words = [unigrams(row["text"], config.segment_unspaced) for row in rows]
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
