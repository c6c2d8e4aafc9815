"""Noisy alt-texts of the kinds ALIGN's filters target (boilerplate, file names, too short, too
long, gibberish, misaligned, hub), each built so that one filter rule is its natural catch."""

from __future__ import annotations

import random
import string

import numpy as np

from align_lite.data.world.vocabulary import (
    BOILERPLATE, COLOR_NAMES, NOISE_KINDS, NUMBER_WORDS, PLURALS, SEO_WORDS, SHAPES,
)


def noisy_texts(
    kind: np.ndarray, scene: dict[str, np.ndarray], captions: list[str], rng: np.random.Generator
) -> list[str]:
    """Replace the clean captions of text-noise rows by their noisy alt-texts."""
    texts = list(captions)
    py = random.Random(int(rng.integers(0, 2**62)))
    rows_of = {name: np.flatnonzero(kind == NOISE_KINDS.index(name)) for name in NOISE_KINDS}

    boilerplate = rows_of["boilerplate"]
    for i, text in zip(boilerplate.tolist(), _boilerplate(len(boilerplate), rng)):
        texts[i] = text
    for i in rows_of["filename"].tolist():
        texts[i] = _filename_text(py)
    for i in rows_of["too_short"].tolist():
        texts[i] = _short_text(_obj(scene, i), py)
    for i in rows_of["too_long"].tolist():
        texts[i] = _long_text(_obj(scene, i), py)
    for i in rows_of["gibberish"].tolist():
        texts[i] = _gibberish_text(captions[i], py)
    # Misaligned rows and hub rows borrow the clean caption of another (non-hub) image.
    donors_pool = np.flatnonzero(kind != NOISE_KINDS.index("hub"))
    for name in ("misaligned", "hub"):
        rows = rows_of[name]
        donors = _donors(rows, donors_pool, scene, rng, avoid_same_label=name == "misaligned")
        for i, d in zip(rows.tolist(), donors.tolist()):
            texts[i] = captions[d]
    return texts


def _obj(scene: dict[str, np.ndarray], i: int) -> tuple[str, str, int]:
    """(colour, shape, count) of row ``i``'s main object."""
    return COLOR_NAMES[scene["color"][i]], SHAPES[scene["shape"][i]], int(scene["count"][i])


def _boilerplate(k: int, rng: np.random.Generator) -> list[str]:
    """``k`` boilerplate texts, balanced over as few strings as keep each used by >= 12 rows."""
    n_strings = max(1, min(len(BOILERPLATE), k // 12))
    picked = np.arange(k) % n_strings
    return [BOILERPLATE[j] for j in rng.permutation(picked).tolist()]


def _filename_text(py: random.Random) -> str:
    """A camera/screenshot file name: one or few tokens, mostly unique digits."""
    form = py.randrange(6)
    if form == 0:
        return f"IMG_{py.randrange(10000):04d}.JPG"
    if form == 1:
        return f"DSC{py.randrange(100000):05d}.jpg"
    if form == 2:
        return f"photo ({py.randrange(1, 40)}).png"
    if form == 3:
        y, mo, d = py.randrange(2012, 2024), py.randrange(1, 13), py.randrange(1, 29)
        h, mi, s = py.randrange(24), py.randrange(60), py.randrange(60)
        return f"Screenshot {y}-{mo:02d}-{d:02d} at {h:02d}.{mi:02d}.{s:02d}"
    if form == 4:
        return f"{py.getrandbits(32):08x}.jpg"
    return f"image_{py.randrange(10**6):06d}.jpeg"


def _short_text(obj: tuple[str, str, int], py: random.Random) -> str:
    """One or two words about the main object: "circle", "red star", "two circles"."""
    color, shape, count = obj
    noun = shape if count == 1 else PLURALS[shape]
    form = py.randrange(4)
    if form == 0:
        return noun
    if form == 1 and count > 1:
        return f"{NUMBER_WORDS[count]} {noun}"
    if form == 2:
        return color
    return f"{color} {noun}"


def _long_text(obj: tuple[str, str, int], py: random.Random) -> str:
    """21–40 words of keyword stuffing that keeps mentioning the true colour and shape."""
    color, shape, _ = obj
    target = py.randint(21, 40)
    content = (f"{color} {shape}", shape, PLURALS[shape], color, f"{color} {PLURALS[shape]}")
    words: list[str] = f"{color} {shape}".split()
    while len(words) < target:
        phrase = py.choice(content) if py.random() < 0.35 else py.choice(SEO_WORDS)
        words.extend(phrase.split())
    return " ".join(words[:target])


def _gibberish_text(caption: str, py: random.Random) -> str:
    """``caption`` with 1–3 random lowercase tokens (each practically unique) inserted."""
    words = caption.split()
    for _ in range(py.randint(1, 3)):
        token = "".join(py.choices(string.ascii_lowercase, k=py.randint(5, 8)))
        words.insert(py.randint(0, len(words)), token)
    return " ".join(words)


def _donors(
    rows: np.ndarray, pool: np.ndarray, scene: dict[str, np.ndarray],
    rng: np.random.Generator, avoid_same_label: bool,
) -> np.ndarray:
    """For each row another row of ``pool`` (a different image), preferably of another label."""
    if len(rows) == 0 or len(pool) == 0:
        return rows.copy()
    donors = pool[rng.integers(0, len(pool), len(rows))]
    label = scene["color"] * len(SHAPES) + scene["shape"]
    for _ in range(8):  # redraw donors that are the row itself or (if asked) share its label
        bad = donors == rows
        if avoid_same_label:
            bad |= label[donors] == label[rows]
        if not bad.any() or len(pool) == 1:
            break
        donors[bad] = pool[rng.integers(0, len(pool), int(bad.sum()))]
    return donors
