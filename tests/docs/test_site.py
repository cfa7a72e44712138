"""The documentation site builds with ``mkdocs build --strict`` and its pages work.

One build per test session (the ``site`` fixture). The browser test loads pages in
headless Chromium (Debian's ``chromium`` package; skipped when it is missing) over a
local http.server on 127.0.0.1 and checks for console errors and unloaded images.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from chromium_cdp import Browser, find_chromium
from docs_helpers import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def nav_pages(nav: list) -> list[str]:
    """Every markdown path in an mkdocs ``nav`` tree, in order."""
    pages: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages += nav_pages(value)
        else:
            pages.append(value)
    return pages


NAV = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])


def built_page(site: Path, page: str) -> Path:
    """The HTML file mkdocs writes for a markdown page (directory URLs)."""
    stem = page.removesuffix(".md")
    if stem == "index":
        return site / "index.html"
    return site / stem.removesuffix("/index") / "index.html"


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once per session with ``mkdocs build --strict``."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, env=env, check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    return out


def test_nav_covers_every_page() -> None:
    """Every markdown page under docs/ is in the nav (nothing orphaned, nothing missing)."""
    on_disk = {
        p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")
        if "hooks" not in p.parts
    }
    assert on_disk - set(NAV) == set(), "pages missing from the nav in mkdocs.yml"
    assert set(NAV) - on_disk == set(), "nav entries without a page"


@pytest.mark.parametrize("page", NAV)
def test_page_built(site: Path, page: str) -> None:
    """Each nav page is rendered to HTML with its title."""
    html = built_page(site, page).read_text(encoding="utf-8")
    assert "<h1" in html, f"{page} has no title"


def test_api_pages_resolve_every_area(site: Path) -> None:
    """mkdocstrings rendered the objects of each API page, package-dir modules included."""
    expected = {
        "api/dsl.md": ["rasplang.Select", "rasplang.Aggregate", "rasplang.select"],
        "api/evaluation.md": ["rasplang.evaluate", "rasplang.evaluate_all"],
        "api/analysis.md": ["rasplang.analyze", "rasplang.Analysis"],
        "api/interpreter.md": ["rasplang.interpreter"],
        "api/compiler.md": ["rasplang.backend"],
        "api/viz.md": [
            "rasplang.viz.plot_program", "rasplang.viz.plot_residual",
            "rasplang.viz.plot_attention",
        ],
    }
    for page, names in expected.items():
        html = built_page(site, page).read_text(encoding="utf-8")
        for name in names:
            assert f'id="{name}' in html or f"<code>{name}</code>" in html, (
                f"{page}: no rendered entry for {name}"
            )


def test_library_page_lists_every_program(site: Path) -> None:
    """The generated library page has a section, code and output for each program."""
    lib = pytest.importorskip("rasplang.lib")
    html = built_page(site, "library.md").read_text(encoding="utf-8")
    for name in lib.PROGRAMS:
        assert f'id="{name}"' in html, f"library page has no section for {name}"
    assert html.count("<td>example input</td>") == len(lib.PROGRAMS)


def test_tutorial_figures_are_pngs(site: Path) -> None:
    """The figures the tutorials' code makes are in the site as real PNG files."""
    figures = sorted((site / "tutorials").glob("*.png"))
    assert figures, "no figure was generated for the tutorials"
    for figure in figures:
        assert figure.read_bytes()[:8] == PNG_MAGIC, f"{figure.name} is not a PNG"


# ---------------------------------------------------------------- the browser


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over http on 127.0.0.1 (an ephemeral port); yield its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The built site over http on 127.0.0.1, as its base URL."""
    with serve(site) as url:
        yield url


IMAGES_JS = (
    "Promise.all(Array.from(document.images).map(img => img.decode().catch(() => null)"
    ".then(() => [img.getAttribute('src'), img.complete, img.naturalWidth])))"
)


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
@pytest.mark.parametrize(
    ("page", "min_images"), [("index.md", 0), ("tutorials/writing-rasp.md", 1)]
)
def test_page_in_browser(served: str, page: str, min_images: int) -> None:
    """The page loads in headless Chromium without console errors and shows its images."""
    folder = built_page(Path("."), page).parent.as_posix()
    url = served + ("" if folder == "." else folder + "/")
    with Browser(find_chromium()) as browser:  # type: ignore[arg-type]
        report = browser.load(url, IMAGES_JS)
    assert report.errors == [], f"{url}: {report.errors}"
    images = report.value or []
    assert len(images) >= min_images, f"{url}: expected at least {min_images} image(s)"
    broken = [src for src, complete, width in images if not complete or width == 0]
    assert broken == [], f"{url}: images that did not load: {broken}"


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_browser_check_catches_errors_and_broken_images(tmp_path: Path) -> None:
    """The browser check itself fails on a console error, an exception or a missing image."""
    (tmp_path / "bad.html").write_text(
        '<html><body><img src="missing.png">'
        '<script>console.error("boom"); undefined_function();</script></body></html>',
        encoding="utf-8",
    )
    with serve(tmp_path) as url, Browser(find_chromium()) as browser:  # type: ignore[arg-type]
        report = browser.load(url + "bad.html", IMAGES_JS)
    text = "\n".join(report.errors)
    assert "console.error: boom" in text
    assert "undefined_function is not defined" in text
    assert "missing.png" in text
    assert report.value == [["missing.png", True, 0]]


# What `test_pages_have_no_layout_faults` looks for, on a page whose <details> are all
# opened first (collapsed tables are measured too):
# - a table whose content is wider than the table (cut off at the right, to scroll);
# - a header row with no text (a markdown table written with an empty header);
# - a literal backslash-pipe in code (a table cell's escape that leaked into the text);
# - a code span in a table's first column (a file name) broken over two lines;
# - a code block whose lines are wider than the block (their ends out of sight), unless
#   it is a wide table of output (class rl-table) that shows its scroll bar.
LAYOUT_JS = r"""
(() => {
  document.querySelectorAll('.md-content details').forEach(d => { d.open = true; });
  const out = {clipped: [], emptyHeader: [], escapedPipe: [], brokenName: [],
               clippedCode: []};
  const tables = Array.from(document.querySelectorAll('.md-content table'));
  tables.forEach((t, i) => {
    const first = t.rows.length ? t.rows[0].textContent.trim().slice(0, 60) : '';
    if (t.scrollWidth > t.clientWidth + 1) {
      out.clipped.push(`table ${i} (${first}): ${t.scrollWidth}px in ${t.clientWidth}px`);
    }
    t.querySelectorAll('thead tr').forEach(row => {
      if (!row.textContent.trim()) out.emptyHeader.push(`table ${i}, before: ${
        t.tBodies.length && t.tBodies[0].rows.length ?
        t.tBodies[0].rows[0].textContent.trim().slice(0, 60) : ''}`);
    });
    t.querySelectorAll('td:first-child code').forEach(code => {
      if (code.getClientRects().length > 1) out.brokenName.push(code.textContent);
    });
  });
  document.querySelectorAll('.md-content code').forEach(code => {
    if (code.textContent.includes('\\|')) out.escapedPipe.push(code.textContent.slice(0, 80));
  });
  document.querySelectorAll('.md-content pre > code').forEach(code => {
    if (code.scrollWidth <= code.clientWidth + 1) return;
    const scrollBar = code.offsetHeight - code.clientHeight - code.clientTop * 2;
    if (code.closest('.rl-table') && scrollBar > 0) return;
    const longest = code.textContent.split('\n').reduce((a, b) => b.length > a.length ? b : a);
    out.clippedCode.push(`${code.scrollWidth}px in ${code.clientWidth}px: ${longest.slice(0, 70)}`);
  });
  return out;
})()
"""


def layout_faults(browser: Browser, url: str, screenshot: Path | None = None) -> dict:
    """The faults LAYOUT_JS finds on ``url`` (empty lists when none), and its errors."""
    report = browser.load(url, LAYOUT_JS, settle=0.3, screenshot=screenshot)
    faults = {kind: found for kind, found in (report.value or {}).items() if found}
    if report.errors:
        faults["errors"] = report.errors
    return faults


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_pages_have_no_layout_faults(
    served: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every page, 1280 px wide in headless Chromium: no clipped table, no empty header
    row, no literal backslash-pipe in code, no file name broken over lines, no code line
    out of sight (long lines wrap; a wide table of output scrolls, its scroll bar shown).
    Full-page screenshots go to $RASPLANG_SCREENSHOTS (or a temporary folder) for a
    look."""
    folder = Path(os.environ.get("RASPLANG_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    faults = {}
    with Browser(find_chromium()) as browser:  # type: ignore[arg-type]
        for page in NAV:
            path = built_page(Path("."), page).parent.as_posix()
            url = served + ("" if path == "." else path + "/")
            shot = folder / (page.removesuffix(".md").replace("/", "_") + ".png")
            found = layout_faults(browser, url, shot)
            if found:
                faults[page] = found
            assert shot.read_bytes()[:8] == PNG_MAGIC
    assert faults == {}


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_layout_check_catches_each_fault(tmp_path: Path) -> None:
    """The layout check reports a clipped table, an empty header, a literal backslash-pipe,
    a broken file name and a code line out of sight on a page that has them, and passes a
    wide table of output that shows its scroll bar."""
    long_line = "print('" + "x" * 120 + "')"
    (tmp_path / "bad.html").write_text(
        '<html><body><div class="md-content" style="width:300px">'
        '<table style="display:inline-block;max-width:100%;overflow:auto">'
        "<thead><tr><th></th><th></th></tr></thead><tbody><tr>"
        "<td><code>kernels_numba_very_long_name.py and_more</code></td>"
        "<td>" + "x" * 200 + "</td></tr><tr><td>a</td><td><code>a \\| b</code></td></tr>"
        "</tbody></table>"
        f'<pre><code style="display:block;overflow-x:auto">{long_line}</code></pre>'
        f'<div class="rl-table"><pre><code style="display:block;overflow-x:auto">'
        f"wide table {'-' * 120}</code></pre></div>"
        '<pre><code style="display:block;white-space:pre-wrap;overflow-wrap:anywhere">'
        f"{long_line}</code></pre>"
        "</div></body></html>",
        encoding="utf-8",
    )
    with serve(tmp_path) as url, Browser(find_chromium()) as browser:  # type: ignore[arg-type]
        faults = layout_faults(browser, url + "bad.html")
    assert set(faults) >= {"clipped", "emptyHeader", "escapedPipe", "brokenName",
                           "clippedCode"}, faults
    assert len(faults["clippedCode"]) == 1 and "print('xxx" in faults["clippedCode"][0]


# ---------------------------------------------------------------- figures in the browser

# Each PNG figure of the page as the browser decoded it: its src, natural size, the
# number of dark pixels on each one-pixel edge (top, bottom, left, right: a title, a
# label or a tick cut off by the figure's border leaves its strokes there) and the link
# around it.
FIGURES_JS = r"""
Promise.all(Array.from(document.querySelectorAll('.md-content img'))
  .filter(img => img.getAttribute('src').endsWith('.png')).map(async img => {
    await img.decode().catch(() => null);
    const w = img.naturalWidth, h = img.naturalHeight;
    const link = img.closest('a');
    const href = link ? link.getAttribute('href') : null;
    if (!w || !h) return [img.getAttribute('src'), w, h, null, href];
    const canvas = document.createElement('canvas');
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const ink = (x, y, cw, ch) => {
      const d = ctx.getImageData(x, y, cw, ch).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] > 0 && Math.min(d[i], d[i + 1], d[i + 2]) < 128) n++;
      }
      return n;
    };
    const edges = [ink(0, 0, w, 1), ink(0, h - 1, w, 1), ink(0, 0, 1, h), ink(w - 1, 0, 1, h)];
    return [img.getAttribute('src'), w, h, edges, href];
  }))
"""


def page_figures(browser: Browser, url: str) -> list[list]:
    """`FIGURES_JS`'s rows for the page at ``url``; the page must load without errors."""
    report = browser.load(url, FIGURES_JS, settle=0.3)
    assert report.errors == [], f"{url}: {report.errors}"
    return report.value or []


def png_dpi(path: Path) -> float:
    """The resolution a PNG records (its pHYs chunk, as matplotlib writes it), in dpi."""
    import struct

    data = path.read_bytes()
    at = 8
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"pHYs":
            x, _, unit = struct.unpack(">IIB", data[at + 8:at + 17])
            assert unit == 1, f"{path.name}: pHYs not in pixels per metre"
            return x * 0.0254
        at += 12 + size
    raise AssertionError(f"{path.name} records no resolution")


@pytest.fixture(scope="module")
def figures_by_page(site: Path, served: str) -> dict[str, list[list]]:
    """`FIGURES_JS`'s rows of every page that shows an image, by page."""
    if find_chromium() is None:
        pytest.skip("chromium is not installed")
    out = {}
    with Browser(find_chromium()) as browser:  # type: ignore[arg-type]
        for page in NAV:
            if "<img" not in built_page(site, page).read_text(encoding="utf-8"):
                continue
            folder = built_page(Path("."), page).parent.as_posix()
            out[page] = page_figures(browser, served + ("" if folder == "." else folder + "/"))
    return out


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_figures_are_not_cut_off(figures_by_page: dict[str, list[list]]) -> None:
    """Every PNG figure on the site, as Chromium decodes it, has no dark pixel on its
    border: no title, label, tick or colour-bar number runs off the figure. The
    attention plot and the library's residual figures are among them."""
    cut = {f"{page}: {src}": edges for page, rows in figures_by_page.items()
           for src, _, _, edges, _ in rows if edges is None or any(edges)}
    assert cut == {}, "figures with ink on their border (top, bottom, left, right)"
    shown = {src.rsplit("/", 1)[-1] for rows in figures_by_page.values() for src, *_ in rows}
    assert "reverse-attention.png" in shown and "reverse-residual.png" in shown
    assert sum(name.endswith("-residual.png") for name in shown) >= 20


def _smallest_residual_font() -> float:
    """The smallest font (points) in a `plot_residual` figure: its tick labels."""
    pytest.importorskip("matplotlib")
    import matplotlib.text

    import rasplang as rl
    from rasplang import viz

    reverse = rl.aggregate(rl.select(rl.indices, rl.length - rl.indices - 1, "=="), rl.tokens)
    model = rl.compile(reverse.named("reverse"), ["a", "b"], 3)
    fig = viz.plot_residual(model, ["a", "b"], stages=[-1])
    return min(t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text())


#: The smallest text a figure may have at its full size, in pixels (a 7 pt label at 60
#: dpi, as the library's figures once were, is 5.8 px).
READABLE_PX = 10


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_library_residual_figures_are_readable(site: Path,
                                               figures_by_page: dict[str, list[list]]) -> None:
    """Each residual figure of the Program library links to itself at full size, and
    there its smallest text (the tick labels) is at least READABLE_PX pixels high."""
    rows = [r for r in figures_by_page["library.md"] if r[0].endswith("-residual.png")]
    assert len(rows) >= 20
    smallest = _smallest_residual_font()
    small = {}
    for src, width, height, _, href in rows:
        assert href == src, f"{src}: the thumbnail links to {href}, not to itself"
        path = built_page(site, "library.md").parent / src
        px = smallest * png_dpi(path) / 72
        if px < READABLE_PX:
            small[src] = f"{width}x{height}, smallest text {px:.1f} px"
    assert small == {}


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_figure_check_catches_cut_off_text(tmp_path: Path) -> None:
    """The border check finds a title cut off at the top and a colour bar's numbers cut
    off at the right, and passes the same figure drawn with room for them."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    for name, layout in (("cut.png", None), ("whole.png", "constrained")):
        fig = Figure(figsize=(3, 2), dpi=100, layout=layout)
        ax = fig.add_subplot()
        image = ax.imshow([[0.0, 1.0], [0.5, 0.25]], vmin=0, vmax=100_000)
        fig.colorbar(image, ax=ax)
        if layout is None:  # a title wider than the figure, a colour bar at its edge
            ax.set_title("selector " * 8, y=1.05)
            fig.subplots_adjust(left=0.05, right=0.9, top=0.88)
        else:
            ax.set_title("selector")
        fig.savefig(tmp_path / name, facecolor="white")
    (tmp_path / "page.html").write_text(
        '<html><head><link rel="icon" href="data:,"></head><body><div class="md-content">'
        '<img src="cut.png"><img src="whole.png">'
        "</div></body></html>", encoding="utf-8")
    with serve(tmp_path) as url, Browser(find_chromium()) as browser:  # type: ignore[arg-type]
        rows = {src: edges for src, _, _, edges, _ in page_figures(browser, url + "page.html")}
    top, _, left, right = rows["cut.png"]
    assert top > 0 and right > 0 and left > 0, rows
    assert rows["whole.png"] == [0, 0, 0, 0], rows
