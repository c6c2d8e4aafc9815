"""Decoding images safely, and the paper's image transform.

Web images come truncated, empty, in palette/greyscale/CMYK modes or with an alpha channel.
:func:`open_rgb` turns whatever decodes into an RGB image (transparent pixels composited on white)
and raises :class:`BadImageError` with a one-line reason for what does not, so callers can count
and skip instead of crashing mid-run.

The transform follows the paper (§4): resize to 346, random 289×289 crop and horizontal flip for
training, centre crop for evaluation, pixels scaled to [-1, 1] as ``(x - 127.5) / 127.5`` (the
convention of kakaobrain's COYO-ALIGN and transformers' ``AlignProcessor``). Sizes are
configurable for tiny CPU runs.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2

# Decompression bombs are bad input like any other; never let PIL's warning go unnoticed.
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


class BadImageError(ValueError):
    """An image that cannot be used; ``reason`` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def open_rgb(source: str | Path | bytes, name: str | None = None) -> Image.Image:
    """Fully decode ``source`` (a path or encoded bytes) into an RGB image.

    Raises :class:`BadImageError` (reason ``missing_file``, ``empty_file``, ``corrupt_image`` or
    ``zero_size_image``) instead of letting a decoder error escape.
    """
    name = name or ("<bytes>" if isinstance(source, bytes) else str(source))
    raw = read_image_bytes(source, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            image.load()  # decode everything now: truncated files fail here, not mid-training
    except (*_DECODE_ERRORS, Image.DecompressionBombWarning) as err:
        raise BadImageError("corrupt_image", f"{name}: {err}") from err
    if image.width == 0 or image.height == 0:
        raise BadImageError("zero_size_image", f"{name}: {image.width}x{image.height}")
    return to_rgb(image)


def read_image_bytes(source: str | Path | bytes, name: str) -> bytes:
    """The encoded bytes of ``source`` (a path, or bytes as they are), undecoded.

    Raises:
        BadImageError: ``missing_file`` (cannot be read) or ``empty_file`` (0 bytes).
    """
    if isinstance(source, bytes):
        raw = source
    else:
        try:
            raw = Path(source).read_bytes()
        except FileNotFoundError as err:
            raise BadImageError("missing_file", f"{name}: no such file") from err
        except OSError as err:
            raise BadImageError("missing_file", f"{name}: {err.strerror}") from err
    if not raw:
        raise BadImageError("empty_file", f"{name}: 0 bytes")
    return raw


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to RGB; transparency (RGBA, LA, PA, or a ``transparency`` key on P, L
    or RGB images) goes on white. 16-bit greyscale is scaled to 8 bits, not clipped."""
    if image.mode in {"I", "I;16", "I;16L", "I;16B", "I;16N"}:
        # PIL's own conversion clips at 255, turning everything above 1/257 of full scale white.
        pixels = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))  # mode L
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    has_alpha = image.mode in {"RGBA", "LA", "PA"} or (
        image.mode in {"P", "L", "RGB"} and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


@dataclass(frozen=True)
class ImageFacts:
    """What the filters need to know about one image file."""

    width: int
    height: int
    sha256: str  # of the encoded bytes: exact duplicates share it


def probe_image(path: str | Path) -> tuple[ImageFacts, Image.Image]:
    """Decode ``path`` fully; return its size and content hash, and the RGB image."""
    raw = read_image_bytes(path, str(path))
    image = open_rgb(raw, name=str(path))
    return ImageFacts(image.width, image.height, hashlib.sha256(raw).hexdigest()), image


# --------------------------------------------------------------------------------------------
# The paper's transform
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageTransformConfig:
    """Resize → crop (→ flip) → [-1, 1]. Paper: resize 346, crop 289."""

    resize: int = 346
    crop: int = 289
    random_flip: bool = True  # the paper flips; turn off when captions say "left of"/"right of"

    def __post_init__(self) -> None:
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"need 0 < crop <= resize, got crop={self.crop}, resize={self.resize}")

    @classmethod
    def paper(cls) -> ImageTransformConfig:
        return cls()

    @classmethod
    def tiny(cls, size: int = 64) -> ImageTransformConfig:
        """The paper's 346:289 ratio at a small crop size (for CPU runs)."""
        return cls(resize=round(size * 346 / 289), crop=size)


def image_transform(config: ImageTransformConfig = ImageTransformConfig(), train: bool = False) -> v2.Compose:
    """PIL RGB image → (3, crop, crop) float32 tensor in [-1, 1]."""
    steps: list = [v2.ToImage(), v2.Resize(config.resize, antialias=True)]
    if train:
        steps.append(v2.RandomCrop(config.crop))
        if config.random_flip:
            steps.append(v2.RandomHorizontalFlip())
    else:
        steps.append(v2.CenterCrop(config.crop))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
    return v2.Compose(steps)


class CropToPixels:
    """The tail of :func:`image_transform` for images already at ``config.resize`` px, as uint8
    tensors (or RGB PIL images): (3, R, R) uint8 → (3, crop, crop) float32 in [-1, 1], a random crop in training (the
    offsets drawn with ``torch.randint``, like ``v2.RandomCrop``) or the centre crop otherwise.

    Decoding (or drawing) and resizing once and cropping a cached tensor is what keeps the input
    pipeline off a 2-core CPU's critical path: ~10 µs an image instead of ~0.3 ms through the PIL
    pipeline. No flip: this path serves captions that say left and right."""

    def __init__(self, config: ImageTransformConfig, train: bool = False):
        self.config, self.train = config, train

    def __call__(self, image: torch.Tensor | Image.Image) -> torch.Tensor:
        if isinstance(image, Image.Image):
            image = torch.from_numpy(np.asarray(to_rgb(image), dtype=np.uint8).transpose(2, 0, 1).copy())
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"CropToPixels needs a (3, H, W) uint8 tensor, got {image.dtype} {tuple(image.shape)}")
        height, width = image.shape[1:]
        crop = self.config.crop
        if min(height, width) < crop:
            raise ValueError(f"image {height}x{width} is smaller than the crop {crop}")
        if self.train:
            top = int(torch.randint(0, height - crop + 1, ()))
            left = int(torch.randint(0, width - crop + 1, ()))
        else:  # torchvision's centre-crop offsets
            top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
        window = image[:, top:top + crop, left:left + crop]
        return window.to(torch.float32).div_(127.5).sub_(1.0)


def to_pixels(image: Image.Image, config: ImageTransformConfig = ImageTransformConfig()) -> torch.Tensor:
    """Eval transform of one image: (3, crop, crop) in [-1, 1]."""
    return image_transform(config, train=False)(image)


def thumbnail_embedding(image: Image.Image, side: int = 16) -> np.ndarray:
    """A crude, model-free image embedding: the mean-centred, L2-normalised ``side``×``side``
    RGB thumbnail, (3·side²,) float32. Resized or re-encoded copies of one image keep a cosine
    near 1, which is what near-duplicate detection at small scale needs.
    """
    small = np.asarray(to_rgb(image).resize((side, side), Image.BILINEAR), dtype=np.float32)
    flat = (small - small.mean()).reshape(-1)
    norm = np.linalg.norm(flat)
    return flat / norm if norm > 0 else flat
