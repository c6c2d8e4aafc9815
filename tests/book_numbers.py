"""Where the numbers in the book's prose come from (issue 20).

A number a chapter's Markdown quotes is either

* **glued**: inserted from the stored outputs with MyST-NB's ``{glue:text}`` (not seen here:
  glue roles are removed before scanning);
* **a figure of the paper**: it appears in ``tests/data/align_paper_facts.md``, the copy of
  ``../shared/align_paper_facts.md`` kept in the repository;
* **a definition**: on :data:`DEFINITIONS` for that chapter, with an expression that computes it
  from the package or from first principles, so that the list cannot drift from the code;
* or a small count (one digit, not a percentage), a chapter, table, section, solution or
  exercise number.

Everything else is a hand-copied number, and :func:`unexplained_numbers` reports it.

A Markdown page that includes benchmark tables (the appendix's ``benchmarks.md``) may also quote
a number that a table of its own section shows: :func:`page_unexplained_numbers` reads both, the
prose and the tables the section includes, so that the prose cannot drift from the tables.

    python tests/book_numbers.py book/07_scaling.ipynb     # list what a chapter quotes by hand
    python tests/book_numbers.py book/appendix/benchmarks.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER_FACTS = REPO / "tests" / "data" / "align_paper_facts.md"
NUMBER = re.compile(r"(?<![\w.\-/])(\d[\d,]*(?:\.\d+)?)(?!\w)")

# Chapters whose prose has been through the glue pass; the test covers exactly these.
CHECKED = ("01_noisy_alt_text", "02_towers", "03_contrastive_loss", "04_training", "05_zero_shot",
           "06_retrieval", "07_scaling")

# Per chapter: the number as the prose writes it -> a Python expression that must equal it
# (evaluated by tests/test_book_pages.py with align_lite importable).
LANGUAGES = "len(load_emoji_corpus().languages)"  # the emoji corpus's languages
# Table 8: image→text R@1 lost with half and a quarter of the in-batch negatives (51.7 -> 50.2 -> 48.7)
FEWER_NEGATIVES = {"1.5": "51.7 - 50.2", "3.0": "51.7 - 48.7"}
DEFINITIONS: dict[str, dict[str, str]] = {
    "01_noisy_alt_text": {
        "28": LANGUAGES,
        "1,001": "WorldConfig().noise.hub_alt_texts",
        "77,": "ImageTransformConfig.tiny(64).resize",
    },
    "02_towers": {
        "800": "VARIANTS['l2'].resolution",
        "0.02": "BertConfig().initializer_range",               # BERT's initialisation
        "66.35": "torchvision_parameters('efficientnet_b7') / 1e6",
        "12.23": "torchvision_parameters('efficientnet_b3') / 1e6",
        "512": "ImageTowerConfig.from_variant('b5').native_dim",
        "1,878": "(144 * 6 + 6) + (6 * 144 + 144)",             # Solution 1's two 1×1 convolutions
        "0.09": "1 / math.sqrt(128)",                             # 1/√D for D = 128
    },
    "03_contrastive_loss": {
        "768": "16 * 16 * 3",                 # a 16×16 RGB thumbnail
        "11": "3 * 4 - 1",                    # the gather simulation: 3 ranks of 4 pairs
        "11.09": "2 * math.log(256)",         # the loss at chance for a batch of 256
        "255": "256 - 1", "127": "256 // 2 - 1", "63": "256 // 4 - 1",
        "12.6": "52.2 - 39.6",                # Table 8: fixed 1/64 against 1/32
        **FEWER_NEGATIVES,
    },
    "05_zero_shot": {
        "1.28": "1_281_167 / 1e6",            # ImageNet-1k's training images
        "28": LANGUAGES,
        "10007": "WORLD_EVAL_SEED",
        "95": "100 * 0.95",                   # the quality benchmark's target, as the glue cell tests it
        "12.5": "100 / 8", "11": "100 / 9", "1": "100 / 98",   # chance: 8 shapes, 9 groups, 98 subgroups
    },
    "06_retrieval": {
        "28": LANGUAGES,
        "5,000": "5_000",                     # MSCOCO's test split ("5K" in the paper's tables)
        # the exercises' own settings: gallery sizes, an index size, edit weights
        "512": "2 * 256", "20,000": "20_000", "0.5": "1 / 2",
    },
    "04_training": {
        "28": LANGUAGES,
        "12.5": "100 / 8",                                   # chance: 8 shapes
        "95": "100 * quality_per_minute.TARGET_TOP1",         # the quality benchmark's target
        "120": "quality_per_minute.TARGET_SECONDS",
        "0.3": "0.3",                                        # the σ the glue cell looks for
        # Solution 1: where cosine decay leads linear decay most, and by how much
        "0.78": "1 - math.asin(2 / math.pi) / math.pi",
        "0.105": "(1 + math.cos(math.asin(2 / math.pi))) / 2 - (1 - math.asin(2 / math.pi) / math.pi)",
    },
    "intro": {"28": LANGUAGES},
    "07_scaling": {
        **FEWER_NEGATIVES, "0.5": "37.5 - 37.0", "1.7": "37.5 - 35.8",   # and text→image: 37.5 -> 37.0 -> 35.8
        "23": "np.finfo(np.float32).nmant",   # fp32's mantissa bits
        "15": "100 * (1 - 0.85)",             # Solution 2's headroom (its code keeps 0.85 of 80 GB)
    },
}


def paper_figures() -> set[str]:
    """Every number in the paper-facts file, commas dropped ("16,384" -> "16384")."""
    return {m.replace(",", "") for m in re.findall(r"\d[\d,]*(?:\.\d+)?", PAPER_FACTS.read_text())}


def prose(source: str) -> str:
    """A Markdown cell without what is not prose: math, code, MyST roles (glue included), link
    targets, headings, directive lines, and references such as "Chapter 4" or "Table 8"."""
    text = re.sub(r"^\s*```.*$", " ", source, flags=re.M)                # fences, directive lines
    text = re.sub(r"^\s*:[a-z_-]+:.*$", " ", text, flags=re.M)          # directive options
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"\$[^$]+\$", " ", text)                               # inline math, may wrap
    text = re.sub(r"\{[a-z:]+\}`[^`]*`", " ", text)                     # {glue:text}`…`, {doc}`…`
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"^ {4,}\S.*$", " ", text, flags=re.M)                 # indented code
    text = re.sub(r"^#+ .*$", " ", text, flags=re.M)
    return re.sub(r"\b(Chapters?|Tables?|Figure|Section|§|Exercises?|Solutions?|issue|steps? of)"
                  r"\s+\d+(\s*(,|and|/|–|or)\s*\d+)*", " ", text)


def scan(index: int, source: str, allowed: set[str] | dict[str, str], shown: set[str] = frozenset()):
    """(index, number, context) of each number of ``source``'s prose that is neither one digit,
    nor a paper figure, nor ``allowed`` as written, nor ``shown`` (commas dropped)."""
    paper, text, found = paper_figures(), prose(source), []
    for match in NUMBER.finditer(text):
        written = match.group(1)
        value = written.replace(",", "").rstrip(".")
        percent = text[match.end():match.end() + 2].lstrip().startswith("%")
        if len(value) == 1 and not percent:  # a count or an index, unless it is a percentage
            continue
        if (len(value) > 1 and value in paper) or written in allowed or value in shown:
            continue
        context = text[max(0, match.start() - 50):match.end() + 30].replace("\n", " ")
        found.append((index, written, context))
    return found


def unexplained_numbers(path: Path) -> list[tuple[int, str, str]]:
    """(cell index, number, context) of every number in ``path``'s Markdown that is neither a
    paper figure, nor on the chapter's :data:`DEFINITIONS`, nor one digit."""
    allowed, found = DEFINITIONS.get(path.stem, {}), []
    for index, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] == "markdown":
            found += scan(index, "".join(cell["source"]), allowed)
    return found


INCLUDE = re.compile(r"^```\{include\}\s+(\S+)", re.M)


def page_unexplained_numbers(path: Path) -> list[tuple[int, str, str]]:
    """(section index, number, context) of every number in a Markdown page's prose that is
    neither one digit, a paper figure, a definition (:data:`DEFINITIONS` under the page's stem),
    nor shown by a table that its section (``## …``) includes."""
    allowed, found = DEFINITIONS.get(path.stem, {}), []
    for index, section in enumerate(re.split(r"^(?=## )", path.read_text(), flags=re.M)):
        tables = " ".join((path.parent / name).read_text() for name in INCLUDE.findall(section))
        shown = {m.replace(",", "") for m in re.findall(r"\d[\d,]*(?:\.\d+)?", tables)}
        found += scan(index, section, allowed, shown)
    return found


if __name__ == "__main__":
    for name in sys.argv[1:]:
        page = Path(name)
        rows = (page_unexplained_numbers if page.suffix == ".md" else unexplained_numbers)(page)
        print(f"{name}: {len(rows)} hand-copied numbers")
        for index, written, context in rows:
            print(f"  cell {index}: {written!r}  …{context}…")
