"""The program library page, generated from ``rasplang.lib.PROGRAMS`` so it cannot drift.

For each registered program: its description, an example input with the output
`rasplang.evaluate` gives, the compiled model's size (layers, d_model, parameters) or
the reason it is refused, two figures (the program's graph, and the residual stream
after the last layer on the example input), and its source (``inspect.getsource``).

`figures` draws the PNGs (the mkdocs hook adds them to the site under `FIGURES`);
`render` writes the markdown that shows them. Each program is compiled once per build,
at its registered (small) maximum length.
"""

from __future__ import annotations

import ast
import functools
import html
import importlib
import inspect
import io
import textwrap
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

#: The folder, next to library.md, that holds the page's figures.
FIGURES = "library-figures"
#: Resolution of the figures: shown as thumbnails (CSS caps their height) that link to
#: themselves at full size, readable there.
DPI = 150

COMING_SOON = """!!! note "Coming soon"
    The catalogue is generated from `rasplang.lib.PROGRAMS`, which has not landed yet.
"""


def library_entries() -> list[Any] | None:
    """The entries of ``rasplang.lib.PROGRAMS`` in registry order, or None without it."""
    try:
        lib = importlib.import_module("rasplang.lib")
    except ModuleNotFoundError as exc:
        if exc.name != "rasplang.lib":
            raise
        return None
    programs = lib.PROGRAMS
    entries: Iterable[Any] = programs.values() if isinstance(programs, Mapping) else programs
    return list(entries)


@functools.cache
def compiled(name: str) -> tuple[Any, list[str]] | str | None:
    """``(model, warnings)`` for the library program ``name`` compiled at its registered
    vocabulary and length (once per build); the refusal message if it cannot be
    compiled; None while ``rasplang.compile`` is missing."""
    import rasplang
    from rasplang import lib

    compile_ = getattr(rasplang, "compile", None)
    if compile_ is None:
        return None
    entry = lib.PROGRAMS[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = compile_(entry.build(entry.max_seq_len), entry.vocab, entry.max_seq_len)
        except NotImplementedError as exc:  # UnsupportedProgramError and friends
            return f"{type(exc).__name__}: {exc}"
    return model, [str(w.message) for w in caught]


def compiled_size(name: str) -> dict[str, Any] | str | None:
    """``{"layers", "d_model", "parameters", "warnings"}`` of the compiled model; the
    refusal message if it cannot be compiled; None while ``rasplang.compile`` is missing."""
    result = compiled(name)
    if result is None or isinstance(result, str):
        return result
    model, caught = result
    return {
        "layers": int(model.config.n_layers),
        "d_model": int(model.config.d_model),
        "parameters": sum(int(w.size) for w in model.weights.values()),
        "warnings": caught,
    }


def figure_names(name: str) -> dict[str, str]:
    """The figure files of program ``name``, by kind, relative to library.md."""
    return {kind: f"{FIGURES}/{name}-{kind}.png" for kind in ("graph", "residual")}


def figures(names: Iterable[str] | None = None) -> dict[str, bytes]:
    """The page's PNGs by docs-relative path (of every program, or of ``names``): each
    program's graph (`plot_program`) and, when it compiles, its residual stream after
    the last layer on the example input (`plot_residual` with ``stages=[-1]``)."""
    entries = library_entries()
    if entries is None:
        return {}
    if names is not None:
        wanted = set(names)
        entries = [entry for entry in entries if entry.name in wanted]
    import matplotlib

    matplotlib.use("Agg")
    from rasplang import viz

    out = {}
    for entry in entries:
        paths = figure_names(entry.name)
        out[paths["graph"]] = _png(viz.plot_program(entry.build(entry.max_seq_len), dpi=DPI))
        result = compiled(entry.name)
        if isinstance(result, tuple):
            fig = viz.plot_residual(result[0], list(entry.example), stages=[-1])
            out[paths["residual"]] = _png(fig)
    return out


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white",
                metadata={"Software": None})  # no version stamp: same program, same bytes
    return buffer.getvalue()


def build_expression(build: Callable[..., Any]) -> str | None:
    """The body of a ``lambda: ...`` (or ``lambda max_seq_len: ...``) build function as
    written, or None for a def."""
    if build.__name__ != "<lambda>":
        return None
    path = inspect.getsourcefile(build)
    if path is None:
        return None
    source = Path(path).read_text(encoding="utf-8")
    line = build.__code__.co_firstlineno
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Lambda) and node.lineno == line and len(node.args.args) <= 1:
            return ast.get_source_segment(source, node.body)
    return None


def source_of(entry: Any) -> str:
    """The code shown for a library entry: its builder ``make`` itself when it is a def;
    for a lambda, its expression followed by the rasplang functions it calls. A builder
    that takes the maximum length shows it: ``# sort(max_seq_len) = make_sort(...)``."""
    make = entry.make
    expression = build_expression(make)
    if expression is None:
        return textwrap.dedent(inspect.getsource(make)).rstrip() + "\n"
    module = inspect.getmodule(make)
    shown = []
    for name in make.__code__.co_names:
        fn = getattr(module, name, None)
        if inspect.isfunction(fn) and fn.__module__.partition(".")[0] == "rasplang":
            shown.append(textwrap.dedent(inspect.getsource(fn)).rstrip())
    params = inspect.signature(make).parameters
    call = f"{entry.name}({', '.join(params)})" if params else entry.name
    header = f"# {call} = {textwrap.dedent(expression)}"
    return header + "\n\n" + "\n\n\n".join(shown) + "\n"


def render_entry(entry: Any) -> str:
    """Markdown for one program: heading, description, example and size, figures, code."""
    import rasplang

    program = entry.build(entry.max_seq_len)
    example = list(entry.example)
    output = rasplang.evaluate(program, example)
    parts = [
        f"## `{entry.name}`\n",
        f"{entry.description.strip()}\n",
        "| Property | Value |\n| --- | --- |",
        f"| vocab | `{_code(list(entry.vocab))}` |",
        f"| max_seq_len | {entry.max_seq_len} |",
        f"| example input | `{_code(example)}` |",
        f"| output | `{_code(output)}` |",
        f"| causal-safe | {'yes' if entry.causal_safe else 'no'} |",
    ]
    size = compiled_size(entry.name)
    if isinstance(size, dict):
        parts.append(
            f"| compiled | {_plural(size['layers'], 'layer')}, d_model {size['d_model']}, "
            f"{size['parameters']:,} parameters |"
        )
        parts += [f"| compiler warning | {_cell(w)} |" for w in size["warnings"]]
    elif isinstance(size, str):
        parts.append(f"| compiled | refused: {_cell(' '.join(size.split()))} |")
    table = "\n".join(parts[2:])
    code = textwrap.indent(source_of(entry), "    ", lambda line: line.strip() != "")
    return "\n".join([
        *parts[:2],
        '<div class="rl-entry" markdown>',
        f'<div class="rl-facts" markdown>\n\n{table}\n\n</div>',
        _figures_html(entry.name, example, with_residual=isinstance(size, dict)),
        "</div>\n",
        f'??? example "Source of `{entry.name}`"\n\n    ```python\n{code}    ```\n',
    ]) + "\n"


def _figures_html(name: str, example: list[Any], *, with_residual: bool) -> str:
    """The program's figures, each a thumbnail linking to its full size."""
    paths = figure_names(name)
    shown = [("graph", f"The graph of {name}", "Graph, inputs at the bottom")]
    if with_residual:
        caption = f"Residual stream after the last layer on {html.escape(repr(example))}"
        shown.append(("residual", f"The residual stream of {name}", caption))
    return "\n".join(
        f'<figure markdown="span">\n[![{alt}]({paths[kind]})]({paths[kind]})\n'
        f"<figcaption>{caption}</figcaption>\n</figure>"
        for kind, alt, caption in shown
    )


def _cell(text: str) -> str:
    """Plain text for a table cell: HTML-escaped, no pipes."""
    return html.escape(text).replace("|", "\\|")


def _code(value: Any) -> str:
    """``repr`` for a table cell (no pipes, no backticks)."""
    return repr(value).replace("|", "\\|").replace("`", "'")


def render() -> str:
    """The whole generated catalogue as markdown."""
    entries = library_entries()
    if entries is None:
        return COMING_SOON
    return "\n".join(render_entry(entry) for entry in entries)


def _plural(n: int, word: str) -> str:
    """``1 layer``, ``2 layers``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
