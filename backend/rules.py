"""The compiler's own validation: every construct it cannot build exactly, with reasons.

Runs on the shared analysis before any block is built; `compile` reports these
together with `rasplang.analysis.validate`'s problems in one UnsupportedProgramError.
"""

from __future__ import annotations

import math

import numpy as np

from rasplang.analysis import Analysis
from rasplang.backend.chambers.selector import SelectorUnsupported, selector_terms
from rasplang.backend.derived import Product
from rasplang.nodes import (
    Aggregate,
    Encoding,
    LengthType,
    Map,
    RASPExpr,
    Select,
    SelectorWidth,
    SOp,
)


class _Sizes:
    """A `SelectorContext` that knows only value-set sizes (no weights are built)."""

    def __init__(self, analysis: Analysis):
        self.analysis = analysis

    def resolve(self, sop: SOp) -> SOp:
        return sop  # a conversion has the same (non-None) values

    def size(self, sop: SOp) -> int:
        if isinstance(sop, Product):
            return math.prod(self.size(p) for p in sop.parts)
        return sum(v is not None for v in self.analysis.value_sets[sop])

    def table(self, select: Select, keys: SOp, queries: SOp) -> np.ndarray:
        # a read-only all-False view: the shape is all that counts, and takes no memory
        return np.broadcast_to(np.False_, (self.size(queries), self.size(keys)))

    def product(self, parts: tuple[SOp, ...]) -> SOp:
        return Product(parts)

    def unbuilt(self, sop: SOp) -> bool:
        return False

    def label(self, node: RASPExpr) -> str:
        return self.analysis.labels[node]


def backend_problems(analysis: Analysis, causal: bool) -> list[tuple[str, str]]:
    """``(label, reason)`` for every node this compiler refuses."""
    problems: list[tuple[str, str]] = []
    labels = analysis.labels
    sizes = _Sizes(analysis)
    numerical = {n for n, e in analysis.encodings.items() if e is Encoding.NUMERICAL}

    def is_num(sop: SOp) -> bool:
        return sop in numerical

    if not isinstance(analysis.program, SOp):
        problems.append((labels[analysis.program],
                         f"the program's output is a {type(analysis.program).__name__}; "
                         "only an SOp can be compiled"))
    for node in analysis.nodes:
        label = labels[node]
        if isinstance(node, LengthType) and causal:
            problems.append((label, "length needs every position of the input, which a causal "
                                    "model cannot see; compile with causal=False"))
        if isinstance(node, (Aggregate, SelectorWidth)):
            try:
                selector_terms(node.selector, sizes)
            except SelectorUnsupported as exc:
                problems.append((label, str(exc)))
        if isinstance(node, Map) and is_num(node.inner) and not analysis.value_sets[node.inner]:
            problems.append((label, f"input {labels[node.inner]!r} has no values"))
    return problems
