"""Named model configurations, from a CPU toy to the paper's main model.

| preset     | image tower        | native | text tower (L x H)  | vocab   | D    | projections  | image px |
|------------|--------------------|--------|---------------------|---------|------|--------------|----------|
| tiny       | EffNet w0.4 d0.25  | 128    | BERT-tiny (2 x 128) | 8 000   | 128  | text         | 64       |
| tiny-wide  | EffNet w0.5 d0.35  | 160    | 4 x 256             | 8 000   | 128  | image + text | 64       |
| b3-mini    | EfficientNet-B3    | 384    | BERT-mini (4 x 256) | 30 522  | 384  | text         | 289      |
| b5-base    | EfficientNet-B5    | 512    | BERT-base (12 x 768)| 30 522  | 640  | image + text | 289      |
| b7-base    | EfficientNet-B7    | 640    | BERT-base           | 30 522  | 640  | text         | 289      |
| l2-large   | EfficientNet-L2    | 1376   | BERT-large (24x1024)| 100 000 | 1376 | text         | 289      |

Parameters in millions (:func:`~align_lite.models.dual_encoder.count_parameters`), as backbone +
projection where a tower has one:

| preset    | image tower    | text tower (BERT + projection) | total  | paper / KB      |
|-----------|----------------|--------------------------------|--------|-----------------|
| tiny      | 0.22           | 1.43 + 0.02                    | 1.67   | –               |
| tiny-wide | 0.55 + 0.02    | 5.22 + 0.03                    | 5.83   | –               |
| b3-mini   | 10.10          | 11.10 + 0.10                   | 21.31  | 12 M + 11.3 M   |
| b5-base   | 27.29 + 0.33   | 108.89 + 0.49                  | 137.00 | –               |
| b7-base   | 62.14          | 108.89 + 0.49                  | 171.53 | 66 M + 110 M    |
| l2-large  | 467.22         | 405.24 + 1.41                  | 873.87 | (EffNet-L2 480 M) |

The honest comparison with the paper's counts. "66 M" (B7) and "12 M" (B3) are EfficientNet's
*classification* models — torchvision's B7 has 66.35 M, B3 12.23 M — i.e. including the top 1x1
conv and the 1000-way classifier that ALIGN does not use. Without them (our towers, equal to
torchvision's ``features[:-1]`` to the parameter) B7 has 62.14 M and B3 10.10 M; with the top conv
but no classifier, 63.79 M and 10.70 M. "110 M" (BERT-base) and "11.3 M" (BERT-mini) are BERT
with its pooler and a 30 522-word vocabulary (transformers' ``BertModel`` counts 109.48 M and
11.17 M); ours has no pooler (−0.59 M for base, −0.07 M for mini) and adds the projection to D.
BERT-large's embeddings grow with the paper's 100 k vocabulary (334.09 M at 30 522 words).
EfficientNet-L2's 480 M likewise includes its head (467.22 M without the top conv, 474.80 M with
it, 480.31 M with the classifier).

Choices that are ours, not the paper's:

* vocabulary: the paper learns 100 k wordpieces, kakaobrain's COYO-ALIGN used BERT's uncased
  30 522. The B3/B5/B7 presets follow kakaobrain (and so reproduce the published parameter
  counts), ``l2-large`` the paper; the tiny presets match ``TokenizerConfig``'s default 8 000.
  After training a tokenizer, use ``config.with_vocab_size(tokenizer.vocab_size)``.
* positions: 512 in BERT-sized towers (BERT's own, so its weights would fit), 64 (the paper's text
  length) in the tiny ones.
* b5-base: the paper's Table 8 baseline is B5 + BERT-base at D = 640, but B5's native width is
  512, so this preset projects the image feature (Linear 512 → 640); the paper does not say how.
* text pooling: the paper's [CLS] state in every paper-sized preset; the mean over the tokens in
  the CPU presets ``tiny`` and ``tiny-wide``. A fresh BERT's [CLS] state is nearly the same vector
  for every text (mean pairwise cosine 0.99995 over the world's 64 class prompts for ``tiny``,
  0.9997 for ``tiny-wide``; mean pooling about 0.98 for both; Chapter 2 measures it), and a run
  of minutes does not undo that (see :mod:`align_lite.models.text_tower`). What it is worth on
  the world, with each of the CPU recipe's departures undone in turn, is
  ``benchmarks/tiny_recipe.py``'s table in the book's appendix.
* Resolution: 289 for every paper-sized preset (the paper pre-trains all at 289), 64 for tiny.
"""

from __future__ import annotations

from collections.abc import Callable

from align_lite.models.dual_encoder import AlignConfig
from align_lite.models.image_tower import ImageTowerConfig
from align_lite.models.text_tower import TextTowerConfig

PAPER_IMAGE_SIZE = 289
BERT_VOCAB_SIZE = 30_522  # bert_en_uncased, kakaobrain's choice
PAPER_VOCAB_SIZE = 100_000


def tiny() -> AlignConfig:
    """CPU toy: a batch of 8 at 64 px and 64 tokens embeds in ~10 ms on 2 cores."""
    image = ImageTowerConfig(width_mult=0.4, depth_mult=0.25, image_size=64, name="efficientnet-w0.4-d0.25")
    text = TextTowerConfig.from_size("tiny", vocab_size=8_000, max_position_embeddings=64, pooling="mean")
    return AlignConfig.from_towers(image, text, name="tiny")


def tiny_wide() -> AlignConfig:
    """A wider/deeper CPU model with projections on both sides (D = 128 < native 160)."""
    image = ImageTowerConfig(width_mult=0.5, depth_mult=0.35, image_size=64, name="efficientnet-w0.5-d0.35")
    text = TextTowerConfig.from_size("mini", vocab_size=8_000, max_position_embeddings=64, pooling="mean")
    return AlignConfig.from_towers(image, text, embed_dim=128, name="tiny-wide")


def b3_mini() -> AlignConfig:
    """EfficientNet-B3 + BERT-mini (paper Tables 9/10 small model; COYO-ALIGN-B3-Mini), D = 384."""
    image = ImageTowerConfig.from_variant("b3", image_size=PAPER_IMAGE_SIZE)
    text = TextTowerConfig.from_size("mini", vocab_size=BERT_VOCAB_SIZE, max_position_embeddings=512)
    return AlignConfig.from_towers(image, text, name="b3-mini")


def b5_base() -> AlignConfig:
    """EfficientNet-B5 + BERT-base at D = 640 (paper Table 8 ablation baseline)."""
    image = ImageTowerConfig.from_variant("b5", image_size=PAPER_IMAGE_SIZE)
    text = TextTowerConfig.from_size("base", vocab_size=BERT_VOCAB_SIZE, max_position_embeddings=512)
    return AlignConfig.from_towers(image, text, embed_dim=640, name="b5-base")


def b7_base() -> AlignConfig:
    """EfficientNet-B7 + BERT-base, D = 640 (paper Tables 9/10; COYO-ALIGN-B7-Base)."""
    image = ImageTowerConfig.from_variant("b7", image_size=PAPER_IMAGE_SIZE)
    text = TextTowerConfig.from_size("base", vocab_size=BERT_VOCAB_SIZE, max_position_embeddings=512)
    return AlignConfig.from_towers(image, text, name="b7-base")


def l2_large() -> AlignConfig:
    """EfficientNet-L2 + BERT-large, D = 1376: the paper's main ALIGN model."""
    image = ImageTowerConfig.from_variant("l2", image_size=PAPER_IMAGE_SIZE)
    text = TextTowerConfig.from_size("large", vocab_size=PAPER_VOCAB_SIZE, max_position_embeddings=512)
    return AlignConfig.from_towers(image, text, name="l2-large")


PRESETS: dict[str, Callable[[], AlignConfig]] = {
    "tiny": tiny,
    "tiny-wide": tiny_wide,
    "b3-mini": b3_mini,
    "b5-base": b5_base,
    "b7-base": b7_base,
    "l2-large": l2_large,
}


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> AlignConfig:
    """The :class:`AlignConfig` called ``name``; a ``KeyError`` lists the valid names."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}") from None
    return factory()
