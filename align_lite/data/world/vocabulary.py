"""The world's closed vocabulary: shapes, colours, backgrounds, sizes, positions, relations,
number words, noise kinds, and the web's boilerplate and keyword-stuffing words."""

from __future__ import annotations


SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "hexagon", "cross", "heart", "diamond",
)
PLURALS: dict[str, str] = {s: s + "es" if s.endswith("ss") else s + "s" for s in SHAPES}

# Saturated colours, pairwise far apart in RGB and far from the light neutral backgrounds.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (130, 40, 180),
    "orange": (245, 130, 20),
    "pink": (240, 100, 180),
    "cyan": (20, 200, 210),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

# Light, low-saturation backgrounds; the index is derived from a row's scene_seed.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (248, 248, 246),
    "grey": (208, 208, 208),
    "beige": (238, 226, 198),
}
BACKGROUND_NAMES: tuple[str, ...] = tuple(BACKGROUNDS)

SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = (
    "center", "top", "bottom", "left", "right",
    "top left", "top right", "bottom left", "bottom right",
)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)

NOISE_KINDS: tuple[str, ...] = (
    "clean", "boilerplate", "filename", "too_short", "too_long", "gibberish",
    "misaligned", "small_image", "extreme_aspect", "hub",
)

# Generic alt-texts that real web pages attach to many unrelated images.
BOILERPLATE: tuple[str, ...] = (
    "click here to enlarge",
    "stock photo image",
    "product image thumbnail",
    "untitled image",
    "image not available",
    "view larger image",
    "click to see more",
    "photo for illustration purposes only",
    "image courtesy of the author",
    "see more images",
    "main product photo",
    "featured image placeholder",
)

# Keyword-stuffing vocabulary (common words: such captions fail only the length rule).
SEO_WORDS: tuple[str, ...] = (
    "free", "download", "hd", "wallpaper", "vector", "clipart", "art", "stock", "image",
    "images", "picture", "photo", "png", "transparent", "background", "best", "top", "new",
    "cheap", "buy", "online", "sale", "icon", "icons", "design", "cute", "simple", "geometric",
    "shape", "shapes", "color", "colors", "colorful", "kids", "printable", "high", "quality",
    "sticker", "logo", "template", "ideas",
)
