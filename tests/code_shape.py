"""The package's shape: the largest files and the longest functions (issue 19's yardstick).

    python tests/code_shape.py                 # this checkout
    python tests/code_shape.py PATH            # another checkout's align_lite/ (e.g. a git worktree)

Prints the files of ``align_lite/`` by lines, the functions and methods of more than 40 lines
(decorators and docstrings included), and the counts. Nothing is written.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LONG = 40


def functions(path: Path) -> list[tuple[int, str]]:
    """(lines, qualified name) of every function and method in ``path``."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([d.lineno for d in child.decorator_list] + [child.lineno])
                found.append((child.end_lineno - start + 1, f"{prefix}{child.name}"))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def main(root: Path) -> None:
    package = root / "align_lite" if (root / "align_lite").is_dir() else root
    files = sorted(package.rglob("*.py"))
    sizes = sorted(((len(p.read_text(encoding="utf-8").splitlines()), p.relative_to(package.parent)) for p in files),
                   reverse=True)
    every = [(n, f"{p.relative_to(package.parent)}:{name}") for p in files for n, name in functions(p)]
    long = sorted((f for f in every if f[0] > LONG), reverse=True)
    print(f"{len(files)} files, {sum(n for n, _ in sizes):,} lines, {len(every)} functions, "
          f"{len(long)} over {LONG} lines\n")
    print("| file | lines |\n|---|---:|")
    for n, p in sizes[:12]:
        print(f"| `{p}` | {n:,} |")
    print(f"\n| function (over {LONG} lines) | lines |\n|---|---:|")
    for n, name in long:
        print(f"| `{name}` | {n} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
