"""The built documentation site, opened in a real browser (headless Chromium via playwright).

For the home page, a theory page, a tutorial page and an API page: the page loads from a local
server with no console error, no uncaught exception and no request leaving 127.0.0.1; every
formula is typeset by MathJax without a TeX error; every image has loaded. A full-page screenshot
of each goes to `site-screenshots/` (or `$FLOWLEARN_SCREENSHOT_DIR`). Every other page of the
site gets the same checks without a screenshot.

Run by `.ci/docs.sh` after `mkdocs build --strict`; see `tests/docs/conftest.py`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("FLOWLEARN_SITE_DIR", ROOT / "site")).resolve()
SHOTS = Path(os.environ.get("FLOWLEARN_SCREENSHOT_DIR", ROOT / "site-screenshots")).resolve()
# FLOWLEARN_SCREENSHOT_ALL=1 also saves a screenshot of every page, under SHOTS/all/.
SHOOT_ALL = os.environ.get("FLOWLEARN_SCREENSHOT_ALL", "") not in ("", "0")
VIEWPORT = {"width": 1440, "height": 900}

# Headless flags that keep Chromium from reaching the internet on its own (TOOLING.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# JavaScript run in the page once MathJax has finished its first typesetting pass.
PAGE_REPORT_JS = """
async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
        await MathJax.startup.promise;
    }
    const images = [...document.images];
    for (const img of images) { img.loading = "eager"; }
    await Promise.all(images.map((img) => img.complete ? null : new Promise((done) => {
        img.addEventListener("load", done);
        img.addEventListener("error", done);
    })));
    const untypeset = [...document.querySelectorAll(".arithmatex")]
        .filter((el) => !el.querySelector("mjx-container"))
        .map((el) => el.textContent.slice(0, 80));
    const rawDollars = [...document.querySelectorAll(".jp-MarkdownOutput")]
        .map((el) => {
            const copy = el.cloneNode(true);
            copy.querySelectorAll("mjx-container, code, pre").forEach((m) => m.remove());
            return copy.textContent;
        })
        .filter((text) => /\\$[^$\\s][^$]*\\$/.test(text))
        .map((text) => text.slice(0, 80));
    return {
        mathjax: Boolean(window.MathJax && MathJax.version),
        containers: document.querySelectorAll("mjx-container").length,
        errors: [...document.querySelectorAll('mjx-merror, [data-mml-node="merror"]')]
            .map((el) => el.getAttribute("data-mjx-error") || el.textContent.slice(0, 80)),
        untypeset: untypeset,
        rawDollars: rawDollars,
        brokenImages: images.filter((img) => !img.complete || img.naturalWidth === 0)
            .map((img) => img.currentSrc || img.src),
        imageCount: images.length,
    };
}
"""


@dataclass
class PageVisit:
    """What one page load produced."""

    url: str
    status: int
    report: dict
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    def problems(self, *, expect_math: bool) -> list[str]:
        """Every failed expectation, as readable lines (empty when the page is clean)."""
        out = []
        if self.status != 200:
            out.append(f"HTTP status {self.status}")
        out += [f"console error: {m}" for m in self.console_errors]
        out += [f"page error: {m}" for m in self.page_errors]
        out += [f"request leaving 127.0.0.1: {u}" for u in self.outside_requests]
        out += [f"failed request: {u}" for u in self.failed_requests]
        r = self.report
        if not r["mathjax"]:
            out.append("MathJax is not loaded")
        if expect_math and r["containers"] == 0:
            out.append("no formula typeset (no mjx-container element)")
        out += [f"TeX error: {m}" for m in r["errors"]]
        out += [f"formula left untypeset: {m!r}" for m in r["untypeset"]]
        out += [f"raw $...$ left in notebook Markdown: {m!r}" for m in r["rawDollars"]]
        out += [f"image not loaded: {u}" for u in r["brokenImages"]]
        return out


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.scheme in ("http", "https") and parts.hostname == "127.0.0.1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`python -m http.server` serving the built site on a free port of 127.0.0.1."""
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no built site at {SITE}: run `mkdocs build --strict` first")
    for _attempt in range(5):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            cwd=SITE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(base + "/", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        if proc.poll() is None:
            try:
                yield base
            finally:
                proc.terminate()
                proc.wait(timeout=10)
            return
    pytest.fail("could not start python -m http.server on 127.0.0.1")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium, driven by playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("no `chromium` on PATH: apt-get install -y chromium (.ci/docs.sh does)")
    with sync_playwright() as p:
        # playwright starts Chromium with a fresh temporary --user-data-dir and --headless.
        chromium = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def visit(browser: object, url: str, screenshot: Path | None = None) -> PageVisit:
    """Open `url` in a fresh context, let MathJax finish, and collect everything that went wrong.

    Requests leaving 127.0.0.1 are recorded and aborted, so an offline machine fails fast
    instead of waiting for a time-out.
    """
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
    page = context.new_page()
    console_errors: list[str] = []
    page_errors: list[str] = []
    outside: list[str] = []
    failed: list[str] = []

    def route(r: object) -> None:
        request = r.request  # type: ignore[attr-defined]
        if _is_local(request.url):
            r.continue_()  # type: ignore[attr-defined]
        else:
            outside.append(request.url)
            r.abort()  # type: ignore[attr-defined]

    context.route("**/*", route)
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    page.on(
        "response",
        lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )
    response = page.goto(url, wait_until="load", timeout=60_000)
    status = response.status if response is not None else 0
    page.wait_for_load_state("networkidle", timeout=30_000)
    report = page.evaluate(PAGE_REPORT_JS)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    context.close()
    # A console error for an aborted outside request is the same fault, reported once.
    console_errors = [m for m in console_errors if "net::ERR_FAILED" not in m or not outside]
    return PageVisit(url, status, report, console_errors, page_errors, outside, failed)


def _first_notebook_page() -> str | None:
    pages = sorted(p.parent.name for p in (SITE / "notebooks").glob("*/index.html"))
    return f"notebooks/{pages[0]}/" if pages else None


def _all_pages() -> list[str]:
    if not SITE.is_dir():
        return []
    pages = []
    for html in sorted(SITE.rglob("index.html")):
        rel = html.parent.relative_to(SITE).as_posix()
        pages.append("" if rel == "." else rel + "/")
    return pages


SHOWCASE = {
    "home": "",
    "theory-irn": "theory/irn/",
    "api-core-memory": "api/core/memory/",
}


@pytest.mark.parametrize("name", sorted(SHOWCASE))
def test_site_page_renders_offline_with_math(browser: object, server: str, name: str) -> None:
    visit_ = visit(browser, f"{server}/{SHOWCASE[name]}", SHOTS / f"{name}.png")
    assert not visit_.problems(expect_math=True), "\n".join(visit_.problems(expect_math=True))


def test_site_home_figure_loads(browser: object, server: str) -> None:
    visit_ = visit(browser, f"{server}/")
    assert visit_.report["imageCount"] >= 1, "the home page shows no figure"
    assert not visit_.report["brokenImages"]


def test_site_tutorial_renders_offline_with_math(browser: object, server: str) -> None:
    first = _first_notebook_page()
    if first is None:
        pytest.skip("no notebook in the site yet (notebooks/*.ipynb not listed in mkdocs.yml nav)")
    visit_ = visit(browser, f"{server}/{first}", SHOTS / "tutorial.png")
    assert not visit_.problems(expect_math=True), "\n".join(visit_.problems(expect_math=True))


@pytest.mark.parametrize("path", _all_pages())
def test_site_every_page_clean(browser: object, server: str, path: str) -> None:
    shot = SHOTS / "all" / f"{path.strip('/').replace('/', '--') or 'home'}.png"
    visit_ = visit(browser, f"{server}/{path}", shot if SHOOT_ALL else None)
    assert not visit_.problems(expect_math=False), "\n".join(visit_.problems(expect_math=False))
