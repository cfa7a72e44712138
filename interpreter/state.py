"""Per-node tables and lookup arrays of a plan, read from the analysis, grown on demand.

A plan's `TableState` holds the analysis's typed value tables and lookup arrays as they
are (`rasplang.Analysis.tables`, ``luts``, `select_table`, `key_runs`): building it calls
no function of the program. Each run works on a shallow copy: when a run meets a value
the analysis did not list (a mean of a categorical Aggregate outside its table), the
copy's tables grow and `ensure` extends the lookup arrays of the nodes downstream with
the analysis's own rules (`rasplang.tables`), calling ``f`` only on the new values. The
plan's own state is never mutated, so runs may share a plan.

Each pass dispatches on the node type through a rule table: `_INITIAL` (what a plan
takes from the analysis) and `_ENSURE` (how a run's copy catches up with grown tables).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from rasplang.analysis import Analysis, unhashable_result
from rasplang.interpreter.codes import REEVALUATE
from rasplang.interpreter.runs import KeyRuns, key_runs
from rasplang.interpreter.tables import (
    NumericInfo,
    Table,
    numeric_info,
)
from rasplang.nodes import (
    Aggregate,
    ConstantSelector,
    ConstantSOp,
    Full,
    IndicesType,
    LengthType,
    LinearSequenceMap,
    Map,
    Select,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    SOp,
    TokensType,
    Value,
)
from rasplang.tables import (
    PRED_ERROR,
    RAISED_CODE,
    UnhashableResult,
    map_table,
    pairs_table,
    predicate_table,
)
from rasplang.validation import identity_entries
from rasplang.values import is_negative_zero

_PLACEHOLDER = Table((None,))


class TableState:
    """Tables of every SOp and the arrays derived from them (see module docstring)."""

    def __init__(self, max_seq_len: int, labels: dict[Any, str] | None = None):
        self.max_seq_len = max_seq_len
        self.labels = labels if labels is not None else {}  # node -> label, for errors
        self.tables: dict[SOp, Table] = {}
        self.luts: dict[Any, np.ndarray] = {}  # Map [n], SequenceMap [na, nb], Select [nk, nq]
        self.remaps: dict[Aggregate, np.ndarray] = {}
        self.defaults: dict[Aggregate, int | None] = {}
        self.runs: dict[Select, KeyRuns | None] = {}  # of luts[select], for counting kernels
        self.numeric: dict[SOp, tuple[int, NumericInfo]] = {}
        self.floats: dict[SOp, tuple[int, tuple[np.ndarray, np.ndarray]]] = {}

    @classmethod
    def from_analysis(cls, analysis: Analysis) -> TableState:
        """The plan's state: the analysis's tables and arrays, and per Aggregate the
        numbers its kernels read (cached here so that runs do not recompute them)."""
        state = cls(analysis.max_seq_len, analysis.labels)
        for node in analysis.nodes:
            _INITIAL[type(node)](state, analysis, node)
            state.ensure(node)  # after a placeholder table (every f raised) upstream
        return state

    def copy(self) -> TableState:
        """A copy whose dicts can grow without touching this state."""
        other = TableState(self.max_seq_len, self.labels)
        for name in ("tables", "luts", "remaps", "defaults", "runs", "numeric", "floats"):
            setattr(other, name, dict(getattr(self, name)))
        return other

    # ------------------------------------------------------------------ tables

    def add_values(self, node: SOp, values: Iterable[Value]) -> np.ndarray:
        """Codes of ``values`` in ``node``'s table, adding the missing ones."""
        values = list(values)
        self.tables[node] = table = self.tables[node].with_values(values)
        return table.codes_of(values)

    def numeric_info(self, node: SOp) -> NumericInfo:
        """`NumericInfo` of ``node``'s current table (cached per table size)."""
        table = self.tables[node]
        cached = self.numeric.get(node)
        if cached is None or cached[0] != len(table):
            cached = (len(table), numeric_info(table, self.max_seq_len))
            self.numeric[node] = cached
        return cached[1]

    def float_index(self, node: SOp) -> tuple[np.ndarray, np.ndarray]:
        """``node``'s float values, sorted, and their codes, where the kernels look means
        up: NaN and -0.0 (never a mean the kernels divide) are left out."""
        table = self.tables[node]
        cached = self.floats.get(node)
        if cached is None or cached[0] != len(table):
            pairs = sorted((v, c) for c, v in enumerate(table.values)
                           if type(v) is float and v == v and not is_negative_zero(v))
            values = np.array([v for v, _ in pairs], dtype=np.float64).reshape(-1)
            codes = np.array([c for _, c in pairs], dtype=np.int32).reshape(-1)
            cached = (len(table), (values, codes))
            self.floats[node] = cached
        return cached[1]

    def default_code(self, node: Aggregate) -> int:
        """The code of ``node.default`` in its table; `REEVALUATE` where the table lacks
        it (the analysis showed that every query selects a key: a sequence that selects
        none is evaluated exactly, and the table grows)."""
        code = self.defaults[node]
        if code is None:
            code = self.defaults[node] = self.tables[node].code(node.default)
        return REEVALUATE if code is None else code

    # -------------------------------------------------------------- derivation

    def ensure(self, node: Any) -> None:
        """Bring ``node``'s lookup arrays up to date with its children's tables (which
        grow only when a run meets a value the analysis did not list)."""
        rule = _ENSURE.get(type(node))
        if rule is not None:
            rule(self, node)

    def _ensure_map(self, node: Map) -> None:
        inner = self.tables[node.inner].values
        lut = self.luts[node]
        if len(lut) == len(inner):
            return
        new = inner[len(lut):]
        codes = self._grow(node, lambda: map_table(node.f, new, lambda: None, []))
        self.luts[node] = np.concatenate([lut, codes])

    def _ensure_sequence_map(self, node: SequenceMap | LinearSequenceMap) -> None:
        xs, ys = self.tables[node.fst].values, self.tables[node.snd].values
        na, nb = self.luts[node].shape
        if (na, nb) == (len(xs), len(ys)):
            return
        lut = _extended(
            self.luts[node], (len(xs), len(ys)),
            lambda: self._grow(node, lambda: pairs_table(node.f, xs[:na], ys[nb:], [])),
            lambda: self._grow(node, lambda: pairs_table(node.f, xs[na:], ys, [])))
        self.luts[node] = _mark_identity(node, lut, xs, ys, RAISED_CODE)

    def _grow(self, node: SOp, build: Callable[[], tuple[Table, np.ndarray]]) -> np.ndarray:
        """Codes in ``node``'s table (extended) of the new outcomes ``build()`` tables
        (`rasplang.tables.map_table` or `pairs_table`, the analysis's own rules); an
        unhashable result is an `AnalysisError`, as `rasplang.analyze` reports it."""
        try:
            new, codes = build()
        except UnhashableResult as exc:
            raise unhashable_result(node, self.labels.get(node, node.label), exc) from None
        table = self.tables[node]
        table = Table(()) if table is _PLACEHOLDER else table
        self.tables[node] = grown = table.with_values(new.values)
        if not len(grown):
            self.tables[node] = _PLACEHOLDER
        return np.append(grown.codes_of(new.values), RAISED_CODE)[codes].astype(np.int32)

    def _ensure_select(self, node: Select) -> None:
        keys, queries = self.tables[node.keys].values, self.tables[node.queries].values
        nk, nq = self.luts[node].shape
        if (nk, nq) == (len(keys), len(queries)):
            return
        out = _extended(self.luts[node], (len(keys), len(queries)),
                        lambda: predicate_table(node.predicate, keys[:nk], queries[nq:]),
                        lambda: predicate_table(node.predicate, keys[nk:], queries))
        self.luts[node] = out = _mark_identity(node, out, keys, queries, PRED_ERROR)
        self.runs[node] = key_runs(out)

    def _ensure_aggregate(self, node: Aggregate) -> None:
        sop_values = self.tables[node.sop].values
        remap = self.remaps[node]
        if len(remap) == len(sop_values):
            return
        self.remaps[node] = np.concatenate([remap, self.add_values(node, sop_values[len(remap):])])


def _extended(table: np.ndarray, shape: tuple[int, int], right: Callable[[], np.ndarray],
              below: Callable[[], np.ndarray]) -> np.ndarray:
    """``table`` grown to ``shape`` (itself when it has that shape): ``right()`` gives the
    new columns of its rows, ``below()`` the new rows."""
    (n0, m0), (n, m) = table.shape, shape
    if (n0, m0) == (n, m):
        return table
    out = np.empty(shape, dtype=table.dtype)
    out[:n0, :m0] = table
    out[:n0, m0:] = right().reshape(n0, m - m0)
    out[n0:, :] = below().reshape(n - n0, m)
    return out


def _mark_identity(node: Any, lut: np.ndarray, first: tuple, second: tuple,
                   error: int) -> np.ndarray:
    """``lut`` (a Select's predicate table or a SequenceMap's lookup array) with ``error``
    wherever `evaluate`'s answer may depend on object identity
    (`rasplang.validation.identity_entries`): `evaluate` compares one object per
    position, the table one per value, so the interpreter refuses inputs that reach
    those entries (a copy; ``lut`` itself when there are none)."""
    marked = identity_entries(node, first, second)
    if marked is None or not marked.any():
        return lut
    lut = lut.copy()
    lut[marked] = error
    return lut


# ------------------------------------------------------------------- rule tables


def _take_table(state: TableState, analysis: Analysis, node: SOp) -> None:
    # Every f raised: keep one placeholder so code 0 is always a valid index (positions
    # that use it are flagged as errors).
    table = analysis.tables[node]
    state.tables[node] = table if len(table) else _PLACEHOLDER


def _take_function(state: TableState, analysis: Analysis, node: SOp) -> None:
    _take_table(state, analysis, node)
    state.luts[node] = analysis.luts[node]


def _take_aggregate(state: TableState, analysis: Analysis, node: Aggregate) -> None:
    _take_table(state, analysis, node)
    state.remaps[node] = analysis.luts[node]
    state.defaults[node] = state.tables[node].code(node.default)
    state.numeric_info(node.sop)
    state.float_index(node)


def _take_sequence_map(state: TableState, analysis: Analysis,
                       node: SequenceMap | LinearSequenceMap) -> None:
    _take_function(state, analysis, node)
    state.luts[node] = _mark_identity(node, state.luts[node], analysis.typed_values[node.fst],
                                      analysis.typed_values[node.snd], RAISED_CODE)


def _take_select(state: TableState, analysis: Analysis, node: Select) -> None:
    table = analysis.select_table(node)
    pred = _mark_identity(node, table, analysis.typed_values[node.keys],
                          analysis.typed_values[node.queries], PRED_ERROR)
    state.luts[node] = pred
    state.runs[node] = analysis.key_runs(node) if pred is table else None


def _nothing(state: TableState, analysis: Analysis, node: Any) -> None:
    return None


#: What a plan takes from the analysis, per node type.
_INITIAL: dict[type, Callable[[TableState, Analysis, Any], None]] = {
    TokensType: _take_table,
    IndicesType: _take_table,
    LengthType: _take_table,
    Full: _take_table,
    ConstantSOp: _take_table,
    SelectorWidth: _take_table,
    Map: _take_function,
    SequenceMap: _take_sequence_map,
    LinearSequenceMap: _take_sequence_map,
    Aggregate: _take_aggregate,
    Select: _take_select,
    ConstantSelector: _nothing,
    SelectorAnd: _nothing,
    SelectorOr: _nothing,
    SelectorNot: _nothing,
}

#: How a run's state catches up with grown tables, per node type (absent: nothing
#: derived; a primitive's table never grows).
_ENSURE: dict[type, Callable[[TableState, Any], None]] = {
    Map: TableState._ensure_map,
    SequenceMap: TableState._ensure_sequence_map,
    LinearSequenceMap: TableState._ensure_sequence_map,
    Select: TableState._ensure_select,
    Aggregate: TableState._ensure_aggregate,
}
