"""align_lite.data.resolve: one reading of every spelling of ``data``."""

from __future__ import annotations

import pytest
import torch

from align_lite.data.resolve import resolve_source
from align_lite.data.world import WorldConfig


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from ()


def test_each_spelling_resolves_to_its_kind(tmp_path):
    world = WorldConfig.clean(n=8)
    (tmp_path / "pairs").mkdir()
    stream, dataset = Stream(), [1, 2]
    cases = {
        None: ("world", None), "world": ("world", None), world: ("world", world),
        "hf:kakaobrain/coyo-700m": ("hf", "kakaobrain/coyo-700m"),
        "d/shard-{000000..000009}.tar": ("shards", "d/shard-{000000..000009}.tar"),
        str(tmp_path / "pairs"): ("pairs", tmp_path / "pairs"), tmp_path / "pairs": ("pairs", tmp_path / "pairs"),
    }
    for data, (kind, value) in cases.items():
        source = resolve_source(data)
        assert (source.kind, source.value) == (kind, value), data
    assert resolve_source(["a.tar", "b.tar"]).kind == "shards"
    assert resolve_source(stream).value is stream and resolve_source(stream).kind == "stream"
    assert resolve_source(dataset).kind == "dataset"


def test_a_missing_path_and_an_empty_hub_name_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        resolve_source(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="hf: needs a data set name"):
        resolve_source("hf:  ")
