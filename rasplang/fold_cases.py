"""One small program per fold of the optimizer (``compile(..., optimize=True)``), and
every pair of them in one program.

Each fold of ``backend/fusion.py`` (docs/design.md, "Fusion and folding") gets a
`FoldCase`: a builder of the smallest program that makes the optimizer take it, and a
check, on the compiled model, that it did (`CompiledModel.circuit`: a node computed
inside another block has a step that writes nothing and names that block's nodes in
``fused``). `fold_pairs` puts two cases in one program, so the decisions of one fold
meet those of another: the two outputs side by side in a SequenceMap of tuples, or
(``feed=True``) the second case reading the first one's output instead of ``tokens``.
The cases share their common parts (``length``, the two running fractions), as real
programs do. Every program runs over `VOCAB` up to `MAX_SEQ_LEN`, causal or not (a
causal model counts the positions with a SelectorWidth where ``length`` is refused).

The differential test (``tests/differential/test_fold_pairs.py``) compiles every pair
both ways and checks them against `rasplang.evaluate` on every input; the fuzzer runs
them too. Nothing here imports the compiler until a check asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from rasplang.nodes import (
    Aggregate,
    Comparison,
    LinearSequenceMap,
    Map,
    Select,
    SelectorWidth,
    SequenceMap,
    SOp,
    indices,
    length,
    numerical,
    tokens,
)

VOCAB = ("a", "b", "c")
MAX_SEQ_LEN = 4


@attrs.frozen(eq=False)
class Parts:
    """The nodes cases share: the input (``tokens``, or an earlier case's output read as
    a token), the length (``length``, or a count of every key in a causal model) and two
    running fractions of the input."""

    src: SOp
    length: SOp
    frac_a: SOp
    frac_b: SOp

    @classmethod
    def make(cls, causal: bool = False, src: SOp = tokens, tag: str = "",
             n: SOp | None = None) -> Parts:
        """Fresh shared parts (``causal``: no ``length``) reading ``src``, their labels
        prefixed by ``tag``; ``n`` is a length to share."""
        if n is None:
            n = SelectorWidth(Select(tokens, tokens, Comparison.TRUE)).named("count") \
                if causal else length
        prevs = Select(indices, indices, Comparison.LEQ)
        fracs = [numerical(Aggregate(prevs, numerical(Map(lambda t, c=c: t == c, src)),
                                     default=0)).named(f"{tag}frac_{c}") for c in "ab"]
        return cls(src, n, *fracs)


def folded(model: Any, label: str) -> bool:
    """Whether ``model`` computes the node ``label`` inside another block (a step of it
    writes nothing and names the nodes computed with it)."""
    return any(not s.writes and s.fused for s in model.circuit.get(label, ()))


def _converted(model: Any, label: str) -> bool:
    """Whether ``model`` converts a numerical node labelled ``label`` (after any prefix)
    to a one-hot."""
    return any(f"{label}:categorical" in x for x in model.residual_labels)


def _reads_length(model: Any, label: str) -> bool:
    """Whether the block computing ``label`` computes the length (or count) inside."""
    return any({"length", "count"} & set(s.fused) for s in model.circuit.get(label, ()))


def _fused_any(model: Any) -> bool:
    return any(s.fused for steps in model.circuit.values() for s in steps)


@attrs.frozen
class FoldCase:
    """A fold: ``build(parts, tag)`` makes its program (node labels start with ``tag``),
    ``check(model, tag)`` says whether the compiled model took the fold."""

    name: str
    doc: str
    build: Callable[[Parts, str], SOp]
    check: Callable[[Any, str], bool]


def _lookup(p: Parts, t: str) -> SOp:
    inner = Map(lambda x: x.upper(), p.src).named(f"{t}inner")
    return SequenceMap(lambda u, i: f"{u}{i % 2}", inner, indices).named(f"{t}out")


def _gated(p: Parts, t: str) -> SOp:
    above = Map(lambda v: v > 0.4, p.frac_a).named(f"{t}above")
    return SequenceMap(lambda x, y: x and y != "c", above, p.src).named(f"{t}out")


def _select_qk(p: Parts, t: str) -> SOp:
    q = Map(lambda x: "abc".index(x) if x in "abc" else 0, p.src).named(f"{t}q")
    return Aggregate(Select(indices, q, Comparison.EQ), p.src).named(f"{t}out")


def _product(p: Parts, t: str) -> SOp:
    q = SequenceMap(lambda x, i: "abc"[(("abc".find(x)) + i) % 3], p.src, indices
                    ).named(f"{t}q")
    sel = Select(p.src, q, Comparison.EQ) | Select(indices, indices, Comparison.GT)
    return SelectorWidth(sel).named(f"{t}out")


def _ov(p: Parts, t: str) -> SOp:
    value = Map(lambda x: x.upper(), p.src).named(f"{t}value")
    return Aggregate(Select(indices, indices, Comparison.EQ), value).named(f"{t}out")


def _ov_numerical(p: Parts, t: str) -> SOp:
    # floats only (a mean of the ints 0 and 2 may be 0 or 0.0, which a tuple tells apart)
    value = numerical(Map(lambda x: 2.0 * (x == "c"), p.src)).named(f"{t}value")
    return numerical(Aggregate(Select(indices, indices, Comparison.LT), value, default=0.0)
                     ).named(f"{t}out")


def _width(p: Parts, t: str) -> SOp:
    width = SelectorWidth(Select(p.src, p.src, Comparison.EQ)).named(f"{t}width")
    return Map(lambda w: w % 2, width).named(f"{t}out")


def _linear(p: Parts, t: str) -> SOp:
    both = numerical(LinearSequenceMap(p.frac_a, p.frac_b, 1, 1)).named(f"{t}both")
    return Map(lambda v: v > 0.5, both).named(f"{t}out")


def _direct(p: Parts, t: str) -> SOp:
    return SequenceMap(lambda v, x: v > 0.3 and x == "b", p.frac_a, p.src).named(f"{t}out")


def _distance(p: Parts, t: str) -> SOp:
    opp = SequenceMap(lambda n, i: n - i, p.length, indices).named(f"{t}opp")
    q = Map(lambda x: x - 1, opp).named(f"{t}q")
    return Aggregate(Select(indices, q, Comparison.EQ), p.src).named(f"{t}out")


def _distance_numerical(p: Parts, t: str) -> SOp:
    opp = numerical(LinearSequenceMap(p.length, indices, 1, -1)).named(f"{t}opp")
    q = numerical(Map(lambda x: x - 1, opp)).named(f"{t}q")
    return Aggregate(Select(indices, q, Comparison.EQ), p.src).named(f"{t}out")


def _lattice(p: Parts, t: str) -> SOp:
    balance = numerical(LinearSequenceMap(p.frac_a, p.frac_b, 1, -1)).named(f"{t}balance")
    low = Map(lambda v: v < 0, balance).named(f"{t}low")
    some = Map(lambda v: v > 0, p.frac_b).named(f"{t}some")
    return SequenceMap(lambda x, y: x or y, low, some).named(f"{t}out")


def _lattice_direct(p: Parts, t: str) -> SOp:
    both = numerical(LinearSequenceMap(p.frac_a, p.frac_b, 1, 1)).named(f"{t}both")
    return SequenceMap(lambda x, y: x > 0 and y == 0, both, p.frac_b).named(f"{t}out")


def _impossible_gated(p: Parts, t: str) -> SOp:
    rot = SequenceMap(lambda n, i: (i + 1) % n, p.length, indices).named(f"{t}rot")
    return Aggregate(Select(indices, rot, Comparison.EQ), p.src).named(f"{t}out")


def _impossible_lookup(p: Parts, t: str) -> SOp:
    # the length is read by a Select too, so it is a one-hot, and the table a lookup
    late = SequenceMap(lambda n, i: 2 * i >= n, p.length, indices).named(f"{t}late")
    up = numerical(Map(lambda x: int(x), late)).named(f"{t}up")
    wide = SelectorWidth(Select(p.length, indices, Comparison.GT)).named(f"{t}wide")
    return SequenceMap(lambda u, w: u + w, up, wide).named(f"{t}out")


def _fewer_parameters(p: Parts, t: str) -> SOp:
    # the count's decoding fused into the difference saves no layer and widens the MLP
    same = SelectorWidth(Select(p.src, p.src, Comparison.EQ)).named(f"{t}same")
    other = SelectorWidth(Select(p.src, p.src, Comparison.NEQ)).named(f"{t}other")
    return SequenceMap(lambda x, y: x - y, same, other).named(f"{t}out")


def _refused(p: Parts, t: str) -> SOp:
    # the keys' Product under `|` would read two counts' scratch coordinates in one MLP
    n1 = SequenceMap(lambda x, y: x - y, p.length, p.length).named(f"{t}diff")
    n2 = Map(lambda x: x == x, n1).named(f"{t}same")
    n3 = SelectorWidth(Select(n2, n2, Comparison.GT) | Select(n2, n1, Comparison.NEQ)
                       ).named(f"{t}width")
    n4 = SequenceMap(lambda x, y: str(x) + str(y), indices, n3).named(f"{t}text")
    n5 = numerical(Map(lambda x: x < "m", n4)).named(f"{t}low")
    sel = Select(n3, n5, Comparison.LT) | ~Select(n2, n5, Comparison.EQ)
    return SelectorWidth(sel).named(f"{t}out")


def _fallback_check(model: Any, t: str) -> bool:
    """The cost model's last word: the model compile kept has no more parameters than
    one block per node (which it keeps whenever the fused one saves no layer and is
    larger)."""
    import rasplang as rl

    cfg = model.config
    plain = rl.compile(model.program, cfg.vocab, cfg.max_seq_len, causal=cfg.causal,
                       optimize=False)
    return not _fused_any(model) or (model.n_params <= plain.n_params
                                     or cfg.n_layers < plain.config.n_layers)


CASES: dict[str, FoldCase] = {c.name: c for c in (
    FoldCase("lookup", "a Map read by a SequenceMap: one lookup MLP", _lookup,
             lambda m, t: folded(m, f"{t}inner")),
    FoldCase("gated", "a Map of a numerical SOp read with a categorical one: one gated "
             "discretisation", _gated, lambda m, t: folded(m, f"{t}above")),
    FoldCase("select_qk", "a Map folded into a head's query-key table", _select_qk,
             lambda m, t: folded(m, f"{t}q")),
    FoldCase("product", "a SequenceMap under `|` folded into the Product MLP", _product,
             lambda m, t: folded(m, f"{t}q")),
    FoldCase("ov", "a categorical Map folded into an OV matrix", _ov,
             lambda m, t: folded(m, f"{t}value")),
    FoldCase("ov_numerical", "a numerical Map folded into an OV matrix", _ov_numerical,
             lambda m, t: folded(m, f"{t}value")),
    FoldCase("width", "a SelectorWidth decoded inside its reader", _width,
             lambda m, t: folded(m, f"{t}width")),
    FoldCase("linear", "a LinearSequenceMap read as its combination", _linear,
             lambda m, t: folded(m, f"{t}both")),
    FoldCase("direct", "a SequenceMap discretising its numerical input directly", _direct,
             lambda m, t: not _converted(m, "frac_a")),
    FoldCase("distance", "a computed position scored by squared distance", _distance,
             lambda m, t: folded(m, f"{t}opp") and folded(m, f"{t}q")),
    FoldCase("distance_numerical", "a numerical computed position scored by squared "
             "distance", _distance_numerical,
             lambda m, t: folded(m, f"{t}opp") and folded(m, f"{t}q")),
    FoldCase("lattice", "a SequenceMap of two running fractions tabled per index",
             _lattice, lambda m, t: folded(m, f"{t}low") and folded(m, f"{t}some")),
    FoldCase("lattice_direct", "a SequenceMap of a running fraction and a combination "
             "of two, tabled per index", _lattice_direct,
             lambda m, t: folded(m, f"{t}both") and not _converted(m, "frac_b")),
    FoldCase("impossible_gated", "a gated discretisation of a count with the index "
             "(impossible cells)", _impossible_gated, lambda m, t: _reads_length(m, f"{t}rot")),
    FoldCase("impossible_lookup", "a lookup over a length and the index (impossible "
             "cells)", _impossible_lookup, lambda m, t: folded(m, f"{t}late")),
    FoldCase("fewer_parameters", "no layer saved: one block per node has fewer "
             "parameters", _fewer_parameters, _fallback_check),
    FoldCase("refused", "the optimized build is refused: one block per node",
             _refused, _fallback_check),
)}


def fold_program(name: str, causal: bool = False) -> SOp:
    """The program of the fold ``name`` alone (labels as `CASES` names them, no prefix)."""
    return CASES[name].build(Parts.make(causal), "")


def _as_token(x: Any) -> str:
    """Any value as one of `VOCAB` (a total function, so a fed case never raises)."""
    return VOCAB[sum(map(ord, repr(x))) % len(VOCAB)]


def pair_program(first: str, second: str, causal: bool = False, feed: bool = False
                 ) -> SOp:
    """One program holding the folds ``first`` and ``second`` (labels ``1_...`` and
    ``2_...``), sharing their common parts: the two outputs side by side, or (``feed``)
    the second case reading the first one's output as its input."""
    parts = Parts.make(causal)
    one = CASES[first].build(parts, "1_")
    if feed:
        src = Map(_as_token, one).named("fed")
        return CASES[second].build(Parts.make(causal, src, "2_", parts.length), "2_")
    two = CASES[second].build(parts, "2_")
    return SequenceMap(lambda x, y: (x, y), one, two).named("pair")


def fold_pairs(causal: bool = False, feed: bool = False
               ) -> list[tuple[str, SOp, tuple[str, ...], int]]:
    """Every pair of folds (a fold with itself included) as ``(name, program, vocab,
    max_seq_len)``: `pair_program` for each ``first <= second`` (every ordered pair
    with ``feed``)."""
    names = list(CASES)
    out = []
    for i, first in enumerate(names):
        for second in names if feed else names[i:]:
            name = f"{first}{'>' if feed else '+'}{second}"
            out.append((name, pair_program(first, second, causal, feed), VOCAB, MAX_SEQ_LEN))
    return out
