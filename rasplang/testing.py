"""Random, well-typed RASP programs for property-based tests and fuzzing.

`ProgramBuilder` grows a program from a source of choices: `random_program` draws them
from a numpy generator, for seeded campaigns (``make fuzz``, the GPU tests, the
tutorial); the property tests draw them from hypothesis (``tests/strategies.py``), so
failures shrink. Every SOp it builds carries a *kind* that says what its values are
(``int``, ``bool``, ``str``, ``num`` for floats, ``any``), and functions are drawn from
menus that are total on that kind and print as their source (`Fn`), so programs rarely
raise; when they do (a None reaching a Select, several different strings under one
Aggregate), `rasplang.evaluate` raises too and tests compare that both raise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np

from rasplang.analysis import typed_key
from rasplang.nodes import (
    Aggregate,
    Comparison,
    Elementwise,
    Full,
    LinearSequenceMap,
    Map,
    Select,
    Selector,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    SOp,
    indices,
    length,
    numerical,
    tokens,
)

Kind = str  # what an SOp's values are: "int", "bool", "str", "num" (floats), "any"


@attrs.frozen(repr=False)
class Fn:
    """A function from the menus below; prints as its source text, e.g. ``min(x,2)``."""

    text: str
    fn: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __repr__(self) -> str:
        return self.text


def _c(op: str, const: Any) -> Elementwise:
    """``x OP const``, as ``sop OP const`` builds it."""
    return Elementwise(op, const, has_const=True)


# The menus. Each starts with its simplest choice (hypothesis shrinks towards the first).
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

ORDERED = ("int", "bool", "str", "num")  # kinds a Comparison can order

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


class ProgramBuilder:
    """Grows one random well-typed program from a source of choices (abstract: a
    subclass says how to `pick` and how to draw a `chance`). `random_program` draws
    from a numpy generator; the property tests' strategy (``tests/strategies.py``) from
    hypothesis, so a failing program shrinks.

    ``compilable`` keeps to what `rasplang.compile` accepts (see `random_program`);
    ``linear`` allows LinearSequenceMaps. ``pool`` holds the categorical SOps built so
    far, to reuse.
    """

    def __init__(self, vocab: Sequence[Any], *, compilable: bool, linear: bool):
        self.compilable = compilable
        self.linear = linear
        self.vocab_kind = _kind_of_vocab(vocab)
        self.pool: list[tuple[SOp, Kind]] = []

    def pick(self, options: Sequence[Any]) -> Any:
        """One of ``options`` (a subclass should shrink towards the first)."""
        raise NotImplementedError

    def chance(self, p: float) -> bool:
        """True with probability ``p`` (a subclass should shrink towards False)."""
        raise NotImplementedError

    def leaf(self) -> tuple[SOp, Kind]:
        options: list[tuple[SOp, Kind] | None] = [
            (tokens, self.vocab_kind), (tokens, self.vocab_kind), (indices, "int"),
            (length, "int")]
        choice = self.pick(options + ([] if self.compilable else [None]))
        return choice or (Full(self.pick((0, 1, 2))), "int")

    def sop(self, depth: int) -> tuple[SOp, Kind]:
        """A categorical SOp (numerical ones come only from `numerical_aggregate`)."""
        if depth <= 0 or self.chance(0.15):
            return self.leaf()
        if self.pool and self.chance(0.15):
            return self.pick(self.pool)
        choice = self.pick(["map", "map", "seqmap", "seqmap", "aggregate", "aggregate",
                            "width", "linear", "numagg"])
        if choice == "seqmap":
            out = self.sequence_map(depth)
        elif choice == "aggregate":
            out = self.categorical_aggregate(depth)
        elif choice == "width":
            out = SelectorWidth(self.selector(depth - 1)), "int"
        elif choice == "linear" and self.linear:
            fst = self.as_kind(self.sop(depth - 1), "int")
            snd = self.as_kind(self.sop(depth - 1), "int")
            fst_fac, snd_fac = self.pick([1, 2, -1]), self.pick([1, 0, 3])
            out = LinearSequenceMap(fst, snd, fst_fac, snd_fac), "int"
        elif choice == "numagg" and not self.compilable:
            out = self.map(*self.numerical_aggregate(depth))  # categorical Map of a numerical SOp
        else:
            out = self.map(*self.sop(depth - 1))
        self.pool.append(out)
        return out

    def map(self, sop: SOp, kind: Kind) -> tuple[SOp, Kind]:
        f, out_kind = self.pick(MAPS[kind] + (() if kind == "any" else MAPS["any"]))
        return Map(f, sop), out_kind

    def as_kind(self, pair: tuple[SOp, Kind], kind: Kind) -> SOp:
        """``pair``'s SOp converted to ``kind`` with a total Map."""
        sop, have = pair
        return sop if have == kind else Map(AS_KIND[kind], sop)

    def sequence_map(self, depth: int) -> tuple[SOp, Kind]:
        fst_kind, snd_kind = self.pick(list(SEQUENCE_MAPS))
        if self.compilable and "num" in (fst_kind, snd_kind):
            fst_kind, snd_kind = "int", "int"
        fst = self.as_kind(self.sop(depth - 1), fst_kind)
        snd = self.as_kind(self.sop(depth - 1), snd_kind)
        f, out_kind = self.pick(SEQUENCE_MAPS[(fst_kind, snd_kind)])
        return SequenceMap(f, fst, snd), out_kind

    def select(self, depth: int) -> Selector:
        keys, kind = self.sop(depth - 1)
        if kind not in ORDERED:
            keys, kind = self.as_kind((keys, kind), "str"), "str"
        queries = self.as_kind(self.sop(depth - 1), kind)
        if not self.compilable and self.chance(0.2):
            return Select(keys, queries, self.pick(PREDICATES))
        return Select(keys, queries, self.pick(list(Comparison)))

    def one_hot_selector(self, depth: int) -> Selector:
        """A selector that selects exactly one key per query (at most one after `&`)."""
        sel: Selector = Select(indices, SequenceMap(self.pick(PERMUTATIONS), indices, length),
                               Comparison.EQ)
        if not self.compilable and self.chance(0.3):
            sel = SelectorAnd(sel, self.selector(depth - 1))
        return sel

    def selector(self, depth: int) -> Selector:
        if self.compilable or depth <= 1 or not self.chance(0.5):
            return self.select(max(depth, 1))
        op = self.pick(["not", "and", "or"])
        if op == "not":
            return SelectorNot(self.selector(depth - 1))
        pair = SelectorAnd if op == "and" else SelectorOr
        return pair(self.selector(depth - 1), self.selector(depth - 1))

    def categorical_aggregate(self, depth: int) -> tuple[SOp, Kind]:
        sop, kind = self.sop(depth - 1)
        if self.compilable:
            return Aggregate(self.one_hot_selector(depth), sop, None), kind
        spread = self.chance(0.35)
        if spread:
            # Several selected values: a mean of numbers (off the value table) or, for
            # other values, the ValueError that evaluate raises too.
            sop = self.as_kind((sop, kind), self.pick(["int", "int", "bool", kind]))
            kind = "num" if kind in ("int", "bool", "num") else kind
            selector = self.selector(depth - 1)
        else:
            selector = self.one_hot_selector(depth)
        if kind == "num":
            default = self.pick([None, 0, 0.5])
        else:
            default = self.pick([None, "a", "z"] if kind == "str" else [None, 0, 1, "a"])
        return Aggregate(selector, sop, default), kind if default is None else "any"

    def numerical_aggregate(self, depth: int) -> tuple[SOp, Kind]:
        inner, _ = self.sop(depth - 1)
        lo, hi = LEVELS[0] if self.compilable else self.pick(LEVELS)
        values = numerical(Map(_two_levels(lo, hi, self.pick(THRESHOLDS)), inner))
        default = 0 if self.compilable else self.pick([0, 1])
        return numerical(Aggregate(self.selector(depth - 1), values, default)), "num"


class _NumpyBuilder(ProgramBuilder):
    """`ProgramBuilder` drawing from a numpy generator."""

    def __init__(self, rng: np.random.Generator, vocab: Sequence[Any], compilable: bool):
        super().__init__(vocab, compilable=compilable, linear=not compilable)
        self.rng = rng

    def pick(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)


def random_program(
    rng: np.random.Generator,
    *,
    vocab: Sequence[Any],
    max_depth: int = 4,
    compilable: bool = True,
) -> SOp:
    """A random well-typed RASP program over ``vocab`` with nesting up to ``max_depth``.

    Builds Maps, SequenceMaps, Selects with every Comparison (and callable predicates),
    selector and/or/not, categorical and numerical Aggregates and SelectorWidths.
    ``compilable=True`` restricts to what tracr compiles: categorical Maps and
    SequenceMaps, Selects with a Comparison on categorical SOps, categorical Aggregates
    whose selector selects exactly one key (default None), numerical Aggregates of a
    numerical 0/1 Map with default 0 (only as the program's output), SelectorWidth; no
    constants, no composite selectors.

    >>> import numpy as np
    >>> prog = random_program(np.random.default_rng(0), vocab=["a", "b"], max_depth=3)
    >>> isinstance(prog, SOp)
    True
    """
    if max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, got {max_depth}")
    gen = _NumpyBuilder(rng, list(vocab), compilable)
    if gen.chance(0.25):
        return gen.numerical_aggregate(max_depth)[0]
    return gen.sop(max_depth)[0]


def same_output(got: Any, expected: Any, *, tol: float = 1e-12) -> bool:
    """Whether two outputs of `rasplang.evaluate` agree: same nesting, same types (``True``
    is not ``1``, ``1.0`` is not ``1``), equal values, floats within ``tol`` relative to
    ``max(1, |expected|)``. With ``tol=0`` the agreement is bit for bit: the sign of zero
    and the types inside tuples count too (`rasplang.analysis.typed_key`)."""
    if isinstance(expected, list):
        return (isinstance(got, list) and len(got) == len(expected)
                and all(same_output(g, e, tol=tol) for g, e in zip(got, expected)))
    if type(got) is not type(expected):
        return False
    if isinstance(expected, float):
        if math.isnan(expected):
            return math.isnan(got)
        if tol == 0:
            return typed_key(got) == typed_key(expected)
        return got == expected or abs(got - expected) <= tol * max(1.0, abs(expected))
    if tol == 0:
        return bool(typed_key(got) == typed_key(expected))
    return bool(got == expected)


def oracle_outputs(program: Any, inputs: Sequence[Sequence[Any]], causal: bool = False) -> list:
    """``evaluate(program, x, causal)`` for each input, or the exception it raised."""
    from rasplang.evaluator import evaluate

    out: list[Any] = []
    for xs in inputs:
        try:
            out.append(evaluate(program, xs, causal=causal))
        except Exception as exc:
            out.append(exc)
    return out


def assert_batch_matches_oracle(
    run: Callable[[list], list],
    inputs: Sequence[Sequence[Any]],
    expected: Sequence[Any],
) -> None:
    """Check a batched runner against per-input oracle results (`oracle_outputs`).

    If some input makes `evaluate` raise, ``run(inputs)`` must raise a ValueError that
    names the first such input (``input {i} of the batch``) and repeats evaluate's
    message; then the inputs that do not raise are compared one by one with
    `same_output`, bit for bit (the interpreter's means are exact).
    """
    inputs = [list(x) for x in inputs]
    bad = [i for i, e in enumerate(expected) if isinstance(e, Exception)]
    if bad:
        first = bad[0]
        try:
            run(inputs)
        except ValueError as exc:
            text = str(exc)
            if f"input {first} of the batch" not in text or str(expected[first]) not in text:
                raise AssertionError(
                    f"expected the error of input {first} ({expected[first]}), got: {text}"
                ) from exc
        else:
            raise AssertionError(f"input {first} {inputs[first]!r} makes evaluate raise "
                                 f"{expected[first]!r} but the batch did not raise")
        keep = [i for i in range(len(inputs)) if i not in set(bad)]
        inputs = [inputs[i] for i in keep]
        expected = [expected[i] for i in keep]
    got = run(inputs) if inputs else []
    if len(got) != len(expected):
        raise AssertionError(f"got {len(got)} outputs for {len(expected)} inputs")
    for i, (g, e) in enumerate(zip(got, expected)):
        if not same_output(g, e, tol=0.0):
            raise AssertionError(f"input {inputs[i]!r}: got {g!r}, evaluate gives {e!r}")
