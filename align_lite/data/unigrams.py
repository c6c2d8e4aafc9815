"""What a unigram is, and every unigram of a text column counted fast (the filters' text side).

An alt-text is lower-cased, every run of ASCII characters that are not letters, digits or ``_``
becomes one space, and the remaining space-separated pieces are its words. A word that holds a
character of a script written without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar:
:data:`UNSPACED_PATTERN`) is split into dictionary words by ICU's word breaker (root locale). The
resulting words are the alt-text's *unigrams*; joined by single spaces they are its normalised
form. :func:`unigrams` shows the convention on one text; :class:`TextBytes` applies it to a whole
column at once, vectorised over the raw UTF-8 bytes (see :mod:`align_lite.data.filters` for why).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from icu4py.breakers import WordBreaker
from icu4py.locale import Locale


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


def encode(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Dictionary-encode: (N,) int64 codes and the distinct values."""
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary
