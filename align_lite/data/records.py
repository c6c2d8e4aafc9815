"""Image–text pair tables and their on-disk format.

Every data set in align_lite is an Arrow table with at least two columns:

* ``file_name`` — the image's path relative to the data set's root folder;
* ``text`` — the alt-text (one row per image–text pair; an image may appear in many rows).

On disk a data set is a folder holding the images and a ``metadata.jsonl`` (or
``metadata.parquet``) with one row per pair. That is the layout Hugging Face ``datasets``
reads as an ``imagefolder``, so ``datasets.load_dataset("imagefolder", data_dir=...)`` works on
anything align_lite writes.

Reading never crashes on a bad row: malformed JSON, non-UTF-8 bytes, a missing ``file_name`` or
``text`` are counted in a :class:`SkipLog`, with examples, and the row is dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

METADATA_JSONL = "metadata.jsonl"
METADATA_PARQUET = "metadata.parquet"
REQUIRED_COLUMNS = ("file_name", "text")


class DataFormatError(ValueError):
    """The input cannot be used at all (as opposed to single bad rows, which are skipped)."""


@dataclass
class SkipLog:
    """Counts of skipped rows by reason, with a few examples of each.

    >>> log = SkipLog(); log.skip("empty_text", "row 3"); log.counts["empty_text"]
    1
    """

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_examples: int = 5

    def skip(self, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append(detail)

    def merge(self, other: SkipLog) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            shown = self.examples.setdefault(reason, [])
            shown.extend(other.examples.get(reason, [])[: self.max_examples - len(shown)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def since(self, before: Counter) -> dict[str, int]:
        """The counts added since ``before`` (a copy of ``counts`` taken earlier), by reason."""
        return {reason: n - before.get(reason, 0) for reason, n in self.counts.items() if n > before.get(reason, 0)}

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "counts": dict(sorted(self.counts.items())),
            "examples": {k: v for k, v in sorted(self.examples.items()) if k in self.counts},
        }

    def summary(self) -> str:
        if not self.total:
            return "no rows skipped"
        parts = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.counts.items()))
        return f"skipped {self.total} rows ({parts})"


def safe_relative_path(file_name: str) -> bool:
    """``file_name`` stays inside the data set's folder (no absolute path, no ``..``)."""
    path = PurePosixPath(file_name.replace("\\", "/"))
    return not path.is_absolute() and ".." not in path.parts and file_name.strip() != ""


def resolve_inside(root: str | Path, file_name: str) -> Path | None:
    """The file ``file_name`` names under ``root``, or ``None`` when it would leave ``root``.

    The name must be relative without ``..`` (:func:`safe_relative_path`) *and*, once symbolic
    links are followed, must still lie inside ``root``'s real folder: a link in the data set to
    ``/etc/hostname`` (or to a sibling folder) is refused like ``../../etc/hostname`` is. A link
    to another file inside the folder is fine. The file need not exist (a missing image is the
    caller's ``missing_file``, not an unsafe name).

    >>> resolve_inside("/data", "../secret") is None
    True
    """
    if not safe_relative_path(file_name):
        return None
    base = Path(root).resolve()
    try:
        target = (base / file_name).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return target if target.is_relative_to(base) and target != base else None


@dataclass(frozen=True)
class PairSource:
    """Where a pair table came from: its rows resolve image paths against ``root``."""

    root: Path
    metadata: Path
    format: str  # "jsonl" | "parquet"


def locate(path: str | Path) -> PairSource:
    """Find the metadata of a data set given a folder or a ``.jsonl``/``.parquet`` file."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or folder")
    if path.is_dir():
        for name, fmt in ((METADATA_JSONL, "jsonl"), (METADATA_PARQUET, "parquet")):
            if (path / name).is_file():
                return PairSource(root=path, metadata=path / name, format=fmt)
        raise DataFormatError(
            f"{path}: folder has neither {METADATA_JSONL} nor {METADATA_PARQUET}"
        )
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".json"}:
        return PairSource(root=path.parent, metadata=path, format="jsonl")
    if suffix == ".parquet":
        return PairSource(root=path.parent, metadata=path, format="parquet")
    raise DataFormatError(f"{path}: expected a folder, a .jsonl or a .parquet file")


def read_pairs(path: str | Path, log: SkipLog | None = None) -> tuple[pa.Table, PairSource]:
    """Read a data set's pair table; bad rows are counted in ``log`` and dropped.

    Returns the table (``file_name``, ``text`` and any extra columns, in file order) and where it
    came from. Raises :class:`DataFormatError` when nothing usable is there.
    """
    source = locate(path)
    log = log if log is not None else SkipLog()
    if source.format == "jsonl":
        table = _read_jsonl(source.metadata, log)
    else:
        table = _read_parquet(source.metadata, log)
    return table, source


def _read_jsonl(path: Path, log: SkipLog) -> pa.Table:
    rows: list[dict] = []
    places: list[str] = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path.name}:{line_no}"
            row = _parse_jsonl_line(raw, where, log)
            if row is not None:
                rows.append(row)
                places.append(where)
    if not rows:
        raise DataFormatError(f"{path}: no usable rows ({log.summary()})")
    try:
        return pa.Table.from_pylist(_align_columns(rows))
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. a column that is 1 here, "wide" there
        rows = _drop_odd_values(rows, places, log)
    if not rows:
        raise DataFormatError(f"{path}: no usable rows ({log.summary()})")
    try:
        return pa.Table.from_pylist(_align_columns(rows))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise DataFormatError(f"{path}: columns with mixed types ({err})") from err


def _kind(value: object) -> str:
    """The JSON kind of a value, numbers counted as one kind (Arrow widens ints to floats)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


def _drop_odd_values(rows: list[dict], places: list[str], log: SkipLog) -> list[dict]:
    """Skip (as ``malformed_value``, naming the line) each row whose value in some column is of
    another JSON kind than most rows' values there (``"width": "wide"`` among numbers)."""
    kinds: dict[str, Counter] = {}
    for row in rows:
        for key, value in row.items():
            if value is not None:
                kinds.setdefault(key, Counter())[_kind(value)] += 1
    expected = {key: counts.most_common(1)[0][0] for key, counts in kinds.items() if len(counts) > 1}
    kept = []
    for row, where in zip(rows, places):
        odd = next(((k, v) for k, v in row.items() if k in expected and v is not None and _kind(v) != expected[k]),
                   None)
        if odd is None:
            kept.append(row)
        else:
            log.skip("malformed_value", f"{where}: {odd[0]} is {odd[1]!r}, expected a {expected[odd[0]]}")
    return kept


def _parse_jsonl_line(raw: bytes, where: str, log: SkipLog) -> dict | None:
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark (Windows editors) is not an error
    except UnicodeDecodeError:
        log.skip("not_utf8", f"{where}: bytes are not UTF-8")
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        log.skip("bad_json", f"{where}: {err.msg}")
        return None
    if not isinstance(row, dict):
        log.skip("bad_json", f"{where}: not a JSON object")
        return None
    return _check_row(row, where, log)


def _check_row(row: dict, where: str, log: SkipLog) -> dict | None:
    name = row.get("file_name")
    if not isinstance(name, str) or not name.strip():
        log.skip("missing_file_name", f"{where}: no file_name")
        return None
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        log.skip("empty_text", f"{where}: empty or missing text ({name})")
        return None
    if "\ufffd" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        log.skip("not_utf8", f"{where}: text has undecodable characters ({name})")
        return None
    return row


def _align_columns(rows: list[dict]) -> list[dict]:
    """Give every row the same keys (missing extras become None) so Arrow infers one schema."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return [{k: row.get(k) for k in keys} for row in rows]


def _read_parquet(path: Path, log: SkipLog) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataFormatError(f"{path}: unreadable parquet ({err})") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataFormatError(f"{path}: missing column(s) {', '.join(missing)}")
    rows = [
        _check_row(row, f"{path.name}:{i}", log) for i, row in enumerate(table.to_pylist(), 1)
    ]
    kept = [row for row in rows if row is not None]
    if not kept:
        raise DataFormatError(f"{path}: no usable rows ({log.summary()})")
    return pa.Table.from_pylist(kept, schema=table.schema)


def require_columns(table: pa.Table, columns: tuple[str, ...]) -> None:
    """Raise a ValueError naming the ``columns`` that ``table`` lacks."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(
            f"the pair table lacks column(s) {', '.join(missing)}; it has {table.column_names}"
        )


def write_pairs(table: pa.Table, out_dir: str | Path, fmt: str = "jsonl") -> Path:
    """Write ``table`` as ``out_dir/metadata.jsonl`` (or ``.parquet``); returns the file written.

    Images are not touched: callers place them under ``out_dir`` at the rows' ``file_name``.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataFormatError(f"cannot write pairs without column(s) {', '.join(missing)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        target = out_dir / METADATA_PARQUET
        pq.write_table(table, target)
        return target
    if fmt != "jsonl":
        raise ValueError(f"unknown format {fmt!r}: use 'jsonl' or 'parquet'")
    target = out_dir / METADATA_JSONL
    tmp = target.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for batch in table.to_batches(max_chunksize=65536):
            for row in batch.to_pylist():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(target)
    return target


class OutputExistsError(DataFormatError):
    """The output folder already holds files and overwriting was not asked for."""


@contextlib.contextmanager
def fresh_output(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Write a data set into a temporary sibling of ``out_dir`` and put it in place at the end.

    Yields the staging folder. When the block ends normally, the staging folder becomes
    ``out_dir`` (the old one, if ``overwrite``, is renamed aside first and deleted after), so a
    reader never sees half a data set. When the block raises (or the process dies), ``out_dir``
    is left exactly as it was and the staging folder is removed (or, after a kill, left as a
    hidden ``.NAME.tmp-PID`` sibling). Refuses a non-empty ``out_dir`` unless ``overwrite``:
    nothing is overwritten by accident, and no orphan file of an earlier run stays behind.

    Raises:
        OutputExistsError: ``out_dir`` is a non-empty folder (or a file) and not ``overwrite``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out_dir} is not empty; choose another folder or pass --overwrite "
                                "(overwrite=True) to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)
