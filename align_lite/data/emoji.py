"""The shipped real sample: Google's Noto emoji with their names as captions.

``data_samples/emoji/`` holds 1,906 emoji images (64×64 PNG, transparent background) from the npm
package ``emoji-datasource-google`` 16.0.0 — every base emoji with a Google image, skin-tone
variants and the five skin-tone swatches left out — and a ``metadata.jsonl`` in the pair format
of :mod:`align_lite.data.records`:

* ``file_name`` — ``images/<codepoints>.png``;
* ``text`` — a caption from the emoji's name, lowercased ("grinning face", "flag of egypt");
* ``texts`` — several alt-texts per image: the caption, the name and each short name
  ("grinning face", "grinning"), for retrieval with several captions per image;
* ``name``, ``short_names``, ``category`` (9 classes), ``subcategory`` (98 classes),
  ``unified`` (the codepoints), ``sort_order`` (rows are sorted by it).

It is small real data for the book: zero-shot classification over ``category`` or
``subcategory``, and image↔text retrieval. Installed with the package (as the resource package
``align_lite.data_samples``), so it works from a checkout and from a ``pip install`` alike;
nothing is downloaded. Licenses: images Apache-2.0 (Noto Emoji), metadata MIT (emoji-data); see
``data_samples/emoji/LICENSE.md``.

>>> sample = load_emoji(categories=["Flags"])      # doctest: +SKIP
>>> sample.texts(0), sample.image(0).size           # doctest: +SKIP
(['chequered flag', 'checkered flag'], (64, 64))
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from align_lite.data.records import DataFormatError, SkipLog, read_pairs

#: The sample's folder name inside ``data_samples/``.
EMOJI_DIR = "emoji"
#: Columns every row of the sample must carry.
EMOJI_COLUMNS = ("file_name", "text", "texts", "category", "subcategory")
#: Background the transparent PNGs are composited on.
BACKGROUND = (255, 255, 255)

_REPO_DATA_SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"


#: The environment variable that moves :func:`cache_dir`.
CACHE_ENV = "ALIGN_LITE_CACHE"


def cache_dir() -> Path:
    """Where align_lite keeps what it derives and may rebuild (trained book models, an
    ``imagefolder`` export of the corpus): ``$ALIGN_LITE_CACHE`` or ``~/.cache/align_lite``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "align_lite")


def sample_folder(name: str, what: str, marker: str = "metadata.jsonl") -> Path:
    """The folder ``data_samples/<name>`` (one holding a ``marker`` file) of the shipped data.

    Looked up as the installed resource package ``align_lite.data_samples`` (present after an
    editable or a regular install); falls back to ``data_samples/`` of a source checkout that is
    imported without being installed. Raises :class:`FileNotFoundError` naming ``what`` and
    both places when neither holds it.
    """
    candidates: list[Path] = []
    try:
        candidates.append(Path(str(importlib.resources.files("align_lite.data_samples") / name)))
    except (ModuleNotFoundError, TypeError):
        pass
    candidates.append(_REPO_DATA_SAMPLES / name)
    for folder in candidates:
        if (folder / marker).is_file():
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"{what} is not installed (looked in {tried}); reinstall align-lite, "
        "e.g. pip install -e . from a checkout"
    )


def emoji_root() -> Path:
    """The folder of the shipped emoji sample (holds ``metadata.jsonl`` and ``images/``)."""
    return sample_folder(EMOJI_DIR, "the emoji sample")


@dataclass(frozen=True)
class EmojiSample:
    """The emoji sample as a pair table (one row per image) plus its class vocabularies.

    ``categories``/``subcategories`` are the sorted distinct names of the rows held (after any
    filter); ``category_ids``/``subcategory_ids`` index into them.
    """

    table: pa.Table
    root: Path
    categories: tuple[str, ...]
    subcategories: tuple[str, ...]

    def __len__(self) -> int:
        return self.table.num_rows

    def path(self, i: int) -> Path:
        """The image file of row ``i``."""
        return self.root / self.table.column("file_name")[self._index(i)].as_py()

    def image(self, i: int) -> Image.Image:
        """Row ``i``'s image as a 64×64 RGB PIL image, its transparency composited on white."""
        with Image.open(self.path(i)) as im:
            rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")

    def texts(self, i: int) -> list[str]:
        """Row ``i``'s alt-texts (the caption first)."""
        return list(self.table.column("texts")[self._index(i)].as_py())

    @property
    def category_ids(self) -> np.ndarray:
        """``(len(self),)`` int64 class ids into :attr:`categories`."""
        return _ids(self.table.column("category"), self.categories)

    @property
    def subcategory_ids(self) -> np.ndarray:
        """``(len(self),)`` int64 class ids into :attr:`subcategories`."""
        return _ids(self.table.column("subcategory"), self.subcategories)

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range for {n} emoji")
        return i % n


def _ids(column: pa.ChunkedArray, names: tuple[str, ...]) -> np.ndarray:
    ids = pc.index_in(column, value_set=pa.array(names, pa.string()))
    return ids.to_numpy(zero_copy_only=False).astype(np.int64)


def load_emoji(
    root: str | Path | None = None, categories: Iterable[str] | None = None
) -> EmojiSample:
    """Load the emoji sample (default: the shipped one) as an :class:`EmojiSample`.

    ``categories`` keeps only the rows of those categories (e.g. ``["Flags", "Food & Drink"]``);
    an unknown name raises :class:`ValueError` listing the valid ones. Rows stay in file order
    (``sort_order``). Malformed metadata rows are skipped by :func:`records.read_pairs`; if any
    were, or a required column is missing, :class:`DataFormatError` is raised — the shipped
    sample is expected to be intact.
    """
    log = SkipLog()
    table, source = read_pairs(emoji_root() if root is None else root, log)
    if log.total:
        raise DataFormatError(f"{source.metadata}: {log.summary()}")
    missing = [c for c in EMOJI_COLUMNS if c not in table.column_names]
    if missing:
        raise DataFormatError(f"{source.metadata}: missing column(s) {', '.join(missing)}")
    if categories is not None:
        wanted = [categories] if isinstance(categories, str) else list(categories)
        valid = sorted(set(table.column("category").to_pylist()))
        unknown = [c for c in wanted if c not in valid]
        if unknown:
            raise ValueError(
                f"unknown emoji categor{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(map(repr, unknown))}; valid: {', '.join(map(repr, valid))}"
            )
        table = table.filter(pc.is_in(table.column("category"), pa.array(wanted, pa.string())))
    return EmojiSample(
        table=table,
        root=source.root,
        categories=tuple(sorted(set(table.column("category").to_pylist()))),
        subcategories=tuple(sorted(set(table.column("subcategory").to_pylist()))),
    )


def to_pairs(sample: EmojiSample) -> pa.Table:
    """One row per (image, alt-text): ``image_index``, ``file_name``, ``text``, ``category``,
    ``subcategory``.

    ``image_index`` is the row of ``sample`` the text belongs to, so retrieval can count a hit
    for any of an image's captions. ``sum(len(sample.texts(i)))`` rows, images in sample order.
    """
    texts = sample.table.column("texts").combine_chunks()
    lengths = pc.list_value_length(texts).to_numpy(zero_copy_only=False)
    image_index = np.repeat(np.arange(len(sample), dtype=np.int64), lengths)
    take = pa.array(image_index)
    return pa.table(
        {
            "image_index": take,
            "file_name": sample.table.column("file_name").take(take),
            "text": pc.list_flatten(texts),
            "category": sample.table.column("category").take(take),
            "subcategory": sample.table.column("subcategory").take(take),
        }
    )
