"""Random, well-typed RASP programs for property-based tests and fuzzing.

`random_program` draws programs from a numpy generator, for seeded campaigns
(``make fuzz``, the GPU tests, the tutorial); the property tests build theirs from
hypothesis draws instead (``tests/strategies.py``), so failures shrink. Every SOp it
builds carries a *kind* that says what its values are (``int``, ``bool``, ``str``,
``num`` for floats, ``any``), and
functions are drawn from families that are total on that kind, so programs rarely
raise; when they do (a None reaching a Select, several different strings under one
Aggregate), `rasplang.evaluate` raises too and tests compare that both raise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rasplang.analysis import typed_key
from rasplang.nodes import (
    Aggregate,
    Comparison,
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

Kind = str  # "int", "bool", "str", "num", "any"

# Unary function families: kind -> [(name, f, result kind)]. Total on their kind.
_MAPS: dict[Kind, list[tuple[str, Callable[[Any], Any], Kind]]] = {
    "int": [
        ("x+1", lambda x: x + 1, "int"), ("x-1", lambda x: x - 1, "int"),
        ("x%3", lambda x: x % 3, "int"), ("2*x%7", lambda x: 2 * x % 7, "int"),
        ("min(x,2)", lambda x: min(x, 2), "int"), ("abs(x-2)", lambda x: abs(x - 2), "int"),
        ("x>1", lambda x: x > 1, "bool"), ("x%2==0", lambda x: x % 2 == 0, "bool"),
        ("x/2", lambda x: x / 2, "num"), ("str(x)", lambda x: str(x), "str"),
    ],
    "bool": [
        ("not x", lambda x: not x, "bool"), ("int(x)", lambda x: int(x), "int"),
        ("'t' if x else 'f'", lambda x: "t" if x else "f", "str"),
    ],
    "str": [
        ("x=='a'", lambda x: x == "a", "bool"), ("x<'b'", lambda x: x < "b", "bool"),
        ("len(x)", lambda x: len(x), "int"), ("x[:1]", lambda x: x[:1], "str"),
        ("swap a/b", lambda x: {"a": "b", "b": "a"}.get(x, x), "str"),
        ("ord%3", lambda x: ord(x[0]) % 3 if x else 0, "int"),
    ],
    "num": [
        ("x>0.5", lambda x: x > 0.5, "bool"), ("round(4x)", lambda x: round(4 * x), "int"),
        ("x*2", lambda x: x * 2, "num"), ("x==0", lambda x: x == 0, "bool"),
    ],
    "any": [
        ("str(x)[:1]", lambda x: str(x)[:1], "str"), ("len(str(x))", lambda x: len(str(x)), "int"),
    ],
}

# Binary families: (kind, kind) -> [(name, f, result kind)].
_SEQUENCE_MAPS: dict[tuple[Kind, Kind], list[tuple[str, Callable[[Any, Any], Any], Kind]]] = {
    ("int", "int"): [
        ("x+y", lambda x, y: x + y, "int"), ("x-y", lambda x, y: x - y, "int"),
        ("max", lambda x, y: max(x, y), "int"), ("x*y%5", lambda x, y: x * y % 5, "int"),
        ("x==y", lambda x, y: x == y, "bool"), ("(x+y)%n", lambda x, y: (x + y) % 4, "int"),
    ],
    ("str", "str"): [
        ("min", lambda x, y: min(x, y), "str"), ("x==y", lambda x, y: x == y, "bool"),
    ],
    ("bool", "bool"): [
        ("and", lambda x, y: x and y, "bool"), ("or", lambda x, y: x or y, "bool"),
        ("x!=y", lambda x, y: x != y, "bool"),
    ],
    ("str", "int"): [("x if y%2 else 'z'", lambda x, y: x if y % 2 else "z", "str")],
    ("num", "num"): [("x+y", lambda x, y: x + y, "num"), ("x<y", lambda x, y: x < y, "bool")],
}

_PREDICATES: list[tuple[str, Callable[[Any, Any], bool]]] = [
    ("str(k)<=str(q)", lambda k, q: str(k) <= str(q)),
    ("len(str(k)+str(q))%2==0", lambda k, q: len(str(k) + str(q)) % 2 == 0),
]

_ORDERED = {"int", "bool", "str", "num"}


def _kind_of_vocab(vocab: Sequence[Any]) -> Kind:
    if all(isinstance(v, str) for v in vocab):
        return "str"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vocab):
        return "int"
    return "any"


class _Generator:
    def __init__(self, rng: np.random.Generator, vocab: Sequence[Any], compilable: bool):
        self.rng = rng
        self.compilable = compilable
        self.vocab_kind = _kind_of_vocab(vocab)
        self.pool: list[tuple[SOp, Kind, bool]] = []  # (sop, kind, numerical)

    def pick(self, items: Sequence[Any]) -> Any:
        return items[int(self.rng.integers(len(items)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def leaf(self) -> tuple[SOp, Kind]:
        options: list[tuple[SOp, Kind]] = [
            (tokens, self.vocab_kind), (tokens, self.vocab_kind), (indices, "int"),
            (length, "int"),
        ]
        if not self.compilable:
            options.append((Full(int(self.rng.integers(3))), "int"))
        return self.pick(options)

    def sop(self, depth: int) -> tuple[SOp, Kind]:
        """A categorical SOp (numerical ones come only from `numerical_aggregate`)."""
        if depth <= 0 or self.chance(0.15):
            return self.leaf()
        reusable = [(s, k) for s, k, num in self.pool if not num]
        if reusable and self.chance(0.15):
            return self.pick(reusable)
        choice = self.pick(["map", "map", "seqmap", "seqmap", "aggregate", "aggregate",
                            "width", "linear", "numagg"])
        if choice == "map":
            out = self.map(*self.sop(depth - 1))
        elif choice == "seqmap":
            out = self.sequence_map(depth)
        elif choice == "aggregate":
            out = self.categorical_aggregate(depth)
        elif choice == "width":
            out = (SelectorWidth(self.selector(depth - 1)), "int")
        elif choice == "linear" and not self.compilable:
            a, b = self.as_kind(self.sop(depth - 1), "int"), self.as_kind(self.sop(depth - 1),
                                                                          "int")
            fa, fb = self.pick([1, 2, -1]), self.pick([1, 0, 3])
            out = (LinearSequenceMap(a, b, fa, fb), "int")
        elif choice == "numagg" and not self.compilable:
            agg = self.numerical_aggregate(depth)
            out = self.map(*agg)  # a categorical Map reading a numerical node
        else:
            out = self.map(*self.sop(depth - 1))
        self.pool.append((out[0], out[1], False))
        return out

    def map(self, sop: SOp, kind: Kind) -> tuple[SOp, Kind]:
        _, f, out_kind = self.pick(_MAPS[kind] + ([] if kind == "any" else _MAPS["any"]))
        return Map(f, sop), out_kind

    def as_kind(self, pair: tuple[SOp, Kind], kind: Kind) -> SOp:
        """Convert an SOp to ``kind`` with a total Map (``str`` and ``int`` always work)."""
        sop, have = pair
        if have == kind:
            return sop
        if kind == "str":
            return Map(lambda x: str(x)[:1], sop)
        if kind == "int":
            return Map(lambda x: len(str(x)) % 3, sop)
        if kind == "bool":
            return Map(lambda x: len(str(x)) % 2 == 0, sop)
        return Map(lambda x: len(str(x)) / 2, sop)

    def sequence_map(self, depth: int) -> tuple[SOp, Kind]:
        (fst_kind, snd_kind) = self.pick(list(_SEQUENCE_MAPS))
        if self.compilable and "num" in (fst_kind, snd_kind):
            fst_kind, snd_kind = "int", "int"
        fst = self.as_kind(self.sop(depth - 1), fst_kind)
        snd = self.as_kind(self.sop(depth - 1), snd_kind)
        _, f, out_kind = self.pick(_SEQUENCE_MAPS[(fst_kind, snd_kind)])
        return SequenceMap(f, fst, snd), out_kind

    def select(self, depth: int) -> Selector:
        keys, kind = self.sop(depth - 1)
        if kind not in _ORDERED:
            keys, kind = self.as_kind((keys, kind), "str"), "str"
        queries = self.as_kind(self.sop(depth - 1), kind)
        if not self.compilable and self.chance(0.2):
            _, predicate = self.pick(_PREDICATES)
            return Select(keys, queries, predicate)
        return Select(keys, queries, self.pick(list(Comparison)))

    def one_hot_selector(self, depth: int) -> Selector:
        """A selector that selects exactly one key per query: a permutation of indices."""
        shift = int(self.rng.integers(0, 3))
        query = self.pick([
            SequenceMap(lambda i, n, s=shift: (i + s) % n, indices, length),
            SequenceMap(lambda i, n: n - 1 - i, indices, length),
            SequenceMap(lambda i, n, s=shift: (i - s) % n, indices, length),
        ])
        sel: Selector = Select(indices, query, Comparison.EQ)
        if not self.compilable and self.chance(0.3):
            sel = SelectorAnd(sel, self.selector(depth - 1))  # at most one
        return sel

    def selector(self, depth: int) -> Selector:
        if self.compilable or depth <= 1 or self.chance(0.5):
            return self.select(max(depth, 1))
        op = self.pick(["and", "or", "not"])
        if op == "not":
            return SelectorNot(self.selector(depth - 1))
        cls = SelectorAnd if op == "and" else SelectorOr
        return cls(self.selector(depth - 1), self.selector(depth - 1))

    def categorical_aggregate(self, depth: int) -> tuple[SOp, Kind]:
        sop, kind = self.sop(depth - 1)
        if self.compilable:
            return Aggregate(self.one_hot_selector(depth), sop, None), kind
        spread = self.chance(0.35)
        if spread:
            # Several selected values: means of numbers (off the value table) or, for
            # non-numbers, the ValueError evaluate raises too.
            sop = self.as_kind((sop, kind), self.pick(["int", "int", "bool", kind]))
            kind = "num" if kind in ("int", "bool", "num") else kind
            selector = self.selector(depth - 1)
        else:
            selector = self.one_hot_selector(depth)
        default = self.pick([None, 0, 1, "a"] if kind != "str" else [None, "a", "z"])
        if kind == "num" or (spread and kind in ("int", "bool")):
            default = self.pick([None, 0, 0.5])
        return Aggregate(selector, sop, default), kind if default is None else "any"

    def numerical_aggregate(self, depth: int) -> tuple[SOp, Kind]:
        inner, _ = self.sop(depth - 1)
        if self.compilable:
            values = (0, 1)
        else:
            values = self.pick([(0, 1), (0, 1), (0, 2), (0, 0.5), (0, 1 / 3), (1, 0.25)])
        threshold = self.pick(["a", 1, 0, True])

        def f(x, lo=values[0], hi=values[1], c=threshold):
            return hi if str(x) < str(c) else lo

        sop = numerical(Map(f, inner))
        default = 0 if self.compilable else self.pick([0, 0, 1])
        sel = self.selector(depth - 1)
        agg = numerical(Aggregate(sel, sop, default))
        self.pool.append((agg, "num", True))
        return agg, "num"


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
    gen = _Generator(rng, list(vocab), compilable)
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
