"""Per-node tables and lookup arrays, extended on demand during a run.

A plan builds one `TableState` from the value sets (tables of every SOp, Map and
SequenceMap lookup tables, Select predicate tables, Aggregate remaps). Each run works
on a shallow copy: when a run meets a value the plan did not know (a mean of a
categorical Aggregate outside its table), the copy's tables grow and `ensure` extends
the lookup arrays of the nodes downstream, calling ``f`` only on the new values. The
plan's own state is never mutated, so runs may share a plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from rasplang.analysis import AnalysisError, is_negative_zero
from rasplang.interpreter.runs import KeyRuns, key_runs
from rasplang.interpreter.tables import (
    NumericInfo,
    Table,
    identity_dependent,
    is_number,
    numeric_info,
)
from rasplang.nodes import (
    Aggregate,
    Comparison,
    ConstantSOp,
    Full,
    IndicesType,
    LengthType,
    LinearSequenceMap,
    Map,
    Select,
    SelectorWidth,
    SequenceMap,
    SOp,
    TokensType,
    Value,
)

#: Lookup-table entry: ``f`` raised on this value (Map, SequenceMap).
RAISED = -1
#: Predicate-table entries.
PRED_FALSE, PRED_TRUE, PRED_ERROR = 0, 1, 2


class TableState:
    """Tables of every SOp and the arrays derived from them (see module docstring)."""

    def __init__(self, max_seq_len: int, labels: dict[Any, str] | None = None):
        self.max_seq_len = max_seq_len
        self.labels = labels if labels is not None else {}  # node -> label, for errors
        self.tables: dict[SOp, Table] = {}
        self.luts: dict[Any, np.ndarray] = {}  # Map [n], SequenceMap [na, nb], Select [nk, nq]
        self.remaps: dict[Aggregate, np.ndarray] = {}
        self.runs: dict[Select, KeyRuns | None] = {}  # of luts[select], for counting kernels
        self.numeric: dict[SOp, tuple[int, NumericInfo]] = {}
        self.floats: dict[SOp, tuple[int, tuple[np.ndarray, np.ndarray]]] = {}

    def copy(self) -> TableState:
        """A copy whose dicts can grow without touching this state."""
        other = TableState(self.max_seq_len, self.labels)
        other.tables = dict(self.tables)
        other.luts = dict(self.luts)
        other.remaps = dict(self.remaps)
        other.runs = dict(self.runs)
        other.numeric = dict(self.numeric)
        other.floats = dict(self.floats)
        return other

    # ------------------------------------------------------------------ tables

    def init_leaf(self, node: SOp, vocab: tuple[Value, ...], seeds: Iterable[Value] = ()) -> None:
        """Set the table of a node whose values do not come from a child."""
        t = self.max_seq_len
        if isinstance(node, TokensType):
            values: Iterable[Value] = vocab
        elif isinstance(node, IndicesType):
            values = range(t)
        elif isinstance(node, LengthType):
            values = range(1, t + 1)
        elif isinstance(node, SelectorWidth):
            values = range(t + 1)
        elif isinstance(node, Full):
            values = (node.fill,)
        elif isinstance(node, ConstantSOp):
            values = node.value
        else:
            values = ()
        self.tables[node] = Table.of([*values, *seeds])

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

    # -------------------------------------------------------------- derivation

    def ensure(self, node: Any) -> None:
        """Bring ``node``'s lookup arrays up to date with its children's tables."""
        if isinstance(node, Map):
            self._ensure_map(node)
        elif isinstance(node, (SequenceMap, LinearSequenceMap)):
            self._ensure_sequence_map(node)
        elif isinstance(node, Select):
            self._ensure_select(node)
        elif isinstance(node, Aggregate):
            self._ensure_aggregate(node)
        elif isinstance(node, SOp) and node not in self.tables:
            self.init_leaf(node, ())
        if isinstance(node, SOp) and not len(self.tables[node]):
            # Every f raised: keep one placeholder so code 0 is always a valid index
            # (positions that use it are flagged as errors).
            self.tables[node] = Table.of([None])

    def _ensure_map(self, node: Map) -> None:
        inner = self.tables[node.inner].values
        lut = self.luts.get(node)
        if node not in self.tables:
            self.tables[node] = Table.of(())
        start = 0 if lut is None else len(lut)
        if lut is not None and start == len(inner):
            return
        args = [(x,) for x in inner[start:]]
        new = self._codes_for(node, args, [_apply(node.f, a) for a in args])
        self.luts[node] = new if lut is None else np.concatenate([lut, new])

    def _ensure_sequence_map(self, node: SequenceMap | LinearSequenceMap) -> None:
        xs = self.tables[node.fst].values
        ys = self.tables[node.snd].values
        lut = self.luts.get(node)
        if node not in self.tables:
            self.tables[node] = Table.of(())
        na, nb = (0, 0) if lut is None else lut.shape
        if lut is not None and (na, nb) == (len(xs), len(ys)):
            return
        out = np.empty((len(xs), len(ys)), dtype=np.int32)
        if lut is not None:
            out[:na, :nb] = lut
        cells = [(i, j) for i in range(len(xs)) for j in range(len(ys)) if i >= na or j >= nb]
        args = [(xs[i], ys[j]) for i, j in cells]
        codes = self._codes_for(node, args, [_apply(node.f, a) for a in args])
        if cells:
            rows, cols = np.array(cells, dtype=np.int64).T
            out[rows, cols] = codes
        self.luts[node] = out

    def _codes_for(self, node: SOp, args: list[tuple[Value, ...]],
                   outs: list[tuple[bool, Value]]) -> np.ndarray:
        """Codes of f's results on ``args`` (`RAISED` where f raised), extending ``node``'s
        table. An unhashable result is an `AnalysisError` naming the node, the arguments
        and the value (as `rasplang.analyze` reports it for the values it knows)."""
        ok = [value for raised, value in outs if not raised]
        try:
            added = self.add_values(node, ok)
        except TypeError:
            arg, value = next((a, v) for a, (raised, v) in zip(args, outs)
                              if not raised and not _hashable(v))
            shown = ", ".join(repr(x) for x in arg)
            label = self.labels.get(node, node.label)
            raise AnalysisError(
                f"{type(node).__name__} {label!r}: f({shown}) returned {value!r} (a "
                f"{type(value).__name__}), which is not hashable; RASP values must be "
                "hashable (use a tuple instead of a list)") from None
        codes = iter(added)
        return np.fromiter(
            (RAISED if raised else next(codes) for raised, _ in outs),
            dtype=np.int32,
            count=len(outs),
        )

    def _ensure_select(self, node: Select) -> None:
        """The predicate table; `PRED_ERROR` where the predicate raised, saw None, or
        compares a value whose equality depends on object identity (`identity_dependent`:
        `evaluate` compares one object per position, the table one per value)."""
        keys = self.tables[node.keys].values
        queries = self.tables[node.queries].values
        pred = self.luts.get(node)
        nk, nq = (0, 0) if pred is None else pred.shape
        if pred is not None and (nk, nq) == (len(keys), len(queries)):
            return
        out = np.empty((len(keys), len(queries)), dtype=np.int8)
        if pred is not None:
            out[:nk, :nq] = pred
        blind = node.predicate in (Comparison.TRUE, Comparison.FALSE)  # never compares
        kbad = [not blind and identity_dependent(k) for k in keys]
        qbad = [not blind and identity_dependent(q) for q in queries]
        for i, key in enumerate(keys):
            for j, query in enumerate(queries):
                if i < nk and j < nq:
                    continue
                out[i, j] = (PRED_ERROR if kbad[i] or qbad[j]
                             else _predicate(node.predicate, key, query))
        self.luts[node] = out
        self.runs[node] = key_runs(out)

    def _ensure_aggregate(self, node: Aggregate) -> None:
        sop_values = self.tables[node.sop].values
        remap = self.remaps.get(node)
        if node not in self.tables:
            self.tables[node] = Table.of(())
        start = 0 if remap is None else len(remap)
        if start == len(sop_values) and remap is not None:
            return
        new = self.add_values(node, sop_values[start:])
        self.remaps[node] = new if remap is None else np.concatenate([remap, new])

    def default_code(self, node: Aggregate) -> int:
        """The code of ``node.default`` in its table (added if missing)."""
        return int(self.add_values(node, [node.default])[0])


def _apply(f: Any, args: tuple[Value, ...]) -> tuple[bool, Value]:
    """``(raised, f(*args))``; a None argument gives None, as in `rasplang.evaluate`."""
    if any(a is None for a in args):
        return False, None
    try:
        return False, f(*args)
    except Exception:
        return True, None


def _hashable(value: Value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _predicate(predicate: Any, key: Value, query: Value) -> int:
    if key is None or query is None:
        return PRED_ERROR
    try:
        return PRED_TRUE if bool(predicate(key, query)) else PRED_FALSE
    except Exception:
        return PRED_ERROR


def numeric_seeds(values: Iterable[Value]) -> list[float]:
    """Float versions of the numbers in a numerical Aggregate's value set.

    A mean is always a float; the analysis's set may hold it as an equal int or bool
    (``1.0 == 1 == True`` collapse in a set), so every number is seeded as a float.
    """
    return [float(v) for v in values if is_number(v)]
