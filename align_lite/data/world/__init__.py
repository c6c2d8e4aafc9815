"""A procedurally drawn image–text world: the project's offline, deterministic default data.

Every row is an (image, alt-text) pair. Images are simple scenes drawn with PIL — one to
``max_count`` objects of one colour and shape, or two objects in a spatial relation — on a light,
neutral background. Clean alt-texts describe the scene faithfully with a small closed vocabulary
("two small blue squares on a grey background", "a yellow star to the left of a purple hexagon").

A share of the rows carries the kinds of noise that ALIGN's filters target (paper §3), each kind
built so that one rule is the natural catch:

=================  ==========================================================  ===============
noise kind          what the row looks like                                     caught by
=================  ==========================================================  ===============
``boilerplate``     generic alt-text shared by many images ("click here to       shared-text rule
                    enlarge")
``filename``        "IMG_4821.JPG", "DSC01234.jpg"                              length / rare
``too_short``       1–2 words ("red star")                                      length rule
``too_long``        21–40 words of keyword stuffing about the true content      length rule
``gibberish``       a clean caption with 1–3 random rare tokens inserted         rare-token rule
``misaligned``      the clean caption of a *different* image                     nothing
``small_image``     clean caption, shorter image side in [48, 200] px           image-size rule
``extreme_aspect``  clean caption, aspect ratio in [3, 6]                        aspect rule
``hub``             one of > 1000 alt-texts of a logo-like image                 many-alt-texts rule
=================  ==========================================================  ===============

The table is a pure function of :class:`WorldConfig` (``make_world_table``), and an image is a
pure function of its row (``render_image``), so a world of any size costs nothing on disk:
:class:`WorldDataset` draws images on the fly, while :func:`write_world` writes the usual image
folder + ``metadata.jsonl`` for the filtering chapter.

One idea per module: :mod:`.vocabulary` (the words and colours), :mod:`.config` (what a world
is), :mod:`.geometry` (where objects may sit), :mod:`.table` (the rows), :mod:`.captions` (clean
descriptions), :mod:`.noise` (the noisy alt-texts), :mod:`.draw` (the pictures) and
:mod:`.dataset` (on disk and in memory).

>>> table = make_world_table(WorldConfig.clean(n=4, seed=0))
>>> table.num_rows, table.column_names[:3]
(4, ['file_name', 'text', 'width'])
"""

from align_lite.data.world.captions import article, clean_captions
from align_lite.data.world.config import NoiseConfig, WorldConfig
from align_lite.data.world.dataset import WorldDataset, write_world
from align_lite.data.world.draw import render_image
from align_lite.data.world.table import make_world_table, noise_counts, paraphrases
from align_lite.data.world.vocabulary import (
    BACKGROUND_NAMES, BACKGROUNDS, BOILERPLATE, COLOR_NAMES, COLORS, NOISE_KINDS, NUMBER_WORDS, PLURALS, POSITIONS,
    RELATIONS, SEO_WORDS, SHAPES, SIZES,
)

__all__ = [
    "BACKGROUNDS", "BACKGROUND_NAMES", "BOILERPLATE", "COLORS", "COLOR_NAMES", "NOISE_KINDS", "NUMBER_WORDS",
    "NoiseConfig", "PLURALS", "POSITIONS", "RELATIONS", "SEO_WORDS", "SHAPES", "SIZES", "WorldConfig",
    "WorldDataset", "article", "clean_captions", "make_world_table", "noise_counts", "paraphrases", "render_image",
    "write_world",
]
