"""Value-table inference: one rule per node type builds a node's typed table.

`rasplang.analyze` runs `Inference` over the nodes in topological order: each rule
(`RULES`) reads the children's tables and returns the node's typed value table
(`rasplang.tables.Table`), recording Map and SequenceMap lookup arrays as it applies
their functions once per typed input value (pair). The limits below bound how much work
one node may take; past them the node is named in a `ValueSetTooLarge`.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

import numpy as np

from rasplang import positions
from rasplang.nodes import (
    Aggregate,
    Comparison,
    ConstantSelector,
    ConstantSOp,
    Encoding,
    Full,
    IndicesType,
    LengthType,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    Selector,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    SOp,
    TokensType,
    Value,
    get_encoding,
)
from rasplang.positions import Cells, CellSets, Selection
from rasplang.tables import (
    RAISED_CODE,
    Table,
    TooManyValues,
    UnhashableResult,
    linear_table,
    map_table,
    number_column,
    pairs_table,
    predicate_code,
    predicate_table,
)
from rasplang.validation import short

#: Largest value set the analysis builds for one node by enumeration in Python
#: (numerical Aggregate means, Map and SequenceMap results). Past it, `analyze` raises
#: `ValueSetTooLarge` naming the node (a SequenceMap's table stops at its first value past
#: it, before ``f`` is called on the remaining pairs).
MAX_VALUE_SET_SIZE = 100_000
#: Largest number of input pairs a numerical LinearSequenceMap enumerates (with numpy:
#: the sum of two independent means can take about a million values at length 64).
MAX_LINEAR_PAIRS = 20_000_000
#: Largest number of input pairs on which the analysis calls a SequenceMap's ``f``
#: (checked before the first call, so a huge table is refused in well under a second).
MAX_TABLE_PAIRS = 4_000_000
#: Longest inputs the analysis keeps cells for (`rasplang.positions`: a selector's
#: bounds are ``2 x cells x max_seq_len`` bools, about 4 M at 128); past it the analysis
#: is what it is without cells.
MAX_CELL_LENGTH = 128
#: Largest predicate table the analysis builds for a Select's cell bounds
#: (`rasplang.positions`) when the predicate is called in Python (a `Comparison` over
#: numbers is one numpy comparison, built up to `MAX_TABLE_PAIRS`); past it the Select
#: may or may not select each key, as far as the cells know.
MAX_SELECT_CALLS = 2**18
#: Largest number of exact additions the analysis spends on one numerical Aggregate's
#: means (a few seconds of work); past it, `ValueSetTooLarge` names the node.
MAX_MEAN_STEPS = 5_000_000


class AnalysisError(ValueError):
    """The program cannot be analysed for this vocabulary and length."""


class ValueSetTooLarge(AnalysisError):
    """A node's value set would exceed `MAX_VALUE_SET_SIZE`."""


def unhashable_result(node: RASPExpr, label: str, exc: UnhashableResult) -> AnalysisError:
    """The error for a function that returned an unhashable value (from the analysis or
    from a run of the interpreter), naming the node, the arguments and the value."""
    shown = ", ".join(repr(a) for a in exc.args_)
    return AnalysisError(
        f"{type(node).__name__} {label!r}: f({shown}) returned {exc.value!r} (a "
        f"{type(exc.value).__name__}), which is not hashable; RASP values must be "
        "hashable (use a tuple instead of a list)")


class Inference:
    """One run of `analyze`: the tables built so far, one rule per node type (`RULES`)."""

    def __init__(self, vocab: tuple[Value, ...], max_seq_len: int, labels: dict):
        self.vocab = vocab
        self.max_seq_len = max_seq_len
        self.labels = labels
        self.tables: dict[SOp, Table] = {}
        self.sets: dict[SOp, tuple[Value, ...]] = {}
        self.luts: dict[SOp, np.ndarray] = {}
        self.dropped: dict[SOp, list[str]] = {}
        self.spread: list[SOp] = []
        self.collisions: dict[SOp, tuple[tuple[Value, ...], ...]] = {}
        self.cache: dict[tuple[str, RASPExpr], Any] = {}  # seeds `Analysis._cache`
        # past MAX_CELL_LENGTH: no cells, the analysis without them
        self.cells = Cells.of(max_seq_len) if max_seq_len <= MAX_CELL_LENGTH else None
        #: per SOp its `CellSets`, per selector its `Selection` (`rasplang.positions`)
        self.places: dict[RASPExpr, CellSets | Selection] = {}

    def place(self, node: RASPExpr, build: Callable[[Cells], CellSets | Selection]) -> None:
        """Record ``node``'s cell sets (or bounds) ``build(cells)``, when there are cells."""
        if self.cells is not None:
            self.places[node] = build(self.cells)

    def typed(self, node: SOp) -> tuple[Value, ...]:
        return self.tables[node].values

    def column(self, node: SOp) -> np.ndarray | None:
        """`Analysis.numbers`, computed once."""
        if ("numbers", node) not in self.cache:
            self.cache["numbers", node] = number_column(self.typed(node))
        return self.cache["numbers", node]

    def check_size(self, node: SOp, size: int) -> None:
        if size > MAX_VALUE_SET_SIZE:
            raise ValueSetTooLarge(
                f"{type(node).__name__} {self.labels[node]!r}: its value set would have "
                f"{size} or more values (limit MAX_VALUE_SET_SIZE={MAX_VALUE_SET_SIZE})"
            )

    def tabled(self, node: SOp, build: Callable[[list], tuple[Table, np.ndarray]]) -> Table:
        """``node``'s table and lookup array from ``build(errors)`` (`map_table` or
        `pairs_table`), with the values where ``f`` raised noted as dropped."""
        errors: list = []
        try:
            table, codes = build(errors)
        except UnhashableResult as exc:
            raise unhashable_result(node, self.labels[node], exc) from None
        if errors:  # evaluate raises there too: the values are dropped, and noted
            self.dropped[node] = [
                f"f({', '.join(repr(a) for a in arg)}) raised {type(exc).__name__}: {exc}; "
                "value dropped" for arg, exc in errors]
        self.check_size(node, len(table))
        self.luts[node] = codes
        return table

    def unhashable_value(self, node: SOp, values: Iterable[Value]) -> None:
        """Refuse a constant's unhashable value (a Full or ConstantSOp of a list, say)."""
        for v in values:
            try:
                hash(v)
            except TypeError:
                raise AnalysisError(
                    f"{type(node).__name__} {self.labels[node]!r}: its value {short(v)} (a "
                    f"{type(v).__name__}) is not hashable; RASP values must be hashable "
                    "(use a tuple instead of a list)") from None

    # -- rules: node -> its typed table (None for selectors), reading children's tables

    def tokens(self, node: TokensType) -> Table:
        self.place(node, lambda cells: positions.top(cells, len(self.vocab)))
        return Table(self.vocab)  # distinct under ==, so by type too; in vocab order

    def indices(self, node: IndicesType) -> Table:
        self.place(node, lambda cells: positions.from_codes(cells.i[None, :], self.max_seq_len))
        return Table(tuple(range(self.max_seq_len)))

    def length(self, node: LengthType) -> Table:
        self.place(node, lambda cells: positions.from_codes(cells.n[None, :] - 1,
                                                            self.max_seq_len))
        return Table(tuple(range(1, self.max_seq_len + 1)))

    def selector_width(self, node: SelectorWidth) -> Table:
        """The counts each cell's selection bounds allow (`rasplang.positions`): from 1
        where every query selects itself, up to the most keys any query may select."""
        if self.cells is None:
            low = 1 if selects_itself(node.selector, self.typed) else 0
            return Table(tuple(range(low, self.max_seq_len + 1)))
        table, self.places[node] = positions.selector_width_sets(
            self.cells, self.places[node.selector])
        return table

    def full(self, node: Full) -> Table:
        self.unhashable_value(node, (node.fill,))
        self.place(node, lambda cells: positions.top(cells, 1))
        return Table((node.fill,))

    def constant_sop(self, node: ConstantSOp) -> Table:
        self.unhashable_value(node, node.value)
        table = Table.of(node.value)
        self.place(node, lambda cells: positions.top(cells, len(table)))
        return table

    def map(self, node: Map) -> Table:
        table = self.tabled(node, lambda errors: map_table(
            node.f, self.typed(node.inner), lambda: self.column(node.inner), errors))
        self.place(node, lambda cells: positions.map_sets(
            cells, self.places[node.inner], self.luts[node], len(table)))
        return table

    def sequence_map(self, node: SequenceMap | LinearSequenceMap) -> Table:
        """The table of every pair of input values, kept to the values some cell can
        take (`restricted`)."""
        return self.restricted(node, self.all_pairs(node))

    def restricted(self, node: SequenceMap | LinearSequenceMap, table: Table) -> Table:
        """``node``'s table kept to the values its cell sets reach (pairs that meet at a
        cell), for a numerical LinearSequenceMap (an affine map in a model); the lookup
        array gives `RAISED_CODE` (a pair no input reaches, where any value will do) for
        pairs whose value is dropped. Other SequenceMaps keep every pair's value: the
        compiler's separable MLPs read ``f`` on every pair of the value sets."""
        if self.cells is None:
            return table
        cells = positions.sequence_map_sets(
            self.cells, self.places[node.fst], self.places[node.snd], node.fst is node.snd,
            self.luts[node], len(table))
        keep = np.flatnonzero(cells.union())
        if len(keep) < len(table) and isinstance(node, LinearSequenceMap) \
                and get_encoding(node) is Encoding.NUMERICAL:
            remap = np.full(len(table) + 1, RAISED_CODE, dtype=np.int32)  # [-1]: RAISED
            remap[keep] = np.arange(len(keep), dtype=np.int32)
            self.luts[node] = self.twins_agree(node, self.luts[node], remap[self.luts[node]])
            table = Table(tuple(table.values[k] for k in keep.tolist()))
            cells = cells.restricted(keep)
            for derived in (self.sets, self.collisions):  # recomputed from the table
                derived.pop(node, None)
            for kind in ("numbers", "merged"):
                self.cache.pop((kind, node), None)
        self.places[node] = cells
        return table

    def twins_agree(self, node: SequenceMap | LinearSequenceMap, before: np.ndarray,
                    after: np.ndarray) -> np.ndarray:
        """``after`` (the restricted lookup array) where a dropped pair (no cell holds it:
        any value will do) takes the entry of a twin pair (its input ``1`` for ``1.0``,
        say) that was kept, so that the twins, one value in a compiled model, still
        give one result (`rasplang.validation`'s type rule reads the arrays)."""
        dropped = (before >= 0) & (after == RAISED_CODE)
        if not dropped.any() or node.fst is node.snd:
            return after
        for axis, child in ((0, node.fst), (1, node.snd)):
            for group in self.collisions.get(child, ()):
                codes = [self.tables[child].code(v) for v in group]
                lines = np.moveaxis(after, axis, 0)  # a view: rows are the twins' lines
                gone = np.moveaxis(dropped, axis, 0)
                for a in codes:
                    for b in codes:
                        fill = gone[a] & (lines[b] >= 0)
                        lines[a][fill] = lines[b][fill]
                        gone[a] &= ~fill
        return after

    def all_pairs(self, node: SequenceMap | LinearSequenceMap) -> Table:
        xs, ys = self.typed(node.fst), self.typed(node.snd)
        if isinstance(node, LinearSequenceMap) and (fast := self.linear(node)) is not None:
            return fast
        if len(xs) * len(ys) > MAX_TABLE_PAIRS:
            raise ValueSetTooLarge(
                f"{type(node).__name__} {self.labels[node]!r}: f would be called on "
                f"{len(xs)} x {len(ys)} input pairs (limit MAX_TABLE_PAIRS="
                f"{MAX_TABLE_PAIRS})"
            )
        try:  # stopped at the first value past the limit, before f sees the other pairs
            return self.tabled(node, lambda errors: pairs_table(
                node.f, xs, ys, errors, diagonal=node.fst is node.snd,
                limit=MAX_VALUE_SET_SIZE))
        except TooManyValues:
            self.check_size(node, MAX_VALUE_SET_SIZE + 1)
            raise

    def linear(self, node: LinearSequenceMap) -> Table | None:
        """A numerical LinearSequenceMap of plain numbers (and None): every
        ``a * x + b * y`` at once with numpy (`rasplang.tables.linear_table`); the set can
        be large (two independent means). None where the general path applies."""
        if get_encoding(node) is not Encoding.NUMERICAL:
            return None
        (xi, x_col), (yi, y_col) = self.numbers_but_none(node.fst), self.numbers_but_none(node.snd)
        if x_col is None or y_col is None:
            return None
        if len(x_col) * len(y_col) > MAX_LINEAR_PAIRS:
            raise ValueSetTooLarge(
                f"LinearSequenceMap {self.labels[node]!r}: {len(x_col)} x {len(y_col)} input "
                f"values exceed MAX_LINEAR_PAIRS={MAX_LINEAR_PAIRS}"
            )
        xs, ys = self.typed(node.fst), self.typed(node.snd)
        fast = linear_table(node.fst_fac, node.snd_fac, [xs[i] for i in xi],
                            [ys[j] for j in yi], x_col, y_col)
        if fast is None:
            return None
        if len(xi) == len(xs) and len(yi) == len(ys):
            self.luts[node] = fast.codes
            self.sets[node] = fast.merged
            self.cache["numbers", node] = fast.column
            self.cache["merged", node] = fast.merged_index
            table = fast.table
        else:  # a None input gives None (f is not called): one more value, sorted first
            table = Table((*fast.table.values, None))
            codes = np.full((len(xs), len(ys)), len(table) - 1, dtype=np.int32)
            codes[np.ix_(xi, yi)] = fast.codes
            self.luts[node] = codes
            self.sets[node] = (None, *fast.merged)
            self.cache["merged", node] = np.append(fast.merged_index + 1, 0)
        if fast.collisions:
            self.collisions[node] = fast.collisions
        return table

    def numbers_but_none(self, node: SOp) -> tuple[list[int], np.ndarray | None]:
        """The codes of ``node``'s values that are not None, and those values'
        `number_column` (None when one is not a plain number)."""
        values = self.typed(node)
        column = self.column(node)
        if column is not None or None not in values:
            return list(range(len(values))), column
        codes = [i for i, v in enumerate(values) if v is not None]
        return codes, number_column([values[i] for i in codes])

    def aggregate(self, node: Aggregate) -> Table:
        """The input's values (first, so that ``luts[node]`` is the identity), the
        default, and what the cells add: an exact value per cell over an exact selector
        and input (`rasplang.positions.aggregate_exact`), else the means of each width
        the selection bounds allow (numerical), and the cells' sets by width. The default
        is left out where every cell selects at least one key (`default_values`)."""
        sop = self.typed(node.sop)
        numerical = get_encoding(node) is Encoding.NUMERICAL
        if numerical:
            self.numbers_only(node)
        self.luts[node] = np.arange(len(sop), dtype=np.int32)  # the sop's values come first
        if self.cells is None:  # every width at every cell
            shape = (2, 1, self.max_seq_len)
            selection = Selection(np.ones(shape, bool), np.zeros(shape, bool))
            exact = None
        else:
            selection = self.places[node.selector]
            exact = positions.aggregate_exact(self.cells, selection, self.places[node.sop],
                                              sop, node.default)
        if exact is not None:
            values, where, spread = exact  # the default among them where a cell selects none
            table = Table.of([*sop, *self.default_values(node, None, numerical), *values])
            self.check_size(node, len(table))
            codes = np.append(table.codes_of(values), RAISED_CODE)[where]
            self.places[node] = positions.from_codes(codes, len(table))
            if spread and not numerical:
                self.spread.append(node)
            return table
        defaults = self.default_values(node, selection, numerical)
        widths = set()
        live = selection.live()
        for low, high in set(zip(*(w[live].tolist() for w in selection.widths()))):
            widths.update(range(max(2, low), high + 1))
        sop_codes = np.arange(len(sop))
        if numerical:
            means = self.numerical_means(node, widths)
            table = Table.of([*sop, *defaults, *(m for w in sorted(means)
                                                 for m in means[w])])
            # several Nones give None (None and numbers together raise)
            nones = [None] * (None in self.sets[node.sop])
            layers = {w: table.codes_of([*means.get(w, ()), *nones]) for w in widths}
        else:
            # several selected numbers give their mean, a float even of equal ints
            several = len(self.sets[node.sop]) > 1 or any(
                isinstance(v, numbers.Real) and not isinstance(v, float)
                for v in self.sets[node.sop])
            table = Table.of([*sop, *defaults])
            if several and widths and not _selects_at_most_one(node.selector):
                self.spread.append(node)  # a mean may fall outside the table
                self.place(node, lambda cells: positions.top(cells, len(table)))
                return table
            layers = {w: sop_codes for w in widths}  # several equal values: that value
        default_code = table.code(node.default)  # None only where no cell reads it
        self.place(node, lambda cells: positions.width_rows(
            cells, selection, table, RAISED_CODE if default_code is None else default_code,
            sop_codes, layers))
        return table

    def default_values(self, node: Aggregate, selection: Selection | None, numerical: bool
                       ) -> list[Value]:
        """``[node.default]``, or ``[]`` where the cells show that every query selects at
        least one key (in both modes, on every input: ``must`` is never empty), or
        (``selection`` None: an exact Aggregate, whose cell values hold the default where
        a cell selects none) always. A categorical Aggregate keeps a default other than
        None: the compiled head writes it at BOS, as a direction of its output."""
        if self.cells is None or (not numerical and node.default is not None):
            return [node.default]
        if selection is None:
            return []
        least, _ = selection.widths()
        return [node.default] if bool((least[selection.live()] == 0).any()) else []

    def selector(self, node: Selector) -> None:
        """No values; a selector's cell bounds (`rasplang.positions`)."""
        cells = self.cells
        if cells is None:
            return None
        if isinstance(node, Select):
            table = self.predicate_table(node)
            self.places[node] = positions.select_bounds(
                cells, self.places[node.keys], self.places[node.queries],
                node.keys is node.queries, table,
                self.own_codes(node) if table is None else None)
        elif isinstance(node, ConstantSelector):
            self.places[node] = positions.constant_bounds(cells, node.value)
        elif isinstance(node, SelectorAnd):
            self.places[node] = positions.and_bounds(cells, self.places[node.fst],
                                                     self.places[node.snd])
        elif isinstance(node, SelectorOr):
            self.places[node] = positions.or_bounds(cells, self.places[node.fst],
                                                    self.places[node.snd])
        else:
            self.places[node] = positions.not_bounds(cells, self.places[node.inner])
        return None

    def predicate_table(self, node: Select) -> np.ndarray | None:
        """`Analysis.select_table`, built now (and kept for the analysis) when it is
        cheap: a `Comparison` over numbers up to `MAX_TABLE_PAIRS` entries, any predicate
        up to `MAX_SELECT_CALLS` calls; else None (the cells do not know it)."""
        keys, queries = self.typed(node.keys), self.typed(node.queries)
        compares = isinstance(node.predicate, Comparison)
        k_col = self.column(node.keys) if compares else None
        q_col = self.column(node.queries) if compares else None
        fast = compares and k_col is not None and q_col is not None
        if len(keys) * len(queries) > (MAX_TABLE_PAIRS if fast else MAX_SELECT_CALLS):
            return None
        table = predicate_table(node.predicate, keys, queries, k_col, q_col)
        self.cache["select", node] = table
        return table

    def own_codes(self, node: Select) -> np.ndarray | None:
        """A `Comparison` of an SOp with itself whose table is not built: its codes on
        each value with itself (a query compared with its own key), else None."""
        if not (node.keys is node.queries and isinstance(node.predicate, Comparison)):
            return None
        values = self.typed(node.keys)
        return np.array([predicate_code(node.predicate, v, v) for v in values],
                        dtype=np.int8).reshape(-1)

    def numbers_only(self, node: Aggregate) -> None:
        """Refuse a numerical Aggregate of non-numbers."""
        others = [v for v in self.typed(node.sop)
                  if v is not None and not isinstance(v, numbers.Real)]
        if others:
            raise AnalysisError(
                f"Aggregate {self.labels[node]!r} is numerical but its input can take "
                f"non-numeric values {others[:5]}"
            )

    def numerical_means(self, node: Aggregate, widths: Iterable[int]) -> dict[int, list[Value]]:
        """The means of ``w`` input values (multisets), for each ``w`` of ``widths``
        (from 2: one selected value is returned as it is, with its type).

        A mean of several is a float, the exact mean rounded once, as `evaluate` computes
        it. Sums are exact: the inputs are scaled to integers by their common denominator.
        """
        typed = self.typed(node.sop)
        widths = sorted(w for w in set(widths) if w >= 2)
        out: dict[int, list[Value]] = {}
        # a mean with inf or NaN raises in `evaluate` (no exact value): alone they stay
        finite = [v for v in typed if isinstance(v, numbers.Real)
                  and (not isinstance(v, float) or math.isfinite(v))]
        if not finite or not widths:
            return out
        exact = {Fraction(v) for v in finite}
        denominator = math.lcm(*(v.denominator for v in exact))
        scaled = sorted(int(v * denominator) for v in exact)
        sums: set[int] = set(scaled)
        wanted = set(widths)
        seen: set[float] = set()  # every mean so far, for the size limit
        steps = 0
        for width in range(2, widths[-1] + 1):
            grown: set[int] = set()
            for s in sums:  # check as we go: an explosion stops early
                grown.update(s + v for v in scaled)
                steps += len(scaled)
                if steps > MAX_MEAN_STEPS:
                    raise ValueSetTooLarge(
                        f"Aggregate {self.labels[node]!r}: enumerating the means of up to "
                        f"{widths[-1]} of its {len(scaled)} input values takes more "
                        f"than MAX_MEAN_STEPS={MAX_MEAN_STEPS} steps (at width {width}, "
                        f"{len(grown)} sums so far)")
                self.check_size(node, len(grown) + len(seen))
            sums = grown
            if width not in wanted:
                continue
            # as `evaluate`'s mean rounds: int division rounds the exact quotient once
            means: set[float] = set()
            for s in sums:
                with contextlib.suppress(OverflowError):  # past floats: evaluate raises
                    means.add(s / (denominator * width))
            out[width] = sorted(means)
            seen |= means
            self.check_size(node, len(seen) + len(typed) + 1)
        return out


#: The value-table rule of each node type (selectors have none).
RULES: dict[type, Callable[[Inference, Any], Table | None]] = {
    TokensType: Inference.tokens,
    IndicesType: Inference.indices,
    LengthType: Inference.length,
    Map: Inference.map,
    SequenceMap: Inference.sequence_map,
    LinearSequenceMap: Inference.sequence_map,
    Full: Inference.full,
    ConstantSOp: Inference.constant_sop,
    Aggregate: Inference.aggregate,
    SelectorWidth: Inference.selector_width,
    Select: Inference.selector,
    ConstantSelector: Inference.selector,
    SelectorAnd: Inference.selector,
    SelectorOr: Inference.selector,
    SelectorNot: Inference.selector,
}


def _selects_at_most_one(selector: Selector) -> bool:
    """A cheap sufficient test that a selector selects at most one key per query.

    True for ``Select(k, q, EQ)`` whose keys are ``indices`` (all different), and for a
    SelectorAnd with such a side.
    """
    if isinstance(selector, Select):
        return selector.predicate is Comparison.EQ and isinstance(selector.keys, IndicesType)
    if isinstance(selector, SelectorAnd):
        return _selects_at_most_one(selector.fst) or _selects_at_most_one(selector.snd)
    return False


def selects_itself(selector: Selector, values: Callable[[SOp], tuple[Value, ...]]) -> bool:
    """Without cells (past `MAX_CELL_LENGTH`): whether every query selects its own
    position, so a SelectorWidth of ``selector`` is at least 1: a Select of an SOp
    against itself by a Comparison that holds on each of its values (or raises there,
    where `evaluate` raises), or an `&` of such, or an `|` with one."""
    if isinstance(selector, SelectorAnd):
        return selects_itself(selector.fst, values) and selects_itself(selector.snd, values)
    if isinstance(selector, SelectorOr):
        return selects_itself(selector.fst, values) or selects_itself(selector.snd, values)
    if not (isinstance(selector, Select) and selector.keys is selector.queries
            and isinstance(selector.predicate, Comparison)):
        return False
    for value in values(selector.keys):
        try:
            if not selector.predicate(value, value):
                return False
        except Exception:  # evaluate raises on this value: nothing is counted
            continue
    return True
