"""Pair tables on disk (align_lite.data.records): round trips, counted skips, clear errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from align_lite.data.records import (
    METADATA_JSONL,
    METADATA_PARQUET,
    DataFormatError,
    SkipLog,
    locate,
    read_pairs,
    write_pairs,
)

ROWS = [
    {"file_name": "images/0.png", "text": "a red circle", "width": 256, "source": "web"},
    {"file_name": "images/1.png", "text": "Zwei grüne Quadrate ✓", "width": 300, "source": "web"},
    {"file_name": "images/0.png", "text": "the same image, another caption", "width": 256, "source": None},
]


def write_lines(path, lines: list[bytes | str | dict]) -> None:
    """A metadata.jsonl from raw lines: dicts are JSON-encoded, str UTF-8 encoded, bytes as they are."""
    out = bytearray()
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line, ensure_ascii=False)
        if isinstance(line, str):
            line = line.encode("utf-8")
        out += line + b"\n"
    path.write_bytes(bytes(out))


def good(i: int) -> dict:
    return {"file_name": f"images/{i}.png", "text": f"caption number {i}"}


# ------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_round_trip_keeps_rows_order_and_extra_columns(tmp_path, fmt):
    table = pa.Table.from_pylist(ROWS)
    written = write_pairs(table, tmp_path / "set", fmt=fmt)
    assert written.name == (METADATA_JSONL if fmt == "jsonl" else METADATA_PARQUET)
    assert written.is_file()

    log = SkipLog()
    back, source = read_pairs(tmp_path / "set", log)
    assert log.total == 0
    assert source.format == fmt
    assert source.root == tmp_path / "set"
    assert source.metadata == written
    assert back.column_names == ["file_name", "text", "width", "source"]
    assert back.to_pylist() == ROWS


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_reading_the_metadata_file_directly_resolves_root_to_its_folder(tmp_path, fmt):
    written = write_pairs(pa.Table.from_pylist(ROWS), tmp_path / "set", fmt=fmt)
    back, source = read_pairs(written)
    assert source.root == tmp_path / "set"
    assert back.column("text").to_pylist() == [r["text"] for r in ROWS]


def test_jsonl_is_utf8_not_ascii_escaped(tmp_path):
    written = write_pairs(pa.Table.from_pylist(ROWS), tmp_path)
    raw = written.read_bytes()
    assert "grüne".encode() in raw and b"\\u00fc" not in raw
    assert len(raw.splitlines()) == len(ROWS)
    assert not list(tmp_path.glob("*.tmp")), "the temporary file must be renamed away"


def test_write_requires_file_name_and_text(tmp_path):
    with pytest.raises(DataFormatError, match="text"):
        write_pairs(pa.table({"file_name": ["a.png"]}), tmp_path)
    with pytest.raises(DataFormatError, match="file_name"):
        write_pairs(pa.table({"text": ["a caption"]}), tmp_path)
    assert not (tmp_path / METADATA_JSONL).exists()


def test_write_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        write_pairs(pa.Table.from_pylist(ROWS), tmp_path, fmt="csv")


def test_rows_with_differing_keys_get_one_schema_with_nulls(tmp_path):
    write_lines(tmp_path / METADATA_JSONL, [
        {"file_name": "a.png", "text": "first", "width": 10},
        {"file_name": "b.png", "text": "second", "license": "cc-by"},
        {"file_name": "c.png", "text": "third"},
    ])
    table, _ = read_pairs(tmp_path)
    assert set(table.column_names) == {"file_name", "text", "width", "license"}
    assert table.column("width").to_pylist() == [10, None, None]
    assert table.column("license").to_pylist() == [None, "cc-by", None]
    assert table.column("file_name").to_pylist() == ["a.png", "b.png", "c.png"]


def test_extra_column_with_mixed_types_skips_the_odd_row_not_the_folder(tmp_path):
    write_lines(tmp_path / METADATA_JSONL, [
        {"file_name": "a.png", "text": "first", "width": 10},
        {"file_name": "b.png", "text": "second", "width": "wide"},
    ])
    log = SkipLog()
    table, _ = read_pairs(tmp_path, log)  # a tie: the kind seen first is the column's
    assert table["file_name"].to_pylist() == ["a.png"]
    assert log.examples["malformed_value"] == ["metadata.jsonl:2: width is 'wide', expected a number"]


# ------------------------------------------------------------------------------- bad rows


def test_bad_jsonl_rows_are_counted_by_reason_and_skipped(tmp_path):
    write_lines(tmp_path / METADATA_JSONL, [
        good(0),
        '{"file_name": "images/x.png", "text": "unterminated',  # malformed JSON
        b'{"file_name": "images/y.png", "text": "caf\xff\xfe"}',  # not UTF-8
        b"\xff\xfe\x00garbage",  # not UTF-8 at all
        good(1),
        {"text": "no file name here"},  # missing file_name
        {"file_name": "", "text": "blank file name"},
        {"file_name": 7, "text": "file name is a number"},
        {"file_name": "images/z.png", "text": "   \t "},  # whitespace text
        {"file_name": "images/z.png", "text": ""},  # empty text
        {"file_name": "images/z.png"},  # no text
        {"file_name": "images/z.png", "text": None},
        "[1, 2, 3]",  # JSON, but not an object
        '"just a string"',
        "null",
        '{"file_name": "images/s.png", "text": "lone \\ud800 surrogate"}',
        "",  # blank lines are not rows
        "   ",
        good(2),
    ])
    log = SkipLog()
    table, _ = read_pairs(tmp_path, log)
    assert table.column("file_name").to_pylist() == ["images/0.png", "images/1.png", "images/2.png"]
    assert table.column("text").to_pylist() == ["caption number 0", "caption number 1", "caption number 2"]
    assert dict(log.counts) == {
        "bad_json": 4,
        "not_utf8": 3,
        "missing_file_name": 3,
        "empty_text": 4,
    }
    assert log.total == 14
    # examples say where: file name and line number
    assert any(e.startswith(f"{METADATA_JSONL}:2:") for e in log.examples["bad_json"])
    assert any(e.startswith(f"{METADATA_JSONL}:3:") for e in log.examples["not_utf8"])
    assert "not a JSON object" in " ".join(log.examples["bad_json"])


def test_skip_log_keeps_at_most_max_examples(tmp_path):
    write_lines(tmp_path / METADATA_JSONL, [good(0)] + ["{broken"] * 12)
    log = SkipLog()
    read_pairs(tmp_path, log)
    assert log.counts["bad_json"] == 12
    assert len(log.examples["bad_json"]) == log.max_examples == 5
    assert log.to_dict()["total"] == 12
    assert "bad_json: 12" in log.summary()


def test_skip_log_merge_and_summary():
    a, b = SkipLog(), SkipLog()
    assert a.summary() == "no rows skipped"
    for i in range(4):
        a.skip("bad_json", f"a{i}")
    for i in range(3):
        b.skip("bad_json", f"b{i}")
    b.skip("empty_text", "b-empty")
    a.merge(b)
    assert a.counts == {"bad_json": 7, "empty_text": 1}
    assert a.examples["bad_json"] == ["a0", "a1", "a2", "a3", "b0"]
    assert a.examples["empty_text"] == ["b-empty"]
    assert a.total == 8
    assert a.summary() == "skipped 8 rows (bad_json: 7, empty_text: 1)"


def test_utf8_byte_order_mark_does_not_cost_the_first_row(tmp_path):
    raw = ("\ufeff" + json.dumps(good(0)) + "\n" + json.dumps(good(1)) + "\n").encode("utf-8")
    (tmp_path / METADATA_JSONL).write_bytes(raw)
    log = SkipLog()
    table, _ = read_pairs(tmp_path, log)
    assert log.total == 0
    assert table.column("file_name").to_pylist() == ["images/0.png", "images/1.png"]


def test_crlf_line_endings_are_read(tmp_path):
    (tmp_path / METADATA_JSONL).write_bytes(
        (json.dumps(good(0)) + "\r\n" + json.dumps(good(1)) + "\r\n").encode()
    )
    table, _ = read_pairs(tmp_path)
    assert table.num_rows == 2


def test_all_bad_jsonl_is_a_data_format_error(tmp_path):
    write_lines(tmp_path / METADATA_JSONL, ["{oops", b"\xff\xfe\xfd", {"text": "no name"}, {"file_name": "a.png"}])
    log = SkipLog()
    with pytest.raises(DataFormatError, match="no usable rows"):
        read_pairs(tmp_path, log)
    assert log.total == 4


def test_empty_jsonl_is_a_data_format_error(tmp_path):
    (tmp_path / METADATA_JSONL).write_bytes(b"\n\n")
    with pytest.raises(DataFormatError):
        read_pairs(tmp_path)


def test_bad_parquet_rows_are_counted_and_schema_kept(tmp_path):
    table = pa.table({
        "file_name": ["a.png", None, "c.png", "d.png", "  "],
        "text": ["fine", "no name", "", "also fine", "blank name"],
        "width": [1, 2, 3, 4, 5],
    })
    pq.write_table(table, tmp_path / METADATA_PARQUET)
    log = SkipLog()
    back, source = read_pairs(tmp_path, log)
    assert source.format == "parquet"
    assert back.schema == table.schema
    assert back.to_pylist() == [
        {"file_name": "a.png", "text": "fine", "width": 1},
        {"file_name": "d.png", "text": "also fine", "width": 4},
    ]
    assert dict(log.counts) == {"missing_file_name": 2, "empty_text": 1}


def test_parquet_errors(tmp_path):
    pq.write_table(pa.table({"file_name": ["a.png"]}), tmp_path / "no_text.parquet")
    with pytest.raises(DataFormatError, match="text"):
        read_pairs(tmp_path / "no_text.parquet")
    pq.write_table(pa.table({"file_name": ["a.png"], "text": [" "]}), tmp_path / "all_bad.parquet")
    with pytest.raises(DataFormatError, match="no usable rows"):
        read_pairs(tmp_path / "all_bad.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(DataFormatError, match="unreadable"):
        read_pairs(tmp_path / "junk.parquet")


# ------------------------------------------------------------------------------- locate


def test_locate_missing_path(tmp_path):
    with pytest.raises(DataFormatError, match="no such file"):
        locate(tmp_path / "nope")


def test_locate_folder_without_metadata(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataFormatError, match="neither"):
        locate(tmp_path)


def test_locate_wrong_suffix(tmp_path):
    bad = tmp_path / "metadata.csv"
    bad.write_text("file_name,text\na.png,hi\n")
    with pytest.raises(DataFormatError, match="expected"):
        locate(bad)
    with pytest.raises(DataFormatError):
        read_pairs(bad)


def test_locate_prefers_jsonl_and_accepts_files(tmp_path):
    write_pairs(pa.Table.from_pylist(ROWS), tmp_path, fmt="parquet")
    assert locate(tmp_path).format == "parquet"
    write_pairs(pa.Table.from_pylist(ROWS), tmp_path, fmt="jsonl")
    source = locate(tmp_path)
    assert (source.format, source.metadata.name) == ("jsonl", METADATA_JSONL)
    other = tmp_path / "sub" / "pairs.JSON"
    other.parent.mkdir()
    other.write_text(json.dumps(good(0)) + "\n")
    source = locate(other)
    assert (source.format, source.root, source.metadata) == ("jsonl", other.parent, other)


def test_a_malformed_value_skips_its_row_and_names_the_line(tmp_path):
    # Before: one "width": "wide" among numbers rejected the whole folder ("columns with mixed types").
    rows = [{"file_name": f"{i}.png", "text": f"a photo {i}", "width": 64 + i} for i in range(5)]
    rows[2]["width"] = "wide"
    rows[4]["width"] = 70.5  # ints and floats are one kind
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    log = SkipLog()
    table, _ = read_pairs(tmp_path, log)
    assert table["file_name"].to_pylist() == ["0.png", "1.png", "3.png", "4.png"]
    assert table["width"].to_pylist() == [64, 65, 67, 70.5]
    assert dict(log.counts) == {"malformed_value": 1}
    assert log.examples["malformed_value"] == ["metadata.jsonl:3: width is 'wide', expected a number"]
