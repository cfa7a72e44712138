"""Prefix fractions: numerical SOps whose value at index ``i`` is a multiple of ``1 / (i + 1)``.

The analysis knows each SOp's value set, not which values occur together; a function
of two numerical SOps is then a table over every pair of their values (for two
running fractions at max_seq_len 16, 3,943 x 3,943), too fine to discretise. One
fact about positions makes it small. A numerical Aggregate over
``Select(indices, indices, <=)`` (`make_frac_prevs`) averages exactly ``i + 1``
values at index ``i``, causal or not; if they are integers in ``[a, b]`` its value is
``K / (i + 1)`` with ``K`` an integer in ``[a (i + 1), b (i + 1)]``, rounded once. An
integer combination ``alpha x + beta y`` of two such SOps (a LinearSequenceMap) is one
too. `prefix_lattice` gives ``(a, b)`` for those SOps, None for others.

At index ``i``, a pair of such SOps then holds one of ``(K_1, K_2) / (i + 1)``, and a
SequenceMap of them is a table over those points, gated by the index
(``fusion_build.FusedReads.lattice_block``): with ``lambda = 1 / (w_2 n + 1)``
(``w_2 = b_2 - a_2``), the projection ``x_1 + lambda x_2`` orders the points of every
index lexicographically, ``lambda / (i + 1)`` apart at least, and one gated
discretisation of it per index computes the table. Each value the analysis lists is
matched to its point within `numerical_mlp.ROUNDING`; the function must give one output
per point (two roundings of one fraction are one point).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from rasplang.analysis import Analysis
from rasplang.backend.chambers import numerical_mlp
from rasplang.backend.views import integer, map_table, pair_table
from rasplang.nodes import (
    Aggregate,
    Encoding,
    IndicesType,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    SequenceMap,
    SOp,
)
from rasplang.operators import Comparison


def prefix_lattice(analysis: Analysis, node: SOp) -> tuple[int, int] | None:
    """``(a, b)``: at index ``i`` the value of ``node`` is ``K / (i + 1)`` for an integer
    ``a (i + 1) <= K <= b (i + 1)``, up to float rounding (module docstring); None when
    the analysis cannot tell."""
    if analysis.encodings.get(node) is not Encoding.NUMERICAL \
            or None in analysis.value_sets[node]:
        return None
    if isinstance(node, Aggregate):
        sel = node.selector
        if not (isinstance(sel, Select) and sel.predicate is Comparison.LEQ
                and isinstance(sel.keys, IndicesType) and isinstance(sel.queries, IndicesType)):
            return None
        ints = [integer(v) for v in analysis.value_sets[node.sop]]
        if not ints or None in ints:
            return None
        return min(ints), max(ints)
    if isinstance(node, LinearSequenceMap):
        alpha, beta = integer(node.fst_fac), integer(node.snd_fac)
        fst, snd = prefix_lattice(analysis, node.fst), prefix_lattice(analysis, node.snd)
        if alpha is None or beta is None or fst is None or snd is None:
            return None
        if node.fst is node.snd:
            alpha, beta, snd = alpha + beta, 0, (0, 0)
        ends = [alpha * x + beta * y for x in fst for y in snd]
        return min(ends), max(ends)
    return None


#: Largest number of (index, point, point) cells a SequenceMap of two prefix fractions
#: may be tabled over.
LATTICE_BUDGET = 1 << 14


def projection(analysis: Analysis, snd: SOp) -> float:
    """``lambda``: ``x_1 + lambda x_2`` orders the points of every index lexicographically
    (``x_2`` the prefix fraction ``snd``)."""
    a, b = prefix_lattice(analysis, snd)
    return 1.0 / ((b - a) * analysis.max_seq_len + 1)


def lattice_pairs(analysis: Analysis, readers: dict[SOp, list[tuple[RASPExpr, str]]]
                  ) -> list[tuple[SOp, tuple[SOp, ...], tuple[SOp, SOp]]]:
    """SequenceMaps of two different prefix fractions, each read directly or through a
    Map that nothing else reads, within `LATTICE_BUDGET` and exact in float32 with the
    gentlest steps: each with those Maps (computed inside its table) and the two
    fractions."""
    n = analysis.max_seq_len
    out = []
    for node in analysis.nodes:
        if not isinstance(node, SequenceMap) or node.fst is node.snd:
            continue
        found = []
        for x in (node.fst, node.snd):
            through = isinstance(x, Map) and all(r is node for r, _ in readers.get(x, ()))
            base = x.inner if through else x
            lattice = prefix_lattice(analysis, base)
            if lattice is None:
                break
            found.append((x if through else None, base, lattice))
        if len(found) < 2 or found[0][1] is found[1][1]:
            continue
        (_, fst, (a1, b1)), (_, snd, (a2, b2)) = found
        if sum(((b1 - a1) * m + 1) * ((b2 - a2) * m + 1) for m in range(1, n + 1)) \
                > LATTICE_BUDGET:
            continue
        lam = projection(analysis, snd)
        reach = max(abs(a1), abs(b1)) + lam * max(abs(a2), abs(b2))
        gap = lam / n
        if numerical_mlp.float32_step_problem([-reach, gap - reach, reach], [0, 1, 1], 0.0,
                                              numerical_mlp.GENTLE_SLOPE, gates=1):
            continue
        if tables(analysis, node, ((found[0][0], fst), (found[1][0], snd))) is None:
            continue
        out.append((node, tuple(m for m, _, _ in found if m is not None), (fst, snd)))
    return out


def _equal(y: Any, z: Any) -> bool:
    return y is None if z is None else y is not None and y == z


#: `tables` of each analysis (asked by the fusion decisions and by the build).
_TABLES: weakref.WeakKeyDictionary[Analysis, dict[Any, Any]] = weakref.WeakKeyDictionary()


def tables(analysis: Analysis, node: SequenceMap,
           inputs: tuple[tuple[Map | None, SOp], tuple[Map | None, SOp]]
           ) -> list[tuple[int, list[float], list[Any]]] | None:
    """``node``'s table at each index ``i``: the projections ``x_1 + lambda x_2`` of the
    points that some value of the analysis rounds to, sorted, and the output at each;
    None where two values of one point give different outputs. ``inputs``: for each of
    ``node``'s inputs, the Map it is read through (or None) and its prefix fraction."""
    memo = _TABLES.setdefault(analysis, {})
    key = (node, *(x for pair in inputs for x in pair))
    if key not in memo:
        memo[key] = _tables(analysis, node, inputs)
    return memo[key]


def _tables(analysis: Analysis, node: SequenceMap,
            inputs: tuple[tuple[Map | None, SOp], tuple[Map | None, SOp]]
            ) -> list[tuple[int, list[float], list[Any]]] | None:
    bases = [base for _, base in inputs]
    lattices = [prefix_lattice(analysis, b) for b in bases]
    lam = projection(analysis, bases[1])
    f = pair_table(analysis, node)
    reads = []  # per input: its values (sorted), and the code of the output each gives
    distinct: list[list[Any]] = []  # per input: its distinct outputs, by code
    for through, base in inputs:
        values = [v for v in analysis.value_sets[base] if v is not None]  # sorted
        table = {v: v for v in values} if through is None else map_table(analysis, through)
        code_of: dict[Any, int] = {}  # outputs are hashable, and equal ones hash alike
        codes = [code_of.setdefault(table[v], len(code_of)) for v in values]
        reads.append((np.asarray(values, dtype=float), codes))
        distinct.append(list(code_of))
    results: dict[tuple[int, int], Any] = {}  # f on each pair of codes

    def result(c1: int, c2: int) -> Any:
        if (c1, c2) not in results:
            results[c1, c2] = f(distinct[0][c1], distinct[1][c2])
        return results[c1, c2]

    out = []
    for i in range(analysis.max_seq_len):
        w = i + 1
        points = []
        for (vals, codes), (a, b) in zip(reads, lattices):
            ks = np.arange(a * w, b * w + 1)
            tol = numerical_mlp.ROUNDING * np.maximum(1.0, np.abs(ks / w))
            lo = np.searchsorted(vals, ks / w - tol, side="left")
            hi = np.searchsorted(vals, ks / w + tol, side="right")
            points.append([(int(k), sorted(set(codes[x:y])))
                           for k, x, y in zip(ks, lo.tolist(), hi.tolist()) if y > x])
        cells = []
        for k1, cs1 in points[0]:
            for k2, cs2 in points[1]:
                y = result(cs1[0], cs2[0])
                if (len(cs1) > 1 or len(cs2) > 1) and any(
                        not _equal(result(c1, c2), y) for c1 in cs1 for c2 in cs2):
                    return None
                cells.append(((k1 + lam * k2) / w, y))
        if cells:
            cells.sort(key=lambda c: c[0])
            out.append((i, [c[0] for c in cells], [c[1] for c in cells]))
    return out
