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

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from icu4py.breakers import WordBreaker
from icu4py.locale import Locale

if TYPE_CHECKING:
    import pandas as pd

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

#: Code-point ranges of the scripts written without spaces between words: Thai, Lao, Myanmar,
#: Khmer, Han (radicals, 々 〆 〇 and other ideographic marks, CJK ideographs and their
#: extensions), Hiragana and Katakana (with the half-width forms and the kana supplements).
UNSPACED_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F), (0xA9E0, 0xA9FF), (0xAA60, 0xAA7F),  # Myanmar
    (0x1780, 0x17FF), (0x19E0, 0x19FF),  # Khmer
    (0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3038, 0x303B),  # Han marks
    (0x3041, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F), (0x1B000, 0x1B16F),  # kana
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF),  # Han
)
#: A character of :data:`UNSPACED_RANGES`, as a Python regular expression ...
UNSPACED_PATTERN = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in UNSPACED_RANGES) + "]")
#: ... and as an RE2 one (Arrow's ``match_substring_regex``).
_UNSPACED_RE2 = "[" + "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in UNSPACED_RANGES) + "]"
#: Every character of these scripts is 3 or 4 bytes in UTF-8, led by a byte >= 0xE0.
_UNSPACED_MIN_LEAD_BYTE = 0xE0
_ROOT_LOCALE = Locale("root")


def unigrams(text: str | None, segment_unspaced: bool = True) -> list[str]:
    """The unigrams of one alt-text, as every rule counts them (module docstring).

    >>> unigrams("Grinning face: にっこり笑う!")
    ['grinning', 'face', 'にっこり', '笑う']
    """
    words = WORD_PATTERN.findall((text or "").lower())
    return segmented(words) if segment_unspaced else words


def segmented(words: Iterable[str]) -> list[str]:
    """``words`` with each word of an unspaced script replaced by its dictionary words."""
    return [
        piece
        for word in words
        for piece in (dictionary_words(word) if UNSPACED_PATTERN.search(word) else (word,))
    ]


@lru_cache(maxsize=1 << 18)
def dictionary_words(word: str) -> tuple[str, ...]:
    """ICU's dictionary-based word segments of ``word`` that hold a letter, digit or ``_``.

    >>> dictionary_words("หน้ายิ้มยิงฟัน")
    ('หน้า', 'ยิ้ม', 'ยิงฟัน')
    """
    return tuple(s for s in WordBreaker(word, _ROOT_LOCALE) if _is_word_segment(s))


def _is_word_segment(segment: str) -> bool:
    """The segment holds a letter, digit or ``_`` (not only punctuation, spaces or symbols)."""
    return any(ch.isalnum() or ch == "_" for ch in segment)


#: Number of set bits of every byte value (a popcount table for bit-packed masks).
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class TextBytes:
    """A text column as one UTF-8 byte buffer, lower-cased; its words are located on demand.

    ``lower``: (N,) the lower-cased texts (nulls → ``""``) as an Arrow string array;
    ``data``: (B,) uint8 their bytes, one buffer; ``offsets``: (N+1,) int64 row boundaries
    into ``data``; ``segment_unspaced``: split words of unspaced scripts (module docstring).
    The rest is computed on first use and cached: ``space``/``word`` (B,) bool;
    ``clean``/``words_per_row`` (N,); ``normalized`` (N,) strings; ``starts``/``ends``/``rows``
    (T,) int64, one entry per space-separated word (before ICU's segmentation).

    Most alt-texts are already normalised once lower-cased ("a red circle"), so the per-row
    facts that the rules need (word counts, normalised texts) take a few cheap passes over the
    bytes, and the word-by-word work is done only for the few rows that are not :attr:`clean`.
    Likewise only the rows with a character of an unspaced script (:attr:`unspaced_rows`) go
    through ICU, once per distinct word.
    """

    lower: pa.Array
    data: np.ndarray
    offsets: np.ndarray
    segment_unspaced: bool = True

    @property
    def n_rows(self) -> int:
        return len(self.offsets) - 1

    @cached_property
    def space(self) -> np.ndarray:
        """(B,) bool: the byte is an ASCII space."""
        return self.data == ord(" ")

    @cached_property
    def clean(self) -> np.ndarray:
        """(N,) bool: the row is already normalised: words joined by single spaces, nothing else.

        A row is *not* clean when it holds a byte that is neither a word byte nor a space, two
        spaces in a row, or a space at its start or end. Rows flagged by mistake (a double space
        across a row boundary) only cost time: they are normalised the long way, same result.
        """
        data, space, first, last = self.data, self.space, self.offsets[:-1], self.offsets[1:] - 1
        # Passes over all B bytes write into one scratch buffer: a fresh 50 MB array costs
        # about as much as the pass itself. a..z -> 0..25 (uint8 arithmetic wraps), so one
        # comparison finds the non-letters; ^ drops the spaces among them; the rest are rare
        # (digits, "_", punctuation, non-ASCII) and are checked against _WORD_BYTE one by one.
        scratch = np.subtract(data, np.uint8(ord("a")))
        flags = np.greater_equal(scratch, 26, out=scratch.view(bool))
        odd = np.flatnonzero(np.bitwise_xor(flags, space, out=flags))
        bad_bytes = odd[~_WORD_BYTE[data[odd]]]
        double_spaces = np.flatnonzero(np.logical_and(space[1:], space[:-1], out=flags[1:]))
        clean = np.ones(self.n_rows, dtype=bool)
        clean[self.row_of(np.concatenate([bad_bytes, double_spaces]))] = False
        nonempty = np.flatnonzero(last >= first)
        edge_space = space[first[nonempty]] | space[last[nonempty]]
        clean[nonempty[edge_space]] = False
        return clean

    @cached_property
    def dirty_rows(self) -> np.ndarray:
        """(R,) int64 the rows that are not :attr:`clean`."""
        return np.flatnonzero(~self.clean)

    @cached_property
    def dirty(self) -> TextBytes:
        """The TextBytes of just the :attr:`dirty_rows`."""
        return self.subset(self.dirty_rows)

    @cached_property
    def spaced_normalized(self) -> pa.Array:
        """(N,) each row's space-separated words joined by single spaces (no ICU segmentation)."""
        if not len(self.dirty_rows):
            return self.lower
        fixed = _joined_words(self.dirty).cast(self.lower.type)
        return pc.replace_with_mask(self.lower, pa.array(~self.clean), fixed)

    @cached_property
    def spaced_words_per_row(self) -> np.ndarray:
        """(N,) int64 number of space-separated words in each row (no ICU segmentation).

        A clean row has one word more than spaces (none when empty); the other rows count
        their words one by one, in the TextBytes of just those rows (:attr:`dirty`).
        """
        counts = _count_per_row(self.space, self.offsets) + (np.diff(self.offsets) > 0)
        counts[self.dirty_rows] = np.bincount(self.dirty.rows, minlength=len(self.dirty_rows))
        return counts

    @cached_property
    def unspaced_rows(self) -> np.ndarray:
        """(U,) int64 the rows with a character of an unspaced script; none unless segmenting.

        Such characters are 3-4 UTF-8 bytes led by a byte >= 0xE0, so columns without one (all
        of Latin, Greek, Cyrillic ...) skip the regular expression.
        """
        if not self.segment_unspaced or self.data.max(initial=0) < _UNSPACED_MIN_LEAD_BYTE:
            return np.zeros(0, dtype=np.int64)
        found = pc.match_substring_regex(self.lower, _UNSPACED_RE2)
        return np.flatnonzero(found.to_numpy(zero_copy_only=False))

    @cached_property
    def _segmented(self) -> tuple[pa.Array, np.ndarray]:
        """The :attr:`unspaced_rows`' normalised texts (U,) and unigram counts (U,) int64.

        Their words are dictionary-encoded, so ICU runs once per distinct word (and, through
        :func:`dictionary_words`'s cache, once per word across calls); every word is then
        replaced by its segments and the rows are joined again in Arrow.
        """
        rows = self.unspaced_rows
        # every such row has a word (its unspaced character), so no row is dropped here
        codes, vocab = encode(spaced_word_array(self.spaced_normalized.take(pa.array(rows))))
        pieces = [segmented([word[:-1]]) for word in vocab.to_pylist()]  # word[:-1]: no space
        n_pieces = np.array([len(p) for p in pieces], dtype=np.int64)[codes]
        joined = pa.array([" ".join(p) for p in pieces], pa.large_string()).take(pa.array(codes))
        word_rows = np.repeat(np.arange(len(rows)), self.spaced_words_per_row[rows])
        kept = n_pieces > 0  # a word of symbols alone (the Han radical "⺀") leaves nothing
        per_row = np.bincount(word_rows[kept], minlength=len(rows))
        offsets = pa.array(np.concatenate([[0], np.cumsum(per_row)]), pa.int64())
        lists = pa.LargeListArray.from_arrays(offsets, joined.filter(pa.array(kept)))
        counts = np.bincount(word_rows, weights=n_pieces, minlength=len(rows)).astype(np.int64)
        return pc.binary_join(lists, pa.scalar(" ", pa.large_string())), counts

    @cached_property
    def normalized(self) -> pa.Array:
        """(N,) the normalised texts (see :func:`normalized_texts`)."""
        if not len(self.unspaced_rows):
            return self.spaced_normalized
        mask = np.zeros(self.n_rows, dtype=bool)
        mask[self.unspaced_rows] = True
        spaced = self.spaced_normalized
        return pc.replace_with_mask(spaced, pa.array(mask), self._segmented[0].cast(spaced.type))

    @cached_property
    def words_per_row(self) -> np.ndarray:
        """(N,) int64 number of unigrams in each row (module docstring)."""
        if not len(self.unspaced_rows):
            return self.spaced_words_per_row
        counts = self.spaced_words_per_row.copy()
        counts[self.unspaced_rows] = self._segmented[1]
        return counts

    @cached_property
    def word(self) -> np.ndarray:
        """(B,) bool: the byte belongs to a word (:data:`_WORD_BYTE`).

        In clean rows that is every byte but the spaces; only the bytes of the other rows are
        looked up in the table.
        """
        word = ~self.space
        positions = _row_bytes(self.offsets, self.dirty_rows)
        word[positions] = _WORD_BYTE[self.data[positions]]
        return word

    @cached_property
    def _spans(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts, ends, rows) of every word, each (T,) int64."""
        word = self.word
        # +1 where a word starts, -1 one past where it ends (on the buffer as a whole) ...
        edges = np.diff(word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
        is_start, is_end = edges[:-1] == 1, edges[1:] == -1
        # ... and a row boundary also starts (ends) a word wherever it has a word byte after
        # (before) it, even when the previous (next) row's last (first) byte is a word byte.
        first, last = self.offsets[:-1], self.offsets[1:] - 1
        nonempty = last >= first
        is_start[first[nonempty]] = word[first[nonempty]]
        is_end[last[nonempty]] = word[last[nonempty]]
        starts, ends = np.flatnonzero(is_start), np.flatnonzero(is_end) + 1
        rows = np.repeat(np.arange(self.n_rows), _count_per_row(is_start, self.offsets))
        return starts, ends, rows

    @property
    def starts(self) -> np.ndarray:
        """(T,) int64 first byte of every word."""
        return self._spans[0]

    @property
    def ends(self) -> np.ndarray:
        """(T,) int64 one past the last byte of every word."""
        return self._spans[1]

    @property
    def rows(self) -> np.ndarray:
        """(T,) int64 row of every word (non-decreasing)."""
        return self._spans[2]

    def row_of(self, positions: np.ndarray) -> np.ndarray:
        """(P,) int64 row of each byte position in ``positions`` (P,)."""
        return np.searchsorted(self.offsets, positions, side="right") - 1

    def subset(self, rows: np.ndarray) -> TextBytes:
        """The TextBytes of just ``rows`` (R,) int64 (already lower-cased, not again)."""
        return _lowered_text_bytes(self.lower.take(pa.array(rows)), self.segment_unspaced)


def _row_bytes(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(b,) int64 the positions of all bytes of ``rows`` (R,), row after row."""
    starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
    first_output = np.cumsum(lengths) - lengths  # where each row's bytes start in the output
    return np.repeat(starts - first_output, lengths) + np.arange(int(lengths.sum()))


def _count_per_row(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(N,) int64 number of True values of ``mask`` (B,) bool between consecutive ``offsets``.

    Counts on the bit-packed mask (8 values per byte, first value in the top bit): the count
    before position p is the popcount of all packed bytes before p // 8, plus that of the top
    p % 8 bits of packed byte p // 8. One cheap pass over B / 8 bytes instead of B.
    """
    packed = np.append(np.packbits(mask), np.uint8(0))  # the extra byte serves p = B
    before_byte = np.zeros(len(packed) + 1, dtype=np.int32 if len(mask) < 2**31 else np.int64)
    np.cumsum(_POPCOUNT[packed], out=before_byte[1:])
    byte, bits = offsets // 8, offsets % 8
    top_bits = (0xFF00 >> bits) & 0xFF
    before = before_byte[byte] + _POPCOUNT[packed[byte] & top_bits]
    return np.diff(before.astype(np.int64))


def text_bytes(texts: pa.Array | pa.ChunkedArray, segment_unspaced: bool = True) -> TextBytes:
    """Lower-case ``texts`` (nulls → ``""``) and view them as one byte buffer.

    Pure-ASCII columns (the usual case) take Arrow's faster ASCII kernel: same result there.
    ``segment_unspaced``: split words of unspaced scripts into dictionary words (module
    docstring); False counts space-separated words only.
    """
    texts = pc.fill_null(texts, "")
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    ascii_only = _string_buffers(texts)[0].max(initial=0) < 0x80
    lower = pc.ascii_lower(texts) if ascii_only else pc.utf8_lower(texts)
    return _lowered_text_bytes(lower, segment_unspaced)


def _string_buffers(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(B,) uint8 bytes and (N+1,) int64 offsets (from 0) of a string or large_string array."""
    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    offsets_buf, data_buf = strings.buffers()[1:3]
    first = strings.offset
    offsets = np.frombuffer(offsets_buf, dtype=offset_type)[first : first + len(strings) + 1]
    offsets = offsets.astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data[offsets[0] : offsets[-1]], offsets - offsets[0]


def _lowered_text_bytes(lower: pa.Array, segment_unspaced: bool = True) -> TextBytes:
    """The TextBytes of an already lower-cased, null-free string or large_string array."""
    return TextBytes(lower, *_string_buffers(lower), segment_unspaced)


def _string_array(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(
        pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def normalized_texts(tb: TextBytes) -> pa.Array:
    """(N,) each row's unigrams joined by single spaces: the key under which alt-texts are compared.

    Clean rows (:attr:`TextBytes.clean`) are their own normal form; only the others are
    rebuilt word by word (:func:`_joined_words`) and put in their place, and the rows of
    unspaced scripts are then segmented by ICU (:attr:`TextBytes.unspaced_rows`). Cached on ``tb``.
    """
    return tb.normalized


def _joined_words(tb: TextBytes) -> pa.Array:
    """(N,) large_string: each row's words joined by single spaces, built from the word spans."""
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
    per_row = np.bincount(tb.rows, weights=step, minlength=tb.n_rows).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(per_row)])
    return _string_array(data, offsets)


def spaced_word_array(normalized: pa.Array) -> pa.Array:
    """(T,) every unigram occurrence of ``normalized`` (N,) texts, each with a space appended.

    Appending one space to every non-empty normalised text puts exactly one space after every
    word, so the words (with their space) are consecutive slices of that one buffer.
    """
    nonempty = normalized.filter(pc.not_equal(normalized, ""))
    empty, space = pa.scalar("", normalized.type), pa.scalar(" ", normalized.type)
    spaced = pc.binary_join_element_wise(nonempty, empty, space)
    data, _ = _string_buffers(spaced)
    word_ends = np.flatnonzero(data == ord(" ")) + 1
    return _string_array(data, np.concatenate([[0], word_ends]))


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
    """The unigrams of ``tb``'s normalised texts, dictionary-encoded.

    The two halves of the rows are encoded in two threads; their vocabularies are then merged.
    """
    texts, half = normalized_texts(tb), tb.n_rows // 2
    with ThreadPoolExecutor(max_workers=2) as pool:
        halves = pool.map(lambda part: encode(spaced_word_array(part)), [texts[:half], texts[half:]])
        (ids_a, vocab_a), (ids_b, vocab_b) = halves
    merged_ids, vocab = encode(pa.concat_arrays([vocab_a, vocab_b]))
    ids = np.concatenate([merged_ids[ids_a], merged_ids[len(vocab_a) + ids_b]])
    rows = np.repeat(np.arange(tb.n_rows), tb.words_per_row)
    return Unigrams(ids=ids, rows=rows, vocab=pc.utf8_slice_codeunits(vocab, 0, -1))


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
    n_texts = int(text_ids.max(initial=-1)) + 1
    # A row whose image is in no other row is a distinct (text, image) pair by itself; only
    # the rows of repeated images need sorting to find their distinct pairs.
    repeated = np.bincount(image_ids, minlength=n_images)[image_ids] > 1
    single = np.bincount(text_ids[~repeated], minlength=n_texts)
    pairs = _sorted_unique(text_ids[repeated] * n_images + image_ids[repeated])
    return single + np.bincount(pairs // n_images, minlength=n_texts)


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
    words = tb.words_per_row
    n_words, n_bigrams = int(words.sum()), int(np.maximum(words - 1, 0).sum())
    return top_k < n_words + n_bigrams


def rare_token_mask(tb: TextBytes, config: FilterConfig) -> np.ndarray:
    """(N,) bool: some unigram of the row is outside the corpus's top-K unigrams+bigrams."""
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
    _require(table, ("text", "width", "height"))
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
    by_group: GroupReport | None = None  # the same counts per value of a column (report_by)
    bad_input_by_reason: dict[str, int] = field(default_factory=dict)  # the bad_input rule's rows, by reason

    @property
    def removed(self) -> int:
        return sum(r.removed for r in self.rules)

    def to_dict(self) -> dict:
        out = {
            "rows_in": self.rows_in,
            "kept": self.kept,
            "removed": {r.rule: r.removed for r in self.rules},
            "failed": {r.rule: r.failed for r in self.rules},
            "rules": [asdict(r) for r in self.rules],
            "bad_input_by_reason": dict(sorted(self.bad_input_by_reason.items())),
        }
        if self.by_group is not None:
            out["by_group"] = self.by_group.to_dict()
        return out

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
        if self.by_group is not None:
            lines += ["", self.by_group.to_markdown()]
        return "\n".join(lines)


@dataclass
class GroupCounts:
    """One group's line of a :class:`GroupReport`: ``rows_in == kept + Σ removed``."""

    group: str
    rows_in: int
    kept: int
    removed: dict[str, int]  # rule -> rows of the group dropped by it and by no earlier rule


@dataclass
class GroupReport:
    """A :class:`FilterReport` broken down by the values of one column (e.g. ``language``).

    Each row is attributed to its first failed rule, as in the report; the groups' ``rows_in``
    add up to the filtered table's rows, i.e. the report's ``rows_in`` less ``bad_input``
    (rows dropped while reading belong to no group). Groups are sorted by name; a missing
    value is the group ``"(missing)"``.
    """

    column: str
    rules: list[str]
    groups: list[GroupCounts]

    def total(self) -> GroupCounts:
        """The sum over all groups."""
        removed = {rule: sum(g.removed[rule] for g in self.groups) for rule in self.rules}
        return GroupCounts("total", sum(g.rows_in for g in self.groups),
                           sum(g.kept for g in self.groups), removed)

    def to_dict(self) -> dict:
        return {"column": self.column, "rules": self.rules,
                "groups": {g.group: {"rows_in": g.rows_in, "kept": g.kept, "removed": g.removed}
                           for g in self.groups}}

    def to_frame(self) -> pd.DataFrame:
        """One row per group: ``rows_in``, rows removed by each rule, ``kept`` (needs pandas)."""
        import pandas as pd

        records = [{"rows_in": g.rows_in, **g.removed, "kept": g.kept} for g in self.groups]
        index = pd.Index([g.group for g in self.groups], name=self.column)
        return pd.DataFrame(records, index=index, columns=["rows_in", *self.rules, "kept"])

    def to_markdown(self) -> str:
        """A Markdown table: one line per group and a total; removed counts in rule order."""
        lines = [f"| {self.column} | rows | " + " | ".join(self.rules) + " | kept | kept % |",
                 "|---|" + "---:|" * (len(self.rules) + 3)]
        total = self.total()
        for g, name in [*((g, g.group) for g in self.groups), (total, "**total**")]:
            share = f"{100 * g.kept / g.rows_in:.1f}" if g.rows_in else "–"
            removed = " | ".join(f"{g.removed[rule]:,}" for rule in self.rules)
            lines.append(f"| {name} | {g.rows_in:,} | {removed} | {g.kept:,} | {share} |")
        return "\n".join(lines)


def report_by(table: pa.Table, result: FilterResult, column: str) -> GroupReport:
    """The per-rule counts of ``result`` (:func:`apply_filters` of ``table``) per value of ``column``."""
    _require(table, (column,))
    if len(result.first_failed) != table.num_rows:
        n_result = len(result.first_failed)
        raise ValueError(f"the result covers {n_result} rows, the table {table.num_rows}")
    rules = [r.rule for r in result.report.rules if r.rule != "bad_input"]
    codes, values = _group_codes(table.column(column))
    width = len(rules) + 1  # column 0: kept, then one per rule
    cells = codes * width + result.first_failed.astype(np.int64) + 1
    counts = np.bincount(cells, minlength=len(values) * width).reshape(len(values), width)
    groups = [
        GroupCounts(name, int(row.sum()), int(row[0]), dict(zip(rules, map(int, row[1:]))))
        for name, row in zip(values, counts)
    ]
    return GroupReport(column, rules, sorted(groups, key=lambda g: g.group))


def _group_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """(N,) int64 group of each row and the group names (missing values: ``"(missing)"``)."""
    encoded = pc.dictionary_encode(column, null_encoding="encode")
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks() if encoded.num_chunks else pa.array([], encoded.type)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = ["(missing)" if v is None else str(v) for v in encoded.dictionary.to_pylist()]
    return codes, names


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
        _require(table, (group_by,))
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
