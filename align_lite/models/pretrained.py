"""The released ALIGN (transformers' ``AlignModel``) behind align_lite's dual-encoder API.

:class:`PretrainedAlign` wraps ``AlignModel`` + ``AlignProcessor`` loaded from a hub id (default
``kakaobrain/align-base``, the COYO-700M ALIGN: EfficientNet-B7 + BERT-base) or from any local
directory written by ``save_pretrained``. It exposes the same calls as align_lite's own dual
encoder, so the evaluation and search chapters can swap one for the other::

    model = PretrainedAlign.from_pretrained("kakaobrain/align-base")      # or a local directory
    pixels = model.preprocess_images(images)                               # (B, 3, 289, 289)
    batch = model.tokenize(["a photo of a cat", "a photo of a dog"])       # (B, 64) each
    img = model.encode_image(pixels)                                       # (B, 640), unit norm
    txt = model.encode_text(batch["input_ids"], batch["attention_mask"])   # (B, 640), unit norm
    out = model(pixels, batch["input_ids"], batch["attention_mask"])      # logits / temperature

Nothing is downloaded unless asked for: ``local_files_only`` defaults to ``True`` when
``name_or_path`` is an existing directory or ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set,
and a model that is neither local nor cached raises :class:`PretrainedUnavailableError` saying how
to get it for offline use.

What transformers' ALIGN does (read from the installed ``transformers/models/align`` and
``models/efficientnet`` sources, v5.x, and ``kakaobrain/align-base``'s ``preprocessor_config.json``):

* **Image embedding** — no projection head. ``AlignVisionModel`` runs the EfficientNet stem and
  MBConv blocks (no 1×1 "top" conv) and mean-pools the last block's feature map;
  ``pooler_output`` is ``(B, round_filters(out_channels[-1]))`` = 640 for B7 (width ×2.0 of 320).
  The pool is ``AvgPool2d(kernel=hidden_dim, ceil_mode=True)``, a global mean only while the final
  feature map is no larger than ``hidden_dim`` (2560 for align-base, so always in practice).
* **Text embedding** — BERT's last hidden state at [CLS] (position 0, *not* BERT's tanh pooler)
  through ``text_projection = Linear(hidden_size, projection_dim)`` (768 → 640).
* ``get_image_features`` / ``get_text_features`` return *unnormalised* features. In v5 they return
  a ``ModelOutput`` whose ``pooler_output`` holds them (for text, ``pooler_output`` is overwritten
  with the projected [CLS]); in v4 they returned the tensor itself. Both are handled here.
* ``AlignModel.forward`` L2-normalises both, then ``logits_per_text = text_embeds @ image_embeds.T
  / temperature`` and ``logits_per_image = logits_per_text.T``. ``temperature`` is a learnt scalar
  that *divides* (init ``temperature_init_value`` = 1.0). Its loss (not used here) is the MEAN of the
  two directions with label smoothing 0.1; the paper sums them.
* **Image preprocessing** (``EfficientNetImageProcessor`` with align-base's config): resize to
  346×346 (both sides: the aspect ratio is *not* kept; bilinear, ``resample=2``), centre-crop
  289×289, ``rescale_factor = 1/127.5`` with ``rescale_offset=True`` → ``x/127.5 - 1`` ∈ [-1, 1],
  ``do_normalize=False``, ``include_top=False``. The paper (§4): resize 346, crop 289 (random +
  flip for training, central for eval). align_lite's own ``data.images.image_transform`` resizes the
  *shorter side* to 346 instead, so the two crops differ for non-square images; use
  :meth:`PretrainedAlign.preprocess_images` for the pretrained model.
* **Text preprocessing** — ``AlignProcessor`` defaults to ``padding="max_length", max_length=64``
  (the paper's 64 tokens) with the BERT-base-uncased WordPiece tokenizer. The processor does not
  truncate by default; :meth:`PretrainedAlign.tokenize` adds ``truncation=True`` so every batch is
  exactly ``(B, 64)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from align_lite.data.images import to_rgb
from align_lite.models.dual_encoder import l2_normalize

DEFAULT_MODEL = "kakaobrain/align-base"
DEFAULT_MAX_LENGTH = 64  # AlignProcessor's text default; also the paper's sequence length

_TRUE = {"1", "on", "yes", "true"}


class PretrainedUnavailableError(OSError):
    """The requested pretrained ALIGN could not be loaded (not local, not cached, or no network)."""


@dataclass
class PretrainedOutput:
    """What :meth:`PretrainedAlign.forward` returns.

    Same field names as ``align_lite.models.dual_encoder.AlignOutput`` (kept local here so this
    module does not depend on it; the two are to be unified).

    image_embeds: (B_img, D) L2-normalised; text_embeds: (B_txt, D) L2-normalised;
    logits_per_image: (B_img, B_txt) = image_embeds @ text_embeds.T / temperature;
    logits_per_text: (B_txt, B_img), its transpose; temperature: () scalar tensor.
    """

    image_embeds: Tensor
    text_embeds: Tensor
    logits_per_image: Tensor
    logits_per_text: Tensor
    temperature: Tensor


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` asks for no network (read now,
    not at import, so a test or a notebook cell can set it late)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except (ImportError, AttributeError):
        return False


def default_local_files_only(name_or_path: str | os.PathLike) -> bool:
    """``local_files_only`` when the caller did not say: True for an existing directory or when
    offline mode is set, False otherwise (a hub id may then be downloaded)."""
    return Path(name_or_path).expanduser().is_dir() or hub_offline()


def _looks_like_path(name: str) -> bool:
    """A string that can only be meant as a local path (hub ids are ``name`` or ``owner/name``)."""
    return name.startswith((".", "/", "~", "\\")) or os.sep in name.replace("/", "") or name.count("/") > 1


def _pooled(features: Any) -> Tensor:
    """``get_*_features`` output → (B, D) tensor: a tensor (transformers v4) or a ModelOutput with
    ``pooler_output`` (v5)."""
    if isinstance(features, Tensor):
        return features
    pooled = getattr(features, "pooler_output", None)
    if isinstance(pooled, Tensor):
        return pooled
    raise TypeError(f"unexpected AlignModel feature output: {type(features).__name__}")


def _unavailable(name: str, local_files_only: bool, err: Exception) -> PretrainedUnavailableError:
    if local_files_only:
        how = (
            f"local_files_only=True, so nothing was downloaded, and {name!r} is neither a directory "
            "holding config.json + model.safetensors + the processor files nor a model in the "
            "Hugging Face cache. To use it offline, download it once on a machine with network "
            f"(e.g. `hf download {DEFAULT_MODEL}`, or PretrainedAlign.from_pretrained(..., "
            "local_files_only=False)) so it lands in the cache, or save it with "
            "`save_pretrained(dir)` (model and processor) and pass that directory."
        )
    else:
        how = (
            "the download failed (no network, or a wrong hub id?). For offline use pass a local "
            "directory written by save_pretrained, or set HF_HUB_OFFLINE=1 to use the cache only."
        )
    return PretrainedUnavailableError(f"cannot load pretrained ALIGN {name!r}: {how}\n  cause: {err}")


class PretrainedAlign(nn.Module):
    """transformers' ``AlignModel`` with align_lite's dual-encoder interface.

    ``model`` is the wrapped ``AlignModel`` (its weights are this module's parameters, so
    ``.to()``, ``.eval()``, ``.parameters()`` and fine-tuning work as usual); ``processor`` is the
    ``AlignProcessor`` (tokenizer + image processor) it was released with.
    """

    def __init__(self, model: nn.Module, processor: Any, max_length: int | None = None):
        super().__init__()
        self.model = model
        self.processor = processor
        defaults = getattr(processor, "text_kwargs", None)  # v5: AlignProcessor.text_kwargs
        default_len = defaults.get("max_length") if isinstance(defaults, dict) else None
        self.max_length = int(max_length or default_len or DEFAULT_MAX_LENGTH)

    # ---------------------------------------------------------------------------------------
    # Loading
    # ---------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_MODEL,
        local_files_only: bool | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> PretrainedAlign:
        """Load ``AlignModel`` and ``AlignProcessor`` from a hub id or a local directory.

        ``local_files_only=None`` means True for an existing directory or in offline mode
        (``HF_HUB_OFFLINE=1``), else False. Extra ``kwargs`` go to ``AlignModel.from_pretrained``
        (e.g. ``dtype``); ``cache_dir``, ``revision`` and ``token`` also go to the processor. The
        model is returned in eval mode on ``device`` (default: where transformers put it, the CPU). Raises
        :class:`PretrainedUnavailableError` with instructions when it cannot be found.
        """
        from transformers import AlignModel, AlignProcessor

        name = os.fspath(name_or_path)
        path = Path(name).expanduser()
        if local_files_only is None:
            local_files_only = default_local_files_only(name)
        if path.is_dir():
            name = str(path)
        elif path.exists():
            raise PretrainedUnavailableError(
                f"{name!r} is a file; expected a save_pretrained directory or a hub id"
            )
        elif _looks_like_path(name):
            raise _unavailable(name, True, FileNotFoundError(f"no such directory: {path}"))

        processor_kwargs = {k: v for k, v in kwargs.items() if k in {"cache_dir", "revision", "token"}}
        try:
            model = AlignModel.from_pretrained(name, local_files_only=local_files_only, **kwargs)
            processor = AlignProcessor.from_pretrained(
                name, local_files_only=local_files_only, **processor_kwargs
            )
        except (OSError, ValueError) as err:  # hub errors subclass OSError; bad repo ids ValueError
            raise _unavailable(name, local_files_only, err) from err
        wrapper = cls(model, processor)
        if device is not None:
            wrapper.to(device)
        return wrapper.eval()

    # ---------------------------------------------------------------------------------------
    # Shapes and parameters
    # ---------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.model.temperature.device

    @property
    def embed_dim(self) -> int:
        """D, the joint embedding width (``projection_dim``; 640 for align-base)."""
        return int(self.model.config.projection_dim)

    @property
    def image_size(self) -> int:
        """Side of the square crop the image processor produces (289 for align-base)."""
        crop = getattr(self.processor.image_processor, "crop_size", None)
        if getattr(self.processor.image_processor, "do_center_crop", False) and crop:
            return int(crop["height"] if isinstance(crop, dict) else crop.height)
        size = self.processor.image_processor.size
        return int(size["height"] if isinstance(size, dict) else size.height)

    @property
    def temperature(self) -> Tensor:
        """The learnt scalar that divides the cosine similarities (``AlignModel.temperature``)."""
        return self.model.temperature

    # ---------------------------------------------------------------------------------------
    # Encoders
    # ---------------------------------------------------------------------------------------

    def image_features(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) preprocessed pixels → (B, D) unnormalised image features (the mean-pooled
        last EfficientNet block; no projection), like ``AlignModel.get_image_features``."""
        pixels = pixels.to(device=self.device, dtype=self.model.temperature.dtype)
        return _pooled(self.model.get_image_features(pixel_values=pixels))

    def text_features(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, L) token ids (+ mask) → (B, D) unnormalised text features (projected [CLS]), like
        ``AlignModel.get_text_features``."""
        input_ids = input_ids.to(self.device)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        return _pooled(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    def encode_image(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) → (B, D) L2-normalised image embeddings (unit length for any weights:
        :func:`~align_lite.models.dual_encoder.l2_normalize`'s floor is the dtype's, not 1e-12)."""
        return l2_normalize(self.image_features(pixels))

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, L) → (B, D) L2-normalised text embeddings (unit length for any weights)."""
        return l2_normalize(self.text_features(input_ids, attention_mask))

    def forward(
        self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> PretrainedOutput:
        """Both towers and the similarity logits, as ``AlignModel.forward`` computes them."""
        image_embeds = self.encode_image(pixels)
        text_embeds = self.encode_text(input_ids, attention_mask)
        temperature = self.temperature
        logits_per_text = text_embeds @ image_embeds.t() / temperature
        return PretrainedOutput(
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            temperature=temperature,
        )

    # ---------------------------------------------------------------------------------------
    # Preprocessing (the processor the weights were released with)
    # ---------------------------------------------------------------------------------------

    def preprocess_images(self, images: list[Image.Image]) -> Tensor:
        """PIL images (any mode; transparency goes on white) → (B, 3, S, S) float pixels in
        [-1, 1], S = :attr:`image_size`, via the model's own image processor."""
        if isinstance(images, Image.Image):
            images = [images]
        if not images:
            raise ValueError("preprocess_images needs at least one image")
        rgb = [to_rgb(image) for image in images]
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"]

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """Texts → ``{"input_ids", "attention_mask"}``, each (B, max_length) int64, padded (and
        truncated) to :attr:`max_length` (64 for align-base) like ``AlignProcessor``."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise ValueError("tokenize needs at least one text")
        batch = self.processor(
            text=list(texts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


__all__ = [
    "DEFAULT_MODEL",
    "PretrainedAlign",
    "PretrainedOutput",
    "PretrainedUnavailableError",
    "default_local_files_only",
    "hub_offline",
]


# --------------------------------------------------------------------------------------------
# A tiny stand-in for kakaobrain/align-base, for offline runs and tests
# --------------------------------------------------------------------------------------------


def save_tiny_stand_in(directory: str | os.PathLike, words: list[str], seed: int = 0) -> Path:
    """Write a tiny, randomly initialised ``AlignModel`` + ``AlignProcessor`` to ``directory``.

    It has align-base's architecture and preprocessing at toy sizes (text: 2 layers of width 32;
    vision: two MBConv blocks, 32 px crops from 40 px resizes; 16-d embeddings), and a WordPiece
    vocabulary of the special tokens, ``words`` and the letters. Load it with
    ``PretrainedAlign.from_pretrained(directory)``: it stands where the real checkpoint would,
    everywhere that cannot download it. Returns the directory.
    """
    from transformers import (
        AlignConfig, AlignModel, AlignProcessor, AlignTextConfig, AlignVisionConfig, BertTokenizer,
        EfficientNetImageProcessor,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(dict.fromkeys([*(w.lower() for w in words), *"abcdefghijklmnopqrstuvwxyz"]))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    processor = AlignProcessor(
        image_processor=EfficientNetImageProcessor(  # align-base's settings, 346→40, 289→32
            size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
            resample=2, rescale_factor=1 / 127.5, rescale_offset=True, do_normalize=False, include_top=False,
        ),
        tokenizer=BertTokenizer(vocab_file=str(directory / "vocab.txt")),
    )
    text = AlignTextConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=DEFAULT_MAX_LENGTH)
    vision = AlignVisionConfig(
        image_size=32, width_coefficient=1.0, depth_coefficient=1.0, kernel_sizes=[3, 3],
        in_channels=[32, 16], out_channels=[16, 16], strides=[1, 2], num_block_repeats=[1, 1],
        expand_ratios=[1, 2], hidden_dim=64, drop_connect_rate=0.0,
    )
    torch.manual_seed(seed)
    model = AlignModel(AlignConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16))
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
