"""Open the built book in headless Chromium and report what a reader would see broken.

    python tests/book_check.py [_build/html] [--screenshots _build/screenshots]

Serves the HTML folder on 127.0.0.1 (a free port) and opens each page of ``_toc.yml`` in
Chromium through Playwright, using the system browser (Debian's ``chromium``; set
``ALIGN_LITE_CHROMIUM`` to use another), so nothing is downloaded. For every page it records:

* images that did not load (``naturalWidth == 0``, lazy images forced to load first);
* math left as raw TeX: a ``.math`` element without MathJax output, or with a MathJax error;
* display formulas wider than the text column (cut off at the page's width);
* on notebook pages, whether the Colab launch link points at that chapter's notebook;
* browser console errors, uncaught exceptions, failed requests and HTTP errors;
* requests that leave the local server (the book must render offline);
* internal links whose page is missing, or whose ``#fragment`` names no element of that page.

A full-page screenshot of each page goes to ``--screenshots``. The pytest suite
(``tests/test_book_browser.py``) builds the book and asserts every report is clean; this script
prints the reports and exits 1 if any is not.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag

import yaml

REPO = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1280, "height": 900}

# After load: force lazy images to load, wait for them, and return the ones that failed.
_BROKEN_IMAGES_JS = """async () => {
  const images = [...document.images];
  images.forEach(img => { img.loading = "eager"; });
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return images.filter(img => !(img.complete && img.naturalWidth > 0))
               .map(img => img.getAttribute("src"));
}"""

# Math: every .math element must hold MathJax output and no MathJax error; a display formula
# wider than the text column is cut off (it scrolls sideways), so it is reported too.
_MATH_JS = """async () => {
  const maths = [...document.querySelectorAll(".math")];
  if (maths.length === 0) return {count: 0, typeset: 0, raw: [], wide: []};
  if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    return {count: maths.length, typeset: 0, raw: ["MathJax did not load"], wide: []};
  }
  await MathJax.startup.promise;
  const raw = maths.filter(m => !m.querySelector("mjx-container") || m.querySelector("mjx-merror"))
                   .map(m => m.textContent.trim().slice(0, 80));
  const wide = [...document.querySelectorAll("div.math")]
    .filter(m => [...m.querySelectorAll("mjx-container")].some(c => c.scrollWidth > c.clientWidth + 2))
    .map(m => m.textContent.trim().slice(0, 80));
  return {count: maths.length, typeset: maths.length - raw.length, raw: raw, wide: wide};
}"""

_LINKS_JS = "() => [...document.querySelectorAll('a[href]')].map(a => a.href)"
_IDS_JS = "() => [...document.querySelectorAll('[id]')].map(e => e.id)"


@dataclass
class PageReport:
    """What one page showed. ``problems`` lists everything a reader would see broken."""

    page: str
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    math: int = 0
    raw_math: list[str] = field(default_factory=list)
    wide_math: list[str] = field(default_factory=list)
    colab_expected: str | None = None
    colab_found: bool | None = None
    console_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    internal_links: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def problems(self) -> list[str]:
        out = [f"image did not load: {src}" for src in self.broken_images]
        out += [f"math not rendered: {tex}" for tex in self.raw_math]
        out += [f"formula wider than the page: {tex}" for tex in self.wide_math]
        if self.colab_expected and not self.colab_found:
            out.append(f"no Colab launch link to {self.colab_expected}")
        out += [f"console: {msg}" for msg in self.console_errors]
        out += [f"request outside the book: {url}" for url in self.outside_requests]
        return out


def toc_pages(repo: Path = REPO) -> list[str]:
    """Every page of ``_toc.yml`` in reading order, as paths without suffix (``book/intro``)."""
    toc = yaml.safe_load((repo / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries: list | None) -> None:
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return pages


def colab_url(page: str, repo: Path = REPO) -> str | None:
    """The Colab link the theme must show on ``page``, from ``_config.yml``; None if the page is
    not a notebook."""
    if not (repo / f"{page}.ipynb").is_file():
        return None
    config = yaml.safe_load((repo / "_config.yml").read_text())
    github = config["repository"]["url"].removeprefix("https://github.com/").strip("/")
    prefix = config["repository"].get("path_to_book", "").strip("/")
    path = "/".join(p for p in (prefix, f"{page}.ipynb") if p)
    base = config["launch_buttons"]["colab_url"].rstrip("/")
    return f"{base}/github/{github}/blob/{config['repository']['branch']}/{path}"


def find_chromium() -> str | None:
    """The system Chromium (``ALIGN_LITE_CHROMIUM``, else ``chromium`` / ``chromium-browser`` /
    ``google-chrome`` on PATH), or None."""
    named = os.environ.get("ALIGN_LITE_CHROMIUM")
    if named:
        return named
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 at a free port; yields the base URL (ending in /)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def chromium_browser(executable: str | None = None):
    """A headless Chromium through Playwright's sync API (the system browser, no download)."""
    from playwright.sync_api import sync_playwright

    executable = executable or find_chromium()
    if executable is None:
        raise RuntimeError("no Chromium found: install Debian's `chromium` or set ALIGN_LITE_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def inspect_page(browser, base: str, page: str, expected_colab: str | None = None,
                 screenshot: Path | None = None) -> PageReport:
    """Load ``base + page + '.html'`` and record what a reader would see (see the module doc)."""
    report = PageReport(page=page, colab_expected=expected_colab)
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()

    def route(request_route) -> None:
        if request_route.request.url.startswith(base):
            request_route.continue_()
        else:
            report.outside_requests.append(request_route.request.url)
            request_route.abort()

    tab.route("**/*", route)
    tab.on("console", lambda msg: msg.type == "error" and report.console_errors.append(msg.text))
    tab.on("pageerror", lambda error: report.console_errors.append(f"uncaught: {error}"))
    tab.on("response", lambda r: r.status >= 400 and report.console_errors.append(f"HTTP {r.status}: {r.url}"))
    try:
        tab.goto(f"{base}{page}.html", wait_until="load")
        report.broken_images = tab.evaluate(_BROKEN_IMAGES_JS)
        report.images = tab.evaluate("() => document.images.length")
        math = tab.evaluate(_MATH_JS)
        report.math, report.raw_math, report.wide_math = math["count"], math["raw"], math["wide"]
        links = tab.evaluate(_LINKS_JS)
        report.internal_links = [h for h in links if h.startswith(base)]
        if expected_colab:
            report.colab_found = expected_colab in links
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(screenshot), full_page=True)
            report.screenshot = screenshot
    finally:
        context.close()
    return report


def dead_links(browser, base: str, reports: list[PageReport]) -> list[str]:
    """Internal links whose target file is missing or whose ``#fragment`` is no id on it.

    Returns one line per dead link: ``page -> href (why)``."""
    context = browser.new_context()
    ids: dict[str, set[str] | None] = {}  # target URL -> its ids (None: missing)
    dead = []
    try:
        for report in reports:
            for href in sorted(set(report.internal_links)):
                target, fragment = urldefrag(href)
                if target not in ids:
                    ids[target] = _ids_of(context, target)
                if ids[target] is None:
                    dead.append(f"{report.page} -> {href} (missing)")
                elif fragment and unquote(fragment) not in ids[target]:
                    dead.append(f"{report.page} -> {href} (no id {unquote(fragment)!r})")
    finally:
        context.close()
    return dead


def _ids_of(context, url: str) -> set[str] | None:
    response = context.request.get(url)
    if not response.ok:
        return None
    if "html" not in response.headers.get("content-type", ""):
        return set()
    return set(re.findall(r'\bid="([^"]+)"', response.text()))


def check_book(html: Path, screenshots: Path | None = None, repo: Path = REPO) -> tuple[list[PageReport], list[str]]:
    """Inspect every toc page of the book built in ``html``; returns (page reports, dead links)."""
    with serve(html) as base, chromium_browser() as browser:
        reports = [
            inspect_page(browser, base, page, colab_url(page, repo),
                         screenshots / f"{page.replace('/', '__')}.png" if screenshots else None)
            for page in toc_pages(repo)
        ]
        return reports, dead_links(browser, base, reports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("html", nargs="?", type=Path, default=REPO / "_build" / "html")
    parser.add_argument("--screenshots", type=Path, default=REPO / "_build" / "screenshots")
    args = parser.parse_args()
    reports, dead = check_book(args.html, args.screenshots)
    for report in reports:
        status = "ok" if not report.problems else f"{len(report.problems)} problem(s)"
        print(f"{report.page}: {report.images} images, {report.math} formulas, "
              f"{len(set(report.internal_links))} internal links: {status}")
        for problem in report.problems:
            print(f"    {problem}")
    for line in dead:
        print(f"dead link: {line}")
    sys.exit(1 if dead or any(r.problems for r in reports) else 0)


if __name__ == "__main__":
    main()
