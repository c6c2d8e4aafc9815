"""The chapters as pages a reader sees (issue 20): no test machinery in sight, and every figure
says what it shows. Static checks over the stored notebooks; they run in a second."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

import book_numbers  # tests/book_numbers.py

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((REPO / "book").glob("*.ipynb"))

TITLE = re.compile(r"set_title\(|suptitle\(|\btitle\s*=|plt\.title\(")
# Calls that draw on axes with a scale: such a figure needs both axes named.
CHART = re.compile(r"\.(plot|hist|bar|barh|scatter|errorbar|fill_between|semilogy|loglog|boxplot|colorbar)\(")
X_LABEL = re.compile(r"xlabel")
Y_LABEL = re.compile(r"ylabel")
# align_lite.plots helpers that title and label their own axes (tested in tests/test_plots.py).
SELF_LABELLED = re.compile(r"\bLiveCurves\(")


def code_cells(path: Path) -> list[tuple[int, str, dict]]:
    """(index, source, cell) of every code cell of a stored notebook."""
    cells = json.loads(path.read_text())["cells"]
    return [(i, "".join(c["source"]), c) for i, c in enumerate(cells) if c["cell_type"] == "code"]


def figure_problem(source: str, figures: int = 1) -> str | None:
    """What a figure cell's source leaves out, or None (``figures``: how many it draws)."""
    if SELF_LABELLED.search(source):
        return None
    if len(TITLE.findall(source)) < figures:
        return "no title" if figures == 1 else f"{figures} figures, fewer titles"
    if CHART.search(source) and not (X_LABEL.search(source) and Y_LABEL.search(source)):
        return "a chart without both axis labels"
    return None


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_code_cells_fit_the_rendered_column(path):
    """The brief: code cells fit the rendered column, about 88 characters a line."""
    long = [(i, line) for i, source, _ in code_cells(path) for line in source.splitlines() if len(line) > 88]
    assert not long, "\n".join(f"  cell {i}: {line}" for i, line in long)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_test_markers_are_cell_tags_not_visible_comments(path):
    """nbval's markers live in the cells' tags: a reader of the rendered page never sees them."""
    visible = [i for i, source, _ in code_cells(path) if "NBVAL" in source.upper()]
    assert not visible, f"cells {visible} show an NBVAL comment; tag them nbval-check-output instead"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_figure_has_a_title_and_charts_name_their_axes(path):
    problems = []
    for i, source, cell in code_cells(path):
        figures = sum("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
        if figures and (problem := figure_problem(source, figures)):
            problems.append(f"cell {i}: {problem}")
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize("source, problem", [
    ("image_grid(views, captions)", "no title"),
    ("image_grid(views, captions, title='crops')", None),
    ("ax.plot(x, y); ax.set(title='loss', xlabel='step')", "a chart without both axis labels"),
    ("ax.plot(x, y); ax.set(title='loss', xlabel='step', ylabel='loss')", None),
    ("live = LiveCurves(keys=('loss',))", None),
])
def test_figure_rule_catches_what_it_should(source, problem):
    assert figure_problem(source) == problem


def test_two_figures_need_two_titles():
    assert figure_problem("plt.title('query'); image_grid(views)", figures=2) == "2 figures, fewer titles"
    assert figure_problem("plt.title('query'); image_grid(views, title='results')", figures=2) is None


# ---------------------------------------------------------------------------------------------
# Numbers in the prose (issue 20): glued from the outputs, the paper's, or a checked definition
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stem", book_numbers.CHECKED)
def test_prose_quotes_no_hand_copied_number(stem):
    found = book_numbers.unexplained_numbers(REPO / "book" / f"{stem}.ipynb")
    assert not found, "glue these or define them in tests/book_numbers.py:\n" + "\n".join(
        f"  cell {i}: {number!r} in …{context}…" for i, number, context in found)


@pytest.mark.parametrize("page", sorted(p.relative_to(REPO / "book").as_posix()
                                         for p in (REPO / "book").rglob("*.md") if "generated" not in p.parts))
def test_pages_quote_only_numbers_their_tables_show(page):
    """The intro and the appendix: a number is glued, the paper's, a definition, or shown by a
    benchmark table that its section includes (``tests/book_numbers.py`` reads both)."""
    found = book_numbers.page_unexplained_numbers(REPO / "book" / page)
    assert not found, "glue these, define them, or quote the table's own number:\n" + "\n".join(
        f"  section {i}: {number!r} in …{context}…" for i, number, context in found)


def test_page_scan_reads_the_tables_its_section_includes(tmp_path):
    (tmp_path / "t.md").write_text("| run | top-1 |\n|---|---|\n| a | 63.21 |\n| b | 1,036 |\n")
    page = tmp_path / "page.md"
    page.write_text("## One\n\n```{include} t.md\n```\n\nIt gets 63.21 % in 1,036 steps, 42 points up.\n\n"
                    "## Two\n\nAnd 63.21 % again.\n")
    assert [(i, n) for i, n, _ in book_numbers.page_unexplained_numbers(page)] == [(1, "42"), (2, "63.21")]


def torchvision_parameters(name: str) -> int:
    """Parameters of a torchvision classification model, counted on the meta device."""
    import torch
    import torchvision

    with torch.device("meta"):
        return sum(p.numel() for p in getattr(torchvision.models, name)().parameters())


def definition_namespace() -> dict:
    import sys

    import numpy as np
    from transformers import BertConfig

    from align_lite.data.emoji_corpus import load_emoji_corpus
    from align_lite.data.images import ImageTransformConfig
    from align_lite.data.world import WorldConfig
    from align_lite.evaluate import WORLD_EVAL_SEED
    from align_lite.models import VARIANTS, ImageTowerConfig

    if str(REPO / "benchmarks") not in sys.path:  # called once per definition: add the folder once
        sys.path.insert(0, str(REPO / "benchmarks"))
    import quality_per_minute

    return {"math": math, "np": np, "BertConfig": BertConfig, "load_emoji_corpus": load_emoji_corpus,
            "ImageTransformConfig": ImageTransformConfig, "WorldConfig": WorldConfig, "VARIANTS": VARIANTS,
            "ImageTowerConfig": ImageTowerConfig, "torchvision_parameters": torchvision_parameters,
            "WORLD_EVAL_SEED": WORLD_EVAL_SEED, "quality_per_minute": quality_per_minute}


@pytest.mark.parametrize("stem, written, expression", [
    (stem, written, expression) for stem, table in book_numbers.DEFINITIONS.items()
    for written, expression in table.items()])
def test_each_definition_computes_the_number_the_prose_writes(stem, written, expression):
    """A definition is the number to the precision the prose writes it: "0.09" is anything that
    rounds to 0.09, "1,878" exactly 1878."""
    value = float(eval(expression, definition_namespace()))  # the expressions are this repo's own
    text = written.replace(",", "").rstrip(".")
    decimals = len(text.split(".")[1]) if "." in text else 0
    assert round(value, decimals) == pytest.approx(float(text)), f"{expression} = {value}, the prose says {written}"


def test_paper_facts_copy_matches_the_shared_file():
    shared = REPO.parent / "shared" / "align_paper_facts.md"
    if not shared.is_file():
        pytest.skip("../shared/align_paper_facts.md is not beside this checkout (a clean CI clone)")
    assert book_numbers.PAPER_FACTS.read_text() == shared.read_text(), "copy the shared facts file again"


def test_number_scan_ignores_glue_math_and_code_and_flags_the_rest(tmp_path):
    cell = ("Top-1 is {glue:text}`top1:.1f` %, $N = 16{,}384$ and `range(1, 4096)`; Chapter 12 and "
            "Table 8; the run took 42 s, lost 3 % and kept 2 of 16,384 (the paper's batch).")
    notebook = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": [cell]}]}
    path = tmp_path / "toy.ipynb"
    path.write_text(json.dumps(notebook))
    assert [number for _, number, _ in book_numbers.unexplained_numbers(path)] == ["42", "3"]


def glue_keys(path: Path) -> set[str]:
    """The keys a stored notebook glued (MyST-NB keeps them in the outputs' metadata)."""
    cells = json.loads(path.read_text())["cells"]
    return {o["metadata"]["scrapbook"]["name"] for c in cells for o in c.get("outputs", [])
            if "scrapbook" in o.get("metadata", {})}


GLUE_REF = re.compile(r"\{glue(?::[a-z]+)?\}`([^`:]+?)(?:::([^`:]+))?(?::[^`]*)?`")


def test_every_glue_reference_names_a_stored_key():
    """What the book build would warn about, found in a second: each {glue:…}`key` of a chapter
    is a key that chapter stored, and each `NB.ipynb::key` of the other pages one that NB stored."""
    missing = []
    for page in [*CHAPTERS, *sorted((REPO / "book").rglob("*.md"))]:
        source = page.read_text() if page.suffix == ".md" else "".join(
            "".join(c["source"]) for c in json.loads(page.read_text())["cells"] if c["cell_type"] == "markdown")
        for first, second in GLUE_REF.findall(source):
            notebook, key = (page, first) if not second else (page.parent / first, second)
            if notebook.suffix != ".ipynb" or key not in glue_keys(notebook):
                missing.append(f"{page.name}: {first}{'::' + second if second else ''}")
    assert not missing, missing
