"""Per-cell value sets: what each SOp can take at each (length, index) cell.

`rasplang.analyze` runs these rules beside its value tables (`rasplang.inference`), in
topological order. A *cell* is an input length ``n`` (1..max_seq_len) and a position
``i < n``; a *mode* is non-causal (0) or causal (1). For each SOp, `CellSets` holds, at
each (mode, cell), the set of codes of its typed value table that it can take there, on
any input over the vocabulary; for each selector, `Selection` holds at each (mode,
cell) the keys it may select (``may``) and the keys it selects on every input
(``must``). The analysis is shared by causal and non-causal runs, so a node's table is
the union over both modes and every cell.

What is exact (one value per cell, ``may == must``):

- ``indices``, ``length``, ``Full``; Maps and SequenceMaps of exact SOps;
- a Select of two exact SOps (its predicate table read at each pair of cells), and
  ``&``, ``|``, ``~`` of exact selectors (the causal mask applied as `evaluate` does);
- an Aggregate of an exact SOp over an exact selector (its value is computed per cell
  with `rasplang.evaluator.aggregate_row`, the evaluator's own rule, so means round as
  `evaluate` rounds), a SelectorWidth of an exact selector.

Everything else is a sound over-approximation, refined by the cells:

- ``tokens`` can be any token at any cell; a Map or SequenceMap applies its lookup
  array to the sets of its inputs at the cell (pairs of two SOps are taken as
  independent, except an SOp with itself, which pairs each value with itself);
- a Select bounds each entry by the predicate over the pairs of values its key and
  query cells can hold (``must``: true on all of them, ``may``: on one), and a query
  whose keys and queries are one SOp sees its own value on the diagonal; where the
  predicate raises on every such pair (``must`` but not ``may``), `evaluate` rejects
  every input there: the (mode, cell) is dead (`Selection.dead`, kept through ``&``,
  ``|`` and ``~``), and a SelectorWidth or Aggregate of the selector is unreached there;
- a SelectorWidth lies in ``[|must|, |may|]``; an Aggregate of a non-exact SOp is the
  default where ``must`` can be empty, one of its input's values where one key can be
  selected, and a numerical Aggregate a mean of exactly ``w`` values for each ``w`` in
  that range (the "means from the exact selection width": with an exact selector a
  mean of ``w`` values, not of any number of values).

Cells no input reaches (every input of that length raises in `evaluate`, where a
function raises on every value there) have id -1. Rows of sets are stored once per
distinct set (`CellSets.rows`), so a node whose set is the same at many cells costs one
row. One node's rows times values is bounded by `MAX_CELL_ENTRIES`, and the work of one
Select's or SequenceMap's cell rule by `MAX_CELL_WORK`; past them the node falls back to
its whole table at every cell (what the analysis knew without cells).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import attrs
import numpy as np

from rasplang.evaluator import aggregate_row
from rasplang.nodes import Value
from rasplang.tables import PRED_FALSE, PRED_TRUE, RAISED_CODE
from rasplang.values import Table, fast_key

#: Largest rows x values one SOp's cell sets may hold (bools); past it the node's sets
#: are its whole table at every cell.
MAX_CELL_ENTRIES = 2**24
#: Largest work (pairs of values looked up, or multiply-adds) one Select's or
#: SequenceMap's cell rule may spend; past it the node falls back as above.
MAX_CELL_WORK = 2**26
#: Modes: a node's ids have one row when both modes agree, else these two.
NON_CAUSAL, CAUSAL = 0, 1


@attrs.frozen(eq=False)
class Cells:
    """The cells of lengths 1..``max_seq_len``: cell ``c`` is ``(n[c], i[c])``, ordered by
    length then position (``c = n (n - 1) / 2 + i``). ``key_cell [C, N]``: the cell of
    ``(n[c], k)`` (0 where ``k >= n[c]``), ``valid [C, N]``: ``k < n[c]``, ``before [C,
    N]``: ``k <= i[c]`` (the causal mask)."""

    max_seq_len: int
    n: np.ndarray
    i: np.ndarray
    key_cell: np.ndarray
    valid: np.ndarray
    before: np.ndarray

    @classmethod
    def of(cls, max_seq_len: int) -> Cells:
        lengths = np.arange(1, max_seq_len + 1)
        n = np.repeat(lengths, lengths)  # [C]
        offset = n * (n - 1) // 2  # [C]: the first cell of each cell's length
        i = np.arange(len(n)) - offset
        k = np.arange(max_seq_len)  # [N]
        valid = k[None, :] < n[:, None]  # [C, N]
        key_cell = np.where(valid, offset[:, None] + k[None, :], 0)
        return cls(max_seq_len, n, i, key_cell, valid, k[None, :] <= i[:, None])

    def __len__(self) -> int:
        return len(self.n)

    def cell(self, n: int, i: int) -> int:
        """The cell of length ``n`` and position ``i``."""
        return n * (n - 1) // 2 + i


@attrs.frozen(eq=False)
class CellSets:
    """One SOp's sets: ``ids [M, C]`` int32, the row of ``rows [R, T]`` (bool over the
    node's table codes) at each (mode, cell), -1 where no input reaches it; ``M`` is 1
    when both modes agree (broadcast), else 2."""

    ids: np.ndarray
    rows: np.ndarray

    @property
    def width(self) -> int:
        """The number of values of the node's table."""
        return self.rows.shape[1]

    def union(self) -> np.ndarray:
        """``[T]`` bool: the codes some cell can take."""
        used = np.unique(self.ids[self.ids >= 0])
        return self.rows[used].any(axis=0) if len(used) else np.zeros(self.width, bool)

    def codes(self) -> np.ndarray | None:
        """``[M, C]`` int32: the one code of each cell (-1 where unreached), when every
        row holds one value (the node is exact); else None."""
        if not self.width:  # no value: no cell is reached
            return np.full(self.ids.shape, RAISED_CODE, np.int32)
        counts = self.rows.sum(axis=1)
        if not (counts[np.unique(self.ids[self.ids >= 0])] == 1).all():
            return None
        code = self.rows.argmax(axis=1).astype(np.int32)
        return np.where(self.ids >= 0, code[np.maximum(self.ids, 0)], RAISED_CODE)

    def at(self, mode: int, cell: int) -> np.ndarray:
        """The codes the node can take at (``mode``, ``cell``)."""
        row = self.ids[min(mode, len(self.ids) - 1), cell]
        return np.zeros(0, np.int64) if row < 0 else np.flatnonzero(self.rows[row])

    def restricted(self, keep: np.ndarray) -> CellSets:
        """These sets on the table of the codes ``keep`` (the values some cell takes)."""
        return CellSets(self.ids, self.rows[:, keep])


def top(cells: Cells, width: int) -> CellSets:
    """Every code at every cell: what is known without cells."""
    return CellSets(np.zeros((1, len(cells)), np.int32), np.ones((1, width), bool))


def from_rows(ids: np.ndarray, rows: np.ndarray) -> CellSets:
    """Sets with duplicate rows merged, empty rows made unreached, modes merged when
    equal (at least one row, so that id 0 can always be read)."""
    if not len(rows):
        rows = np.zeros((1, rows.shape[1]), bool)
        ids = np.full_like(ids, RAISED_CODE)
    empty = ~rows.any(axis=1)
    if len(rows) > 1:
        packed = np.packbits(rows, axis=1)  # rows as bytes, to find the equal ones
        first: dict[bytes, int] = {}
        inverse = np.array([first.setdefault(r.tobytes(), len(first)) for r in packed],
                           dtype=np.int32).reshape(-1)
        keep = np.zeros(len(first), np.int64)
        keep[inverse] = np.arange(len(rows))
        rows = rows[keep]
        if empty.any():
            inverse = np.where(empty, RAISED_CODE, inverse)
        ids = np.where(ids >= 0, inverse[np.maximum(ids, 0)], RAISED_CODE).astype(np.int32)
    elif empty.any():
        ids = np.full_like(ids, RAISED_CODE)
    if len(ids) == 2 and (ids[0] == ids[1]).all():
        ids = ids[:1]
    return CellSets(np.ascontiguousarray(ids, dtype=np.int32), rows)


def from_codes(codes: np.ndarray, width: int) -> CellSets:
    """Exact sets from one code per (mode, cell) (-1: unreached)."""
    codes = np.asarray(codes, dtype=np.int64)
    used, inverse = np.unique(codes, return_inverse=True)
    inverse = inverse.reshape(codes.shape)
    rows = np.zeros((len(used), width), bool)
    reached = used >= 0
    rows[np.flatnonzero(reached), used[reached]] = True
    ids = np.where(codes >= 0, inverse, RAISED_CODE)
    return from_rows(ids, rows)


def _bounded(cells: Cells, sets: CellSets) -> CellSets:
    if sets.rows.size > MAX_CELL_ENTRIES:
        return top(cells, sets.width)
    return sets


def _pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct pairs of ids ``(a, b)`` that occur where both are reached (broadcast),
    and each entry's pair index (-1 where either is unreached)."""
    a, b = np.broadcast_arrays(a, b)
    reached = (a >= 0) & (b >= 0)
    key = np.where(reached, a.astype(np.int64) * (int(b.max(initial=0)) + 1) + b, -1)
    used, inverse = np.unique(key, return_inverse=True)
    inverse = inverse.reshape(key.shape)
    base = 1 if used[0] < 0 else 0
    used = used[base:]
    span = int(b.max(initial=0)) + 1
    return used // span, used % span, np.where(reached, inverse - base, -1)


# ---------------------------------------------------------------------- SOps


def map_sets(cells: Cells, inner: CellSets, lut: np.ndarray, width: int) -> CellSets:
    """A Map: each cell's input codes through ``lut`` (`RAISED_CODE` dropped: `evaluate`
    raises there)."""
    r, v = np.nonzero(inner.rows)
    out_codes = lut[v]
    keep = out_codes >= 0
    rows = np.zeros((len(inner.rows), width), bool)
    rows[r[keep], out_codes[keep]] = True
    return _bounded(cells, from_rows(inner.ids, rows))


def sequence_map_sets(cells: Cells, fst: CellSets, snd: CellSets, same: bool,
                      lut: np.ndarray, width: int) -> CellSets:
    """A SequenceMap: the codes of ``lut`` at each cell's pairs of input values (each
    value with itself when both inputs are one SOp)."""
    if same:
        diagonal = lut[np.arange(len(lut)), np.arange(len(lut))] if lut.size \
            else np.zeros(len(lut), np.int32)
        return map_sets(cells, fst, diagonal, width)
    if len(fst.rows) == 1 and len(snd.rows) == 1 and fst.rows.all() and snd.rows.all():
        return top(cells, width)  # every pair at every cell: the whole table
    cx, cy = fst.codes(), snd.codes()
    if cx is not None and cy is not None and lut.size:  # exact inputs: one lookup a cell
        cx, cy = np.broadcast_arrays(cx, cy)
        reached = (cx >= 0) & (cy >= 0)
        codes = np.where(reached, lut[np.maximum(cx, 0), np.maximum(cy, 0)], RAISED_CODE)
        return from_codes(codes, width)
    ra, rb, index = _pairs(fst.ids, snd.ids)
    sizes = fst.rows.sum(axis=1)[ra] * snd.rows.sum(axis=1)[rb]
    if int(sizes.sum()) > MAX_CELL_WORK or len(ra) * width > MAX_CELL_ENTRIES:
        return top(cells, width)
    rows = np.zeros((len(ra), width), bool)
    for p, x, y in _expanded(fst.rows, snd.rows, ra, rb, sizes):
        codes = lut[x, y]
        keep = codes >= 0
        rows[p[keep], codes[keep]] = True
    return _bounded(cells, from_rows(index, rows))


def _expanded(rows_a: np.ndarray, rows_b: np.ndarray, ra: np.ndarray, rb: np.ndarray,
              sizes: np.ndarray, chunk: int = 2**20):
    """For pairs ``p`` of rows ``(ra[p], rb[p])``, every (pair, value of row a, value of
    row b), as three arrays, in chunks of about ``chunk`` entries."""
    a_rows, a_values = np.nonzero(rows_a)  # CSR of each row's values
    b_rows, b_values = np.nonzero(rows_b)
    a_ptr = np.searchsorted(a_rows, np.arange(len(rows_a) + 1))
    b_ptr = np.searchsorted(b_rows, np.arange(len(rows_b) + 1))
    nb = np.diff(b_ptr)[rb]
    ends = np.cumsum(sizes)
    start = 0
    while start < len(ra):
        offset = int(ends[start - 1]) if start else 0  # entries before this chunk
        stop = max(int(np.searchsorted(ends, offset + chunk, "right")), start + 1)
        block = np.arange(start, stop)
        p = np.repeat(block, sizes[block])
        local = np.arange(offset, offset + len(p)) - np.repeat(ends[block] - sizes[block],
                                                               sizes[block])
        i, j = np.divmod(local, nb[p])
        yield p, a_values[a_ptr[ra[p]] + i], b_values[b_ptr[rb[p]] + j]
        start = stop


def aggregate_exact(cells: Cells, selection: Selection, sop: CellSets,
                    values: Sequence[Value], default: Value
                    ) -> tuple[list[Value], np.ndarray, bool] | None:
    """An Aggregate of an exact SOp over an exact selector: its value at each (mode,
    cell), computed with `aggregate_row` (the evaluator's rule) on the selected keys'
    values. Returns the values, ``[2, C]`` indices into them (-1 where `evaluate`
    raises or a key is unreached) and whether some cell averages several values that
    are not one typed value (a categorical Aggregate is then *spread*); None when the
    SOp or the selector is not exact."""
    codes = sop.codes()
    if codes is None or not selection.exact:
        return None
    key_codes = np.broadcast_to(codes[:, cells.key_cell], selection.may.shape)  # [2, C, N]
    chosen = np.where(selection.may, key_codes, -2)  # -2: not selected
    unreached = (chosen == RAISED_CODE).any(axis=2) | ~selection.live()
    keys = [fast_key(v) for v in values]
    out: list[Value] = []
    index: dict = {}
    memo: dict[bytes, int] = {}
    spread = False
    result = np.full(chosen.shape[:2], -1, np.int32)
    for m, c in zip(*np.nonzero(~unreached)):
        row = chosen[m, c]
        picked = row[row >= 0]
        key = picked.tobytes()
        found = memo.get(key)
        if found is None:
            selected = [values[k] for k in picked.tolist()]
            try:
                value = aggregate_row(selected, default)
            except (ValueError, ArithmeticError):  # evaluate raises on every such input
                found = -1
            else:
                vkey = fast_key(value)
                found = index.get(vkey)
                if found is None:
                    found = index[vkey] = len(out)
                    out.append(value)
            if len(picked) > 1 and len({keys[k] for k in picked.tolist()}) > 1:
                spread = True
            elif len(picked) > 1 and isinstance(selected[0], numbers.Real) \
                    and not isinstance(selected[0], float):
                spread = True  # equal ints (or bools) average to a float
            memo[key] = found
        result[m, c] = found
    return out, result, spread


def width_rows(cells: Cells, selection: Selection, table: Table, default_code: int,
               sop_codes: np.ndarray, layers: dict[int, np.ndarray]) -> CellSets:
    """An Aggregate of a non-exact SOp: at each cell, the default where no key may be
    selected, the SOp's values (``sop_codes``) where one may, and for each width ``w``
    from 2 in ``[|must|, |may|]`` the codes ``layers[w]`` (the means of ``w`` values; a
    missing layer stands for every code of the table)."""
    lo, hi = selection.widths()
    pairs, index = np.unique(lo.astype(np.int64) * (cells.max_seq_len + 1) + hi,
                             return_inverse=True)
    index = np.where(selection.live(), index.reshape(lo.shape), RAISED_CODE)
    rows = np.zeros((len(pairs), len(table)), bool)
    for p, pair in enumerate(pairs.tolist()):
        low, high = divmod(pair, cells.max_seq_len + 1)
        if low == 0:
            rows[p, default_code] = True
        if low <= 1 <= high:
            rows[p, sop_codes] = True
        for w in range(max(2, low), high + 1):
            if w not in layers:
                rows[p] = True
                break
            rows[p, layers[w]] = True
    return _bounded(cells, from_rows(index.astype(np.int32), rows))


def selector_width_sets(cells: Cells, selection: Selection) -> tuple[Table, CellSets]:
    """A SelectorWidth: the counts ``[|must|, |may|]`` at each cell, and its table, the
    counts from the least to the largest (contiguous: the interpreter's codes are the
    count minus the least)."""
    lo, hi = selection.widths()
    live = selection.live()
    if not live.any():  # no input is accepted anywhere: the counts the bounds give
        live = np.ones_like(live)
    low, high = int(lo[live].min()), int(hi[live].max())
    table = Table(tuple(range(low, high + 1)))
    pairs, index = np.unique(lo.astype(np.int64) * (cells.max_seq_len + 1) + hi,
                             return_inverse=True)
    index = np.where(live, index.reshape(lo.shape), RAISED_CODE)
    span = np.arange(low, high + 1)
    rows = np.array([(span >= p // (cells.max_seq_len + 1)) & (span <= p % (cells.max_seq_len + 1))
                     for p in pairs.tolist()], dtype=bool).reshape(len(pairs), len(span))
    return table, _bounded(cells, from_rows(index.astype(np.int32), rows))


# ------------------------------------------------------------------ selectors


@attrs.frozen(eq=False)
class Selection:
    """A selector's bounds: ``may [2, C, N]`` (keys some input selects at the (mode,
    cell)) and ``must [2, C, N]`` (keys every input that `evaluate` does not reject there
    selects), ``must <= may``; False where ``k >= n``. ``dead [2, C]`` (None: nowhere):
    the (mode, cell)s where `evaluate` rejects every input (a Select's predicate raises
    on every pair of values some key and that query can hold); their bounds say
    nothing."""

    may: np.ndarray
    must: np.ndarray
    dead: np.ndarray | None = None

    def live(self) -> np.ndarray:
        """``[2, C]`` bool: the (mode, cell)s some input reaches (not `dead`)."""
        if self.dead is None:
            return np.ones(self.may.shape[:2], bool)
        return ~self.dead

    @property
    def exact(self) -> bool:
        """Whether the pattern is the same on every input (of each length)."""
        return bool((self.may == self.must).all())

    def widths(self) -> tuple[np.ndarray, np.ndarray]:
        """``[2, C]`` each: the least and the largest number of selected keys."""
        return self.must.sum(axis=2), self.may.sum(axis=2)


def _masked(cells: Cells, may: np.ndarray, must: np.ndarray, mask: bool,
            dead: np.ndarray | None = None) -> Selection:
    """Bounds on valid keys, masked to keys at or before the query in the causal mode
    (when ``mask``: a Select, a constant selector, a ``~``). A (mode, cell) where a key
    must be selected but may not (every pair of values raises: `evaluate` evaluates the
    predicate on every key, causal or not) is dead, as are those of ``dead``."""
    contradiction = (must & ~may & cells.valid).any(axis=2)  # [2, C] or broadcastable
    if contradiction.any() or dead is not None:
        dead = np.broadcast_to(contradiction, (2, len(cells))) | (
            False if dead is None else dead)
        dead = dead if dead.any() else None
    may, must = may & cells.valid, must & may & cells.valid
    if mask:
        may, must = may.copy(), must.copy()
        may[CAUSAL] &= cells.before
        must[CAUSAL] &= cells.before
    return Selection(may, must, dead)


def _dead(*selections: Selection) -> np.ndarray | None:
    """The union of the selections' dead cells (None: none)."""
    found = [s.dead for s in selections if s.dead is not None]
    return np.logical_or.reduce(found) if found else None


def select_bounds(cells: Cells, keys: CellSets, queries: CellSets, same: bool,
                  predicate: np.ndarray | None, diagonal: np.ndarray | None = None
                  ) -> Selection:
    """A Select from its predicate table ``[len(keys table), len(queries table)]`` (None:
    unknown, each entry may or may not hold). When keys and queries are one SOp, a query
    sees its own value at its own key: the table's diagonal, or ``diagonal`` (the
    predicate's codes on each value with itself) when there is no table."""
    shape = (2, len(cells), cells.max_seq_len)
    if predicate is None:
        may, must = np.ones(shape, bool), np.zeros(shape, bool)
    else:
        may, must = _pair_bounds(cells, keys, queries, predicate)
        if same:
            diagonal = predicate[np.arange(len(predicate)), np.arange(len(predicate))]
    if same and diagonal is not None:  # the query's own key holds its own value
        rows = keys.rows.astype(np.float32)
        own_may = rows @ (diagonal == PRED_TRUE).astype(np.float32) > 0  # [R]
        own_not_must = rows @ (diagonal == PRED_FALSE).astype(np.float32) > 0
        own = keys.ids  # [M, C]
        may, must = (np.broadcast_to(x, shape).copy() for x in (may, must))
        c, o = np.arange(len(cells)), np.maximum(own, 0)
        may[:, c, cells.i] = (own >= 0) & own_may[o]
        must[:, c, cells.i] = (own >= 0) & ~own_not_must[o]
    return _masked(cells, np.broadcast_to(may, shape), np.broadcast_to(must, shape), True)


def _pair_bounds(cells: Cells, keys: CellSets, queries: CellSets, predicate: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``may``, ``must`` ``[M, C, N]`` of each (key cell, query cell) from the pairs of
    values they can hold: may where one pair is true, must where none is false (a pair
    where the predicate raises rejects the input: neither)."""
    true = (predicate == PRED_TRUE).astype(np.float32)
    false = (predicate == PRED_FALSE).astype(np.float32)
    ks, qs = keys, queries
    work = len(ks.rows) * predicate.size + len(ks.rows) * len(qs.rows) * predicate.shape[1]
    if work > MAX_CELL_WORK or len(ks.rows) * len(qs.rows) > MAX_CELL_ENTRIES:
        ks = CellSets(np.where(ks.ids >= 0, 0, -1), ks.union()[None, :])
        qs = CellSets(np.where(qs.ids >= 0, 0, -1), qs.union()[None, :])
    a, b = ks.rows.astype(np.float32), qs.rows.astype(np.float32)
    # [Rk + 1, Rq + 1]: row and column 0 stand for an unreached cell (id -1): neither
    may_rows = np.zeros((len(ks.rows) + 1, len(qs.rows) + 1), bool)
    must_rows = np.zeros_like(may_rows)
    may_rows[1:, 1:] = (a @ true @ b.T) > 0  # sums of 0/1 products, > 0 exactly
    must_rows[1:, 1:] = (a @ false @ b.T) == 0
    span = len(qs.rows) + 1
    flat = (ks.ids[:, cells.key_cell] + 1) * span + (qs.ids[:, :, None] + 1)  # [M, C, N]
    return may_rows.reshape(-1)[flat], must_rows.reshape(-1)[flat]


def constant_bounds(cells: Cells, value: Sequence[Sequence[bool]]) -> Selection:
    """A ConstantSelector: its matrix at the length it has, unknown at the others."""
    shape = (2, len(cells), cells.max_seq_len)
    may, must = np.ones(shape, bool), np.zeros(shape, bool)
    size = len(value)
    if 1 <= size <= cells.max_seq_len and all(len(r) == size for r in value):
        matrix = np.array(value, dtype=bool).reshape(size, size)
        rows = np.flatnonzero(cells.n == size)
        may[:, rows, :size] = must[:, rows, :size] = matrix
        may[:, rows, size:] = must[:, rows, size:] = False
    return _masked(cells, may, must, True)


def and_bounds(cells: Cells, fst: Selection, snd: Selection) -> Selection:
    return _masked(cells, fst.may & snd.may, fst.must & snd.must, False, _dead(fst, snd))


def or_bounds(cells: Cells, fst: Selection, snd: Selection) -> Selection:
    return _masked(cells, fst.may | snd.may, fst.must | snd.must, False, _dead(fst, snd))


def not_bounds(cells: Cells, inner: Selection) -> Selection:
    return _masked(cells, ~inner.must, ~inner.may, True, inner.dead)
