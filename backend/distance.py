"""Equality with a computed position, scored by squared distance (``optimize=True``).

A `Select(indices, q, ==)` whose query ``q`` is computed from two categorical SOps ``a``
and ``b`` by Maps and SequenceMaps (LinearSequenceMaps included, categorical or
numerical), such as ``length - indices - 1`` in `reverse`, would need an MLP for ``q``
(a table over every pair ``(a, b)``, and a numerical ``q`` a one-hot conversion after
it) before its head. When
``q`` is a sum ``u(a) + v(b)`` on every pair that can occur, the head computes the
selection itself from the one-hots of ``a`` and ``b``: with key index ``k``,

    score(k) = 2 k q - k^2 = q^2 - (k - q)^2,

a bilinear form of the query vector ``(q, 1)``, read linearly from the one-hots
(``sum_x u(x) e_x + sum_y v(y) e_y``), and the key vector ``(2 k, -k^2)``. The term
``q^2`` is the same for every key, so the keys with ``k = q`` share the top score and
every other key is at least 1 below it (integers). The query's Maps and SequenceMaps
take no MLP and no residual direction.

When is it exact. Softmax needs the match to be there: if no key had index ``q`` the
nearest one would win where RASP selects nothing. So a Select is folded only when, for
every pair ``(a, b)`` that can occur, ``q`` is an integer with ``0 <= q <= U``, where
position ``U`` is present in every sequence where the pair occurs: ``U = i`` for an
``indices`` input holding ``i``, ``U = w - 1`` for a length input (a count of every
key: ``length``, or ``SelectorWidth(Select(., ., TRUE))``, which causally counts
``i + 1``), the larger of the two, or ``0``. The pairs a length not above the index
cannot occur (`views.mark_impossible`). Under causal masking position ``i`` sees keys
``0..i``, which contain ``U`` in both cases. The BOS key scores ``-1/2``, below the
match's ``q^2 >= 0`` by at least 1/2, as in every Aggregate head; so the head is
exact with the same coldness and leakage bound (``chambers/attention.py``).

Float32. The logits are up to ``2 K (max|u| + max|v|) + K^2`` (``K`` the largest index)
times the coldness ``C``. Rounding the weights ``C u``, ``C v`` and the two products
and the sum moves a logit by at most ``2^-24 C (8 K (max|u| + max|v|) + 2 K^2)``; a Select
is folded only where that is at most ``C / 8``, so every margin keeps ``3/8 C`` in float32
(`reverse` up to ``max_seq_len`` 342). Elsewhere the compiler keeps the MLP.

Only a Select read by Aggregates alone (a SelectorWidth needs BOS at the top score,
which depends on ``q^2``) and whose query nodes have no other readers is folded; the
cost model (``fusion.py``) keeps the fold when the model is no deeper.
"""

from __future__ import annotations

from collections import defaultdict, deque

import attrs
import numpy as np

from rasplang.analysis import Analysis
from rasplang.backend.chambers import fused_mlp
from rasplang.backend.views import (
    View,
    counts_every_key,
    identity,
    integer,
    map_table,
    mark_impossible,
    pair,
    pair_table,
)
from rasplang.nodes import (
    Aggregate,
    Encoding,
    IndicesType,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    SOp,
)
from rasplang.operators import Comparison

#: Largest table of query pairs a fold examines.
MAX_PAIRS = 1 << 20
#: Bound on ``8 K (max|u| + max|v|) + 2 K^2`` (float32 keeps 3/8 of every margin).
FLOAT32_LOGITS = 2**21


@attrs.frozen(eq=False)
class Fold:
    """A Select scored by squared distance: the query nodes folded into its head and the
    two SOps the head reads instead."""

    select: Select
    chain: tuple[SOp, ...]
    leaves: tuple[SOp, SOp]


@attrs.frozen
class Split:
    """``q = u[i] + v[j]`` where the first input holds its ``i``-th value and the second
    its ``j``-th, on every pair that can occur."""

    u: tuple[int, ...]
    v: tuple[int, ...]


def _selector_users(analysis: Analysis) -> dict[RASPExpr, list[RASPExpr]]:
    out: dict[RASPExpr, list[RASPExpr]] = defaultdict(list)
    for node in analysis.nodes:
        if isinstance(node, (Aggregate, SelectorWidth)):
            out[node.selector].append(node)
        elif isinstance(node, (SelectorAnd, SelectorOr, SelectorNot)):
            for child in node.children:
                out[child].append(node)
    return out


def _is_table(node: SOp) -> bool:
    """Whether ``node`` is a Map or a SequenceMap (linear or not, categorical or
    numerical): a function of its inputs' values that the head can compose."""
    return isinstance(node, (Map, SequenceMap, LinearSequenceMap))


def _chain(analysis: Analysis, select: Select,
           readers: dict[SOp, list[tuple[RASPExpr, str]]]) -> list[SOp] | None:
    """The query's Maps and SequenceMaps read by nothing else, in topological order."""
    top = select.queries
    if not _is_table(top) or top is analysis.program \
            or any(r is not select for r, _ in readers[top]):
        return None
    chain = {top}
    for node in reversed(analysis.nodes):  # readers before their inputs
        if node is top or node is analysis.program or not isinstance(node, SOp) \
                or not _is_table(node):
            continue
        users = readers.get(node, [])
        if users and all(r in chain for r, _ in users):
            chain.add(node)
    return [n for n in analysis.nodes if n in chain]


def query_view(analysis: Analysis, chain: list[SOp], leaves: tuple[SOp, ...]) -> View:
    """The chain's last node as a function of the leaves' non-None values."""
    views: dict[SOp, View] = {
        leaf: identity(leaf, tuple(v for v in analysis.value_sets[leaf] if v is not None))
        for leaf in leaves}
    for node in chain:
        if isinstance(node, Map):
            views[node] = views[node.inner].compose(map_table(analysis, node).get)
        else:
            views[node] = pair(views[node.fst], views[node.snd], pair_table(analysis, node))
    return views[chain[-1]]


def split(view: View) -> Split | None:
    """``view`` (two bases) as ``u + v`` on its possible cells, each an integer
    ``0 <= q <= U`` (see the module docstring); None where that does not hold."""
    grid = mark_impossible(view)
    bounds = []
    for leaf, values in zip(view.bases, view.values):
        if isinstance(leaf, IndicesType):
            bounds.append(np.asarray(values, dtype=float))
        elif counts_every_key(leaf):
            bounds.append(np.asarray(values, dtype=float) - 1)
        else:
            bounds.append(np.zeros(len(values)))
    top = np.maximum.outer(*bounds)
    n_a, n_b = grid.shape
    u: list[int | None] = [None] * n_a
    v: list[int | None] = [None] * n_b
    cells: dict[tuple[int, int], int] = {}
    for (i, j), q in np.ndenumerate(grid):
        if q is fused_mlp.IMPOSSIBLE:
            continue
        q = integer(q)
        if q is None or not 0 <= q <= top[i, j]:
            return None
        cells[i, j] = q
    by_row: dict[int, list[int]] = defaultdict(list)
    by_col: dict[int, list[int]] = defaultdict(list)
    for i, j in cells:
        by_row[i].append(j)
        by_col[j].append(i)
    for root in range(n_a):  # potentials over each connected part of the pairs
        if u[root] is not None or root not in by_row:
            continue
        u[root] = 0
        todo = deque([(0, root)])
        while todo:
            side, k = todo.popleft()
            for other in (by_row[k] if side == 0 else by_col[k]):
                i, j = (k, other) if side == 0 else (other, k)
                q = cells[i, j]
                if side == 0 and v[j] is None:
                    v[j] = q - u[i]
                    todo.append((1, j))
                elif side == 1 and u[i] is None:
                    u[i] = q - v[j]
                    todo.append((0, i))
                elif u[i] + v[j] != q:
                    return None
    return Split(tuple(x or 0 for x in u), tuple(x or 0 for x in v))


def folds(analysis: Analysis, readers: dict[SOp, list[tuple[RASPExpr, str]]]) -> list[Fold]:
    """Every Select that can be scored by squared distance (see the module docstring)."""
    users = _selector_users(analysis)
    keys_top = analysis.max_seq_len - 1
    out = []
    for select in analysis.nodes:
        if not isinstance(select, Select) or select.predicate is not Comparison.EQ \
                or not isinstance(select.keys, IndicesType) \
                or analysis.encodings[select.keys] is not Encoding.CATEGORICAL \
                or not users[select] \
                or not all(isinstance(r, Aggregate) for r in users[select]):
            continue
        chain = _chain(analysis, select, readers)
        if chain is None:
            continue
        inside = set(chain)
        leaves = tuple(dict.fromkeys(c for n in chain for c in n.children if c not in inside))
        if len(leaves) != 2 or any(
                analysis.encodings[x] is not Encoding.CATEGORICAL
                or None in analysis.value_sets[x] for x in leaves):
            continue
        if len(analysis.value_sets[leaves[0]]) * len(analysis.value_sets[leaves[1]]) > MAX_PAIRS:
            continue
        found = split(query_view(analysis, chain, leaves))
        if found is None:
            continue
        reach = max(map(abs, found.u), default=0) + max(map(abs, found.v), default=0)
        if 8 * keys_top * reach + 2 * keys_top**2 > FLOAT32_LOGITS:
            continue
        out.append(Fold(select, tuple(chain), leaves))
    return out
