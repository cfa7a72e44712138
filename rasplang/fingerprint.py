"""A program's fingerprint: one SHA-256 over its graph and its functions' tables.

A model file records the fingerprint of the program it was compiled from
(``ModelConfig.program_sha256``), so that `rasplang.verify` can say "this model was
compiled from another program" instead of reporting thousands of mismatches.

Two programs get the same fingerprint when they are the same graph (node types,
encodings, the names users gave, children in topological order) with the same tables on
the analysed domain: every Map's and SequenceMap's lookup array and output values, every
Select's predicate table, every Aggregate's default. Automatic labels (``map_12``, which
depend on how many nodes were built before) are left out, so the same program built
twice, or in another process, gets the same fingerprint; functions are compared by what
they compute on the domain, not by their code.
"""

from __future__ import annotations

import hashlib
from typing import Any

from rasplang.analysis import Analysis
from rasplang.nodes import SOp
from rasplang.selectors import Select

#: Types whose ``repr`` is a faithful, process-independent description of the value.
_PLAIN = (type(None), bool, int, float, str)


def _describe(value: Any) -> str:
    """A stable text for ``value``: its repr for plain values (with the type, so ``1``,
    ``1.0`` and ``True`` differ), recursively for tuples, else only its type's name (a
    repr may hold an object's address)."""
    if type(value) is tuple:
        return "(" + ",".join(_describe(v) for v in value) + ")"
    if isinstance(value, _PLAIN):
        return f"{type(value).__name__}:{value!r}"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def fingerprint(analysis: Analysis) -> str:
    """The hex SHA-256 of the analysed program (see the module docstring)."""
    digest = hashlib.sha256()
    position = {node: i for i, node in enumerate(analysis.nodes)}

    def add(*parts: Any) -> None:
        for part in parts:
            digest.update(part if isinstance(part, bytes) else str(part).encode())
            digest.update(b"\x00")

    add("vocab", *map(_describe, analysis.vocab), "max_seq_len", analysis.max_seq_len)
    for node in analysis.nodes:
        name = getattr(node, "name", None)
        add("node", type(node).__name__, name or "",
            *(position[child] for child in node.children))
        if isinstance(node, SOp):
            add("encoding", analysis.encodings[node].value)
            add("values", *map(_describe, analysis.tables[node].values))
            if node in analysis.luts:
                lut = analysis.luts[node]
                add("lut", lut.shape, lut.tobytes())
            if (default := getattr(node, "default", None)) is not None:
                add("default", _describe(default))
        elif isinstance(node, Select):
            table = analysis.select_table(node)
            add("select", table.shape, table.tobytes())
    return digest.hexdigest()
