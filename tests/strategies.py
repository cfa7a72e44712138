"""Hypothesis strategies shared by the property tests.

`programs` builds random well-typed RASP programs from hypothesis draws: every node
kind, function, comparison, encoding and default is a draw, so hypothesis shrinks a
failing program to a small one and prints it as a listing a person can read (`Case`).
It follows `rasplang.testing.random_program` (the numpy-seeded generator that the fuzz
campaign and the GPU tests use): the same kinds of values and function families, and
its compilable subset plus LinearSequenceMap. Each option list starts with its simplest
choice, because hypothesis shrinks a draw towards the first option.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
from hypothesis import strategies as st

from rasplang.graph import topological_order
from rasplang.nodes import (
    Aggregate,
    Comparison,
    Elementwise,
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
    indices,
    is_numerical,
    length,
    numerical,
    tokens,
)

VOCABS: tuple[tuple[Any, ...], ...] = (("a", "b", "c"), (1, 2, 3), ("a", "b"), (0, 1, 2, 3))

Kind = str  # what an SOp's values are: "int", "bool", "str", "num" (floats), "any"


@attrs.frozen(repr=False)
class Fn:
    """A function from the menu; prints as its source text, e.g. ``min(x,2)``."""

    text: str
    fn: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __repr__(self) -> str:
        return self.text


def _c(op: str, const: Any) -> Elementwise:
    """``x OP const``, as ``sop OP const`` builds it."""
    return Elementwise(op, const, has_const=True)


# Unary functions, total on their kind: kind -> ((f, result kind), ...).
MAPS: dict[Kind, tuple[tuple[Callable[[Any], Any], Kind], ...]] = {
    "int": (
        (_c("+", 1), "int"), (_c("-", 1), "int"), (_c("%", 3), "int"),
        (Fn("2*x%7", lambda x: 2 * x % 7), "int"), (Fn("min(x,2)", lambda x: min(x, 2)), "int"),
        (Fn("abs(x-2)", lambda x: abs(x - 2)), "int"), (_c(">", 1), "bool"),
        (Fn("x%2==0", lambda x: x % 2 == 0), "bool"), (_c("/", 2), "num"),
        (Fn("str(x)", str), "str"),
    ),
    "bool": (
        (Elementwise("not"), "bool"), (Fn("int(x)", int), "int"),
        (Fn("'t' if x else 'f'", lambda x: "t" if x else "f"), "str"),
    ),
    "str": (
        (_c("==", "a"), "bool"), (_c("<", "b"), "bool"), (Fn("len(x)", len), "int"),
        (Fn("x[:1]", lambda x: x[:1]), "str"),
        (Fn("{'a':'b','b':'a'}.get(x,x)", lambda x: {"a": "b", "b": "a"}.get(x, x)), "str"),
        (Fn("ord(x[0])%3 if x else 0", lambda x: ord(x[0]) % 3 if x else 0), "int"),
    ),
    "num": (
        (_c(">", 0.5), "bool"), (Fn("round(4*x)", lambda x: round(4 * x)), "int"),
        (_c("*", 2), "num"), (_c("==", 0), "bool"),
    ),
    "any": (
        (Fn("str(x)[:1]", lambda x: str(x)[:1]), "str"),
        (Fn("len(str(x))", lambda x: len(str(x))), "int"),
    ),
}

# Binary functions: (kind, kind) -> ((f, result kind), ...).
SEQUENCE_MAPS: dict[tuple[Kind, Kind], tuple[tuple[Callable[[Any, Any], Any], Kind], ...]] = {
    ("int", "int"): (
        (Elementwise("+"), "int"), (Elementwise("-"), "int"), (Fn("max(x,y)", max), "int"),
        (Fn("x*y%5", lambda x, y: x * y % 5), "int"), (Elementwise("=="), "bool"),
        (Fn("(x+y)%4", lambda x, y: (x + y) % 4), "int"),
    ),
    ("str", "str"): ((Fn("min(x,y)", min), "str"), (Elementwise("=="), "bool")),
    ("bool", "bool"): (
        (Elementwise("and"), "bool"), (Elementwise("or"), "bool"), (Elementwise("!="), "bool"),
    ),
    ("str", "int"): ((Fn("x if y%2 else 'z'", lambda x, y: x if y % 2 else "z"), "str"),),
    ("num", "num"): ((Elementwise("+"), "num"), (Elementwise("<"), "bool")),
}

# Conversions to a kind, total on every value.
AS_KIND: dict[Kind, Fn] = {
    "str": Fn("str(x)[:1]", lambda x: str(x)[:1]),
    "int": Fn("len(str(x))%3", lambda x: len(str(x)) % 3),
    "bool": Fn("len(str(x))%2==0", lambda x: len(str(x)) % 2 == 0),
    "num": Fn("len(str(x))/2", lambda x: len(str(x)) / 2),
}

PREDICATES: tuple[Fn, ...] = (
    Fn("str(k)<=str(q)", lambda k, q: str(k) <= str(q)),
    Fn("len(str(k)+str(q))%2==0", lambda k, q: len(str(k) + str(q)) % 2 == 0),
)

# Queries that make Select(indices, query, EQ) select exactly one key: permutations.
PERMUTATIONS: tuple[Fn, ...] = (
    Fn("i%n", lambda i, n: i % n),
    Fn("(i+1)%n", lambda i, n: (i + 1) % n),
    Fn("n-1-i", lambda i, n: n - 1 - i),
    Fn("(i-1)%n", lambda i, n: (i - 1) % n),
    Fn("(i+2)%n", lambda i, n: (i + 2) % n),
)

ORDERED = ("int", "bool", "str", "num")

# A numerical Aggregate averages ``hi if str(x) < str(threshold) else lo``.
LEVELS = ((0, 1), (0, 2), (0, 0.5), (0, 1 / 3), (1, 0.25))
THRESHOLDS = ("a", 1, 0, True)


def _kind_of_vocab(vocab: Sequence[Any]) -> Kind:
    if all(isinstance(v, str) for v in vocab):
        return "str"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vocab):
        return "int"
    return "any"


def _two_levels(lo: Any, hi: Any, threshold: Any) -> Fn:
    return Fn(f"{hi!r} if str(x) < {str(threshold)!r} else {lo!r}",
              lambda x: hi if str(x) < str(threshold) else lo)


class _Builder:
    """Draws one program; ``pool`` holds the categorical SOps built so far, to reuse."""

    def __init__(self, draw: st.DrawFn, vocab: Sequence[Any], compilable: bool):
        self.draw = draw
        self.compilable = compilable
        self.vocab_kind = _kind_of_vocab(vocab)
        self.pool: list[tuple[SOp, Kind]] = []

    def choose(self, options: Sequence[Any]) -> Any:
        return self.draw(st.sampled_from(options))

    def one_in(self, n: int) -> bool:
        """True with chance 1/n; shrinks to False."""
        return self.draw(st.integers(0, n - 1)) == n - 1

    def leaf(self) -> tuple[SOp, Kind]:
        options = ["tokens", "indices", "length"] + ([] if self.compilable else ["full"])
        choice = self.choose(options)
        if choice == "full":
            return Full(self.draw(st.integers(0, 2))), "int"
        return {"tokens": (tokens, self.vocab_kind), "indices": (indices, "int"),
                "length": (length, "int")}[choice]

    def sop(self, depth: int) -> tuple[SOp, Kind]:
        """A categorical SOp (numerical ones come only from `numerical_aggregate`)."""
        if depth <= 0:
            return self.leaf()
        # A Map is drawn three times as often as the others, which have two or three
        # children: programs stay about as large as `random_program`'s.
        choice = self.choose(["leaf", "map", "map", "map", "reuse", "seqmap", "aggregate",
                              "width", "linear"] + ([] if self.compilable else ["numagg"]))
        if choice == "leaf" or (choice == "reuse" and not self.pool):
            return self.leaf()
        if choice == "reuse":
            return self.pool[self.draw(st.integers(0, len(self.pool) - 1))]
        if choice == "seqmap":
            out = self.sequence_map(depth)
        elif choice == "aggregate":
            out = self.categorical_aggregate(depth)
        elif choice == "width":
            out = SelectorWidth(self.selector(depth - 1)), "int"
        elif choice == "linear":
            fst = self.as_kind(self.sop(depth - 1), "int")
            snd = self.as_kind(self.sop(depth - 1), "int")
            fst_fac, snd_fac = self.choose([1, 2, -1]), self.choose([1, 0, 3])
            out = LinearSequenceMap(fst, snd, fst_fac, snd_fac), "int"
        elif choice == "numagg":
            out = self.map(*self.numerical_aggregate(depth))  # categorical Map of a numerical SOp
        else:
            out = self.map(*self.sop(depth - 1))
        self.pool.append(out)
        return out

    def map(self, sop: SOp, kind: Kind) -> tuple[SOp, Kind]:
        f, out_kind = self.choose(MAPS[kind] + (() if kind == "any" else MAPS["any"]))
        return Map(f, sop), out_kind

    def as_kind(self, pair: tuple[SOp, Kind], kind: Kind) -> SOp:
        sop, have = pair
        return sop if have == kind else Map(AS_KIND[kind], sop)

    def sequence_map(self, depth: int) -> tuple[SOp, Kind]:
        kinds = [k for k in SEQUENCE_MAPS if not (self.compilable and "num" in k)]
        fst_kind, snd_kind = self.choose(kinds)
        fst = self.as_kind(self.sop(depth - 1), fst_kind)
        snd = self.as_kind(self.sop(depth - 1), snd_kind)
        f, out_kind = self.choose(SEQUENCE_MAPS[(fst_kind, snd_kind)])
        return SequenceMap(f, fst, snd), out_kind

    def select(self, depth: int) -> Selector:
        keys, kind = self.sop(depth - 1)
        if kind not in ORDERED:
            keys, kind = self.as_kind((keys, kind), "str"), "str"
        queries = self.as_kind(self.sop(depth - 1), kind)
        predicates = list(Comparison) + ([] if self.compilable else list(PREDICATES))
        return Select(keys, queries, self.choose(predicates))

    def one_hot_selector(self, depth: int) -> Selector:
        """A selector that selects exactly one key per query (at most one after `&`)."""
        sel: Selector = Select(indices, SequenceMap(self.choose(PERMUTATIONS), indices, length),
                               Comparison.EQ)
        if not self.compilable and self.one_in(3):
            sel = SelectorAnd(sel, self.selector(depth - 1))
        return sel

    def selector(self, depth: int) -> Selector:
        if self.compilable or depth <= 1:
            return self.select(max(depth, 1))
        op = self.choose(["select", "and", "or", "not"])
        if op == "select":
            return self.select(depth)
        if op == "not":
            return SelectorNot(self.selector(depth - 1))
        pair = SelectorAnd if op == "and" else SelectorOr
        return pair(self.selector(depth - 1), self.selector(depth - 1))

    def categorical_aggregate(self, depth: int) -> tuple[SOp, Kind]:
        sop, kind = self.sop(depth - 1)
        if self.compilable:
            return Aggregate(self.one_hot_selector(depth), sop, None), kind
        spread = self.one_in(3)
        if spread:
            # Several selected values: a mean of numbers (off the value table) or, for
            # other values, the ValueError that evaluate raises too.
            sop = self.as_kind((sop, kind), self.choose(["int", "bool", kind]))
            kind = "num" if kind in ("int", "bool", "num") else kind
            selector = self.selector(depth - 1)
        else:
            selector = self.one_hot_selector(depth)
        if kind == "num" or (spread and kind in ("int", "bool")):
            default = self.choose([None, 0, 0.5])
        else:
            default = self.choose([None, "a", "z"] if kind == "str" else [None, 0, 1, "a"])
        return Aggregate(selector, sop, default), kind if default is None else "any"

    def numerical_aggregate(self, depth: int) -> tuple[SOp, Kind]:
        inner, _ = self.sop(depth - 1)
        lo, hi = LEVELS[0] if self.compilable else self.choose(LEVELS)
        values = numerical(Map(_two_levels(lo, hi, self.choose(THRESHOLDS)), inner))
        default = 0 if self.compilable else self.choose([0, 1])
        return numerical(Aggregate(self.selector(depth - 1), values, default)), "num"


class Case:
    """A drawn program and its vocabulary; unpacks as ``program, vocab`` and prints as
    a listing, one line per node, so a shrunk failure reads as a program."""

    __slots__ = ("program", "vocab")

    def __init__(self, program: SOp, vocab: tuple[Any, ...]):
        self.program = program
        self.vocab = vocab

    def __iter__(self) -> Iterator[Any]:
        return iter((self.program, self.vocab))

    def __repr__(self) -> str:
        return f"vocab {self.vocab!r}:\n{listing(self.program)}"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # hypothesis's printer
        for i, line in enumerate(repr(self).splitlines()):
            if i:
                p.break_()
            p.text(line)


@st.composite
def programs(
    draw: st.DrawFn,
    *,
    vocab: Sequence[Any] | None = None,
    max_depth: int = 8,
    compilable: bool | None = None,
) -> Case:
    """A random well-typed RASP program and its vocabulary (a `Case`).

    ``compilable=True`` keeps to what `rasplang.compile` accepts, as
    ``random_program(compilable=True)`` does: categorical Maps, SequenceMaps and
    LinearSequenceMaps, Selects with a Comparison, categorical Aggregates over a one-hot
    selector with default None, SelectorWidth; a numerical output is an Aggregate of a
    numerical 0/1 Map (default 0) or a numerical LinearSequenceMap of two of them.
    ``compilable=False`` adds Full, callable predicates, ``&``/``|``/``~`` selectors,
    spread Aggregates with defaults, other numerical levels and Maps of numerical
    Aggregates. ``None`` draws which.
    """
    vocab = tuple(vocab) if vocab is not None else draw(st.sampled_from(VOCABS))
    if compilable is None:
        compilable = draw(st.booleans())
    depth = draw(st.integers(1, max_depth))
    builder = _Builder(draw, vocab, compilable)
    output = draw(st.integers(0, 7))  # shrinks to 0: a categorical output
    if output == 6:
        return Case(builder.numerical_aggregate(depth)[0], vocab)
    if output == 7:
        fst, _ = builder.numerical_aggregate(depth - 1)
        snd, _ = builder.numerical_aggregate(depth - 1)
        fst_fac, snd_fac = builder.choose([1, 2, -1]), builder.choose([1, 0, 0.5])
        return Case(numerical(LinearSequenceMap(fst, snd, fst_fac, snd_fac)), vocab)
    return Case(builder.sop(depth)[0], vocab)


# ------------------------------------------------------------------------- listing

def _args(node: RASPExpr, name: dict[RASPExpr, str]) -> str:
    if isinstance(node, Map):
        return f"{node.f!r}, {name[node.inner]}"
    if isinstance(node, SequenceMap):
        return f"{node.f!r}, {name[node.fst]}, {name[node.snd]}"
    if isinstance(node, LinearSequenceMap):
        return f"{name[node.fst]}, {name[node.snd]}, {node.fst_fac!r}, {node.snd_fac!r}"
    if isinstance(node, Aggregate):
        return f"{name[node.selector]}, {name[node.sop]}, default={node.default!r}"
    if isinstance(node, Select):
        return f"{name[node.keys]}, {name[node.queries]}, {node.predicate!r}"
    if isinstance(node, Full):
        return repr(node.fill)
    return ", ".join(name[child] for child in node.children)


def listing(program: RASPExpr) -> str:
    """``program`` as one line per node, children first, with short local names:
    ``s2 = Map(x + 1, tokens)``, ``sel1 = Select(indices, s2, Comparison.LT)``."""
    name: dict[RASPExpr, str] = {}
    count = {"s": 0, "sel": 0}
    lines = []
    for node in topological_order(program):
        if isinstance(node, (TokensType, IndicesType, LengthType)):
            name[node] = node.label
            continue
        prefix = "sel" if isinstance(node, Selector) else "s"
        count[prefix] += 1
        name[node] = f"{prefix}{count[prefix]}"
        text = f"{type(node).__name__}({_args(node, name)})"
        if isinstance(node, SOp) and is_numerical(node):
            text = f"numerical({text})"
        lines.append(f"{name[node]} = {text}")
    return "\n".join(lines) if lines else name[program]


def inputs(
    vocab: Sequence[Any], max_seq_len: int, *, min_size: int = 1, max_size: int = 30
) -> st.SearchStrategy[list[list[Any]]]:
    """Batches of sequences over ``vocab`` with lengths 0..``max_seq_len``."""
    sequence = st.lists(st.sampled_from(list(vocab)), min_size=0, max_size=max_seq_len)
    return st.lists(sequence, min_size=min_size, max_size=max_size)


def backend_params() -> list[Any]:
    """``numpy``, ``numba`` and ``cupy`` (marked gpu, skipped without CuPy and a GPU)."""
    import pytest

    from rasplang.interpreter.kernels_cupy import cupy_available

    return [
        "numpy",
        "numba",
        pytest.param("cupy", marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU"),
        ]),
    ]
