"""Models: ALIGN's dual encoder (Chapter 2).

``image_tower`` EfficientNet without its head → ``text_tower`` BERT [CLS] + linear →
``dual_encoder`` both towers, normalised embeddings, temperature-scaled logits → ``presets``
named configurations → ``checkpoint`` safetensors + JSON save/load.
"""

from align_lite.models.checkpoint import CheckpointError, from_pretrained, load_tokenizer, save_pretrained
from align_lite.models.dual_encoder import AlignConfig, AlignDualEncoder, AlignOutput, count_parameters
from align_lite.models.image_tower import VARIANTS, ImageTower, ImageTowerConfig, native_width
from align_lite.models.presets import PRESETS, get_preset, list_presets
from align_lite.models.text_tower import BERT_SIZES, TextTower, TextTowerConfig

__all__ = [
    "AlignConfig", "AlignDualEncoder", "AlignOutput", "BERT_SIZES", "CheckpointError", "ImageTower",
    "ImageTowerConfig", "PRESETS", "TextTower", "TextTowerConfig", "VARIANTS", "count_parameters",
    "from_pretrained", "get_preset", "list_presets", "load_tokenizer", "native_width", "save_pretrained",
]
