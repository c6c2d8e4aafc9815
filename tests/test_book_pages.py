"""The chapters as pages a reader sees (issue 20): no test machinery in sight, and every figure
says what it shows. Static checks over the stored notebooks; they run in a second."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

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
