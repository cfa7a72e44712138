"""The compiler's own validation: every construct it cannot build exactly, with reasons.

Runs on the shared analysis before any block is built; `compile` reports these
together with `rasplang.analysis.validate`'s problems in one UnsupportedProgramError.
"""

from __future__ import annotations

import numbers

import numpy as np
from rasplang.backend.chambers.selector import SelectorUnsupported, selector_terms

from rasplang.analysis import Analysis
from rasplang.nodes import (
    Aggregate,
    Encoding,
    LengthType,
    LinearSequenceMap,
    Map,
    SelectorWidth,
    SequenceMap,
    SOp,
)


def _numeric_values(analysis: Analysis, sop: SOp) -> bool:
    return all(isinstance(v, numbers.Real) for v in analysis.value_sets[sop] if v is not None)


def backend_problems(analysis: Analysis, causal: bool) -> list[tuple[str, str]]:
    """``(label, reason)`` for every node this compiler refuses."""
    problems: list[tuple[str, str]] = []
    labels = analysis.labels
    numerical = {n for n, e in analysis.encodings.items() if e is Encoding.NUMERICAL}

    def is_num(sop: SOp) -> bool:
        return sop in numerical

    if not isinstance(analysis.program, SOp):
        problems.append((labels[analysis.program],
                         f"the program's output is a {type(analysis.program).__name__}; "
                         "only an SOp can be compiled"))
    # Categorical SOps that read each SOp directly (a numerical None is encoded as an
    # unspecified number, which only numerical consumers may carry on).
    categorical_readers: dict[SOp, list[SOp]] = {}
    for node in analysis.nodes:
        if isinstance(node, SOp) and not is_num(node):
            for child in node.children:
                if isinstance(child, SOp):
                    categorical_readers.setdefault(child, []).append(node)
    for node in analysis.nodes:
        label = labels[node]
        if isinstance(node, LengthType) and causal:
            problems.append((label, "length needs every position of the input, which a causal "
                                    "model cannot see; compile with causal=False"))
        if isinstance(node, (Aggregate, SelectorWidth)):
            try:
                selector_terms(node.selector, is_num, labels, lambda s: np.ones((1, 1)))
            except SelectorUnsupported as exc:
                problems.append((label, str(exc)))
        if isinstance(node, Aggregate) and not is_num(node) and is_num(node.sop):
            problems.append((label, f"categorical Aggregate of the numerical SOp "
                                    f"{labels[node.sop]!r}; make the Aggregate numerical "
                                    "or its input categorical"))
        if isinstance(node, SequenceMap) and (is_num(node.fst) or is_num(node.snd)):
            problems.append((label, "SequenceMap with a numerical input; use a "
                                    "LinearSequenceMap for a linear function, or make both "
                                    "inputs categorical"))
        if isinstance(node, LinearSequenceMap):
            if not is_num(node) and (is_num(node.fst) or is_num(node.snd)):
                problems.append((label, "categorical LinearSequenceMap with a numerical "
                                        "input; make the output numerical"))
            for child in (node.fst, node.snd):
                if is_num(node) and not is_num(child) and not _numeric_values(analysis, child):
                    problems.append((label, f"numerical LinearSequenceMap of "
                                            f"{labels[child]!r}, whose values are not all "
                                            "numbers"))
        if isinstance(node, Map) and is_num(node.inner) and not analysis.value_sets[node.inner]:
            problems.append((label, f"input {labels[node.inner]!r} has no values"))
        if (isinstance(node, SOp) and is_num(node) and categorical_readers.get(node)
                and None in analysis.value_sets[node]):
            reader = labels[categorical_readers[node][0]]
            problems.append((label, f"numerical SOp that can be None feeds the categorical "
                                    f"{reader!r}; a number cannot encode None (give the "
                                    "Aggregate upstream a numeric default)"))
    return problems
