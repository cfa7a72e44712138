"""Property: the per-cell value sets are sound. On every input of a small domain, causal
and not, each SOp's value at each (length, index) cell lies in the analysis's set for
that cell, and each selector's row lies between the keys it must and may select.

Values are read as `evaluate` computes them node by node, so a node's values count on
an input that fails at a later node too (the interpreter computes those). A categorical
Aggregate listed in ``spread_aggregates`` may return a mean outside its table (the
documented exception); what depends on such a value is not checked on that input."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rasplang import lib
from rasplang.analysis import AnalysisError, analyze
from rasplang.evaluator import _RULES, EvaluationError, _Evaluation
from rasplang.graph import topological_order, unique_labels
from rasplang.nodes import SOp
from rasplang.values import typed_key
from tests.strategies import programs


def partial_values(program, xs, causal):
    """Each node's value on ``xs``, up to the node where `evaluate` raises."""
    nodes = topological_order(program)
    run = _Evaluation(list(xs), causal, unique_labels(nodes))
    for node in nodes:
        try:
            run.values[node] = _RULES[type(node)](run, node)
        except EvaluationError:
            break
    return run.values


def _member(value, allowed) -> bool:
    if value != value:  # NaN: one value of the table, whichever object
        return any(a != a for a in allowed)
    return typed_key(value) in {typed_key(a) for a in allowed if a == a}


def check_cells(program, vocab, max_len) -> int:
    """Assert the cell sets hold on every input up to ``max_len``; the number of
    (input, node, position) checks made."""
    analysis = analyze(program, vocab, max_len)
    spread = set(analysis.spread_aggregates)
    checked = 0
    for n in range(1, max_len + 1):
        cells = {}
        for xs, causal in itertools.product(itertools.product(vocab, repeat=n), (False, True)):
            values = partial_values(program, xs, causal)
            tainted = set()
            for node, out in values.items():
                label = analysis.labels[node]
                if any(child in tainted for child in node.children):
                    tainted.add(node)
                    continue
                if not isinstance(node, SOp):
                    for i in range(n):
                        must, may = analysis.cell_keys(node, n, i, causal)
                        row = set(np.flatnonzero(np.asarray(out[i])).tolist())
                        assert set(must) <= row <= set(may), (label, xs, causal, i, must, may)
                    continue
                table = analysis.typed_values[node]
                for i, v in enumerate(out):
                    if node in spread and not _member(v, table):
                        tainted.add(node)  # a mean outside the table: documented
                        break
                    key = (node, i, causal)
                    if key not in cells:
                        cells[key] = analysis.cell_values(node, n, i, causal)
                    assert _member(v, cells[key]), (label, xs, causal, i, v, cells[key])
                    checked += 1
    return checked


def _library_length(vocab) -> int:
    return 5 if len(vocab) <= 3 else 4


@pytest.mark.parametrize("name", sorted(lib.PROGRAMS))
def test_library_cells_are_sound(name):
    """Every library program's cell sets hold on every input (lengths up to 4 or 5)."""
    entry = lib.PROGRAMS[name]
    n = _library_length(entry.vocab)
    assert check_cells(entry.build(n), entry.vocab, n) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(lib.PROGRAMS))
def test_library_cells_are_sound_longer(name):
    """The same, one length further (lengths up to 5 or 6)."""
    entry = lib.PROGRAMS[name]
    n = _library_length(entry.vocab) + 1
    assert check_cells(entry.build(n), entry.vocab, n) > 0


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), max_len=st.integers(1, 4))
def test_random_program_cells_are_sound(data, max_len):
    """A random program's cell sets hold on every input up to length 4."""
    program, vocab = data.draw(programs(max_depth=6))
    with contextlib.suppress(AnalysisError):  # too large to tabulate: nothing to check
        check_cells(program, vocab, max_len)
