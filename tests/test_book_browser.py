"""The book as a reader sees it: built from clean with warnings as errors, then every page of
``_toc.yml`` opened in headless Chromium (``tests/book_check.py``): images loaded, math typeset,
the Colab button on notebook pages, no console errors, no requests leaving the local server, and
internal links that resolve. Full-page screenshots land in ``_build/screenshots/`` (CI keeps
``_build/`` as its artifact).

Without Chromium or Playwright the browser tests skip locally and fail under CI (``CI`` set);
``.ci/run`` installs Debian's ``chromium`` when it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import book_check  # tests/book_check.py
from book_check import REPO, PageReport, colab_url, toc_pages

pytestmark = pytest.mark.slow  # builds the book and opens every page in Chromium

BUILD = REPO / "_build"
SCREENSHOTS = BUILD / "screenshots"


def _require(ok: bool, why: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{why} (required under CI)")
        pytest.skip(why)


def _require_browser() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _require(False, "playwright is not installed (pip install -e '.[test]')")
    _require(book_check.find_chromium() is not None, "no Chromium (apt-get install chromium)")


@pytest.fixture(scope="session")
def built_book() -> Path:
    """``jupyter-book build . -W --keep-going`` from an empty ``_build``; returns the HTML folder."""
    pytest.importorskip("jupyter_book", reason="jupyter-book is not installed (pip install -e '.[book]')")
    shutil.rmtree(BUILD, ignore_errors=True)
    command = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
               "build", ".", "-W", "--keep-going"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (f"book build failed (warnings are errors):\n"
                                  f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return BUILD / "html"


@pytest.fixture(scope="session")
def browser_check(built_book) -> tuple[dict[str, PageReport], list[str]]:
    _require_browser()
    reports, dead = book_check.check_book(built_book, SCREENSHOTS)
    return {r.page: r for r in reports}, dead


def test_every_toc_page_is_rendered(built_book):
    missing = [p for p in ["index", *toc_pages()] if not (built_book / f"{p}.html").is_file()]
    assert not missing, f"pages in _toc.yml without HTML: {missing}"


@pytest.mark.parametrize("page", toc_pages())
def test_page_shows_no_problem_in_chromium(browser_check, page):
    report = browser_check[0][page]
    assert report.problems == [], f"{page}:\n" + "\n".join(report.problems)
    assert report.screenshot is not None and report.screenshot.stat().st_size > 10_000


@pytest.mark.parametrize("page", [p for p in toc_pages() if colab_url(p)])
def test_notebook_page_has_figures_formulas_and_a_colab_button(browser_check, page):
    report = browser_check[0][page]
    assert report.colab_found, f"{page}: no link to {report.colab_expected}"
    assert report.images > 0 and report.math > 0, f"{page}: {report.images} images, {report.math} formulas"


def test_internal_links_resolve(browser_check):
    reports, dead = browser_check
    assert sum(len(r.internal_links) for r in reports.values()) > 100  # the links were collected
    assert dead == [], "\n".join(dead)


# --- the checker itself, on a small site with one of each fault -----------------------------

_BROKEN = """<!doctype html><html><head><title>broken</title></head><body>
<img src="missing.png"><img src="http://example.invalid/remote.png">
<span class="math">\\(x^2\\)</span>
<a href="missing.html">gone</a> <a href="good.html#nowhere">no such id</a> <a href="good.html#here">fine</a>
<script>console.error("boom")</script><script>undefined_function()</script>
</body></html>"""

_PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJ"
          "RU5ErkJggg==")  # a 1x1 PNG
_GOOD = f"""<!doctype html><html><head><title>good</title><link rel="icon" href="data:,"></head><body>
<h1 id="here">Good</h1>
<img src="data:image/png;base64,{_PIXEL}">
<a href="broken.html">back</a> <a href="https://colab.research.google.com/github/o/r/blob/main/good.ipynb">Colab</a>
</body></html>"""


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    (site / "broken.html").write_text(_BROKEN)
    (site / "good.html").write_text(_GOOD)
    return site


def test_checker_reports_each_fault(toy_site):
    _require_browser()
    with book_check.serve(toy_site) as base, book_check.chromium_browser() as browser:
        report = book_check.inspect_page(browser, base, "broken", expected_colab="https://colab.example/x.ipynb")
        dead = book_check.dead_links(browser, base, [report])
    assert report.broken_images == ["missing.png", "http://example.invalid/remote.png"]
    assert report.outside_requests == ["http://example.invalid/remote.png"]
    assert report.raw_math == ["MathJax did not load"]
    assert "boom" in report.console_errors
    assert any("undefined_function" in e for e in report.console_errors)
    assert any("HTTP 404" in e and "missing.png" in e for e in report.console_errors)
    assert report.colab_found is False and any("Colab" in p for p in report.problems)
    assert sorted(d.split(" -> ")[1] for d in dead) == [f"{base}good.html#nowhere (no id 'nowhere')",
                                                        f"{base}missing.html (missing)"]


def test_checker_passes_a_clean_page(toy_site):
    _require_browser()
    expected = "https://colab.research.google.com/github/o/r/blob/main/good.ipynb"
    with book_check.serve(toy_site) as base, book_check.chromium_browser() as browser:
        report = book_check.inspect_page(browser, base, "good", expected_colab=expected)
        dead = book_check.dead_links(browser, base, [report])
    assert report.images == 1 and report.problems == [] and dead == []
    assert report.colab_found


def test_colab_url_follows_config():
    assert colab_url("book/05_zero_shot") == ("https://colab.research.google.com/github/align-lite/align-lite/"
                                              "blob/main/book/05_zero_shot.ipynb")
    assert colab_url("book/appendix/notation") is None  # a Markdown page has no notebook
