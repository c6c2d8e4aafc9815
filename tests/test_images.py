"""Safe decoding and the paper's image transform (align_lite.data.images)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
from PIL import Image

from align_lite.data.images import (
    BadImageError,
    ImageFacts,
    ImageTransformConfig,
    image_transform,
    open_rgb,
    probe_image,
    thumbnail_embedding,
    to_pixels,
    to_rgb,
)


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise_rgb(size=(64, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def smooth_image(seed: int, size: int = 128) -> Image.Image:
    """A photo-like image: low-frequency colour waves plus a few soft blobs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 2.5), rng.uniform(0.5, 2.5), rng.uniform(0, 2 * np.pi)
        c = 0.5 + 0.3 * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
        for _ in range(3):
            cx, cy, r, a = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.2), rng.uniform(-0.4, 0.4)
            c += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r**2))
        channels.append(c)
    arr = np.clip(np.stack(channels, -1) * 255, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def asymmetric_image(w: int = 40, h: int = 40) -> Image.Image:
    """Left half black, right half white: a horizontal flip is obvious."""
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:, w // 2 :] = 255
    return Image.fromarray(arr)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


# ------------------------------------------------------------------------------- open_rgb: modes


def test_rgb_passes_through_unchanged(tmp_path):
    image = noise_rgb()
    path = tmp_path / "x.png"
    image.save(path)
    out = open_rgb(path)
    assert out.mode == "RGB" and out.size == (64, 48)
    np.testing.assert_array_equal(pixels(out), pixels(image))
    np.testing.assert_array_equal(pixels(open_rgb(path.read_bytes())), pixels(image))
    np.testing.assert_array_equal(pixels(open_rgb(str(path))), pixels(image))


def test_rgba_transparent_goes_white_opaque_kept():
    arr = np.zeros((2, 3, 4), dtype=np.uint8)
    arr[0, 0] = (10, 20, 30, 0)  # fully transparent: white
    arr[0, 1] = (10, 20, 30, 255)  # opaque: its own colour
    arr[0, 2] = (0, 0, 0, 128)  # half transparent black: mid grey
    arr[1, :] = (200, 100, 50, 255)
    out = open_rgb(encode(Image.fromarray(arr, "RGBA")))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (10, 20, 30)
    assert all(abs(v - 127) <= 1 for v in out.getpixel((2, 0)))
    assert out.getpixel((0, 1)) == (200, 100, 50)


def test_la_transparent_goes_white():
    image = Image.new("LA", (2, 1), (40, 255))
    image.putpixel((0, 0), (40, 0))
    out = open_rgb(encode(image))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (40, 40, 40)


def test_palette_with_transparency_goes_white():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    raw = encode(image, transparency=0)
    assert Image.open(io.BytesIO(raw)).mode == "P"
    out = open_rgb(raw)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)  # index 0 is transparent black → white
    assert out.getpixel((1, 0)) == (255, 0, 0)


def test_palette_without_transparency_keeps_colours():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 128, 255] + [0] * (256 * 3 - 6))
    image.putpixel((1, 0), 1)
    raw = encode(image)
    assert "transparency" not in Image.open(io.BytesIO(raw)).info
    out = open_rgb(raw)
    assert out.getpixel((0, 0)) == (0, 0, 0)  # black stays black, not white
    assert out.getpixel((1, 0)) == (0, 128, 255)


@pytest.mark.parametrize("mode_key", ["L", "RGB"])
def test_transparency_key_on_l_and_rgb_goes_white(mode_key):
    """PNG's tRNS chunk on greyscale/truecolour images marks one colour transparent."""
    if mode_key == "L":
        image = Image.new("L", (2, 1), 0)
        image.putpixel((1, 0), 90)
        raw = encode(image, transparency=0)
        kept = (90, 90, 90)
    else:
        image = Image.new("RGB", (2, 1), (0, 0, 0))
        image.putpixel((1, 0), (90, 10, 20))
        raw = encode(image, transparency=(0, 0, 0))
        kept = (90, 10, 20)
    assert "transparency" in Image.open(io.BytesIO(raw)).info
    out = open_rgb(raw)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == kept


def test_grayscale_l():
    arr = np.array([[0, 100, 255]], dtype=np.uint8)
    out = open_rgb(encode(Image.fromarray(arr)))
    assert out.mode == "RGB"
    assert [out.getpixel((i, 0)) for i in range(3)] == [(0, 0, 0), (100, 100, 100), (255, 255, 255)]


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    arr = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)
    raw = encode(Image.fromarray(arr))
    assert Image.open(io.BytesIO(raw)).mode.startswith("I")
    out = open_rgb(raw)
    assert out.mode == "RGB"
    assert [out.getpixel((i, 0))[0] for i in range(4)] == [0, 64, 128, 255]


def test_cmyk_jpeg():
    image = Image.new("CMYK", (16, 16), (0, 0, 0, 0))  # no ink: white
    image.paste((0, 255, 255, 0), (0, 0, 8, 16))  # magenta + yellow ink on the left: red
    raw = encode(image, "JPEG", quality=95)
    assert Image.open(io.BytesIO(raw)).mode == "CMYK"
    out = open_rgb(raw)
    assert out.mode == "RGB" and out.size == (16, 16)
    right = np.asarray(out)[:, 12:].reshape(-1, 3)
    left = np.asarray(out)[:, :4].reshape(-1, 3)
    assert right.min() > 230  # white
    assert (left[:, 0] > 200).all() and (left[:, 1:] < 60).all()  # red


def test_one_bit():
    image = Image.new("1", (8, 2), 0)
    image.putpixel((3, 1), 1)
    out = open_rgb(encode(image))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((3, 1)) == (255, 255, 255)


def test_to_rgb_returns_the_same_object_for_plain_rgb():
    image = noise_rgb()
    assert to_rgb(image) is image


# ------------------------------------------------------------------------------- open_rgb: bad input


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_file_is_corrupt(tmp_path, fmt, keep):
    raw = encode(noise_rgb((96, 96), seed=1), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(BadImageError) as info:
        open_rgb(path)
    assert info.value.reason == "corrupt_image"
    assert str(path) in str(info.value)
    with pytest.raises(BadImageError) as info:
        open_rgb(path.read_bytes())
    assert info.value.reason == "corrupt_image"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(BadImageError) as info:
        open_rgb(path)
    assert info.value.reason == "empty_file"
    with pytest.raises(BadImageError) as info:
        open_rgb(b"")
    assert info.value.reason == "empty_file"


def test_missing_file(tmp_path):
    with pytest.raises(BadImageError) as info:
        open_rgb(tmp_path / "nope.png")
    assert info.value.reason == "missing_file"


def test_directory_instead_of_file_is_counted_not_raised(tmp_path):
    with pytest.raises(BadImageError) as info:
        open_rgb(tmp_path)
    assert info.value.reason == "missing_file"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes_are_corrupt(seed):
    raw = np.random.default_rng(seed).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    with pytest.raises(BadImageError) as info:
        open_rgb(raw)
    assert info.value.reason == "corrupt_image"


def test_png_header_with_garbage_body_is_corrupt():
    raw = encode(noise_rgb())
    broken = raw[:40] + bytes(len(raw) - 40)
    with pytest.raises(BadImageError) as info:
        open_rgb(broken)
    assert info.value.reason == "corrupt_image"


def test_bad_image_error_carries_reason_and_detail():
    err = BadImageError("empty_file", "x.png: 0 bytes")
    assert isinstance(err, ValueError)
    assert err.reason == "empty_file"
    assert err.detail == "x.png: 0 bytes"
    assert str(err) == "empty_file: x.png: 0 bytes"
    with pytest.raises(BadImageError) as info:
        open_rgb(b"not an image")
    assert info.value.detail and info.value.detail in str(info.value)


# ------------------------------------------------------------------------------- probe_image


def test_probe_image_size_and_hash(tmp_path):
    raw = encode(noise_rgb((37, 21), seed=3))
    path = tmp_path / "p.png"
    path.write_bytes(raw)
    facts, image = probe_image(path)
    assert facts == ImageFacts(width=37, height=21, sha256=hashlib.sha256(raw).hexdigest())
    assert image.mode == "RGB" and image.size == (37, 21)


def test_probe_image_hash_is_of_bytes_not_pixels(tmp_path):
    image = noise_rgb(seed=4)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    image.save(a, compress_level=1)
    image.save(b, compress_level=9)
    assert a.read_bytes() != b.read_bytes()
    fa, ia = probe_image(a)
    fb, ib = probe_image(b)
    assert fa.sha256 != fb.sha256
    np.testing.assert_array_equal(pixels(ia), pixels(ib))


def test_probe_image_bad_input(tmp_path):
    with pytest.raises(BadImageError) as info:
        probe_image(tmp_path / "missing.png")
    assert info.value.reason == "missing_file"
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    with pytest.raises(BadImageError) as info:
        probe_image(tmp_path / "bad.png")
    assert info.value.reason == "corrupt_image"


# ------------------------------------------------------------------------------- the transform


def test_config_defaults_are_the_papers():
    config = ImageTransformConfig()
    assert (config.resize, config.crop, config.random_flip) == (346, 289, True)
    assert ImageTransformConfig.paper() == config


@pytest.mark.parametrize("resize,crop", [(10, 11), (10, 0), (10, -3), (0, 0)])
def test_config_validation(resize, crop):
    with pytest.raises(ValueError):
        ImageTransformConfig(resize=resize, crop=crop)


def test_config_crop_equal_to_resize_is_allowed():
    assert ImageTransformConfig(resize=32, crop=32).crop == 32


@pytest.mark.parametrize("size", [16, 64, 289])
def test_tiny_keeps_the_papers_ratio(size):
    config = ImageTransformConfig.tiny(size)
    assert config.crop == size
    assert config.resize == round(size * 346 / 289)
    assert config.resize >= config.crop
    assert abs(config.resize / config.crop - 346 / 289) < 0.5 / size + 1e-9
    assert config.random_flip is True


def test_tiny_default_and_paper_size():
    assert ImageTransformConfig.tiny() == ImageTransformConfig(resize=77, crop=64)
    assert ImageTransformConfig.tiny(289) == ImageTransformConfig.paper()


def test_config_is_frozen():
    with pytest.raises(Exception):
        ImageTransformConfig().crop = 3  # type: ignore[misc]


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("size", [(50, 30), (30, 50), (200, 200), (7, 5)])
def test_output_shape_dtype_and_range(train, size):
    torch.manual_seed(0)
    config = ImageTransformConfig.tiny(32)
    for image in (noise_rgb(size, seed=5), asymmetric_image(*size)):
        out = image_transform(config, train=train)(image)
        assert isinstance(out, torch.Tensor)
        assert out.shape == (3, 32, 32)
        assert out.dtype == torch.float32
        assert out.min() >= -1.0 and out.max() <= 1.0
    if not train:  # the centre crop keeps both the black and the white half: [-1, 1], not [0, 1]
        assert out.min() < -0.9 and out.max() > 0.9


@pytest.mark.parametrize("train", [False, True])
def test_white_is_one_black_is_minus_one(train):
    config = ImageTransformConfig.tiny(24)
    transform = image_transform(config, train=train)
    white = transform(Image.new("RGB", (40, 30), (255, 255, 255)))
    black = transform(Image.new("RGB", (40, 30), (0, 0, 0)))
    assert torch.allclose(white, torch.ones_like(white))
    assert torch.allclose(black, -torch.ones_like(black))


def test_pixel_scaling_is_x_minus_127_5_over_127_5():
    values = (0, 51, 127, 128, 200, 255)
    config = ImageTransformConfig(resize=8, crop=8)
    for v in values:
        out = to_pixels(Image.new("RGB", (8, 8), (v, 255 - v, v)), config)
        expected = torch.tensor([(v - 127.5) / 127.5, (255 - v - 127.5) / 127.5, (v - 127.5) / 127.5])
        assert torch.allclose(out.mean(dim=(1, 2)), expected, atol=1e-6)


def test_eval_is_deterministic_and_centre_crops():
    config = ImageTransformConfig(resize=40, crop=20)
    image = noise_rgb((40, 40), seed=6)  # already at resize: only the crop acts
    transform = image_transform(config, train=False)
    a, b = transform(image), transform(image)
    assert torch.equal(a, b)
    expected = (torch.from_numpy(pixels(image)[10:30, 10:30].copy()).permute(2, 0, 1).float() - 127.5) / 127.5
    assert torch.allclose(a, expected, atol=1e-5)
    assert torch.equal(to_pixels(image, config), a)


def test_resize_acts_on_the_shorter_side():
    """A 2:1 image resized to 20 becomes 40×20; the centre crop keeps its middle."""
    arr = np.zeros((10, 20, 3), dtype=np.uint8)
    arr[:, :3] = 255  # white left strip: outside a centred 20×20 crop of the 40×20 resize
    out = to_pixels(Image.fromarray(arr), ImageTransformConfig(resize=20, crop=20))
    assert out.shape == (3, 20, 20)
    assert torch.allclose(out, -torch.ones_like(out), atol=1e-6)


def test_train_crops_vary():
    torch.manual_seed(0)
    config = ImageTransformConfig(resize=48, crop=16, random_flip=False)
    transform = image_transform(config, train=True)
    image = noise_rgb((48, 48), seed=7)
    outs = [transform(image) for _ in range(10)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_no_flip_when_random_flip_is_false():
    torch.manual_seed(0)
    config = ImageTransformConfig(resize=40, crop=40, random_flip=False)
    transform = image_transform(config, train=True)
    image = asymmetric_image()
    for _ in range(50):
        out = transform(image)
        assert out[:, :, :20].max() == -1.0 and out[:, :, 20:].min() == 1.0


def test_flip_happens_when_random_flip_is_true():
    torch.manual_seed(0)
    config = ImageTransformConfig(resize=40, crop=40, random_flip=True)
    transform = image_transform(config, train=True)
    image = asymmetric_image()
    flipped = 0
    for _ in range(50):
        out = transform(image)
        if out[:, :, :20].min() == 1.0 and out[:, :, 20:].max() == -1.0:
            flipped += 1
        else:
            assert out[:, :, :20].max() == -1.0, "either flipped or not: nothing else"
    assert 10 <= flipped <= 40


def test_eval_never_flips():
    config = ImageTransformConfig(resize=40, crop=40, random_flip=True)
    transform = image_transform(config, train=False)
    for _ in range(20):
        out = transform(asymmetric_image())
        assert out[:, :, :20].max() == -1.0


# ------------------------------------------------------------------------------- thumbnails


@pytest.mark.parametrize("side", [8, 16])
def test_thumbnail_embedding_shape_and_unit_norm(side):
    e = thumbnail_embedding(smooth_image(0), side=side)
    assert e.shape == (3 * side * side,)
    assert e.dtype == np.float32
    assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-5
    assert abs(float(e.mean())) < 1e-5  # mean-centred


def test_thumbnail_embedding_of_a_flat_image_is_zero_not_nan():
    e = thumbnail_embedding(Image.new("RGB", (20, 20), (90, 90, 90)))
    assert np.isfinite(e).all()
    assert not e.any()


def test_thumbnail_embedding_accepts_any_mode():
    image = smooth_image(1)
    a = thumbnail_embedding(image)
    b = thumbnail_embedding(image.convert("RGBA"))  # fully opaque: same pixels
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_thumbnail_embedding_resize_invariance():
    images = [smooth_image(seed) for seed in range(4)]
    emb = [thumbnail_embedding(im) for im in images]
    for im, e in zip(images, emb):
        half = im.resize((im.width // 2, im.height // 2), Image.BILINEAR)
        assert float(e @ thumbnail_embedding(half)) > 0.975
        jpeg = Image.open(io.BytesIO(encode(im, "JPEG", quality=80)))
        assert float(e @ thumbnail_embedding(jpeg)) > 0.975
    for i in range(len(emb)):
        for j in range(i + 1, len(emb)):
            assert float(emb[i] @ emb[j]) < 0.9


def test_crop_to_pixels_matches_the_pil_transform_on_a_centre_crop():
    from align_lite.data.images import CropToPixels, ImageTransformConfig, image_transform

    config = ImageTransformConfig(resize=20, crop=16, random_flip=False)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    tensor = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())
    expected = image_transform(config, train=False)(image)
    torch.testing.assert_close(CropToPixels(config)(tensor), expected)
    torch.testing.assert_close(CropToPixels(config)(image), expected)  # a PIL image works too


def test_crop_to_pixels_random_crops_are_windows_of_the_image():
    from align_lite.data.images import CropToPixels, ImageTransformConfig

    config = ImageTransformConfig(resize=12, crop=8, random_flip=False)
    tensor = torch.arange(3 * 12 * 12, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(3, 12, 12)
    full = tensor.float() / 127.5 - 1
    torch.manual_seed(0)
    seen = set()
    for _ in range(30):
        out = CropToPixels(config, train=True)(tensor)
        matches = [(top, left) for top in range(5) for left in range(5)
                   if torch.allclose(out, full[:, top:top + 8, left:left + 8])]
        assert len(matches) >= 1
        seen.add(matches[0])
    assert len(seen) > 5  # offsets vary


def test_crop_to_pixels_rejects_bad_input():
    from align_lite.data.images import CropToPixels, ImageTransformConfig

    crop = CropToPixels(ImageTransformConfig(resize=10, crop=8))
    with pytest.raises(ValueError, match="uint8"):
        crop(torch.zeros(3, 10, 10))
    with pytest.raises(ValueError, match="smaller than the crop"):
        crop(torch.zeros(3, 6, 10, dtype=torch.uint8))
