"""What a ``data`` argument names: the one place that tells a world from a folder, shards or a stream.

``train(data=...)``, ``align-lite train --data ...`` and the evaluation commands all accept the
same spellings; :func:`resolve_source` reads them once and says which kind each is:

==========  ==================================================================================
kind        spelled as
==========  ==================================================================================
``world``   ``None``, ``"world"`` or a :class:`~align_lite.data.world.WorldConfig`
``hf``      ``"hf:NAME"``: a Hugging Face data set streamed (hub name, or a local file or folder)
``shards``  webdataset tar shards: ``"dir/shard-{000000..000099}.tar"``, a glob, a ``.tar`` file,
            or a list of them
``pairs``   a pair folder, a ``.jsonl`` or a ``.parquet`` (must exist)
``stream``  a ``torch`` ``IterableDataset`` (e.g. :class:`~align_lite.data.hf_stream.HFStream`)
``dataset`` any other dataset object (``ds[i]`` items, a ``texts`` list)
==========  ==================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from align_lite.data.world import WorldConfig

KINDS = ("world", "hf", "shards", "pairs", "stream", "dataset")


@dataclass(frozen=True)
class DataSource:
    """A resolved ``data`` argument: its ``kind`` (one of :data:`KINDS`) and ``value`` (a
    ``WorldConfig`` or ``None`` for the world, the hub name for ``hf``, the shard spec, a ``Path``,
    or the object itself)."""

    kind: str
    value: Any


def is_shard_source(data: Any) -> bool:
    """Whether ``data`` names webdataset tar shards: ``"dir/shard-{000000..000099}.tar"``, a glob,
    one ``.tar`` file, or a list of them."""
    if isinstance(data, (list, tuple)):
        return bool(data) and all(str(d).endswith(".tar") for d in data)
    return isinstance(data, (str, Path)) and str(data).endswith(".tar")


def resolve_source(data: Any) -> DataSource:
    """Say what ``data`` is (see the module docstring).

    Raises:
        FileNotFoundError: a path that is neither shards nor an existing file or folder.
        ValueError: ``"hf:"`` without a name.
    """
    if data is None or (isinstance(data, str) and data == "world"):
        return DataSource("world", None)
    if isinstance(data, WorldConfig):
        return DataSource("world", data)
    if isinstance(data, str) and data.startswith("hf:"):
        if not data[3:].strip():
            raise ValueError("hf: needs a data set name or path, e.g. hf:kakaobrain/coyo-700m")
        return DataSource("hf", data[3:])
    if is_shard_source(data):
        return DataSource("shards", data)
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"data {path}: no such file or folder")
        return DataSource("pairs", path)
    if isinstance(data, torch.utils.data.IterableDataset):
        return DataSource("stream", data)
    return DataSource("dataset", data)


__all__ = ["KINDS", "DataSource", "is_shard_source", "resolve_source"]
