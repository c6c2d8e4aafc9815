"""Pretrained ALIGN behind align_lite's API (align_lite.models.pretrained), tested offline against a
tiny randomly initialised AlignModel + AlignProcessor saved to a temporary directory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AlignConfig,
    AlignModel,
    AlignProcessor,
    AlignTextConfig,
    AlignVisionConfig,
    BertTokenizer,
    EfficientNetImageProcessor,
)

from align_lite.models.pretrained import (
    PretrainedAlign,
    PretrainedOutput,
    PretrainedUnavailableError,
    default_local_files_only,
)

WORDS = "a photo of the cat dog red blue green square circle on left right big small".split()
RESIZE, CROP, PROJ, TEXT_HIDDEN = 40, 32, 16, 32
TEMPERATURE = 0.0625


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing in these tests may go online."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def tiny_processor(vocab_dir) -> AlignProcessor:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]
    vocab_file = vocab_dir / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab_file=str(vocab_file))
    # align-base's preprocessor_config.json, shrunk: 346→RESIZE, 289→CROP.
    image_processor = EfficientNetImageProcessor(
        size={"height": RESIZE, "width": RESIZE},
        crop_size={"height": CROP, "width": CROP},
        do_center_crop=True,
        resample=2,
        rescale_factor=1 / 127.5,
        rescale_offset=True,
        do_normalize=False,
        include_top=False,
    )
    return AlignProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_model(vocab_size: int) -> AlignModel:
    text = AlignTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,  # the processor pads to 64
    )
    vision = AlignVisionConfig(
        image_size=CROP,
        width_coefficient=1.0,
        depth_coefficient=1.0,
        kernel_sizes=[3, 3],
        in_channels=[32, 16],
        out_channels=[16, PROJ],  # the image embedding is the last block's width: must equal PROJ
        strides=[1, 2],
        num_block_repeats=[1, 1],
        expand_ratios=[1, 2],
        hidden_dim=64,  # AvgPool2d kernel: >= the final feature map for a global mean
        drop_connect_rate=0.0,
    )
    config = AlignConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=PROJ)
    torch.manual_seed(0)
    model = AlignModel(config).eval()
    with torch.no_grad():
        model.temperature.fill_(TEMPERATURE)  # not the init value 1.0, so a missing divide shows
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(directory, reference AlignModel, reference AlignProcessor)."""
    root = tmp_path_factory.mktemp("tiny_align")
    processor = tiny_processor(root)
    model = tiny_model(len(processor.tokenizer))
    target = root / "model"
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return target, model, processor


@pytest.fixture(scope="module")
def wrapped(saved):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return PretrainedAlign.from_pretrained(saved[0])


def images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(50, 70), (33, 33), (80, 41), (64, 64)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes[:n]]


TEXTS = ["a photo of the cat", "big red square on the left", "dog"]


def pooled(features) -> torch.Tensor:
    return features if isinstance(features, torch.Tensor) else features.pooler_output


def test_loads_offline_from_directory(saved, wrapped):
    assert isinstance(wrapped, PretrainedAlign)
    assert not wrapped.training and not wrapped.model.training
    assert wrapped.embed_dim == PROJ and wrapped.image_size == CROP and wrapped.max_length == 64
    assert wrapped.device == torch.device("cpu")
    for (name, ours), (_, ref) in zip(wrapped.model.state_dict().items(), saved[1].state_dict().items()):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0, msg=name)


def test_local_files_only_default(tmp_path, monkeypatch):
    assert default_local_files_only(tmp_path)  # an existing directory
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert not default_local_files_only("kakaobrain/align-base")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert default_local_files_only("kakaobrain/align-base")


def test_encoders_match_align_model(saved, wrapped):
    _, ref, processor = saved
    inputs = processor(images=images(), text=TEXTS, return_tensors="pt")
    pixels, ids, mask = inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        img, txt = wrapped.encode_image(pixels), wrapped.encode_text(ids, mask)
        ref_img = pooled(ref.get_image_features(pixel_values=pixels))
        ref_txt = pooled(ref.get_text_features(input_ids=ids, attention_mask=mask))
        raw_img, raw_txt = wrapped.image_features(pixels), wrapped.text_features(ids, mask)
    assert img.shape == (3, PROJ) and txt.shape == (3, PROJ)
    torch.testing.assert_close(raw_img, ref_img, rtol=0, atol=0)
    torch.testing.assert_close(raw_txt, ref_txt, rtol=0, atol=0)
    torch.testing.assert_close(img, ref_img / ref_img.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(txt, ref_txt / ref_txt.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    # the features are not already unit length, so the normalisation is being tested
    assert not torch.allclose(ref_txt.norm(dim=-1), torch.ones(3), atol=1e-3)


def test_forward_matches_align_model(saved, wrapped):
    _, ref, processor = saved
    inputs = processor(images=images(2), text=TEXTS, return_tensors="pt")
    with torch.no_grad():
        ours = wrapped(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
        theirs = ref(**inputs)
    assert isinstance(ours, PretrainedOutput)
    assert ours.logits_per_image.shape == (2, 3) and ours.logits_per_text.shape == (3, 2)
    for field in ("logits_per_image", "logits_per_text", "image_embeds", "text_embeds"):
        torch.testing.assert_close(
            getattr(ours, field), getattr(theirs, field), rtol=1e-6, atol=1e-6, msg=field
        )
    torch.testing.assert_close(ours.temperature, ref.temperature, rtol=0, atol=0)


def test_temperature(saved, wrapped):
    assert wrapped.temperature is wrapped.model.temperature
    assert wrapped.temperature.item() == pytest.approx(TEMPERATURE)
    assert wrapped.temperature.item() == saved[1].temperature.item()


def test_preprocess_images_matches_processor(saved, wrapped):
    batch = images(4)
    pixels = wrapped.preprocess_images(batch)
    assert pixels.shape == (4, 3, CROP, CROP) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    reference = saved[2](images=batch, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pixels, reference, rtol=0, atol=0)


def test_preprocess_images_range_and_modes(wrapped):
    white, black = Image.new("RGB", (50, 30), "white"), Image.new("L", (30, 50), 0)
    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # fully transparent: composited on white
    pixels = wrapped.preprocess_images([white, black, clear])
    assert pixels.shape == (3, 3, CROP, CROP)
    torch.testing.assert_close(pixels[0], torch.ones(3, CROP, CROP))  # 255 → +1
    torch.testing.assert_close(pixels[1], -torch.ones(3, CROP, CROP))  # 0 → -1
    torch.testing.assert_close(pixels[2], torch.ones(3, CROP, CROP))
    with pytest.raises(ValueError, match="at least one"):
        wrapped.preprocess_images([])


def test_tokenize_pads_like_processor(saved, wrapped):
    batch = wrapped.tokenize(TEXTS)
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].shape == (3, 64) and batch["attention_mask"].shape == (3, 64)
    reference = saved[2](text=TEXTS, return_tensors="pt")
    assert reference["input_ids"].shape[1] == 64  # AlignProcessor's own default
    torch.testing.assert_close(batch["input_ids"], reference["input_ids"], rtol=0, atol=0)
    torch.testing.assert_close(batch["attention_mask"], reference["attention_mask"], rtol=0, atol=0)
    assert batch["input_ids"][0, 0].item() == saved[2].tokenizer.cls_token_id
    long = wrapped.tokenize([" ".join(["cat"] * 200)])
    assert long["input_ids"].shape == (1, 64) and long["attention_mask"].all()


def test_end_to_end_from_pil_and_text(wrapped):
    pixels = wrapped.preprocess_images(images(2))
    tokens = wrapped.tokenize(TEXTS[:2])
    with torch.no_grad():
        out = wrapped(pixels, **tokens)
    expected = out.image_embeds @ out.text_embeds.t() / wrapped.temperature
    torch.testing.assert_close(out.logits_per_image, expected)
    assert torch.isfinite(out.logits_per_text).all()


def test_missing_directory_gives_clear_error(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(PretrainedUnavailableError, match="local_files_only=True.*offline"):
        PretrainedAlign.from_pretrained(str(missing), local_files_only=True)
    with pytest.raises(OSError, match="no such directory"):
        PretrainedAlign.from_pretrained(missing)


def test_hub_id_not_cached_offline_gives_clear_error(tmp_path):
    with pytest.raises(PretrainedUnavailableError, match="Hugging Face cache") as info:
        PretrainedAlign.from_pretrained("kakaobrain/align-base", cache_dir=str(tmp_path / "empty_cache"))
    assert "save_pretrained" in str(info.value)


def test_directory_without_weights_gives_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PretrainedUnavailableError, match="cannot load pretrained ALIGN"):
        PretrainedAlign.from_pretrained(tmp_path)


def test_tiny_stand_in_loads_and_matches_alignmodel(tmp_path):
    from transformers import AlignModel

    from align_lite.models.pretrained import save_tiny_stand_in

    directory = save_tiny_stand_in(tmp_path / "stand_in", ["red", "circle", "blue", "square"], seed=1)
    wrapped = PretrainedAlign.from_pretrained(directory)
    reference = AlignModel.from_pretrained(directory).eval()
    pixels = wrapped.preprocess_images(images(2))
    batch = wrapped.tokenize(["red circle", "blue square"])
    assert pixels.shape == (2, 3, 32, 32) and batch["input_ids"].shape == (2, 64)
    with torch.no_grad():
        out = wrapped(pixels, batch["input_ids"], batch["attention_mask"])
        expected = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=pixels)
    torch.testing.assert_close(out.logits_per_image, expected.logits_per_image)
    circle = wrapped.processor.tokenizer.convert_tokens_to_ids("circle")
    assert wrapped.tokenize(["circle"])["input_ids"][0, 1] == circle


def test_encoders_give_unit_vectors_when_features_are_tiny(saved, wrapped, monkeypatch):
    # A randomly initialised AlignModel in eval mode can pool features of norm ~1e-13, where
    # F.normalize's 1e-12 floor returned vectors of norm ~0.1 instead of AlignModel's unit ones.
    _, _, processor = saved
    inputs = processor(images=images(2), text=TEXTS[:2], return_tensors="pt")
    with torch.no_grad():
        img = wrapped.image_features(inputs["pixel_values"])
        txt = wrapped.text_features(inputs["input_ids"], inputs["attention_mask"])
    tiny_img = img / img.norm(dim=-1, keepdim=True) * 1e-13
    tiny_txt = txt / txt.norm(dim=-1, keepdim=True) * 1e-13
    monkeypatch.setattr(wrapped, "image_features", lambda pixels: tiny_img)
    monkeypatch.setattr(wrapped, "text_features", lambda ids, mask=None: tiny_txt)
    torch.testing.assert_close(wrapped.encode_image(inputs["pixel_values"]),
                               tiny_img / tiny_img.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(wrapped.encode_text(inputs["input_ids"]), tiny_txt / tiny_txt.norm(dim=-1, keepdim=True))
