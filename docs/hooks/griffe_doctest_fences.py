"""A griffe extension: show docstrings' ``>>>`` examples as ``pycon`` code blocks.

The project's docstrings carry doctest examples as bare ``>>>`` lines (so that
``python -m doctest`` and pytest's ``--doctest-modules`` read them). Markdown would
render those lines as nested block quotes, and a line such as ``[0, 0.5]`` after
``[round(v, 4) for v in ...]`` as a reference link, which the strict build rejects.
This extension wraps every run of example lines (a ``>>>`` line up to the next blank
line) in a fenced ``pycon`` block before the docstring is parsed. Listed under
``plugins.mkdocstrings.handlers.python.options.extensions``.
"""

from __future__ import annotations

from typing import Any

import griffe

_FENCES = ("```", "~~~")


def fence_doctests(text: str) -> str:
    """``text`` with each run of doctest lines wrapped in a ```` ```pycon ```` fence."""
    lines = text.splitlines()
    out: list[str] = []
    in_fence = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(_FENCES):
            in_fence = not in_fence
        elif not in_fence and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
                out.append(lines[i])
                i += 1
            out.append(f"{indent}```")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence the ``>>>`` examples of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the object's docstring before it is parsed."""
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
