"""Sphinx extension: include each inline <script> once per page.

Sphinx 7.4 registers a body-only script (``app.add_js_file(None, body=...)``) once with the
file name ``None`` and, when it prepares writing, again with ``''``; the two compare unequal, so
the script lands twice on every page. For sphinx-thebe's ``const THEBE_JS_URL = ...`` that is a
browser error ("Identifier 'THEBE_JS_URL' has already been declared"), which the browser test
(``tests/book_check.py``) counts. This handler drops the repeats from each page's script list.
"""

from __future__ import annotations

from typing import Any


def _key(script: Any) -> tuple:
    attributes = tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items()))
    return (getattr(script, "filename", script) or "", getattr(script, "priority", 500), attributes)


def drop_repeated_scripts(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    seen: set[tuple] = set()
    unique = []
    for script in context.get("script_files", []):
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app) -> dict[str, Any]:
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
