"""Every python/pycon block of the docs runs, in page order, and its shown output is right.

One test per block (``page.md:LINE``): a page's blocks run once, in order, in one
namespace, in a fresh directory; a block marked ``<!-- docs-test: skip REASON -->``
is reported as skipped with its reason. See docs/hooks/codeblocks.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from docs_helpers import DOCS, load_hook_module

codeblocks = load_hook_module("codeblocks")

PAGES = codeblocks.pages_with_code(DOCS)
BLOCKS = [
    (page, block)
    for page in PAGES
    for block in codeblocks.runnable_blocks(
        page.read_text(encoding="utf-8"), page.relative_to(DOCS).as_posix()
    )
]
_RESULTS: dict[Path, dict[int, BaseException | str | None]] = {}
_OUTPUTS: dict[Path, set[str]] = {}


def _run_page(page: Path, workdir: Path) -> dict[int, BaseException | str | None]:
    """Run a page once; per block line: None (passed), str (skip reason) or the error."""
    if page in _RESULTS:
        return _RESULTS[page]
    import matplotlib

    matplotlib.use("Agg")
    name = page.relative_to(DOCS).as_posix()
    results: dict[int, BaseException | str | None] = {}
    namespace: dict[str, object] = {"__name__": "__docs__"}
    failed: str | None = None
    cwd = Path.cwd()
    os.chdir(workdir)
    try:
        for block in codeblocks.runnable_blocks(page.read_text(encoding="utf-8"), name):
            if failed is not None:
                results[block.lineno] = RuntimeError(f"not run: {failed} failed first")
            elif block.skip_reason is not None:
                results[block.lineno] = block.skip_reason
            else:
                try:
                    codeblocks.run_block(block, namespace)
                    results[block.lineno] = None
                except Exception as exc:
                    results[block.lineno] = exc
                    failed = block.where
    finally:
        os.chdir(cwd)
    _RESULTS[page] = results
    _OUTPUTS[page] = {p.name for p in workdir.iterdir()}
    return results


@pytest.mark.parametrize(
    ("page", "block"), BLOCKS, ids=[block.where for _, block in BLOCKS]
)
def test_block_runs(page: Path, block, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The block runs (and its doctest output matches) after the page's earlier blocks."""
    outcome = _run_page(page, tmp_path_factory.mktemp(page.stem))[block.lineno]
    if isinstance(outcome, str):
        pytest.skip(f"{block.where} marked docs-test skip: {outcome}")
    if isinstance(outcome, BaseException):
        raise outcome


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(DOCS).as_posix() for p in PAGES])
def test_page_images_exist(page: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every local image a page shows is in docs/ or is written by the page's own code."""
    _run_page(page, tmp_path_factory.mktemp(page.stem))
    for src in codeblocks.image_sources(page.read_text(encoding="utf-8")):
        produced = "/" not in src and src in _OUTPUTS[page]
        assert produced or (page.parent / src).exists(), (
            f"{page.relative_to(DOCS)} shows {src!r}, which is neither in docs/ "
            f"nor written by the page's code (wrote {sorted(_OUTPUTS[page])})"
        )


def test_tutorials_have_code() -> None:
    """The pages that must be executable do have runnable blocks (the walk finds them)."""
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert {"getting-started.md", "tutorials/writing-rasp.md"} <= names


def test_extract_blocks_conventions() -> None:
    """Fences are found with language, first-code line and skip marker; others ignored."""
    text = (
        "intro\n"
        "```python\nx = 1\n```\n"
        "<!-- docs-test: skip needs the compiler -->\n"
        "```pycon\n>>> x\n1\n```\n"
        "```text\nnot code\n```\n"
        "~~~~python title=\"t\"\ny = 2\n~~~~\n"
        "- item\n\n    ```python\n    def f():\n        return 1\n    ```\n"
    )
    blocks = codeblocks.extract_blocks(text, "p.md")
    assert [(b.language, b.lineno, b.skip_reason) for b in blocks] == [
        ("python", 3, None), ("pycon", 7, "needs the compiler"), ("text", 11, None),
        ("python", 14, None), ("python", 19, None),
    ]
    assert blocks[-1].source == "def f():\n    return 1\n"
    assert [b.language for b in codeblocks.runnable_blocks(text)] == [
        "python", "pycon", "python", "python"
    ]


def test_run_block_reports_page_and_line() -> None:
    """A failing block or a wrong doctest output names the page and the line."""
    bad = codeblocks.Block(page="p.md", lineno=5, language="python", source="1 / 0\n")
    with pytest.raises(codeblocks.DocsCodeError, match=r"p\.md:5: .*ZeroDivisionError"):
        codeblocks.run_block(bad, {})
    wrong = codeblocks.Block(page="p.md", lineno=9, language="pycon", source=">>> 1 + 1\n3\n")
    with pytest.raises(codeblocks.DocsCodeError, match=r"p\.md:9: pycon block failed"):
        codeblocks.run_block(wrong, {})


def test_unclosed_fence_is_an_error() -> None:
    """An unclosed code fence is reported with its line instead of swallowing the page."""
    with pytest.raises(codeblocks.DocsCodeError, match=r"p\.md:2: code fence"):
        codeblocks.extract_blocks("text\n```python\nx = 1\n", "p.md")


def test_arrow_comments_are_checked() -> None:
    """``# -> text`` checks what a statement prints, or an expression's repr."""
    ok = codeblocks.Block(
        page="p.md", lineno=1, language="python",
        source="x = [1, 2, 3]\nprint(len(x))  # -> 3\nx  # -> [1, ..., 3]\nx[0]\n# -> 1\n",
    )
    codeblocks.run_block(ok, {})
    wrong = codeblocks.Block(page="p.md", lineno=4, language="python", source="1 + 1  # -> 3\n")
    with pytest.raises(codeblocks.DocsCodeError, match=r"p\.md:4: the comment says .*\n  3\n"):
        codeblocks.run_block(wrong, {})
    inside = codeblocks.Block(
        page="p.md", lineno=1, language="python", source="y = (1 +  # -> 2\n     1)\n"
    )
    with pytest.raises(codeblocks.DocsCodeError, match=r"p\.md:1: a '# ->' comment must end"):
        codeblocks.run_block(inside, {})


def test_pycon_names_persist_across_blocks() -> None:
    """A name a pycon block defines is visible to the page's later blocks."""
    namespace: dict[str, object] = {}
    first = codeblocks.Block(page="p.md", lineno=1, language="pycon", source=">>> z = 41\n")
    then = codeblocks.Block(page="p.md", lineno=3, language="python", source="z + 1  # -> 42\n")
    codeblocks.run_block(first, namespace)
    codeblocks.run_block(then, namespace)
