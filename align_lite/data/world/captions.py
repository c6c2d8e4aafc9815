"""Clean captions: a faithful description of a scene in the world's small vocabulary, with varied
wording ("two small blue squares on a grey background", "a yellow star to the left of a purple
hexagon")."""

from __future__ import annotations

import numpy as np

from align_lite.data.world.vocabulary import (
    BACKGROUND_NAMES, COLOR_NAMES, NUMBER_WORDS, PLURALS, POSITIONS, RELATIONS, SHAPES, SIZES,
)


_LEADS = (  # "" twice: a third of captions start with the noun phrase (or "there is/are")
    "", "", "a photo of", "a picture of", "an image of", "a drawing of", "an illustration of",
    "a simple drawing of", "a rendering of", "a graphic of", "a sketch of", "a cartoon of",
    "a picture showing", "a diagram of",
)
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_POSITION_PHRASES = {
    "center": ("in the center", "in the middle"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    **{
        p: (f"in the {p}", f"in the {p} corner", f"at the {p}")
        for p in ("top left", "top right", "bottom left", "bottom right")
    },
}
_RELATION_PHRASES = {
    "left of": ("to the left of", "left of", "on the left of"),
    "right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_MAX_CLEAN_WORDS = 16  # leaves room for 3 gibberish tokens under the 20-word rule


def article(word: str) -> str:
    """"an" before a vowel ("an orange star"), else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(count: int, size: str, color: str, shape: str, bits: int) -> str:
    """"a big red circle", "three small blue squares", "one green star" (``bits`` in 0..63)."""
    size_words = _SIZE_WORDS[size]
    adjectives = f"{size_words[(bits >> 1) % len(size_words)]} {color}" if bits & 1 else color
    if count == 1:
        det = "one" if bits >> 3 == 0 else article(adjectives)
        return f"{det} {adjectives} {shape}"
    return f"{NUMBER_WORDS[count]} {adjectives} {PLURALS[shape]}"


def _fit(lead: str, core: str, tail: list[str]) -> str:
    """Join ``lead core *tail``; drop tail parts (last first), then the lead, past the limit."""
    while True:
        text = " ".join(p for p in (lead, core, *tail) if p)
        words = text.split()
        if len(words) <= _MAX_CLEAN_WORDS or (not tail and not lead):
            return " ".join(words)
        if tail:
            tail = tail[:-1]
        else:
            lead = ""


def _clean_caption(
    color: str, shape: str, count: int, size: str, position: str, background: str,
    relation: str | None, other_color: str | None, other_shape: str | None, r: int,
) -> str:
    """A faithful caption of one scene; the random int ``r`` picks template and wording."""
    r, lead_i = divmod(r, len(_LEADS))
    r, bg_i = divmod(r, 6)
    r, np_bits = divmod(r, 64)
    r, template = divmod(r, 6)
    r, phrase_i = divmod(r, 12)
    lead = _LEADS[lead_i]
    bg = f"{'on' if bg_i == 0 else 'against'} a {background} background" if bg_i < 2 else ""
    if relation is not None:
        main = _noun_phrase(1, size, color, shape, np_bits)
        other = _noun_phrase(1, size, other_color, other_shape, r % 64)
        if template == 5:
            horizontal = relation in ("left of", "right of")
            together = "side by side" if horizontal else "one above the other"
            return _fit("", f"{main} and {other} {together}", [bg])
        if template >= 3:  # described from the other object's point of view
            main, other, relation = other, main, _INVERSE[relation]
        phrases = _RELATION_PHRASES[relation]
        if lead == "" and template in (0, 3):
            lead = "there is"
        return _fit(lead, f"{main} {phrases[phrase_i % len(phrases)]} {other}", [bg])
    noun_phrase = _noun_phrase(count, size, color, shape, np_bits)
    pos = ""
    phrases = _POSITION_PHRASES[position]
    if (position != "center" and phrase_i % 2) or (position == "center" and phrase_i % 4 == 1):
        pos = phrases[(phrase_i // 2) % len(phrases)]
    if template == 0 and bg:  # "a grey background with two red circles"
        return _fit("", f"a {background} background with {noun_phrase}", [pos])
    if template == 1 and lead == "":
        lead = "there is" if count == 1 else "there are"
    return _fit(lead, noun_phrase, [pos, bg])


def clean_captions(
    scene: dict[str, np.ndarray], background: np.ndarray, rng: np.random.Generator
) -> list[str]:
    """A clean caption for every row's own scene (vectorised sampling, one format per row)."""
    def names(key: str, vocab: tuple[str, ...]) -> list[str | None]:
        table = list(vocab) + [None]  # index -1 -> None
        return [table[i] for i in scene[key].tolist()]

    r = rng.integers(0, 2**62, len(background)).tolist()
    return [
        _clean_caption(*args)
        for args in zip(
            names("color", COLOR_NAMES), names("shape", SHAPES), scene["count"].tolist(),
            names("size", SIZES), names("position", POSITIONS),
            [BACKGROUND_NAMES[b] for b in background.tolist()],
            names("relation", RELATIONS), names("other_color", COLOR_NAMES),
            names("other_shape", SHAPES), r,
        )
    ]
