"""The on-disk filtering pipeline behind ``align-lite data filter``.

read pairs → decode every image once (size, content hash, bad input) → optional eval-set
deduplication → the paper's rules (:mod:`.filters`) → write the kept rows and their images.

Every input row ends in exactly one place: kept, skipped as bad input (with its reason), or
removed by one rule; the :class:`~align_lite.data.filters.FilterReport` adds up to the input.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from align_lite.data.dedup import PAPER_NEAR_DUPLICATE_COSINE, ProtectedImages, eval_duplicate_mask
from align_lite.data.filter_report import FilterReport
from align_lite.data.filters import FilterConfig, apply_filters
from align_lite.data.images import BadImageError, ImageFacts, probe_image, thumbnail_embedding
from align_lite.data.records import (DataFormatError, SkipLog, fresh_output, read_pairs, resolve_inside,
                                     write_pairs)
from align_lite.progress import progress

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


@dataclass
class ProbedImages:
    """Per-row facts of the images a table points to (rows whose image is bad are dropped)."""

    table: pa.Table  # input rows with usable images, plus width, height, image_key columns
    embeddings: np.ndarray | None  # (N, D) thumbnails, when asked for


Decoded = tuple[ImageFacts | None, np.ndarray | None, tuple[str, str]]


def decode_images(paths: list[Path], embed: bool, workers: int, desc: str) -> list[Decoded]:
    """Decode each path fully, in threads: (facts, thumbnail or None, ("", "")) per good image,
    (None, None, (reason, detail)) per bad one; in the order of ``paths``."""

    def decode(path: Path) -> Decoded:
        try:
            facts, image = probe_image(path)
        except BadImageError as err:
            return None, None, (err.reason, err.detail)
        return facts, (thumbnail_embedding(image) if embed else None), ("", "")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(progress(pool.map(decode, paths), total=len(paths), desc=desc))


def probe_images(
    table: pa.Table, root: Path, log: SkipLog, embed: bool = False, workers: int = 2
) -> ProbedImages:
    """Decode each distinct image of ``table`` once; rows whose image fails are counted and dropped."""
    names = table.column("file_name").to_pylist()
    unique = list(dict.fromkeys(names))
    inside = {name: resolve_inside(root, name) for name in unique}
    safe = [name for name in unique if inside[name] is not None]
    decoded = dict(zip(safe, decode_images([inside[name] for name in safe], embed, workers, "decode images")))

    def outside(name: str) -> Decoded:
        return None, None, ("unsafe_file_name", f"{name!r} leads outside the data set")

    results = {name: decoded[name] if name in decoded else outside(name) for name in unique}
    keep = np.zeros(len(names), dtype=bool)
    for i, name in enumerate(names):
        facts, _, (reason, detail) = results[name]
        if facts is None:
            log.skip(reason, f"row {i}: {detail}")
        else:
            keep[i] = True
    kept = table.filter(pa.array(keep))
    facts = [results[name][0] for name in kept.column("file_name").to_pylist()]
    kept = _set_column(kept, "width", pa.array([f.width for f in facts], pa.int32()))
    kept = _set_column(kept, "height", pa.array([f.height for f in facts], pa.int32()))
    kept = _set_column(kept, "image_key", pa.array([f.sha256 for f in facts], pa.string()))
    embeddings = None
    if embed:
        rows = [results[name][1] for name in kept.column("file_name").to_pylist()]
        embeddings = np.stack(rows) if rows else np.zeros((0, 768), np.float32)
    return ProbedImages(kept, embeddings)


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def load_protected_images(path: str | Path, workers: int = 2, log: SkipLog | None = None) -> ProtectedImages:
    """Hashes and thumbnail embeddings of an eval set: a pair folder, or any folder of images.

    Eval images that cannot be decoded are counted in ``log`` (they cannot be protected)."""
    path = Path(path)
    log = log if log is not None else SkipLog()
    try:
        table, source = read_pairs(path)
        root, names = source.root, list(dict.fromkeys(table.column("file_name").to_pylist()))
    except DataFormatError:
        if not path.is_dir():
            raise
        root = path
        names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    files = []
    for name in names:
        inside = resolve_inside(root, name)
        if inside is None:
            log.skip("unsafe_file_name", f"eval image: {name!r} leads outside {root}")
        else:
            files.append(inside)
    if not files:
        raise DataFormatError(f"{path}: no eval images found")

    probed = []
    for facts, embedding, (reason, detail) in decode_images(files, True, workers, "eval images"):
        if facts is None:
            log.skip(reason, f"eval image: {detail}")
        else:
            probed.append((facts.sha256, embedding))
    if not probed:
        raise DataFormatError(f"{path}: none of the {len(files)} eval images could be decoded")
    return ProtectedImages.from_parts([h for h, _ in probed], np.stack([e for _, e in probed]))


@dataclass
class CurateResult:
    report: FilterReport
    skipped: SkipLog
    output: Path  # the metadata file written


def curate(
    source: str | Path,
    out_dir: str | Path,
    config: FilterConfig = FilterConfig(),
    eval_set: ProtectedImages | None = None,
    near_duplicate_cosine: float = PAPER_NEAR_DUPLICATE_COSINE,
    workers: int = 2,
    overwrite: bool = False,
    link: bool = False,
) -> CurateResult:
    """Filter the data set at ``source`` into ``out_dir`` (kept rows + their images).

    The images are copied (``link=True``: hard-linked where the file system allows, so an edit
    of one changes the other). The output is written through
    :func:`~align_lite.data.records.fresh_output`: a non-empty ``out_dir`` is refused unless
    ``overwrite``, and an interrupted run leaves it as it was."""
    log = SkipLog()
    table, where = read_pairs(source, log)
    out_dir = Path(out_dir)
    if out_dir.resolve() == where.root.resolve():
        raise DataFormatError("the output folder must differ from the input folder")
    probed = probe_images(table, where.root, log, embed=eval_set is not None, workers=workers)
    extra = {}
    if eval_set is not None:
        hashes = probed.table.column("image_key").to_pylist()
        extra["eval_duplicate"] = eval_duplicate_mask(hashes, probed.embeddings, eval_set, near_duplicate_cosine)
    result = apply_filters(probed.table, config, extra_rules=extra, skipped=dict(log.counts))
    _attach_skip_examples(result.report, log)
    kept = result.kept.select([c for c in table.column_names])  # the input's own columns
    with fresh_output(out_dir, overwrite) as staging:
        written = write_pairs(kept, staging, fmt=where.format)
        copy_images(kept.column("file_name").to_pylist(), where.root, staging, link)
    return CurateResult(result.report, log, out_dir / written.name)


def _attach_skip_examples(report: FilterReport, log: SkipLog) -> None:
    for outcome in report.rules:
        if outcome.rule == "bad_input":
            outcome.examples = [
                f"{reason}: {example}" for reason in sorted(log.examples) for example in log.examples[reason]
            ][:10]


def copy_images(file_names: list[str], src_root: Path, dst_root: Path, link: bool = False) -> None:
    """Place each image at the same relative path under ``dst_root``: a copy, or with ``link`` a
    hard link where the file system allows one (else a copy)."""
    for name in progress(list(dict.fromkeys(file_names)), desc="write images"):
        src, dst = resolve_inside(src_root, name), dst_root / name
        if src is None:  # probe_images has already dropped these rows
            raise DataFormatError(f"{name!r} leads outside {src_root}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            dst.unlink()
        if not link:
            shutil.copy2(src, dst)
            continue
        try:
            os.link(src, dst)
        except OSError:  # another file system, or no hard links there: a copy instead
            shutil.copy2(src, dst)
