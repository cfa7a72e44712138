"""Typed value tables and the lookup arrays built on them: the pieces of the table IR.

`rasplang.analysis` gives every SOp a *typed value table* (a `Table`: code -> value)
and every Map, SequenceMap and Select a *lookup array* over its inputs' tables, built
here, each calling the node's function once per input value (pair). The interpreter
reads the tables and arrays as they are; the compiler reads their merged views
(`Analysis.map_outputs`, ...). Nothing else calls a program's functions.

Tables are keyed by `rasplang.values.typed_key`, the one definition of "the same value".

Lookup arrays hold integer codes into the output's table, with `RAISED_CODE` where the
function raised (`rasplang.evaluate` raises there too); predicate tables hold
`PRED_FALSE`, `PRED_TRUE` or `PRED_ERROR` (the predicate raised, or a key or query is
None, where `evaluate` raises).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import attrs
import numpy as np

from rasplang.nodes import Comparison, Elementwise, Value, _Composed
from rasplang.values import Table, fast_key, object_array

#: Lookup-array entry: the function raised on this input value (pair).
RAISED_CODE = -1
#: Predicate-table entries: false, true, and "raised or saw None".
PRED_FALSE, PRED_TRUE, PRED_ERROR = 0, 1, 2
#: `KeyRuns.point` entry: this query code selects no key code.
NO_KEY = -1
#: Largest integer magnitude float64 holds exactly (and the kernels' exact range).
EXACT_INT = 2**53

class _Raised:
    """The type of `RAISED`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "RAISED"


#: An output that stands for "the function raised here" (in `Analysis.map_outputs` and
#: the other merged views); never a RASP value.
RAISED = _Raised()


# ------------------------------------------------------------------- applying rules


class UnhashableResult(TypeError):
    """A function returned an unhashable value for ``args`` (RASP values must be
    hashable); callers name the node (`rasplang.analysis.unhashable_result`)."""

    def __init__(self, args: tuple[Value, ...], value: Value):
        self.args_, self.value = args, value
        super().__init__(f"f({', '.join(map(repr, args))}) returned {value!r}")


def map_table(f: Callable[[Value], Value], xs: Sequence[Value],
              column: Callable[[], np.ndarray | None],
              errors: list[tuple[tuple, Exception]]) -> tuple[Table, np.ndarray]:
    """A Map's table and lookup array over its input values ``xs``: the codes of
    ``f(x)`` in the table of outcomes (`RAISED_CODE` where ``f`` raised; the first ten
    exceptions go to ``errors``), calling ``f`` once per ``x``. A None input gives None
    without calling ``f``, as in `evaluate`. ``column()`` is ``xs``' `number_column` (or
    None). Raises `UnhashableResult`.

    Two fused Maps (``outer(inner(x))``, built by ``Map(g, Map(f, s))``) are tabled one
    after the other: ``outer`` is called once per distinct result of ``inner``, which is
    what `evaluate` computes, since a function gives one result per typed value.
    """
    numbers_in = column()
    if numbers_in is not None or None not in xs:  # `in` checks identity first
        return _function_table(f, xs, lambda: numbers_in, errors)
    present = [i for i, x in enumerate(xs) if x is not None]
    table, codes = _function_table(f, [xs[i] for i in present], lambda: None, errors)
    table = table.with_values([None])
    out = np.full(len(xs), table.code(None), dtype=np.int32)
    out[present] = codes
    return table, out


def _function_table(f: Callable[[Value], Value], xs: Sequence[Value],
                    column: Callable[[], np.ndarray | None],
                    errors: list[tuple[tuple, Exception]]) -> tuple[Table, np.ndarray]:
    """`map_table` on inputs that are not None."""
    if isinstance(f, _Composed):
        inner_errors: list[tuple[tuple, Exception]] = []
        try:
            mids, inner = _function_table(f.inner, xs, column, inner_errors)
        except UnhashableResult:
            pass  # a list made and unmade inside: call the fused function itself
        else:
            errors += inner_errors[:10 - len(errors)]
            _, first = np.unique(inner, return_index=True)
            first = first[-len(mids):] if len(mids) else first[:0]  # skip RAISED_CODE
            outer_errors: list[tuple[tuple, Exception]] = []
            table, codes = _outcome_table([_call(f.outer, y, outer_errors)
                                           for y in mids.values],
                                          lambda i: (xs[first[i]],))
            errors += [((xs[first[mids.code(y)]],), exc)
                       for (y,), exc in outer_errors][:10 - len(errors)]
            return table, np.append(codes, RAISED_CODE)[inner]
    fast = elementwise_table(f, column)
    if fast is not None:
        return fast
    return _outcome_table([_call(f, x, errors) for x in xs], lambda i: (xs[i],))


def _call(f: Callable[[Value], Value], x: Value, errors: list[tuple[tuple, Exception]]) -> Value:
    try:
        return f(x)
    except Exception as exc:
        if len(errors) < 10:
            errors.append(((x,), exc))
        return RAISED


def pairs_table(f: Callable[[Value, Value], Value], xs: Sequence[Value], ys: Sequence[Value],
                errors: list[tuple[tuple, Exception]], diagonal: bool = False,
                limit: int | None = None) -> tuple[Table, np.ndarray]:
    """`map_table` for a SequenceMap: codes ``[len(xs), len(ys)]`` of ``f(x, y)``, calling
    ``f`` once per pair (None when either is None). With ``diagonal`` (both inputs are
    one SOp, so a position only ever holds ``f(v, v)``) only the diagonal is computed and
    the rest is `RAISED_CODE`, never read. Raises `TooManyValues` as soon as the outcomes
    take more than ``limit`` distinct values, before calling ``f`` on the other pairs."""

    def outcomes() -> Iterator[Value]:
        for i, x in enumerate(xs):
            for j, y in enumerate(ys):
                if diagonal and i != j:
                    yield RAISED
                elif x is None or y is None:
                    yield None
                else:
                    try:
                        yield f(x, y)
                    except Exception as exc:
                        if len(errors) < 10:
                            errors.append(((x, y), exc))
                        yield RAISED
    table, codes = _outcome_table(outcomes(), lambda i: (xs[i // len(ys)], ys[i % len(ys)]),
                                  limit)
    return table, codes.reshape(len(xs), len(ys))


class TooManyValues(ValueError):
    """A table's outcomes took more than ``limit`` distinct values (callers name the node:
    `rasplang.inference.ValueSetTooLarge`)."""

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(f"more than {limit} distinct values")


def _outcome_table(outcomes: Iterable[Value], args: Callable[[int], tuple],
                   limit: int | None = None) -> tuple[Table, np.ndarray]:
    """The table of ``outcomes`` in order of first appearance and their codes
    (`RAISED_CODE` for `RAISED`). ``args(i)`` gives outcome ``i``'s arguments for the
    `UnhashableResult` an unhashable outcome raises; `TooManyValues` stops it at the
    first value past ``limit``."""
    values: list[Value] = []
    index: dict[Any, int] = {}
    codes = []
    for i, value in enumerate(outcomes):
        if value is RAISED:
            codes.append(RAISED_CODE)
            continue
        try:
            key = fast_key(value)
            code = index.get(key)
        except TypeError:
            raise UnhashableResult(args(i), value) from None
        if code is None:
            if limit is not None and len(values) >= limit:
                raise TooManyValues(limit)
            code = index[key] = len(values)
            values.append(value)
        codes.append(code)
    return Table(tuple(values), index), np.array(codes, dtype=np.int32).reshape(-1)


def predicate_code(predicate: Callable[[Value, Value], Any], key: Value, query: Value) -> int:
    """One entry of a predicate table (`PRED_ERROR` where `evaluate` raises)."""
    if key is None or query is None:
        return PRED_ERROR
    try:
        return PRED_TRUE if bool(predicate(key, query)) else PRED_FALSE
    except Exception:
        return PRED_ERROR


def predicate_table(predicate: Callable[[Value, Value], Any], keys: Sequence[Value],
                    queries: Sequence[Value], key_numbers: np.ndarray | None = None,
                    query_numbers: np.ndarray | None = None) -> np.ndarray:
    """``[len(keys), len(queries)]`` int8: `predicate_code` of every pair, calling the
    predicate once per pair. A `Comparison` over two number columns (`number_column`)
    is one numpy comparison instead: float64 holds every such value exactly, and Python
    compares ints and floats exactly, so the results are the same."""
    if predicate in (Comparison.TRUE, Comparison.FALSE):  # never compares: no calls
        out = np.full((len(keys), len(queries)),
                      PRED_TRUE if predicate is Comparison.TRUE else PRED_FALSE, dtype=np.int8)
        out[[k is None for k in keys], :] = PRED_ERROR
        out[:, [q is None for q in queries]] = PRED_ERROR
        return out
    if isinstance(predicate, Comparison) and key_numbers is not None \
            and query_numbers is not None:
        compare = _NUMPY_COMPARISONS[predicate.value]
        return compare(key_numbers[:, None], query_numbers[None, :]).astype(np.int8)
    out = np.empty((len(keys), len(queries)), dtype=np.int8)
    for i, key in enumerate(keys):
        out[i] = [predicate_code(predicate, key, query) for query in queries]
    return out


_NUMPY_COMPARISONS = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
                      ">": np.greater, ">=": np.greater_equal}


def number_column(values: Sequence[Value]) -> np.ndarray | None:
    """``values`` as float64 when each is a bool, a float or an int of magnitude at most
    2**53 (so float64 holds it exactly), else None."""
    for v in values:
        kind = type(v)
        if kind is float or kind is bool or (kind is int and -EXACT_INT <= v <= EXACT_INT):
            continue
        return None
    return np.array(values, dtype=np.float64).reshape(-1)


def elementwise_table(f: Any, column: Callable[[], np.ndarray | None]
                      ) -> tuple[Table, np.ndarray] | None:
    """A Map's table and lookup array without calling ``f``, when ``f`` is an
    `Elementwise` comparison with a number (``x < 0``) and ``column()`` (its input's
    `number_column`, asked for only then) is not None: one numpy comparison, exact for
    the reason `predicate_table` gives. Else None."""
    if not isinstance(f, Elementwise) or not f.has_const or f.op not in _NUMPY_COMPARISONS:
        return None
    const = number_column([f.const])
    numbers_in = None if const is None else column()
    if numbers_in is None:
        return None
    compare = _NUMPY_COMPARISONS[f.op]
    truth = compare(const[0], numbers_in) if f.reverse else compare(numbers_in, const[0])
    if not len(truth):
        return Table(()), np.zeros(0, dtype=np.int32)
    first = bool(truth[0])
    values = (first,) if bool((truth == first).all()) else (first, not first)
    codes = (truth != first).astype(np.int32)  # code 0: the first value seen
    return Table(values), codes


# ------------------------------------------------------------------ linear fast path


@attrs.frozen
class NumberTable:
    """A typed table of plain numbers computed with numpy, with its merged view.

    ``table``: the typed values (for each distinct number in increasing order: the int,
    then the float, then -0.0, whichever occur); ``column``: them as float64;
    ``merged``: the value set (``==`` merges, sorted, the first typed value of each
    class kept); ``merged_index [n_typed]``: each typed value's position in ``merged``;
    ``collisions``: groups of typed values that ``==`` merges; ``codes``: the lookup
    array of the node that produced it.
    """

    table: Table
    column: np.ndarray
    merged: tuple[Value, ...]
    merged_index: np.ndarray
    collisions: tuple[tuple[Value, ...], ...]
    codes: np.ndarray


def linear_table(a: Value, b: Value, xs: Sequence[Value], ys: Sequence[Value],
                 x_col: np.ndarray | None, y_col: np.ndarray | None) -> NumberTable | None:
    """``a * x + b * y`` over ``xs x ys`` with numpy, typed as Python types it, or None
    where numpy could differ from Python (then the caller calls ``f`` per pair).

    Every input and factor must be a plain number: ``x_col`` and ``y_col`` are the
    inputs' `number_column` (None when they are not). A pair of ints (or
    bools) with integer factors gives an int, computed exactly in float64 because every
    term and the sum stay below 2**53 (checked); any float gives a float, and float64
    products and sums round as Python's do (ints involved are exact in float64). One
    sort (``np.unique``) gives the classes of equal numbers; within a class the typed
    values are the int, the float and -0.0 that occur, so ``0``, ``0.0`` and ``-0.0``
    stay apart as `typed_key` keeps them. NaN (``inf - inf``) is one value.
    """
    factors = number_column([a, b])
    if x_col is None or y_col is None or factors is None or not len(x_col) or not len(y_col):
        return None
    floats = type(a) is float or type(b) is float
    x_int = np.array([type(v) is not float for v in xs], dtype=bool)
    y_int = np.array([type(v) is not float for v in ys], dtype=bool)
    if not floats:
        top = abs(a) * max(map(abs, (v for v in xs if type(v) is not float)), default=0) \
            + abs(b) * max(map(abs, (v for v in ys if type(v) is not float)), default=0)
        if top >= EXACT_INT:
            return None  # ints past float precision: the caller's general path
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is NaN in Python too
        terms = [factors[0] * x_col, factors[1] * y_col]
        for term, factor, ints in ((terms[0], a, x_int), (terms[1], b, y_int)):
            if type(factor) is not float:  # an int times an int is an int: never -0.0
                term[ints & (term == 0)] = 0.0
        sums = np.add.outer(*terms)  # [nx, ny] float64
    merged_values, inverse = np.unique(sums, return_inverse=True)  # NaN: one class
    inverse = inverse.reshape(sums.shape)
    n, flat = len(merged_values), inverse.reshape(-1)
    # Most pairs give a float; the others are few: a block of int pairs, and -0.0s.
    rows, cols = (np.zeros(0, np.int64),) * 2 if floats else (np.flatnonzero(x_int),
                                                              np.flatnonzero(y_int))
    int_block = inverse[np.ix_(rows, cols)].reshape(-1)
    zeros = np.flatnonzero(sums.reshape(-1) == 0)
    int_pair = np.zeros(len(zeros), dtype=bool) if floats else \
        x_int[zeros // sums.shape[1]] & y_int[zeros % sums.shape[1]]
    negative = zeros[~int_pair & np.signbit(sums.reshape(-1)[zeros])]
    # Per class (an increasing number): its int, float and -0.0, whichever occur.
    has_int = np.zeros(n, dtype=bool)
    has_int[int_block] = True
    has_negative = np.zeros(n, dtype=bool)
    has_negative[flat[negative]] = True
    has_float = (np.bincount(flat, minlength=n) - np.bincount(int_block, minlength=n)
                 - np.bincount(flat[negative], minlength=n)) > 0
    per_class = has_int.astype(np.int64) + has_float + has_negative
    firsts = np.cumsum(per_class) - per_class  # [n]: the code of each class's first value
    float_code = firsts + has_int
    codes = float_code.astype(np.int32)[inverse]  # [nx, ny]
    codes[np.ix_(rows, cols)] = firsts[int_block].reshape(len(rows), len(cols))
    codes.reshape(-1)[negative] = (float_code + has_float)[flat[negative]]
    column = np.repeat(merged_values, per_class)  # [n_typed]
    column[column == 0] = 0.0  # np.unique keeps either zero: +0.0 for ints and floats
    column[(float_code + has_float)[has_negative]] = -0.0
    values = column.tolist()
    for i in firsts[has_int].tolist():
        values[i] = int(values[i])
    typed = tuple(values)
    merged = typed if len(typed) == n else _drop(values, np.flatnonzero(
        np.bincount(firsts, minlength=len(typed)) == 0))
    collisions = tuple(tuple(typed[firsts[c]:firsts[c] + per_class[c]])
                       for c in np.flatnonzero(per_class > 1).tolist())
    cls = np.repeat(np.arange(n), per_class)
    return NumberTable(table=Table(typed), column=column, merged=merged,
                       merged_index=cls.astype(np.int64), collisions=collisions, codes=codes)


def _drop(values: list[Value], positions: np.ndarray) -> tuple[Value, ...]:
    """``values`` without the items at ``positions`` (sorted), as a tuple."""
    if len(positions) > 256:
        keep = np.ones(len(values), dtype=bool)
        keep[positions] = False
        return tuple(object_array(values)[keep].tolist())
    out = list(values)
    for i in positions[::-1].tolist():
        del out[i]
    return tuple(out)


# ---------------------------------------------------------------------- key runs


@attrs.frozen
class KeyRuns:
    """A predicate table's rows as runs of selected key codes: per query code ``qc``, runs
    ``[lo[r], hi[r])`` for ``r`` in ``ptr[qc] .. ptr[qc + 1] - 1`` (the counting kernels
    of the interpreter read them, see `rasplang.interpreter.runs`).

    ``mean_runs``/``mean_width``: runs and selected key codes per query code, on average
    (the cost model's inputs). ``point``: when every row selects at most one key code (EQ
    on most tables), that code per query code (`NO_KEY`: none), else None.
    """

    ptr: np.ndarray  # [n_queries + 1] int64
    lo: np.ndarray  # [n_runs] int32
    hi: np.ndarray  # [n_runs] int32
    n_keys: int
    mean_runs: float
    mean_width: float
    point: np.ndarray | None = None  # [n_queries] int32


def key_runs(pred: np.ndarray) -> KeyRuns | None:
    """The `KeyRuns` of a predicate table ``pred [n_keys, n_queries]`` (0/1/2), or None when
    an entry is `PRED_ERROR` (errors need every pair checked, as the generic kernel does)."""
    n_keys, n_queries = pred.shape
    if (pred == PRED_ERROR).any():
        return None
    sel = np.ascontiguousarray(pred).view(np.bool_)  # [nk, nq], 0/1 only now
    first = np.empty_like(sel)  # a run starts at key code k: selected, and k - 1 is not
    first[:1] = sel[:1]
    np.greater(sel[1:], sel[:-1], out=first[1:])
    last = np.empty_like(sel)  # a run ends at key code k: selected, and k + 1 is not
    last[-1:] = sel[-1:]
    np.greater(sel[:-1], sel[1:], out=last[:-1])
    k_lo, q_lo = np.divmod(np.flatnonzero(first), n_queries)
    k_hi, q_hi = np.divmod(np.flatnonzero(last), n_queries)
    by_query = np.argsort(q_lo * n_keys + k_lo, kind="stable")  # runs grouped by query
    lo = k_lo[by_query].astype(np.int32)
    hi = (k_hi[np.argsort(q_hi * n_keys + k_hi, kind="stable")] + 1).astype(np.int32)
    q_lo = q_lo[by_query]
    per_query = np.bincount(q_lo, minlength=n_queries)
    ptr = np.zeros(n_queries + 1, dtype=np.int64)
    np.cumsum(per_query, out=ptr[1:])
    point = None
    if per_query.max(initial=0) <= 1 and bool((hi - lo <= 1).all()):
        point = np.full(n_queries, NO_KEY, dtype=np.int32)
        point[q_lo] = lo
    return KeyRuns(ptr=ptr, lo=lo, hi=hi, n_keys=n_keys,
                   mean_runs=len(lo) / max(1, n_queries),
                   mean_width=float((hi - lo).sum()) / max(1, n_queries), point=point)
