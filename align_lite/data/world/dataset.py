"""The world on disk (:func:`write_world`: an image folder + ``metadata.jsonl``) and in memory
(:class:`WorldDataset`: images drawn on the fly, optionally cached)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch.utils.data

from align_lite.data import records
from align_lite.progress import progress
from align_lite.data.world.config import WorldConfig
from align_lite.data.world.draw import render_image
from align_lite.data.world.table import make_world_table
# The columns render_image reads.
RENDER_COLUMNS = (
    "width", "height", "scene_seed", "color", "shape", "count", "size", "position",
    "relation", "other_color", "other_shape", "noise",
)
_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg"),
            "webp": ("WEBP", ".webp")}


def write_world(config: WorldConfig, out_dir: str | Path, image_format: str = "png",
                overwrite: bool = False) -> Path:
    """Write the world as an image folder: ``out_dir/images/*`` + ``out_dir/metadata.jsonl``.

    Each distinct image is drawn once at its nominal size; the metadata has one row per pair
    with every column of :func:`make_world_table`. Loads with
    ``datasets.load_dataset("imagefolder", data_dir=out_dir)``. Returns ``out_dir``. Written
    through :func:`~align_lite.data.records.fresh_output`: a non-empty ``out_dir`` is refused
    unless ``overwrite``, and an interrupted write leaves it as it was.
    """
    if image_format.lower() not in _FORMATS:
        raise ValueError(f"unknown image_format {image_format!r}; use one of {sorted(_FORMATS)}")
    with records.fresh_output(out_dir, overwrite) as staging:
        _draw_world(config, staging, image_format)
    return Path(out_dir)


def _draw_world(config: WorldConfig, out_dir: Path, image_format: str) -> None:
    pil_format, suffix = _FORMATS[image_format.lower()]
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    table = make_world_table(config)
    if suffix != ".png":
        names = pc.replace_substring_regex(table["file_name"], r"\.png$", suffix)
        table = table.set_column(table.schema.get_field_index("file_name"), "file_name", names)

    _, first_rows = np.unique(table["image_id"].to_numpy(), return_index=True)
    columns = {name: table[name].to_pylist() for name in RENDER_COLUMNS + ("file_name",)}
    save_args = {"compress_level": 1} if pil_format == "PNG" else {"quality": 90}
    for i in progress(first_rows.tolist(), desc="drawing world", unit="img"):
        row = {name: values[i] for name, values in columns.items()}
        render_image(row).save(out_dir / row["file_name"], pil_format, **save_args)
    records.write_pairs(table, out_dir)


class WorldDataset(torch.utils.data.Dataset):
    """A world drawn on the fly: ``ds[i]`` renders row ``i`` as a square of ``image_size`` px.

    Items are dicts ``{"image", "text", "label", "index"}`` where ``image`` is
    ``transform(pil_image)`` if a transform is given (e.g. to a ``(3, S, S)`` float tensor),
    else the RGB PIL image. Nothing touches the disk; the dataset pickles (DataLoader workers).

    ``cache=True`` keeps every drawn image as a (3, S, S) uint8 tensor (3·S² bytes a row, 17.8 kB
    at S = 77) and hands that tensor, not a PIL image, to ``transform`` — pair it with
    :class:`~align_lite.data.images.CropToPixels`. Each DataLoader worker holds its own cache.
    """

    def __init__(self, config: WorldConfig, image_size: int = 64, transform=None, cache: bool = False) -> None:
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        self.config = config
        self.image_size = image_size
        self.transform = transform
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.table = make_world_table(config)
        self._columns = {
            name: self.table[name].to_pylist() for name in RENDER_COLUMNS + ("text", "label")
        }

    def __len__(self) -> int:
        return self.table.num_rows

    def row(self, index: int) -> dict[str, Any]:
        """Row ``index`` as a dict of the columns needed to render it, plus text and label."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a world of {len(self)} rows")
        index %= len(self)
        return {name: values[index] for name, values in self._columns.items()}

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        row = self.row(index)
        if self.cache is None:
            image = render_image(row, self.image_size)
        else:
            image = self.cache.get(index % len(self))
            if image is None:
                array = np.asarray(render_image(row, self.image_size), dtype=np.uint8)
                image = self.cache[index % len(self)] = torch.from_numpy(array.transpose(2, 0, 1).copy())
        if self.transform is not None:
            image = self.transform(image)
        index %= len(self)
        return {"image": image, "text": row["text"], "label": row["label"], "index": index}
