"""Run the code blocks of a documentation page, so the docs cannot show code that fails.

Used by the mkdocs hook (which builds the tutorials' figures from the pages' own code)
and by ``tests/docs/test_docs_code.py``. The conventions, documented in docs/layout.md:

- a ```` ```python ```` block is executed with ``exec``, statement by statement; a
  statement whose last line ends with ``# -> TEXT`` (or is followed by a line holding
  only that comment) must print TEXT, or, for an expression, have TEXT as its repr
  (compared as doctest does: ``...`` matches anything, runs of whitespace are equal);
- a ```` ```pycon ```` block (``>>>`` prompts and their output) is run with doctest,
  so the output shown on the page is checked (``ELLIPSIS`` and
  ``NORMALIZE_WHITESPACE`` are on);
- all blocks of a page run in order in one namespace, in the current directory; a
  figure a block saves there (``fig.savefig("name.png")``) is what the page shows;
- ``<!-- docs-test: skip REASON -->`` on the line before a fence skips that block;
  the test suite reports every skipped block with its reason;
- other languages (``text``, ``bash``, ...) are not run.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import io
import re
import tokenize
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_LANGUAGES = ("python", "pycon")
ARROW = "# ->"
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\n`]*)$")
_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\b\s*(?P<reason>.*?)\s*-->\s*$")
_IMAGE = re.compile(r"!\[[^\]]*\]\((?P<src>[^)\s]+)")


class DocsCodeError(Exception):
    """A code block of a documentation page failed; the message names page and line."""


@dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown page."""

    page: str
    lineno: int  # line of the first code line (1-based)
    language: str
    source: str
    skip_reason: str | None = None

    @property
    def where(self) -> str:
        """``page:line`` of the block's first code line."""
        return f"{self.page}:{self.lineno}"


def extract_blocks(markdown: str, page: str = "<page>") -> list[Block]:
    """Every fenced code block of ``markdown`` in order, with its language and skip marker."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        info = match["info"].strip()
        language = info.split()[0].lstrip(".{").rstrip("}") if info else ""
        skip = _SKIP.match(lines[i - 1]) if i > 0 else None
        body: list[str] = []
        j = i + 1
        closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        while j < len(lines) and not closing.match(lines[j]):
            body.append(_dedent_line(lines[j], indent))
            j += 1
        if j == len(lines):
            raise DocsCodeError(f"{page}:{i + 1}: code fence {fence!r} is never closed")
        blocks.append(
            Block(
                page=page,
                lineno=i + 2,
                language=language,
                source="\n".join(body) + "\n",
                skip_reason=(skip["reason"] or "no reason given") if skip else None,
            )
        )
        i = j + 1
    return blocks


def _dedent_line(line: str, indent: int) -> str:
    """Remove up to ``indent`` leading spaces (a fence indented in a list or admonition)."""
    return line[min(indent, len(line) - len(line.lstrip(" "))):]


def runnable_blocks(markdown: str, page: str = "<page>") -> list[Block]:
    """The blocks that `run_block` executes (python and pycon), skipped ones included."""
    return [b for b in extract_blocks(markdown, page) if b.language in RUN_LANGUAGES]


def image_sources(markdown: str) -> list[str]:
    """The local image paths a page shows (``![alt](src)``), without URLs."""
    return [
        m["src"] for m in _IMAGE.finditer(markdown) if "://" not in m["src"]
    ]


def run_block(block: Block, namespace: MutableMapping[str, Any]) -> None:
    """Execute one block in ``namespace``; raise DocsCodeError naming page and line."""
    if block.language == "python":
        _run_python(block, namespace)
    elif block.language == "pycon":
        _run_doctest(block, namespace)
    else:
        raise ValueError(f"{block.where}: cannot run a {block.language!r} block")


def _run_python(block: Block, namespace: MutableMapping[str, Any]) -> None:
    """Run a python block statement by statement, checking ``# -> output`` comments."""
    # Pad with newlines so line numbers (tracebacks, messages) are the markdown file's.
    source = "\n" * (block.lineno - 1) + block.source
    expected = _arrow_comments(source)
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    try:
        statements = ast.parse(source, block.page).body
    except SyntaxError as exc:
        raise DocsCodeError(f"{block.page}:{exc.lineno}: python block: {exc}") from exc
    stray = sorted(set(expected) - {stmt.end_lineno or stmt.lineno for stmt in statements})
    if stray:
        raise DocsCodeError(
            f"{block.page}:{stray[0]}: a '{ARROW}' comment must end a statement's last line"
        )
    for stmt in statements:
        want = expected.get(stmt.end_lineno or stmt.lineno)
        if want is not None and isinstance(stmt, ast.Expr):  # show its repr, as a REPL does
            code = compile(ast.Interactive(body=[stmt]), block.page, "single")
        else:
            code = compile(ast.Module(body=[stmt], type_ignores=[]), block.page, "exec")
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(code, namespace)  # the documentation's own code, by design
        except Exception as exc:
            raise DocsCodeError(
                f"{block.page}:{stmt.lineno}: python block raised {type(exc).__name__}: {exc}"
            ) from exc
        if want is not None and not checker.check_output(want + "\n", out.getvalue(), flags):
            raise DocsCodeError(
                f"{block.page}:{stmt.lineno}: the comment says the output is\n  {want}\n"
                f"but it printed\n  {out.getvalue().rstrip()}"
            )


def _arrow_comments(source: str) -> dict[int, str]:
    """``{line: text}`` for every ``# -> text`` comment of ``source``, keyed by the line
    of the statement it belongs to: its own line, or the line above when the comment
    stands alone on its line (for outputs too long to share a line)."""
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.string.startswith(ARROW):
            line = tok.start[0] - 1 if tok.line.lstrip().startswith("#") else tok.start[0]
            comments[line] = tok.string[len(ARROW):].strip()
    return comments


def _run_doctest(block: Block, namespace: MutableMapping[str, Any]) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(
        block.source, namespace, name=block.where, filename=block.page, lineno=block.lineno - 1
    )
    if not test.examples:
        raise DocsCodeError(f"{block.where}: pycon block has no '>>>' example")
    report: list[str] = []
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    runner.run(test, out=report.append, clear_globs=False)
    namespace.update(test.globs)  # DocTest works on a copy; keep what the block defined
    if runner.failures:
        raise DocsCodeError(f"{block.where}: pycon block failed:\n{''.join(report)}")


def run_page(
    markdown: str, page: str, namespace: MutableMapping[str, Any] | None = None
) -> Iterator[tuple[Block, bool]]:
    """Run a page's runnable blocks in order; yield ``(block, ran)`` (False: skipped)."""
    namespace = {"__name__": "__docs__"} if namespace is None else namespace
    for block in runnable_blocks(markdown, page):
        if block.skip_reason is not None:
            yield block, False
            continue
        run_block(block, namespace)
        yield block, True


def pages_with_code(docs_dir: Path) -> list[Path]:
    """Markdown pages under ``docs_dir`` that have at least one runnable block."""
    return sorted(
        path
        for path in docs_dir.rglob("*.md")
        if runnable_blocks(path.read_text(encoding="utf-8"), str(path))
    )
