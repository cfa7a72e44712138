"""mkdocs hooks of the rasplang site (listed under ``hooks:`` in mkdocs.yml).

- `on_files`: runs the code of every page that shows a generated image and adds the
  figures that code saved (``fig.savefig("name.png")``) to the site, next to the page.
- `on_files` also adds the Performance page's figures, drawn from the measured numbers
  in docs/data/performance.json (see performance_page.py; nothing is measured here),
  the Program library's figures (each program's graph and residual stream, see
  library_page.py), and the Design page's pipeline diagram (design_page.py).
- `on_page_markdown`: expands ``<!-- rasplang:library -->`` into the program library,
  generated from ``rasplang.lib.PROGRAMS`` (see library_page.py), and each
  ``<!-- rasplang:performance-data NAME -->`` into a collapsed table of that dataset.

A failing code block fails the build, naming the page and line.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.plugins.rasplang")
HERE = Path(__file__).resolve().parent
LIBRARY_MARKER = "<!-- rasplang:library -->"


def load_sibling(name: str) -> ModuleType:
    """Import docs/hooks/<name>.py (hooks are loaded by path, not as a package)."""
    key = f"rasplang_docs_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


codeblocks = load_sibling("codeblocks")
library_page = load_sibling("library_page")
performance_page = load_sibling("performance_page")
design_page = load_sibling("design_page")
PERFORMANCE_PAGE = "performance.md"
LIBRARY_PAGE = "library.md"
DESIGN_PAGE = "design.md"


def generated_figures(markdown: str, page: str, workdir: Path) -> dict[str, bytes]:
    """Run a page's code in ``workdir``; return the files it wrote, by name."""
    import matplotlib

    matplotlib.use("Agg")  # in case page code uses pyplot
    before = set(workdir.iterdir())
    cwd = Path.cwd()
    os.chdir(workdir)
    try:
        for _block, _ran in codeblocks.run_page(markdown, page):
            pass
    finally:
        os.chdir(cwd)
    return {
        path.name: path.read_bytes()
        for path in sorted(set(workdir.iterdir()) - before)
        if path.is_file()
    }


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Add the Performance, Program library and Design pages' figures and the figures
    the pages' code makes."""
    for page, module in ((PERFORMANCE_PAGE, performance_page), (LIBRARY_PAGE, library_page),
                         (DESIGN_PAGE, design_page)):
        if files.get_file_from_path(page) is not None:
            for name, content in module.figures().items():
                files.append(File.generated(config, _join(page, name), content=content))
    for file in list(files.documentation_pages()):
        if file.abs_src_path is None:
            continue
        markdown = Path(file.abs_src_path).read_text(encoding="utf-8")
        wanted = [
            src for src in codeblocks.image_sources(markdown)
            if files.get_file_from_path(_join(file.src_uri, src)) is None
        ]
        if not wanted:
            continue
        with tempfile.TemporaryDirectory(prefix="rasplang-docs-") as tmp:
            made = generated_figures(markdown, file.src_uri, Path(tmp))
        for name, content in made.items():
            files.append(File.generated(config, _join(file.src_uri, name), content=content))
        log.info("%s: generated %s", file.src_uri, ", ".join(made) or "nothing")
    return files


def _join(page_uri: str, src: str) -> str:
    """The docs-relative path of ``src`` as referenced from the page ``page_uri``."""
    return os.path.normpath(os.path.join(os.path.dirname(page_uri), src)).replace(os.sep, "/")


def on_page_markdown(markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Expand the program-library marker and the performance-data markers."""
    if LIBRARY_MARKER in markdown:
        markdown = markdown.replace(LIBRARY_MARKER, library_page.render())
    if page.file.src_uri == PERFORMANCE_PAGE:
        markdown = performance_page.expand(markdown)
    return markdown
