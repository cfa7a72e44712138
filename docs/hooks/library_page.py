"""The program library page, generated from ``rasplang.lib.PROGRAMS`` so it cannot drift.

For each registered program: its description, its source (``inspect.getsource``), an
example input with the output `rasplang.evaluate` gives, and, when ``rasplang.compile``
exists, the compiled model's size (layers, d_model, parameters) or the reason it is
refused.
"""

from __future__ import annotations

import ast
import html
import importlib
import inspect
import textwrap
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

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


def compiled_size(program: Any, vocab: Any, max_seq_len: int) -> dict[str, Any] | str | None:
    """``{"layers", "d_model", "parameters", "warnings"}`` of the compiled model; the
    refusal message if it cannot be compiled; None while ``rasplang.compile`` is missing."""
    import rasplang

    compile_ = getattr(rasplang, "compile", None)
    if compile_ is None:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = compile_(program, vocab, max_seq_len)
        except NotImplementedError as exc:  # UnsupportedProgramError and friends
            return f"{type(exc).__name__}: {exc}"
    return {
        "layers": int(model.config.n_layers),
        "d_model": int(model.config.d_model),
        "parameters": sum(int(w.size) for w in model.weights.values()),
        "warnings": [str(w.message) for w in caught],
    }


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
    """Markdown for one program: heading, description, code, example, size."""
    import rasplang

    program = entry.build(entry.max_seq_len)
    example = list(entry.example)
    output = rasplang.evaluate(program, example)
    parts = [
        f"## `{entry.name}`\n",
        f"{entry.description.strip()}\n",
        f"```python\n{source_of(entry)}```\n",
        "| | |\n| --- | --- |",
        f"| vocab | `{_code(list(entry.vocab))}` |",
        f"| max_seq_len | {entry.max_seq_len} |",
        f"| example input | `{_code(example)}` |",
        f"| output | `{_code(output)}` |",
        f"| causal-safe | {'yes' if entry.causal_safe else 'no'} |",
    ]
    size = compiled_size(program, entry.vocab, entry.max_seq_len)
    if isinstance(size, dict):
        parts.append(
            f"| compiled | {_plural(size['layers'], 'layer')}, d_model {size['d_model']}, "
            f"{size['parameters']:,} parameters |"
        )
        parts += [f"| compiler warning | {_cell(w)} |" for w in size["warnings"]]
    elif isinstance(size, str):
        parts.append(f"| compiled | refused: {_cell(' '.join(size.split()))} |")
    return "\n".join(parts) + "\n"


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
