"""ALIGN's filters: each rule at its boundaries, the report's arithmetic, and the vectorised
rules against the plain-Python reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from align_lite.data.filters import RULES, FilterConfig, apply_filters, filter_masks, reference_filter_masks
from align_lite.data.unigrams import normalized_texts, text_bytes

CLEAN_TEXT = "a red circle on grey"  # 5 unigrams


def pairs(rows: list[dict]) -> pa.Table:
    """Rows with defaults for whatever a test does not care about."""
    filled = []
    for i, row in enumerate(rows):
        filled.append({"file_name": f"images/{i}.png", "text": f"{CLEAN_TEXT} number{i}",
                       "width": 256, "height": 256, **row})
    return pa.Table.from_pylist(filled)


def failing(table: pa.Table, rule: str, config: FilterConfig = FilterConfig()) -> list[bool]:
    return filter_masks(table, config)[rule].tolist()


# ------------------------------------------------------------------------------------ images


def test_image_size_boundary_200_vs_201():
    table = pairs([{"width": 200, "height": 500}, {"width": 500, "height": 201}, {"width": 201, "height": 201}])
    assert failing(table, "image_size") == [True, False, False]


def test_aspect_ratio_exactly_3_is_removed():
    table = pairs([
        {"width": 900, "height": 300},  # exactly 3
        {"width": 300, "height": 900},  # exactly 3, portrait
        {"width": 899, "height": 300},  # 2.997
        {"width": 0, "height": 300},  # degenerate: infinite aspect
    ])
    assert failing(table, "aspect_ratio") == [True, True, False, True]


def test_image_with_1000_alt_texts_kept_1001_removed():
    rows = [{"file_name": "images/hub_a.png", "text": f"{CLEAN_TEXT} {i}"} for i in range(1000)]
    rows += [{"file_name": "images/hub_b.png", "text": f"{CLEAN_TEXT} {i}"} for i in range(1001)]
    mask = failing(pairs(rows), "image_alt_texts")
    assert not any(mask[:1000]) and all(mask[1000:])


def test_alt_texts_of_an_image_count_every_pair():
    # an image on 1001 pages is a hub even when the pages repeat one alt-text
    rows = [{"file_name": "images/one.png", "text": "same words here"} for _ in range(1001)]
    assert all(failing(pairs(rows), "image_alt_texts"))


# ------------------------------------------------------------------------------------ texts


def test_alt_text_shared_by_10_images_kept_11_removed():
    rows = [{"text": "click here to enlarge"} for _ in range(10)]
    rows += [{"text": "stock photo image"} for _ in range(11)]
    mask = failing(pairs(rows), "alt_text_sharing")
    assert mask == [False] * 10 + [True] * 11


def test_sharing_counts_distinct_images_not_rows():
    rows = [{"file_name": "images/same.png", "text": "click here to enlarge"} for _ in range(50)]
    assert not any(failing(pairs(rows), "alt_text_sharing"))


def test_sharing_compares_normalised_texts():
    variants = ["Click here to ENLARGE!", "click here, to enlarge", "click  here to enlarge."]
    rows = [{"text": variants[i % 3]} for i in range(11)]
    assert all(failing(pairs(rows), "alt_text_sharing"))


@pytest.mark.parametrize("n_words, removed", [(2, True), (3, False), (20, False), (21, True)])
def test_unigram_count_boundaries(n_words, removed):
    text = " ".join(f"word{i}" for i in range(n_words))
    assert failing(pairs([{"text": text}]), "text_length") == [removed]


def test_punctuation_separates_unigrams():
    # "IMG_4821.JPG" is two unigrams (underscore is a word character, the dot is not);
    # non-ASCII characters count as word characters, so "a—b" is one unigram.
    table = pairs([{"text": "IMG_4821.JPG"}, {"text": "  a—b  c "}, {"text": "héllo wörld ß"}])
    assert normalized_texts(text_bytes(table.column("text"))).to_pylist() == [
        "img_4821 jpg", "a—b c", "héllo wörld ß"]
    assert failing(table, "text_length") == [True, True, False]


def test_rare_token_rule_keeps_top_k_unigrams_and_bigrams():
    # counts: "red"=4, "circle"=4, bigram "red circle"=4, "blue"=1, "star"=1, bigram "blue star"=1...
    rows = [{"text": "red circle"}] * 4 + [{"text": "blue star"}]
    table = pairs(rows)
    # top-3 pooled entries are red, circle, "red circle" (count 4) -> blue/star are rare
    assert failing(table, "rare_tokens", FilterConfig(rare_token_top_k=3)) == [False] * 4 + [True]
    # top-4: the 4th largest count is 1, so every entry ties in: nothing is rare
    assert not any(failing(table, "rare_tokens", FilterConfig(rare_token_top_k=4)))


def test_rare_token_rule_is_inactive_at_paper_k_on_small_corpora():
    # "the", "red", "thing", "the red", "red thing" occur 100 times; every "uniqueI" once.
    table = pairs([{"text": f"the red thing unique{i}"} for i in range(100)])
    assert not any(failing(table, "rare_tokens"))  # K = 100 M > all 400 distinct entries
    assert all(failing(table, "rare_tokens", FilterConfig(rare_token_top_k=5)))
    # K = 6: the 6th largest count is 1, and ties at the boundary are kept
    assert not any(failing(table, "rare_tokens", FilterConfig(rare_token_top_k=6)))


# ------------------------------------------------------------------------------------ report


def test_each_dropped_row_is_attributed_to_its_first_rule():
    table = pairs([
        {"width": 100, "height": 100, "text": "x"},  # fails image_size and text_length
        {"width": 900, "height": 250, "text": "x"},  # fails aspect_ratio and text_length
        {"text": "x"},  # fails text_length only
        {},  # clean
    ])
    result = apply_filters(table)
    assert result.first_failed.tolist() == [0, 1, 4, -1]
    report = result.report.to_dict()
    assert report["removed"]["image_size"] == 1 and report["failed"]["text_length"] == 3
    assert result.kept.num_rows == 1


def test_report_adds_up_with_skipped_rows_and_extra_rules():
    rng = np.random.default_rng(0)
    rows = [{"width": int(rng.integers(50, 600)), "height": int(rng.integers(50, 600)),
             "text": " ".join(["w"] * int(rng.integers(1, 25)))} for _ in range(500)]
    table = pairs(rows)
    extra = {"eval_duplicate": rng.random(500) < 0.1}
    result = apply_filters(table, extra_rules=extra, skipped={"corrupt_image": 7, "not_utf8": 3})
    report = result.report
    assert report.rows_in == 510
    assert report.kept + report.removed == report.rows_in
    assert [r.rule for r in report.rules] == ["bad_input", *RULES, "eval_duplicate"]
    assert report.rules[0].removed == 10
    assert result.kept.num_rows == report.kept
    markdown = report.to_markdown()
    assert "eval_duplicate" in markdown and f"{report.kept:,}" in markdown


def test_extra_rule_of_wrong_length_is_a_clear_error():
    with pytest.raises(ValueError, match="extra rule 'dup'"):
        apply_filters(pairs([{}, {}]), extra_rules={"dup": np.zeros(3, bool)})


def test_missing_columns_are_a_clear_error():
    with pytest.raises(ValueError, match="lacks column"):
        filter_masks(pa.table({"file_name": ["a.png"], "text": ["a b c"]}))


def test_config_validation():
    with pytest.raises(ValueError):
        FilterConfig(min_unigrams=5, max_unigrams=4)
    with pytest.raises(ValueError):
        FilterConfig(max_aspect_ratio=0.5)


def test_nulls_and_empty_texts_do_not_crash():
    table = pa.table({"file_name": ["a", "b", "c"], "text": ["", None, "one two three"],
                      "width": [300, 300, 300], "height": [300, 300, 300]})
    assert filter_masks(table)["text_length"].tolist() == [True, True, False]


# ------------------------------------------------------------------------- against reference


def random_web_table(n: int, seed: int) -> pa.Table:
    """Zipf-distributed words with punctuation, unicode, boilerplate and shared images."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(400)] + ["héllo", "naïve", "IMG_12", "x.jpg", "Ünïcode"]
    p = 1 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    seps = [" ", "  ", ", ", "-", "!", " — "]
    texts = []
    for _ in range(n):
        k = int(rng.integers(0, 26))
        words = rng.choice(len(vocab), size=k, p=p)
        texts.append("".join(vocab[w] + seps[int(rng.integers(len(seps)))] for w in words))
    boiler = rng.random(n) < 0.05
    texts = ["Click here to enlarge" if b else t for b, t in zip(boiler, texts)]
    return pa.table({
        "file_name": [f"images/{i}.png" for i in rng.integers(0, n // 3, n)],
        "text": texts,
        "width": rng.integers(0, 700, n), "height": rng.integers(1, 700, n),
    })


@pytest.mark.parametrize("top_k", [5, 50, 300, 100_000_000])
def test_vectorised_rules_equal_the_plain_python_loop(top_k):
    table = random_web_table(3000, seed=top_k)
    config = FilterConfig(rare_token_top_k=top_k, max_alt_texts_per_image=3, max_images_per_alt_text=4)
    fast = filter_masks(table, config)
    slow = reference_filter_masks(table.to_pylist(), config)
    for rule in RULES:
        np.testing.assert_array_equal(fast[rule], slow[rule], err_msg=rule)
    assert any(fast[rule].any() for rule in RULES)


def test_generated_world_against_reference():
    from align_lite.data.world import WorldConfig, make_world_table

    table = make_world_table(WorldConfig.noisy(n=4000, seed=3))
    config = FilterConfig(rare_token_top_k=2000)
    fast = filter_masks(table, config)
    slow = reference_filter_masks(table.to_pylist(), config)
    for rule in RULES:
        np.testing.assert_array_equal(fast[rule], slow[rule], err_msg=rule)


# ------------------------------------------------------------------- fast paths of the text work

def python_words(texts: list) -> list[list[str]]:
    from align_lite.data.unigrams import WORD_PATTERN

    return [WORD_PATTERN.findall((t or "").lower()) for t in texts]


TRICKY_TEXTS = [
    "a red circle", "", None, " ", "  two  spaces ", "trailing ", " leading", "x!y", "IMG_12.JPG",
    "héllo wörld", "a—b", "tab\there", "new\nline", "nul\x00byte", "ab", "cd", "EF", "end",
]


@pytest.mark.parametrize("kind", ["string", "large_string", "chunked_sliced"])
def test_text_bytes_match_python_on_clean_and_dirty_rows(kind):
    texts = pa.array(TRICKY_TEXTS, pa.large_string() if kind == "large_string" else pa.string())
    if kind == "chunked_sliced":
        first = pa.array(["drop me", *TRICKY_TEXTS[:7]]).slice(1)
        texts = pa.chunked_array([first, pa.array(TRICKY_TEXTS[7:])])
    tb = text_bytes(texts)
    words = python_words(TRICKY_TEXTS)
    assert normalized_texts(tb).to_pylist() == [" ".join(w) for w in words]
    assert tb.words_per_row.tolist() == [len(w) for w in words]
    # a row is clean exactly when lower-casing alone normalises it (nothing is flagged here
    # by a double space across a row boundary)
    lower = [(t or "").lower() for t in TRICKY_TEXTS]
    assert tb.clean.tolist() == [lo == " ".join(w) for lo, w in zip(lower, words)]
    # the word spans, found on the whole buffer, split words that touch across rows ("ab","cd")
    spans = [bytes(tb.data[s:e]).decode() for s, e in zip(tb.starts, tb.ends)]
    assert spans == [x for w in words for x in w]
    assert tb.rows.tolist() == [i for i, w in enumerate(words) for _ in w]


def test_all_clean_rows_are_returned_as_they_are():
    texts = pa.array(["a red circle", "b", "", "two words"])
    tb = text_bytes(texts)
    assert tb.clean.all() and normalized_texts(tb) is tb.lower
    assert tb.words_per_row.tolist() == [3, 1, 0, 2]


def test_unicode_texts_take_the_utf8_path():
    texts = pa.array(["Ünïcode WÖRDS", "ASCII Words"])
    assert normalized_texts(text_bytes(texts)).to_pylist() == ["ünïcode wörds", "ascii words"]


def test_count_per_row_on_packed_bits():
    from align_lite.data.unigrams import _count_per_row

    rng = np.random.default_rng(1)
    for n_bytes in (0, 1, 7, 8, 9, 64, 1001):
        mask = rng.random(n_bytes) < 0.4
        cuts = np.sort(rng.integers(0, n_bytes + 1, 12))
        offsets = np.concatenate([[0], cuts, cuts[-1:], [n_bytes]])  # includes empty rows
        expected = [int(mask[a:b].sum()) for a, b in zip(offsets[:-1], offsets[1:])]
        assert _count_per_row(mask, offsets).tolist() == expected


def test_unigrams_are_the_words_of_every_row():
    from align_lite.data.unigrams import encode_unigrams

    table = random_web_table(501, seed=7)
    unigrams = encode_unigrams(text_bytes(table.column("text")))
    words = python_words(table.column("text").to_pylist())
    assert unigrams.vocab.take(pa.array(unigrams.ids)).to_pylist() == [x for w in words for x in w]
    assert unigrams.rows.tolist() == [i for i, w in enumerate(words) for _ in w]
    assert len(set(unigrams.vocab.to_pylist())) == len(unigrams.vocab)


def test_images_per_text_with_single_and_repeated_images():
    from align_lite.data.filters import images_per_text

    rng = np.random.default_rng(2)
    image_ids = rng.integers(0, 300, 1000)
    text_ids = rng.integers(0, 50, 1000)
    expected = [len(set(image_ids[text_ids == t])) for t in range(text_ids.max() + 1)]
    assert images_per_text(image_ids, text_ids).tolist() == expected


def test_kept_table_is_the_rows_that_pass():
    table = random_web_table(300, seed=3)
    result = apply_filters(table, FilterConfig(max_alt_texts_per_image=3))
    assert result.kept.equals(table.filter(pa.array(result.first_failed < 0)))


# ------------------------------------------------------- scripts written without spaces (ICU)

MULTILINGUAL = {  # real-looking emoji annotations (emojibase-data style), several per language
    "en": ["grinning face with big eyes", "smiling face with smiling eyes", "red heart", "ok"],
    "de": ["Grinsendes Gesicht mit großen Augen", "lächelndes Gesicht", "rotes Herz"],
    "ja": ["にっこり笑う", "にっこり笑う 顔", "笑顔 | 目を細める | 幸せ", "赤いハート"],
    "zh": ["区域指标 笑脸", "咧嘴笑的脸", "红心", "笑脸、微笑、开心"],
    "th": ["หน้ายิ้มยิงฟัน", "หน้ายิ้ม ตายิ้ม", "หัวใจสีแดง"],
    "ko": ["활짝 웃는 얼굴", "웃는 얼굴", "빨간색 하트"],
    "emoji": ["😀 😃", "😀", "笑脸😀微笑", "笑脸 ⺀ 微笑", "⺀"],  # ⺀: a Han radical, a symbol
    "empty": ["", "   ", "!!", None],
}


@pytest.mark.parametrize("text, expected", [
    ("にっこり笑う", ["にっこり", "笑う"]),
    ("区域指标 笑脸", ["区域", "指标", "笑脸"]),
    ("หน้ายิ้มยิงฟัน", ["หน้า", "ยิ้ม", "ยิงฟัน"]),
    ("활짝 웃는 얼굴", ["활짝", "웃는", "얼굴"]),  # Korean has spaces: unchanged
    ("Grinning face: にっこり笑う!", ["grinning", "face", "にっこり", "笑う"]),
    ("笑脸、微笑", ["笑脸", "微笑"]),  # ideographic punctuation is not a unigram
    ("笑脸😀微笑 ⺀", ["笑脸", "微笑"]),  # nor is a symbol that ICU splits off or leaves alone
    ("lächelndes Gesicht", ["lächelndes", "gesicht"]),
    (None, []),
])
def test_unigrams_split_unspaced_scripts_into_dictionary_words(text, expected):
    from align_lite.data.unigrams import unigrams

    assert unigrams(text) == expected


def test_unigrams_without_segmentation_are_the_space_separated_words():
    from align_lite.data.unigrams import unigrams

    assert unigrams("にっこり笑う", segment_unspaced=False) == ["にっこり笑う"]
    assert unigrams("区域指标 笑脸", segment_unspaced=False) == ["区域指标", "笑脸"]


@pytest.mark.parametrize("text", ["にっこり笑う顔", "区域指标 笑脸", "หน้ายิ้มยิงฟัน"])
def test_unspaced_alt_text_of_three_words_passes_the_length_rule_only_when_segmented(text):
    table = pairs([{"text": text}])
    assert failing(table, "text_length") == [False]
    assert failing(table, "text_length", FilterConfig(segment_unspaced=False)) == [True]


def test_unspaced_detection_agrees_at_every_range_boundary():
    from align_lite.data.unigrams import UNSPACED_PATTERN, UNSPACED_RANGES

    points = sorted({p for lo, hi in UNSPACED_RANGES for p in (lo - 1, lo, hi, hi + 1)})
    texts = [f"x {chr(p)}" for p in points if not 0xD800 <= p <= 0xDFFF]
    tb = text_bytes(pa.array(texts))
    expected = [i for i, t in enumerate(texts) if UNSPACED_PATTERN.search(t)]
    assert tb.unspaced_rows.tolist() == expected
    assert 0 < len(expected) < len(texts)


def multilingual_table(n: int, seed: int) -> pa.Table:
    """Mixed-script rows: repeated annotations, pairs of them, shared images, a language column."""
    rng = np.random.default_rng(seed)
    languages = list(MULTILINGUAL)
    rows = []
    for i in range(n):
        language = languages[int(rng.integers(len(languages)))]
        pool = MULTILINGUAL[language]
        parts = [pool[int(j)] for j in rng.integers(0, len(pool), int(rng.integers(1, 4)))]
        seps = ["", " ", ", "]
        text = None if None in parts else "".join(p + seps[int(rng.integers(3))] for p in parts)
        rows.append({"file_name": f"images/{int(rng.integers(0, n // 2))}.png", "text": text,
                     "width": int(rng.integers(150, 500)), "height": 300, "language": language})
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize("segment", [True, False])
@pytest.mark.parametrize("top_k", [10, 60, 100_000_000])
def test_vectorised_rules_equal_the_reference_on_mixed_scripts(segment, top_k):
    from align_lite.data.unigrams import unigrams

    table = multilingual_table(1500, seed=top_k)
    config = FilterConfig(rare_token_top_k=top_k, max_images_per_alt_text=4,
                          max_alt_texts_per_image=4, segment_unspaced=segment)
    fast = filter_masks(table, config)
    slow = reference_filter_masks(table.to_pylist(), config)
    for rule in RULES:
        np.testing.assert_array_equal(fast[rule], slow[rule], err_msg=rule)
    tb = text_bytes(table.column("text"), segment)
    words = [unigrams(t, segment) for t in table.column("text").to_pylist()]
    assert normalized_texts(tb).to_pylist() == [" ".join(w) for w in words]
    assert tb.words_per_row.tolist() == [len(w) for w in words]
    assert fast["text_length"].any() and not fast["text_length"].all()


def test_segmentation_changes_only_rows_of_unspaced_scripts():
    table = multilingual_table(600, seed=5)
    on = filter_masks(table)["text_length"]
    off = filter_masks(table, FilterConfig(segment_unspaced=False))["text_length"]
    language = np.array(table.column("language").to_pylist())
    changed = set(language[on != off])
    assert changed and changed <= {"ja", "zh", "th", "emoji"}
    # without segmentation a ja/zh/th row needs 3+ spaced phrases to pass (about half fail);
    # with it, only one-word annotations ("红心") are too short
    cjk = np.isin(language, ["ja", "zh", "th"])
    assert on[cjk].mean() < 0.2 and off[cjk].mean() > 0.4


def test_segment_unspaced_false_reproduces_the_whitespace_counts():
    from align_lite.data.unigrams import WORD_PATTERN

    table = multilingual_table(400, seed=9)
    tb = text_bytes(table.column("text"), segment_unspaced=False)
    texts = table.column("text").to_pylist()
    expected = [len(WORD_PATTERN.findall((t or "").lower())) for t in texts]
    assert tb.words_per_row.tolist() == expected
    # on text without unspaced scripts the setting changes nothing at all
    web = random_web_table(800, seed=4)
    config = FilterConfig(rare_token_top_k=50, max_alt_texts_per_image=3)
    report = apply_filters(web, config).report.to_dict()
    whitespace_only = dataclasses.replace(config, segment_unspaced=False)
    old = apply_filters(web, whitespace_only).report.to_dict()
    assert report == old


def test_report_by_language_adds_up_per_group_and_in_total():
    from align_lite.data.filter_report import report_by

    table = multilingual_table(900, seed=2)
    extra = {"eval_duplicate": np.arange(900) % 17 == 0}
    result = apply_filters(table, FilterConfig(rare_token_top_k=40), extra_rules=extra,
                           skipped={"corrupt_image": 5}, group_by="language")
    by = result.report.by_group
    assert by is not None and by.rules == [*RULES, "eval_duplicate"]
    languages = table.column("language").to_pylist()
    assert [g.group for g in by.groups] == sorted(set(languages))
    for g in by.groups:
        rows = [i for i, lang in enumerate(languages) if lang == g.group]
        assert g.rows_in == len(rows) == g.kept + sum(g.removed.values())
        assert g.kept == int((result.first_failed[rows] < 0).sum())
    total = by.total()
    assert total.rows_in == table.num_rows == result.report.rows_in - 5
    assert total.kept == result.report.kept
    table_rules = [r for r in result.report.rules if r.rule != "bad_input"]
    assert total.removed == {r.rule: r.removed for r in table_rules}
    assert report_by(table, result, "language") == by
    frame = by.to_frame()
    assert frame.loc["ja", "rows_in"] == next(g.rows_in for g in by.groups if g.group == "ja")
    assert (frame["rows_in"] == frame.drop(columns="rows_in").sum(axis=1)).all()
    assert "| **total** | 900 |" in result.report.to_markdown()
    groups = result.report.to_dict()["by_group"]["groups"]
    assert groups["th"]["rows_in"] == frame.loc["th", "rows_in"]


def test_report_by_missing_values_and_wrong_inputs():
    from align_lite.data.filter_report import report_by

    table = pairs([{"language": "en"}, {"language": None}, {"language": "en", "text": "x"}])
    result = apply_filters(table, group_by="language")
    groups = {g.group: (g.rows_in, g.kept) for g in result.report.by_group.groups}
    assert groups == {"(missing)": (1, 1), "en": (2, 1)}
    with pytest.raises(ValueError, match="lacks column"):
        apply_filters(table, group_by="locale")
    with pytest.raises(ValueError, match="covers 3 rows"):
        report_by(table.slice(0, 2), result, "language")


def test_cli_exposes_the_segmentation_switch():
    from align_lite.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["data", "filter", "in", "--out", "o"]).segment_unspaced is True
    args = parser.parse_args(["data", "filter", "in", "--out", "o", "--no-segment-unspaced"])
    assert args.segment_unspaced is False
