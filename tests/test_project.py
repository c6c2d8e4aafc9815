"""Project invariants: requirements in step with pyproject, notebooks set up the same way, the
full-run switch, and the rendered book's table of contents pointing at real files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from align_lite.notebook import Run, full_run_requested, setup
from book_check import toc_pages  # tests/book_check.py

REPO = Path(__file__).resolve().parents[1]


def _requirement_lines(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[<>=!~ \[]", line, maxsplit=1)[0].lower()
            out[name] = line.replace(" ", "")
    return out


def test_requirements_match_pyproject_and_are_ranges():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    pinned = _requirement_lines(REPO / "requirements.txt")
    for requirement in declared:
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower()
        assert pinned.get(name) == requirement.replace(" ", ""), f"{name}: pyproject and requirements.txt differ"
    for name, line in pinned.items():
        assert "==" not in line, f"{name} is pinned; use a range"
    assert pinned["jupyter-book"] == "jupyter-book>=1.0.4.post1,<2"


def notebooks() -> list[Path]:
    return sorted((REPO / "book").glob("*.ipynb"))


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_first_cell_installs_only_when_missing(path):
    nb = json.loads(path.read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    source = "".join(first["source"])
    assert 'find_spec("align_lite") is None' in source
    assert "git+https://github.com/align-lite/align-lite" in source
    commands = "\n".join(line.split("#", 1)[0] for line in source.splitlines())
    assert "torch" not in commands, "the first cell must never install or pin torch"
    assert "setup(seed=" in source


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_is_executed_and_has_summary_and_exercises(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert all(c.get("execution_count") for c in code), "notebook has unexecuted code cells"
    assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "## Summary" in text and "## Exercises" in text and ":class: dropdown" in text
    assert sum("nbval-check-output" in c["metadata"].get("tags", []) for c in code) >= 3


NBVAL_PROBE = {"cells": [{"cell_type": "code", "execution_count": 1, "id": "probe", "metadata": {"tags": []},
                          "outputs": [{"name": "stdout", "output_type": "stream", "text": ["2\n"]}],
                          "source": ["print(1 + 1)"]}],
               "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
               "nbformat": 4, "nbformat_minor": 5}


@pytest.mark.parametrize("tags, stored, passes", [(["nbval-check-output"], "2\n", True),
                                                  (["nbval-check-output"], "3\n", False),
                                                  ([], "3\n", True)])
def test_nbval_lax_compares_exactly_the_tagged_cells(tmp_path, tags, stored, passes):
    """The tag does what the book relies on: under --nbval-lax a tagged cell's stored output must
    match a fresh run, and an untagged cell's need not."""
    import copy
    import subprocess
    import sys

    nb = copy.deepcopy(NBVAL_PROBE)
    nb["cells"][0]["metadata"]["tags"] = tags
    nb["cells"][0]["outputs"][0]["text"] = [stored]
    (tmp_path / "probe.ipynb").write_text(json.dumps(nb))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider",
                           "probe.ipynb"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert (done.returncode == 0) == passes, done.stdout[-2000:]


def test_toc_lists_existing_files_and_every_chapter_notebook():
    files = toc_pages()
    for file in files:
        assert any((REPO / f"{file}{ext}").is_file() for ext in (".md", ".ipynb")), file
    for nb in notebooks():
        assert f"book/{nb.stem}" in files, f"{nb.name} is not in _toc.yml"


@pytest.mark.parametrize("value, cuda, expected", [
    ("1", False, True), ("0", True, False), ("", True, True), (None, False, False), (None, True, True),
    ("true", False, True), ("no", True, False),
])
def test_full_run_switch(monkeypatch, value, cuda, expected):
    if value is None:
        monkeypatch.delenv("ALIGN_FULL_RUN", raising=False)
    else:
        monkeypatch.setenv("ALIGN_FULL_RUN", value)
    assert full_run_requested(cuda_available=cuda) is expected


def test_setup_seeds_and_picks(monkeypatch, capsys):
    import numpy as np
    import torch

    monkeypatch.setenv("ALIGN_FULL_RUN", "0")
    run = setup(seed=3)
    a = (np.random.rand(), torch.rand(1).item())
    setup(seed=3, quiet=True)
    assert (np.random.rand(), torch.rand(1).item()) == a
    assert isinstance(run, Run) and run.pick(1, 2) == 1 and not run.full_run
    assert "short CPU run" in capsys.readouterr().out


def test_appendix_includes_every_generated_benchmark_table():
    """Benchmark tables reach the book only through ``{include}`` of the scripts' own output."""
    page = "\n".join((REPO / "book" / "appendix" / name).read_text() for name in ("benchmarks.md", "reproduce.md"))
    included = set(re.findall(r"```\{include\} (generated/[\w.]+\.md)", page))
    generated = {f"generated/{p.name}" for p in (REPO / "book" / "appendix" / "generated").glob("*.md")}
    assert generated and generated == included, f"not included: {generated - included}; missing: {included - generated}"
    scripts = [p.name for p in (REPO / "benchmarks").glob("*.py") if p.name != "report.py"]
    assert scripts and all(f"python benchmarks/{name}" in page for name in scripts), "a benchmark without its command"
