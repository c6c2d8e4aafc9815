"""The shipped real corpus: three artists' emoji with their names and keywords in 28 languages.

``data_samples/emoji_corpus/`` holds every emoji that Google's Noto, Twitter's Twemoji and
OpenMoji draw — base emoji and their skin-tone and gender variants — as 64×64 RGB images on
white (one PNG sprite sheet per artist), and the alt-texts of ``emojibase-data`` 17.0.0: for each
emoji, its label (CLDR short name) and its tags (keywords) in every locale of the package.
Nobody drew or wrote any of it for
this book, and it is noisy the way web alt-text is: generic tags ("face", "hand") shared by
hundreds of images, one-word tags, eight scripts, three drawings of each concept.

Files (built by ``data_samples/emoji_corpus/make_emoji_corpus.py`` from pinned npm packages;
see ``data_samples/README.md``):

* ``images/<style>.png`` — the style's sprite sheet: image ``cell`` of the style sits at row
  ``cell // 64``, column ``cell % 64`` of 64-pixel cells (one file per artist, not 11,380).
* ``metadata.jsonl`` — one row per image: ``file_name`` (``images/<style>/<hexcode>.png``, its
  name in an ``imagefolder`` export), ``cell``, ``style``, ``hexcode``, ``emoji``, ``base`` (the
  entry a skin-tone variant belongs to), ``concept`` (skin- and gender-neutral: 🙅‍♀️ and 🙅🏿 are
  both ``1F645``), ``skin_tone``, ``gender``, ``group``, ``subgroup``, ``order``, ``text`` (the
  English label).
  :func:`load_emoji_corpus_hf` exports it once as a Hugging Face ``imagefolder``.
* ``alt_texts.jsonl.gz`` — one row per emoji: ``{"hexcode", "texts": {locale: {"label", "tags"}}}``.
* ``messages.jsonl`` — one row per locale: its names of the groups, subgroups and skin tones
  (``{"locale", "groups", "subgroups", "skin_tones"}``, each ``{key: name}``), for prompts in
  every language (:meth:`EmojiCorpus.names`).

:func:`load_emoji_corpus` reads both into an :class:`EmojiCorpus`; :meth:`EmojiCorpus.pairs`
makes the (image, alt-text) pair table, one row per image × language × label-or-tag (a skin-tone
variant's alt-texts are its own label and its base emoji's tags: emojibase gives variants no tags
of their own). :class:`EmojiSplit` holds the fixed splits: by style (train on two artists, test
on the third, the book's ImageNet-R) and by concept (a fifth of the concepts, chosen by a hash
of their code points, never seen in training). :class:`EmojiPairs` serves a pair table to the
trainer.

>>> corpus = load_emoji_corpus()                                  # doctest: +SKIP
>>> split = EmojiSplit()                                          # test style: twemoji
>>> train = corpus.pairs(split.train_rows(corpus))                # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from align_lite.data.emoji import cache_dir, sample_folder
from align_lite.data.records import DataFormatError, fresh_output

#: The corpus folder's name inside ``data_samples/``.
CORPUS_DIR = "emoji_corpus"
#: The three artists' styles, in file order.
STYLES: tuple[str, ...] = ("noto", "twemoji", "openmoji")
#: Skin tones as the metadata names them ("mixed": people of different tones in one emoji).
SKIN_TONES: tuple[str, ...] = ("none", "light", "medium-light", "medium", "medium-dark", "dark", "mixed")
#: Columns every image row must carry.
IMAGE_COLUMNS: tuple[str, ...] = (
    "file_name", "cell", "style", "hexcode", "emoji", "base", "concept", "skin_tone", "gender",
    "group", "subgroup", "order", "text",
)
#: The two kinds of alt-text: the emoji's label (its name) and its tags (keywords).
KINDS: tuple[str, ...] = ("label", "tag")
#: Images are this many pixels square.
IMAGE_SIZE = 64
#: Cells per row of a style's sprite sheet ``images/<style>.png``.
SHEET_COLUMNS = 64
#: The alt-text file (gzip-compressed JSON lines).
ALT_TEXTS = "alt_texts.jsonl.gz"

def corpus_root() -> Path:
    """The folder of the shipped corpus (``metadata.jsonl``, ``alt_texts.jsonl.gz``, ``images/``):
    the installed resource package ``align_lite.data_samples`` first, then ``data_samples/`` of
    a source checkout; :class:`FileNotFoundError` naming both when neither holds it (rebuild it
    with ``data_samples/emoji_corpus/make_emoji_corpus.py``)."""
    return sample_folder(CORPUS_DIR, "the emoji corpus")


# ---------------------------------------------------------------------------------------------
# Reading the files
# ---------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict]:
    """Every line of ``path`` as a dict; any bad line is a :class:`DataFormatError` naming it
    (the shipped corpus is expected whole: a bad line means a damaged copy)."""
    if not path.is_file():
        raise DataFormatError(f"{path}: missing: the emoji corpus is incomplete")
    rows = []
    with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as handle:
        for number, raw in _numbered_lines(handle, path):
            try:
                row = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise DataFormatError(f"{path}:{number}: not a JSON line ({err}): the corpus is damaged") from None
            if not isinstance(row, dict):
                raise DataFormatError(f"{path}:{number}: not a JSON object: the corpus is damaged")
            rows.append(row)
    if not rows:
        raise DataFormatError(f"{path}: empty: the emoji corpus is incomplete")
    return rows


def _numbered_lines(handle, path: Path):
    """(number, line) of ``handle``; a damaged gzip stream is a :class:`DataFormatError`."""
    try:
        yield from enumerate(handle, 1)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataFormatError(f"{path}: unreadable ({err}): the corpus is damaged") from None


def _image_table(root: Path) -> pa.Table:
    rows = _read_jsonl(root / "metadata.jsonl")
    for number, row in enumerate(rows, 1):
        missing = [c for c in IMAGE_COLUMNS if c not in row]
        if missing:
            raise DataFormatError(f"{root / 'metadata.jsonl'}:{number}: missing {', '.join(missing)}")
    return pa.Table.from_pylist([{c: row[c] for c in IMAGE_COLUMNS} for row in rows])


def _text_table(root: Path, wanted: set[str]) -> pa.Table:
    """Long table of alt-texts: ``hexcode``, ``language``, ``kind``, ``position``, ``text``; the
    labels and tags of every emoji in ``wanted`` (variants get their base's tags later)."""
    columns: dict[str, list] = {"hexcode": [], "language": [], "kind": [], "position": [], "text": []}
    for row in _read_jsonl(root / ALT_TEXTS):
        hexcode = row.get("hexcode")
        if hexcode not in wanted:
            continue
        for language, entry in sorted(row.get("texts", {}).items()):
            texts = [("label", 0, entry.get("label"))]
            texts += [("tag", i, tag) for i, tag in enumerate(entry.get("tags") or [])]
            for kind, position, text in texts:
                if isinstance(text, str) and text.strip():
                    for name, value in zip(columns, (hexcode, language, kind, position, text)):
                        columns[name].append(value)
    return pa.table(columns)


def sheet_path(root: Path, style: str) -> Path:
    """The sprite sheet of ``style``: ``root/images/<style>.png``."""
    return root / "images" / f"{style}.png"


def _check_files(root: Path, images: pa.Table) -> None:
    """Every style's sheet must be there and big enough for its cells; else a clear error.
    (Only the PNG header is read here; a damaged stream shows when the pixels are decoded.)"""
    styles, cells = images.column("style").to_pylist(), images.column("cell").to_pylist()
    for style in dict.fromkeys(styles):
        path = sheet_path(root, style)
        needed = max(c for s, c in zip(styles, cells) if s == style) // SHEET_COLUMNS + 1
        if not path.is_file() or path.stat().st_size == 0:
            raise DataFormatError(f"{path}: missing or empty; the corpus is truncated: reinstall "
                                  "align-lite or rebuild it")
        try:
            with Image.open(path) as sheet:
                width, height = sheet.size
        except (OSError, ValueError) as err:
            raise DataFormatError(f"{path}: unreadable image ({err}): the corpus is damaged") from None
        if width != SHEET_COLUMNS * IMAGE_SIZE or height < needed * IMAGE_SIZE:
            raise DataFormatError(f"{path}: {width}x{height} px, the metadata needs {SHEET_COLUMNS * IMAGE_SIZE}"
                                  f"x{needed * IMAGE_SIZE}: the corpus is damaged")


def _decode_sheet(path: Path) -> np.ndarray:
    """A sheet's cells as ``(cells, 64, 64, 3)`` uint8, row-major."""
    try:
        with Image.open(path) as sheet:
            array = np.asarray(sheet.convert("RGB"))
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{path}: unreadable image ({err}): the corpus is damaged") from None
    rows = array.shape[0] // IMAGE_SIZE
    cells = array.reshape(rows, IMAGE_SIZE, SHEET_COLUMNS, IMAGE_SIZE, 3).swapaxes(1, 2)
    return cells.reshape(rows * SHEET_COLUMNS, IMAGE_SIZE, IMAGE_SIZE, 3)


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmojiCorpus:
    """The corpus: ``images`` (one row per image, :data:`IMAGE_COLUMNS`) and ``texts`` (one row
    per emoji × language × alt-text: ``hexcode``, ``language``, ``kind``, ``position``,
    ``text``), read from ``root``. Row ``i`` of ``images`` is "image ``i``" everywhere."""

    images: pa.Table
    texts: pa.Table
    root: Path
    messages: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    def names(self, language: str, kind: str) -> dict[str, str]:
        """``language``'s names of the ``kind`` ("groups", "subgroups", "skin_tones"):
        ``{key: name}``, e.g. ``names("fr", "skin_tones")["dark"] == "teint foncé"``."""
        if language not in self.messages:
            raise ValueError(f"no names in language {language!r}; have {', '.join(sorted(self.messages))}")
        if kind not in self.messages[language]:
            raise ValueError(f"unknown kind of name {kind!r}; choose groups, subgroups or skin_tones")
        return dict(self.messages[language][kind])

    def __len__(self) -> int:
        return self.images.num_rows

    @cached_property
    def languages(self) -> tuple[str, ...]:
        """The locales that have alt-texts, sorted (``"de"``, ``"en"``, … ``"zh-hant"``)."""
        return tuple(sorted(set(self.texts.column("language").to_pylist())))

    def column(self, name: str) -> np.ndarray:
        """Image column ``name`` as a ``(len(self),)`` numpy array."""
        return np.asarray(self.images.column(name).to_pylist(), dtype=object)

    def rows(self, **equal: str | Sequence[str]) -> np.ndarray:
        """Image row numbers whose columns take the given values, e.g.
        ``rows(style="twemoji", skin_tone=["none"])``; ``(n,)`` int64, ascending."""
        mask = np.ones(len(self), dtype=bool)
        for name, wanted in equal.items():
            values = [wanted] if isinstance(wanted, str) else list(wanted)
            mask &= np.isin(self.column(name), values)
        return np.flatnonzero(mask)

    def image(self, i: int) -> Image.Image:
        """Image ``i`` as a 64×64 RGB PIL image."""
        return Image.fromarray(self.pixels([i])[0].permute(1, 2, 0).numpy())

    def pixels(self, rows: Sequence[int] | None = None) -> torch.Tensor:
        """``(n, 3, 64, 64)`` uint8 images of ``rows`` (default: all), decoded once per corpus."""
        every = self._all_pixels
        return every if rows is None else every[torch.as_tensor(np.asarray(rows, dtype=np.int64))]

    def unit_pixels(self, rows: Sequence[int] | None = None) -> torch.Tensor:
        """:meth:`pixels` as the models take them: ``(n, 3, 64, 64)`` float32 in [-1, 1]."""
        return to_unit_range(self.pixels(rows))

    @cached_property
    def _all_pixels(self) -> torch.Tensor:
        styles = self.column("style")
        cells = self.images.column("cell").to_numpy()
        stacked = np.empty((len(self), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        for style in dict.fromkeys(styles):
            mine = np.flatnonzero(styles == style)
            stacked[mine] = _decode_sheet(sheet_path(self.root, style))[cells[mine]]
        return torch.from_numpy(stacked.transpose(0, 3, 1, 2).copy())

    def pairs(self, rows: Sequence[int] | None = None, languages: Iterable[str] | None = None,
              kinds: Iterable[str] = KINDS) -> pa.Table:
        """The (image, alt-text) pairs of image ``rows`` (default: all): one row per image ×
        language × alt-text, with ``image_index`` (into :attr:`images`), the image's columns
        ``file_name style hexcode base concept skin_tone gender group subgroup``, and the
        alt-text's ``language``, ``kind`` ("label"/"tag") and ``text``. A variant's tags are its
        base's. Sorted by image, language, kind, position: the same call gives the same table."""
        kinds = _known(kinds, KINDS, "kind")
        languages = self.languages if languages is None else _known(languages, self.languages, "language")
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        texts = self.texts.filter(pc.and_(pc.is_in(self.texts["language"], pa.array(languages)),
                                          pc.is_in(self.texts["kind"], pa.array(kinds))))
        keep = ["file_name", "style", "hexcode", "base", "concept", "skin_tone", "gender", "group", "subgroup"]
        chosen = self.images.select(keep).take(pa.array(rows)).append_column("image_index", pa.array(rows))
        # Labels join on the image's own code points, tags on its base emoji's.
        labels = chosen.join(texts.filter(pc.equal(texts["kind"], "label")), "hexcode", join_type="inner")
        base_tags = texts.filter(pc.equal(texts["kind"], "tag")).rename_columns(
            ["base", "language", "kind", "position", "text"])
        tags = chosen.join(base_tags, "base", join_type="inner")
        table = pa.concat_tables([labels.select(tags.column_names), tags])
        order = pc.sort_indices(table, [("image_index", "ascending"), ("language", "ascending"),
                                        ("kind", "ascending"), ("position", "ascending")])
        return table.take(order).drop_columns(["position"]).select(["image_index", *keep, "language", "kind", "text"])

    def verify(self) -> None:
        """Hash every file against ``MANIFEST.sha256`` (seconds); a :class:`DataFormatError`
        lists what differs. :func:`load_emoji_corpus` only checks that the files are there."""
        manifest = self.root / "MANIFEST.sha256"
        if not manifest.is_file():
            raise DataFormatError(f"{manifest}: missing")
        bad = []
        for line in manifest.read_text(encoding="utf-8").splitlines():
            digest, name = line.split(maxsplit=1)
            if name.endswith(".py"):  # the maintainer script is not installed with the data
                continue
            path = self.root / name.lstrip("*")
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                bad.append(name)
        if bad:
            raise DataFormatError(f"{self.root}: {len(bad)} file(s) differ from MANIFEST.sha256 (first: {bad[0]})")


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any shape) → float32 in [-1, 1], the paper's (x - 127.5) / 127.5."""
    return pixels.to(torch.float32).div_(127.5).sub_(1.0)


def _known(values: Iterable[str], valid: Sequence[str], what: str) -> list[str]:
    values = [values] if isinstance(values, str) else list(values)
    unknown = [v for v in values if v not in valid]
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; valid: {', '.join(valid)}")
    return values


def load_emoji_corpus(root: str | Path | None = None) -> EmojiCorpus:
    """Read the corpus at ``root`` (default: the shipped one, :func:`corpus_root`).

    Checks that the metadata is whole and every style's sheet is there (a missing or truncated
    copy is a :class:`~align_lite.data.records.DataFormatError` that says so); pixels are decoded
    on first use (:meth:`EmojiCorpus.pixels`, ~1 s for all)."""
    root = corpus_root() if root is None else Path(root)
    images = _image_table(root)
    _check_files(root, images)
    wanted = set(images.column("hexcode").to_pylist()) | set(images.column("base").to_pylist())
    messages = {row["locale"]: {k: v for k, v in row.items() if k != "locale"}
                for row in _read_jsonl(root / "messages.jsonl")}
    return EmojiCorpus(images, _text_table(root, wanted), root, messages)


def export_imagefolder(corpus: EmojiCorpus, folder: str | Path) -> Path:
    """Write ``corpus`` as a Hugging Face ``imagefolder`` under ``folder``: one PNG per image at
    its ``file_name`` and a ``metadata.jsonl``. Written into a temporary sibling and renamed,
    so an interrupted export never looks finished; an existing finished export is kept."""
    folder = Path(folder)
    if (folder / "metadata.jsonl").is_file():
        return folder
    rows = corpus.images.to_pylist()
    with fresh_output(folder, overwrite=True) as staging:  # an unfinished export is replaced
        for i, row in enumerate(rows):
            path = staging / row["file_name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            corpus.image(i).save(path, format="PNG")
        lines = [json.dumps({k: v for k, v in row.items() if k != "cell"}, ensure_ascii=False) for row in rows]
        (staging / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def load_emoji_corpus_hf(root: str | Path | None = None, folder: str | Path | None = None, **kwargs):
    """The corpus as a Hugging Face ``datasets`` ``imagefolder`` (one row per image, with its
    metadata columns; alt-texts beyond the English ``text`` are in :meth:`EmojiCorpus.pairs`).

    The sheets are exported once (:func:`export_imagefolder`) into ``folder``, by default
    ``<cache>/emoji_imagefolder/<hash of the metadata>`` under :func:`~align_lite.data.emoji.cache_dir`."""
    import datasets

    corpus = load_emoji_corpus(root)
    if folder is None:
        digest = hashlib.sha256((corpus.root / "metadata.jsonl").read_bytes()).hexdigest()[:16]
        folder = cache_dir() / "emoji_imagefolder" / digest
    export_imagefolder(corpus, folder)
    return datasets.load_dataset("imagefolder", data_dir=str(folder), split="train", **kwargs)


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


def held_out_concept(concept: str, fraction_in_five: int = 1) -> bool:
    """Whether ``concept`` is one of the concepts never trained on: the first byte of the SHA-256
    of its code points, mod 5, is below ``fraction_in_five`` (1: a fifth of the concepts). A hash
    of the name, not of a position, so that adding emoji never moves an old one across."""
    return hashlib.sha256(concept.encode("ascii")).digest()[0] % 5 < fraction_in_five


@dataclass(frozen=True)
class EmojiSplit:
    """The fixed splits. Training sees the images of ``train_styles`` whose concept is not held
    out (:func:`held_out_concept`); ``test_rows`` are every image of ``test_style`` (the style
    split), ``test_unseen_rows`` those of held-out concepts (style and concept split at once).
    Variants go with their concept: no skin tone or gender of a held-out emoji is trained on."""

    test_style: str = "twemoji"
    held_out_fifths: int = 1

    def __post_init__(self) -> None:
        if self.test_style not in STYLES:
            raise ValueError(f"test_style must be one of {STYLES}, got {self.test_style!r}")
        if not 0 <= self.held_out_fifths < 5:
            raise ValueError(f"held_out_fifths must be in 0..4, got {self.held_out_fifths}")

    @property
    def train_styles(self) -> tuple[str, ...]:
        return tuple(s for s in STYLES if s != self.test_style)

    def unseen(self, corpus: EmojiCorpus) -> np.ndarray:
        """``(len(corpus),)`` bool: the image's concept is held out."""
        return np.array([held_out_concept(c, self.held_out_fifths) for c in corpus.column("concept")])

    def train_rows(self, corpus: EmojiCorpus) -> np.ndarray:
        return np.flatnonzero(np.isin(corpus.column("style"), self.train_styles) & ~self.unseen(corpus))

    def test_rows(self, corpus: EmojiCorpus) -> np.ndarray:
        return np.flatnonzero(corpus.column("style") == self.test_style)

    def test_unseen_rows(self, corpus: EmojiCorpus) -> np.ndarray:
        return np.flatnonzero((corpus.column("style") == self.test_style) & self.unseen(corpus))


# ---------------------------------------------------------------------------------------------
# Serving pairs to the trainer
# ---------------------------------------------------------------------------------------------


@dataclass
class EmojiPairs(torch.utils.data.Dataset):
    """A pair table (:meth:`EmojiCorpus.pairs`, possibly filtered) as a training dataset.

    ``ds[i]`` is ``{"image": (3, 64, 64) float32 in [-1, 1], "text": str, "index": i}``; images
    come from ``pixels`` (the corpus's decoded uint8 images, shared by every pair of an image).
    ``texts`` (for the tokenizer) and ``table`` (for hard-negative batches) are what
    :func:`align_lite.train.build_dataset` reads."""

    table: pa.Table
    pixels: torch.Tensor
    texts: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.table.num_rows == 0:
            raise ValueError("EmojiPairs: the pair table is empty")
        self.texts = self.table.column("text").to_pylist()
        self._image = torch.tensor(self.table.column("image_index").to_numpy(), dtype=torch.int64)
        if int(self._image.max()) >= len(self.pixels):
            raise ValueError(f"pair table names image {int(self._image.max())}, pixels hold {len(self.pixels)}")

    @classmethod
    def of(cls, corpus: EmojiCorpus, table: pa.Table) -> EmojiPairs:
        return cls(table, corpus.pixels())

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        image = to_unit_range(self.pixels[self._image[index]])
        return {"image": image, "text": self.texts[index], "index": index}
