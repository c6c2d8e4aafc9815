"""Loading image–text pairs for training and evaluation, from any of the usual places.

* a pair folder / ``metadata.jsonl`` / ``.parquet`` (the project's own format): :class:`PairDataset`
* a Hugging Face ``datasets`` data set, local or on the hub (hub names work on Colab):
  :func:`hf_pairs`
* webdataset tar shards (``{key}.jpg|png|webp`` + ``{key}.txt|json``): :func:`webdataset_pairs`,
  and :func:`write_webdataset` to make them from a pair folder.

Bad samples never stop a run: they are skipped and counted, in a :class:`SkipLog` where the
loader runs in this process, or as ``n_skipped`` in each collated batch (which also works inside
``DataLoader`` worker processes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import Dataset

from align_lite.data.images import BadImageError, open_rgb, read_image_bytes, to_rgb
from align_lite.data.records import SkipLog, read_pairs, resolve_inside, write_pairs
from align_lite.progress import progress

Sample = dict[str, Any]


class PairDataset(Dataset):
    """Map-style pairs read from disk; ``dataset[i]`` is a dict or ``None`` for a bad image.

    ``transform`` maps a PIL RGB image to whatever the model takes (e.g.
    :func:`align_lite.data.images.image_transform`).
    """

    def __init__(self, source: str | Path, transform: Callable | None = None, log: SkipLog | None = None):
        self.log = log if log is not None else SkipLog()
        table, where = read_pairs(source, self.log)
        self.root = where.root
        self.file_names: list[str] = table.column("file_name").to_pylist()
        self.texts: list[str] = table.column("text").to_pylist()
        self.table = table
        self.transform = transform

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> Sample | None:
        name = self.file_names[index]
        path = resolve_inside(self.root, name)
        if path is None:
            self.log.skip("unsafe_file_name", f"row {index}: {name!r} leads outside the data set")
            return None
        try:
            image = open_rgb(path, name=name)
        except BadImageError as err:
            self.log.skip(err.reason, f"row {index}: {err}")
            return None
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "text": self.texts[index], "index": index}


def collate_pairs(batch: Sequence[Sample | None], tokenizer: Callable | None = None) -> dict[str, Any]:
    """Drop ``None`` samples, stack image tensors to (B, 3, H, W), tokenize texts if asked.

    Returns ``image``, ``text`` (list of str), ``index`` (B,), ``n_skipped`` and, with a tokenizer,
    ``input_ids``/``attention_mask`` (B, L).
    """
    good = [s for s in batch if s is not None]
    out: dict[str, Any] = {"n_skipped": len(batch) - len(good), "text": [s["text"] for s in good]}
    if good and isinstance(good[0]["image"], torch.Tensor):
        out["image"] = torch.stack([s["image"] for s in good])
    else:
        out["image"] = [s["image"] for s in good]
    out["index"] = torch.tensor([s.get("index", -1) for s in good], dtype=torch.long)
    if tokenizer is not None and good:
        out.update(tokenizer(out["text"]))
    return out


def _text_of(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) and value.strip() else None


def _image_of(value: Any) -> Image.Image:
    """A ``datasets`` image cell (PIL image, {'bytes', 'path'} dict or raw bytes) → RGB."""
    if isinstance(value, Image.Image):
        return to_rgb(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return open_rgb(value["bytes"])
        if value.get("path"):
            return open_rgb(value["path"])
        raise BadImageError("missing_file", "image cell has neither bytes nor path")
    if isinstance(value, bytes):
        return open_rgb(value)
    raise BadImageError("corrupt_image", f"unsupported image cell of type {type(value).__name__}")


def hf_pairs(
    name_or_path: str,
    split: str = "train",
    image_column: str = "image",
    text_column: str = "text",
    streaming: bool = False,
    log: SkipLog | None = None,
    **load_kwargs: Any,
) -> Iterator[Sample]:
    """Yield ``{"image": PIL RGB, "text": str}`` from a ``datasets`` data set.

    ``name_or_path`` is a hub name (online, e.g. on Colab), a local folder written by align_lite
    (loaded as ``imagefolder``), or any builder name ``datasets.load_dataset`` accepts. The image
    column is read undecoded so that a broken image is counted in ``log`` instead of raising. A
    text cell that is a list of captions (Flickr30K, MSCOCO) gives one pair per caption.
    """
    import datasets

    log = log if log is not None else SkipLog()
    path = Path(name_or_path)
    if path.is_dir() and not load_kwargs.get("data_dir"):
        dataset = datasets.load_dataset("imagefolder", data_dir=str(path), split=split, streaming=streaming,
                                        **load_kwargs)
    else:
        dataset = datasets.load_dataset(name_or_path, split=split, streaming=streaming, **load_kwargs)
    features = dataset.features or {}
    for column in (image_column, text_column):
        if features and column not in features:
            raise KeyError(f"{name_or_path}: no column {column!r}; columns are {list(features)}")
    if features and isinstance(features.get(image_column), datasets.Image):
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    for i, row in enumerate(dataset):
        yield from row_pairs(row, i, image_column, text_column, log)


def row_pairs(row: dict[str, Any], i: int, image_column: str, text_column: str, log: SkipLog) -> list[Sample]:
    """One ``datasets`` row → its ``{"image", "text", "index"}`` pairs: one per caption when the
    text cell is a list (Flickr30K, MSCOCO). Empty captions and unreadable images are counted in
    ``log``."""
    cell = row.get(text_column)
    texts = [_text_of(t) for t in cell] if isinstance(cell, (list, tuple)) else [_text_of(cell)]
    for _ in range(sum(t is None for t in texts)):
        log.skip("empty_text", f"row {i}: empty, missing or non-UTF-8 text")
    texts = [t for t in texts if t is not None]
    if not texts:
        return []
    try:
        image = _image_of(row.get(image_column))
    except BadImageError as err:
        log.skip(err.reason, f"row {i}: {err}")
        return []
    return [{"image": image, "text": text, "index": i} for text in texts]


IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
TEXT_EXTENSIONS = ("txt", "caption", "json")


def webdataset_pairs(urls: str | Sequence[str], log: SkipLog | None = None) -> Iterator[Sample]:
    """Yield ``{"image", "text", "key"}`` from webdataset tar shards (brace patterns work).

    A sample without a decodable image or a usable caption is counted in ``log`` and skipped.
    """
    import webdataset as wds

    log = log if log is not None else SkipLog()

    def count_and_continue(err: Exception) -> bool:  # a missing or truncated shard: skip the rest of it
        log.skip("corrupt_shard", f"{type(err).__name__}: {err}")
        return True

    shards = wds.WebDataset(urls, shardshuffle=False, empty_check=False, handler=count_and_continue)
    for sample in shards:
        key = sample.get("__key__", "?")
        raw_image = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
        if raw_image is None:
            log.skip("missing_file", f"{key}: no image member")
            continue
        text = _webdataset_text(sample)
        if text is None:
            log.skip("empty_text", f"{key}: no usable caption")
            continue
        try:
            image = open_rgb(raw_image)
        except BadImageError as err:
            log.skip(err.reason, f"{key}: {err}")
            continue
        yield {"image": image, "text": text, "key": key}


def _webdataset_text(sample: Sample) -> str | None:
    for ext in TEXT_EXTENSIONS:
        if ext not in sample:
            continue
        if ext == "json":
            try:
                meta = json.loads(sample[ext])
            except (ValueError, UnicodeDecodeError):
                return None
            return _text_of(meta.get("text") or meta.get("caption")) if isinstance(meta, dict) else None
        return _text_of(sample[ext])
    return None


def write_webdataset(
    source: str | Path, pattern: str, max_count: int = 10_000, log: SkipLog | None = None,
    check_images: bool = True,
) -> list[str]:
    """Convert a pair folder into tar shards (``pattern`` like ``out/shard-%06d.tar``).

    Each pair becomes ``{key}.{ext}`` (the original image bytes) + ``{key}.json`` (all columns).
    Rows whose image is missing, leads outside the folder (``..``, an absolute name, a symbolic
    link out) or, with ``check_images``, does not decode (truncated, empty, zero-size, a
    decompression bomb, not an image at all) are counted in ``log`` by reason and left out, the
    way ``data filter`` counts them. ``check_images=False`` packs the bytes unread (for data a
    filter has already checked). Returns the shard paths written.
    """
    import webdataset as wds

    log = log if log is not None else SkipLog()
    table, where = read_pairs(source, log)
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    verdicts: dict[str, str | None] = {}  # file name -> why it is unusable (None: fine)
    with wds.ShardWriter(pattern, maxcount=max_count, verbose=0) as sink:
        for i, row in enumerate(progress(table.to_pylist(), desc="write shards")):
            name = row["file_name"]
            path = resolve_inside(where.root, name)
            if path is None:
                log.skip("unsafe_file_name", f"row {i}: {name!r} leads outside the data set")
                continue
            if verdicts.get(name) is not None:  # the same bad image in an earlier row
                log.skip(verdicts[name], f"row {i}: {name} (seen before)")
                continue
            try:
                raw = read_image_bytes(path, name)
                if check_images and name not in verdicts:  # each distinct image is decoded once
                    open_rgb(raw, name=name)
            except BadImageError as err:
                verdicts[name] = err.reason
                log.skip(err.reason, f"row {i}: {err.detail}")
                continue
            verdicts[name] = None
            ext = Path(name).suffix.lstrip(".").lower() or "png"
            ext = "jpg" if ext == "jpeg" else ext
            sample = {"__key__": f"{i:09d}", ext: raw,
                      "json": json.dumps(row, ensure_ascii=False).encode("utf-8")}
            sink.write(sample)
            if sink.fname and sink.fname not in written:
                written.append(sink.fname)
    return written


def to_pair_folder(samples: Iterator[Sample], out_dir: str | Path, image_format: str = "png") -> Path:
    """Materialise any sample stream (e.g. :func:`hf_pairs`) as a pair folder."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, sample in enumerate(samples):
        name = f"images/{i:07d}.{image_format}"
        sample["image"].save(out_dir / name)
        rows.append({"file_name": name, "text": sample["text"]})
    write_pairs(pa.Table.from_pylist(rows), out_dir)
    return out_dir


__all__ = [
    "PairDataset", "collate_pairs", "hf_pairs", "webdataset_pairs", "write_webdataset",
    "to_pair_folder",
]
