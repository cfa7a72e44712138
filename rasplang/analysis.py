"""Program analysis: the table IR that the interpreter, the compiler and verify share.

For a program, a vocabulary and a maximum length, `analyze` computes once (with one
rule per node type, `rasplang.inference`; the tables and their rules are
`rasplang.tables`, the checks `rasplang.validation`):

- the nodes in topological order, with labels unique within the program;
- each SOp's encoding, its *typed value table* (`Analysis.tables`: every value the node
  can take on any input of length 1..max_seq_len over the vocabulary, ``1``, ``1.0`` and
  ``True`` apart) and its *value set* (those values merged by ``==`` and sorted);
- each Map's and SequenceMap's lookup array (`Analysis.luts`), calling its function
  once per typed input value (pair); Select predicate tables are built on first use
  (`Analysis.select_table`), calling the predicate once per typed pair;
- diagnostics: values dropped because ``f`` raised, and categorical Aggregates that
  may see several different values.

Soundness contract: every value `rasplang.evaluate` produces at an SOp is in its value
set, with one documented exception: a *categorical* Aggregate whose selection holds
several different numbers returns their mean, which need not be in its set (the
analysis lists such nodes in ``spread_aggregates``; the interpreter still returns the
right value and the compiler refuses or verifies them).

Numerical Aggregates are exact: the set holds the mean of every multiset of 1 to
max_seq_len input values (computed with fractions), plus the default. tracr keeps only
``{x / w}``, which makes its compiled models silently wrong downstream.
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import numpy as np

from rasplang.graph import topological_order, unique_labels
from rasplang.inference import (  # noqa: F401  (re-exported)
    MAX_LINEAR_PAIRS,
    MAX_MEAN_STEPS,
    MAX_TABLE_PAIRS,
    MAX_VALUE_SET_SIZE,
    RULES,
    AnalysisError,
    Inference,
    ValueSetTooLarge,
    unhashable_result,
)
from rasplang.nodes import (
    Comparison,
    Encoding,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    SequenceMap,
    SOp,
    Value,
    get_encoding,
)
from rasplang.tables import (  # noqa: F401  (re-exported: the table IR's codes)
    PRED_ERROR,
    PRED_FALSE,
    PRED_TRUE,
    RAISED,
    RAISED_CODE,
    KeyRuns,
    key_runs,
    number_column,
    predicate_table,
)
from rasplang.validation import (  # noqa: F401  (re-exported)
    MAX_NUMERICAL_MAGNITUDE,
    UnsupportedProgramError,
    raise_if_unsupported,
    validate,
)
from rasplang.values import (  # noqa: F401  (re-exported: the one value identity)
    Table,
    distinct_typed,
    is_negative_zero,
    object_array,
    sort_key,
    sorted_values,
    type_collisions,
    typed_key,
)

_MISSING = object()


@attrs.frozen(eq=False)  # compared and hashed by identity (a program's == builds a Map)
class Analysis:
    """What is known statically about a program for one vocabulary and length: the
    table IR.

    Per SOp: ``tables[node]``, the typed value table (code -> value; ``typed_values``
    holds the same tuples); ``value_sets[node]``, those values merged by ``==`` (as a
    compiled model holds them) and sorted. Per Map, SequenceMap and LinearSequenceMap,
    ``luts[node]``: int32 codes into ``tables[node]`` (`RAISED_CODE` where ``f`` raised),
    ``[len(tables[inner])]`` for a Map and ``[len(tables[fst]), len(tables[snd])]`` for a
    SequenceMap; per Aggregate, ``luts[node]``: the code in ``tables[node]`` of each value
    of ``tables[node.sop]``. Predicate tables and the merged views the compiler reads
    (`map_outputs`, `sequence_map_outputs`, `predicate`) are built on first use and kept.
    """

    program: RASPExpr
    vocab: tuple[Value, ...]
    max_seq_len: int
    nodes: tuple[RASPExpr, ...]
    labels: dict[RASPExpr, str]
    value_sets: dict[SOp, tuple[Value, ...]]
    encodings: dict[SOp, Encoding]
    dropped: dict[SOp, tuple[str, ...]]
    spread_aggregates: tuple[SOp, ...]
    #: SOps that can take values equal under ``==`` but of different types (``1``,
    #: ``1.0``, ``True``): one value in ``value_sets``, so one direction (categorical) or
    #: one number (numerical) in a compiled model. `validate` refuses consumers whose
    #: function tells them apart.
    type_collisions: dict[SOp, tuple[tuple[Value, ...], ...]] = attrs.field(factory=dict)
    #: Each SOp's values without merging equal values of different types.
    typed_values: dict[SOp, tuple[Value, ...]] = attrs.field(factory=dict)
    #: Each SOp's typed value table (``tables[node].values == typed_values[node]``).
    tables: dict[SOp, Table] = attrs.field(factory=dict)
    #: Lookup arrays (see the class docstring).
    luts: dict[SOp, np.ndarray] = attrs.field(factory=dict, repr=False)
    #: Per SOp its `rasplang.positions.CellSets` (codes into ``tables[node]`` at each
    #: (mode, length, index) cell), per selector its `rasplang.positions.Selection`.
    places: dict[RASPExpr, Any] = attrs.field(factory=dict, repr=False)
    #: Tables built on first use, keyed by ``(kind, node)``; seeded by `analyze`.
    _cache: dict[tuple[str, RASPExpr], Any] = attrs.field(factory=dict, repr=False)
    _lock: Any = attrs.field(factory=threading.RLock, init=False, repr=False)

    def value_set(self, node: SOp) -> tuple[Value, ...]:
        """The sorted values ``node`` can take."""
        return self.value_sets[node]

    def cell_values(self, node: SOp, n: int, i: int, causal: bool = False
                    ) -> tuple[Value, ...]:
        """The typed values ``node`` can take at position ``i`` of inputs of length ``n``
        (causal or not): its per-cell set (`rasplang.positions`); () where no input of
        that length gets past ``node``."""
        sets = self.places[node]
        codes = sets.at(int(causal), sets_cell(n, i, self.max_seq_len))
        return tuple(self.typed_values[node][c] for c in codes.tolist())

    def cell_keys(self, node: RASPExpr, n: int, i: int, causal: bool = False
                  ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """A selector's bounds at query ``i`` of inputs of length ``n``: the keys every
        input selects and the keys some input may select."""
        selection = self.places[node]
        cell = sets_cell(n, i, self.max_seq_len)
        return (tuple(np.flatnonzero(selection.must[int(causal), cell]).tolist()),
                tuple(np.flatnonzero(selection.may[int(causal), cell]).tolist()))

    def node(self, label: str) -> RASPExpr:
        """The node of the program with this (unique) label."""
        for node, node_label in self.labels.items():
            if node_label == label:
                return node
        raise KeyError(f"no node labelled {label!r}; labels are {sorted(self.labels.values())}")

    @property
    def diagnostics(self) -> list[str]:
        """Human-readable notes: dropped values and spread categorical Aggregates."""
        notes = [
            f"{self.labels[node]}: {msg}" for node, msgs in self.dropped.items() for msg in msgs
        ]
        notes += [
            f"{self.labels[node]}: categorical Aggregate may select several values"
            for node in self.spread_aggregates
        ]
        notes += [
            f"{self.labels[node]}: values {list(group)} compare equal but differ in type or sign"
            for node, groups in self.type_collisions.items() for group in groups
        ]
        return notes

    # ------------------------------------------------------- tables built on first use

    def _cached(self, kind: str, node: RASPExpr, build: Callable[[], Any]) -> Any:
        """``build()`` once per ``(kind, node)``, also when threads ask at once."""
        found = self._cache.get((kind, node), _MISSING)
        if found is _MISSING:
            with self._lock:
                found = self._cache.get((kind, node), _MISSING)
                if found is _MISSING:
                    found = self._cache[kind, node] = build()
        return found

    def numbers(self, node: SOp) -> np.ndarray | None:
        """``[len(tables[node])]`` float64: the typed values as numbers, when each is a
        bool, a float or an int of magnitude at most 2**53 (exact in float64); else None."""
        return self._cached("numbers", node, lambda: number_column(self.typed_values[node]))

    def select_table(self, node: Select) -> np.ndarray:
        """``[len(tables[keys]), len(tables[queries])]`` int8: `PRED_TRUE` or `PRED_FALSE`
        for ``bool(predicate(key, query))``, `PRED_ERROR` where the predicate raised or a
        side is None (`evaluate` raises there)."""
        def build() -> np.ndarray:
            keys, queries = self.typed_values[node.keys], self.typed_values[node.queries]
            if len(keys) * len(queries) > MAX_LINEAR_PAIRS:  # refused before allocating
                raise ValueSetTooLarge(
                    f"Select {self.labels[node]!r}: its table would hold {len(keys):,} keys "
                    f"x {len(queries):,} queries (limit MAX_LINEAR_PAIRS={MAX_LINEAR_PAIRS:,})")
            compares = isinstance(node.predicate, Comparison)
            return predicate_table(node.predicate, keys, queries,
                                   self.numbers(node.keys) if compares else None,
                                   self.numbers(node.queries) if compares else None)
        return self._cached("select", node, build)

    def key_runs(self, node: Select) -> KeyRuns | None:
        """`select_table` as runs of selected key codes (None when it has an error)."""
        return self._cached("runs", node, lambda: key_runs(self.select_table(node)))

    def merged_index(self, node: SOp) -> np.ndarray:
        """``[len(tables[node])]`` int64: the position in ``value_sets[node]`` of each
        typed value (the value ``==`` merges it into). The one map from typed values to
        the merged values of a compiled model."""
        def build() -> np.ndarray:
            position = {v: i for i, v in enumerate(self.value_sets[node])}
            return np.array([position[v] for v in self.typed_values[node]],
                            dtype=np.int64).reshape(-1)
        return self._cached("merged", node, build)

    def representatives(self, node: SOp) -> np.ndarray:
        """``[len(value_sets[node])]`` int64: the code in ``tables[node]`` of each value of
        ``value_sets[node]`` (the typed value it is)."""
        def build() -> np.ndarray:
            _, first = np.unique(self.merged_index(node), return_index=True)
            return first.astype(np.int64)
        return self._cached("representatives", node, build)

    def map_outputs(self, node: Map) -> tuple[Value, ...]:
        """``f(x)`` for each ``x`` of ``value_sets[node.inner]`` (aligned with it): None
        where ``x`` is None, `RAISED` where ``f`` raised. Read from ``luts[node]``; ``f`` is
        not called again."""
        def build() -> tuple[Value, ...]:
            outputs = object_array((*self.typed_values[node], RAISED))  # RAISED_CODE: last
            return tuple(outputs[self.luts[node][self.representatives(node.inner)]].tolist())
        return self._cached("map_outputs", node, build)

    def sequence_map_outputs(self, node: SequenceMap | LinearSequenceMap) -> np.ndarray:
        """``[len(value_sets[fst]), len(value_sets[snd])]`` object array: ``f(x, y)``
        for each pair of merged values, None where either is None, `RAISED` where ``f``
        raised. Read from ``luts[node]``."""
        def build() -> np.ndarray:
            outputs = object_array((*self.typed_values[node], RAISED))
            rows = np.ix_(self.representatives(node.fst), self.representatives(node.snd))
            return outputs[self.luts[node][rows]]
        return self._cached("sequence_map_outputs", node, build)

    def predicate(self, node: Select) -> np.ndarray:
        """``[len(value_sets[queries]), len(value_sets[keys])]`` bool:
        ``bool(predicate(key, query))`` for each pair of merged values (False where the
        predicate raised or a side is None). Read from `select_table`."""
        def build() -> np.ndarray:
            rows = np.ix_(self.representatives(node.keys), self.representatives(node.queries))
            return (self.select_table(node)[rows] == PRED_TRUE).T
        return self._cached("predicate", node, build)


def sets_cell(n: int, i: int, max_seq_len: int) -> int:
    """The cell of position ``i`` at length ``n`` (`rasplang.positions.Cells`)."""
    if not (1 <= n <= max_seq_len and 0 <= i < n):
        raise ValueError(f"no cell at length {n}, position {i} (max_seq_len={max_seq_len})")
    return n * (n - 1) // 2 + i


def _check_vocab(vocab: Iterable[Value], max_seq_len: int) -> tuple[Value, ...]:
    if isinstance(vocab, (str, bytes)):
        vocab = list(vocab)
    vocab = tuple(vocab)
    if not vocab:
        raise ValueError("vocab must not be empty")
    if any(v is None for v in vocab):
        raise ValueError("vocab must not contain None")
    if len(set(vocab)) != len(vocab):
        raise ValueError(f"vocab has duplicate tokens: {list(vocab)}")
    if (isinstance(max_seq_len, bool) or not isinstance(max_seq_len, numbers.Integral)
            or max_seq_len < 1):
        raise ValueError(f"max_seq_len must be a positive integer, got {max_seq_len!r}")
    return vocab


def analyze(program: RASPExpr, vocab: Iterable[Value], max_seq_len: int) -> Analysis:
    """Analyse ``program`` for inputs over ``vocab`` of length 1..``max_seq_len``."""
    vocab = _check_vocab(vocab, max_seq_len)
    max_seq_len = int(max_seq_len)
    nodes = topological_order(program)
    labels = unique_labels(nodes)
    inference = Inference(vocab, max_seq_len, labels)
    encodings: dict[SOp, Encoding] = {}
    for node in nodes:
        rule = RULES.get(type(node))
        if rule is None:
            raise NotImplementedError(f"no value-table rule for {type(node).__name__}")
        table = rule(inference, node)
        if table is None:
            continue
        inference.tables[node] = table
        if node not in inference.sets:
            inference.sets[node] = sorted_values(table.values)
            if len(table) > len(inference.sets[node]):
                inference.collisions[node] = type_collisions(table.values, distinct=True)
        encodings[node] = get_encoding(node)
    return Analysis(
        program=program,
        vocab=vocab,
        max_seq_len=max_seq_len,
        nodes=tuple(nodes),
        labels=labels,
        value_sets=inference.sets,
        encodings=encodings,
        dropped={node: tuple(msgs) for node, msgs in inference.dropped.items()},
        spread_aggregates=tuple(inference.spread),
        type_collisions=inference.collisions,
        typed_values={node: table.values for node, table in inference.tables.items()},
        tables=inference.tables,
        luts=inference.luts,
        places=inference.places,
        cache=inference.cache,
    )


def analysis_for(program: RASPExpr, vocab: Iterable[Value], max_seq_len: int,
                 analysis: Analysis | None = None) -> Analysis:
    """``analysis`` if it is the analysis of ``program`` for ``vocab`` (in this order) and
    ``max_seq_len``, or ``analyze(program, vocab, max_seq_len)`` when it is None.

    Raises ValueError when ``analysis`` was made for another program, vocabulary or
    length (a plan or a model built from it would answer for another domain).
    """
    if analysis is None:
        return analyze(program, vocab, max_seq_len)
    if not isinstance(analysis, Analysis):
        raise TypeError(f"analysis must be an Analysis (from rasplang.analyze), got "
                        f"{type(analysis).__name__}")
    vocab = _check_vocab(vocab, max_seq_len)
    if analysis.program is not program:
        raise ValueError(f"the analysis is of another program "
                         f"({analysis.labels[analysis.program]!r}), not of "
                         f"{getattr(program, 'label', program)!r}")
    if list(map(typed_key, analysis.vocab)) != list(map(typed_key, vocab)):
        raise ValueError(f"the analysis is for the vocabulary {list(analysis.vocab)}, not "
                         f"{list(vocab)}")
    if analysis.max_seq_len != max_seq_len:
        raise ValueError(f"the analysis is for max_seq_len={analysis.max_seq_len}, not "
                         f"{max_seq_len}")
    return analysis
