"""The package's shape: imports flow one way, data → models → loss → train → evaluation and
search → experiments → cli, with no circle. Every ``import`` is read from the source (function-
level imports included), so a lazy import cannot hide an upward arrow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "align_lite"

# Lower layers never import higher ones; a module may import its own layer (no circle, checked
# below). retrieval sits with the loss: both are arithmetic on embeddings, and the trainer's
# held-out check scores with it.
LAYERS = [
    ("base", ["align_lite", "align_lite.progress", "align_lite.plots", "align_lite.notebook"]),
    ("data", ["align_lite.data"]),
    ("models", ["align_lite.models"]),
    ("loss", ["align_lite.loss", "align_lite.optim", "align_lite.retrieval", "align_lite.budget"]),
    ("train", ["align_lite.train", "align_lite.recipes"]),
    ("evaluation and search", ["align_lite.zero_shot", "align_lite.evaluate", "align_lite.world_probes",
                               "align_lite.search"]),
    ("experiments", ["align_lite.experiments", "align_lite.emoji_experiments"]),
    ("cli", ["align_lite.cli"]),
]
# Entry points run as programs (python -m ...), never imported by the package: they may call down
# to anything, the command line included.
ENTRY_POINTS = {"align_lite.train.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str) -> set[str]:
    """The align_lite modules ``path`` imports (``from X import y`` counts X, and X.y when that
    is a module)."""
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
    return {m for m in found if m in known and m != name}


def layer_of(name: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or (prefix != "align_lite" and name.startswith(prefix + ".")):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    if best is None:
        raise AssertionError(f"{name} belongs to no layer: add it to LAYERS in {__file__}")
    return best[0]


def graph() -> dict[str, set[str]]:
    return {name: imports_of(path, name) for name, path in modules().items() if name not in ENTRY_POINTS}


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Each import of a higher layer (a module importing its own package's ``__init__`` is not)."""
    return [
        f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
        for a, targets in sorted(edges.items())
        for b in sorted(targets)
        if layer_of(b) > layer_of(a) and not a.startswith(b + ".")
    ]


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle (``[a, b, …, a]``), or None; a package's modules importing the package
    itself (its ``__init__``) do not count."""
    edges = {a: {b for b in targets if not a.startswith(b + ".")} for a, targets in edges.items()}
    state: dict[str, int] = {}  # 1: on the path being walked, 2: finished

    def walk(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (circle := walk(nxt, path + [nxt])):
                return circle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (circle := walk(start, [start])):
            return circle
    return None


def test_every_module_has_a_layer():
    assert all(layer_of(name) >= 0 for name in graph())


def test_no_module_imports_a_higher_layer():
    upward = upward_imports(graph())
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_circle():
    assert find_circle(graph()) is None


def test_the_checks_can_fail():
    """On made-up graphs: an upward arrow and a circle are found."""
    assert upward_imports({"align_lite.data.world": {"align_lite.train.trainer"}}) == [
        "align_lite.data.world (data) imports align_lite.train.trainer (train)"
    ]
    assert find_circle({"align_lite.loss": {"align_lite.optim"}, "align_lite.optim": {"align_lite.loss"}}) == [
        "align_lite.loss",
        "align_lite.optim",
        "align_lite.loss",
    ]
    assert (
        find_circle({"align_lite.train.data": {"align_lite.train"}, "align_lite.train": {"align_lite.train.data"}})
        is None
    )
    with pytest.raises(AssertionError, match="belongs to no layer"):
        layer_of("align_lite.somewhere_new")


def chapter_modules() -> dict[int, str]:
    """README's chapter table: chapter number -> its "module" cell."""
    import re

    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d)\. [^|]+\| [^|]+\| (.+) \|$", readme, re.M)}


def named_modules(cell: str) -> list[str]:
    """``align_lite.x`` names in a module cell, with ``(`a`, `b`: ...)`` read as ``align_lite.x.a`` etc."""
    import re

    names = []
    for package, inner in re.findall(r"`(align_lite[\w.]*)`(?: \(([^)]*)\))?", cell):
        names.append(package)
        names += [f"{package}.{sub}" for sub in re.findall(r"`(\w+)`", inner or "")]
    return names


def test_each_chapter_names_its_modules_as_the_readme_does():
    import nbformat

    rows = chapter_modules()
    chapters = sorted((PACKAGE.parent / "book").glob("0*.ipynb"))
    assert sorted(rows) == [int(p.name[:2]) for p in chapters]
    for path in chapters:
        first = nbformat.read(path, as_version=4).cells[0]
        assert first.cell_type == "markdown"
        assert f"**In the package:** {rows[int(path.name[:2])]}." in first.source, path.name
    for cell in rows.values():
        for name in named_modules(cell):
            assert name in modules(), f"README names {name}, which is not a module of align_lite"
