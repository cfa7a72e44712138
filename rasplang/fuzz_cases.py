"""The adversarial fuzzer's cases: random programs aimed at the corners where a compiler
can be silently wrong (`rasplang.fuzzing` checks and runs them).

Written independently of `rasplang.testing` (whose programs are well-typed and total),
this generator draws one theme per case:

- ``ulp``: numerical SOps built with float factors (0.1, 1/3, 1 + 2**-52) whose value
  sets hold values within an ulp of each other, then read categorically;
- ``twins``: 1, 1.0 and True (and 0.0 / -0.0) in one value set, read by functions that
  tell them apart (``str``, ``type``, ``isinstance``);
- ``tuples``: tuples as tokens and as values;
- ``wide``: vocabularies of 30 to 60 tokens;
- ``partial``: functions that return None, NaN or lists, or raise on some inputs;
- ``edge``: 1e300, 5e-324, inf, 2**53 and 10**400;

and every theme mixes in causal compilation, numerical and categorical Aggregates,
selector ``&``, ``|``, ``~``, SelectorWidth and ``length``.

A `Case` is a description (seed, index, vocabulary and program as Python source), so
that a case travels to a worker process as text and its reproducer is exactly the code
that was run: `Case.build` executes that source with `rasplang`'s names in scope.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

THEMES = ("ulp", "twins", "tuples", "wide", "partial", "edge")
#: The model size limit the cases compile with: compiling holds an MLP's weights twice
#: while it builds them and the model's once, so a 1 GiB limit keeps a case well inside
#: the campaign's 4 GiB address space (the default, 4 GiB, would not).
CASE_MAX_BYTES = 2**30

# --------------------------------------------------------------------------- tables
# Kinds steer which functions read a value: int, float, bool, str, tuple, twin (a mix
# of 1 / 1.0 / True), big (huge ints), list, any. Functions need not be total: a case
# where `evaluate` raises on an input skips that input.
_NUMERIC = frozenset({"int", "float", "bool", "twin", "big"})

_UNARY: dict[str, list[tuple[str, str]]] = {
    "int": [("x + 1", "int"), ("x % 3", "int"), ("x * 0.1", "float"), ("x / 3", "float"),
            ("0.1 * x + 0.2", "float"), ("x == 1", "bool"), ("x > 1", "bool"),
            ("[1, 1.0, True][x % 3]", "twin"), ("(x, x % 2)", "tuple"), ("-x", "int")],
    "float": [("x", "float"), ("round(x, 1)", "float"), ("x == 0.3", "bool"),
              ("int(x)", "int"), ("x * 10", "float"), ("math.floor(x * 10)", "int"),
              ("x > 0.3", "bool"), ("x + 1e-16", "float"), ("x - 0.1", "float"),
              ("float(x).hex()", "str"), ("float(x).is_integer()", "bool")],
    "bool": [("not x", "bool"), ("int(x)", "int"), ("x + 0.5", "float"), ("x * 1.0", "float")],
    "twin": [("type(x).__name__", "str"), ("isinstance(x, int)", "bool"),
             ("x is True", "bool"), ("repr(x)", "str"), ("x == 1", "bool"),
             ("x * 2", "twin"), ("x / 2", "float"), ("isinstance(x, bool)", "bool"),
             ("{1: 'one', 0: 'zero'}.get(x, 'other')", "str")],
    "str": [("x + x", "str"), ("ord(x[0]) % 4", "int"), ("x.upper()", "str"),
            ("x < 'm'", "bool"), ("{'a': 1, 'b': 1.0, 'c': True}.get(x, 0)", "twin"),
            ("len(x) * 0.1", "float")],
    "tuple": [("x[0]", "any"), ("len(x)", "int"), ("x + x", "tuple"), ("x[::-1]", "tuple"),
              ("x[-1] if x else None", "any"), ("x > (1,)", "bool")],
    "big": [("x - 10 ** 400", "int"), ("x % 7", "int"), ("x > 10 ** 400", "bool"),
            ("str(x)[-3:]", "str"), ("x // 10 ** 399", "int"), ("float(x)", "float")],
    "list": [("len(x)", "int"), ("x[0]", "any")],
    "any": [],
}
# Read any value; "same" keeps the argument's kind.
_GENERIC_UNARY = [("x", "same"), ("str(x)", "str"), ("(x,)", "tuple"),
                  ("type(x).__name__", "str"), ("x == x", "bool")]
_PARTIAL_UNARY = [("None if str(x) < 'b' else x", "same"),
                  ("float('nan') if str(x) < '1' else 0.5", "float"), ("[x]", "list"),
                  ("1 // (len(str(x)) - 1)", "int"), ("{'a': 0, 0: 1}[x]", "int"),
                  ("x if str(x) != 'b' else []", "same"), ("math.nan", "float"),
                  ("float('inf') if x == 0 else 1.0", "float"), ("None", "any")]
_EDGE_UNARY = [("10 ** 400 + len(str(x))", "big"), ("1e300 * len(str(x))", "float"),
               ("5e-324 * len(str(x))", "float"), ("-0.0 if str(x) < 'b' else 0.0", "float"),
               ("float('inf') if str(x) < 'b' else 1e308", "float"),
               ("2 ** 53 + len(str(x))", "int"), ("float(2 ** 53 + len(str(x)))", "float"),
               ("1e308 * len(str(x))", "float")]

# Binary functions on two numbers; "join" is the wider of the two kinds.
_NUMERIC_BINARY = [("x + y", "join"), ("x * y", "join"), ("x - y", "join"),
                   ("x + 0.1 * y", "float"), ("x == y", "bool"), ("x < y", "bool"),
                   ("max(x, y)", "join"), ("x / (abs(y) + 1)", "float"), ("(x, y)", "tuple"),
                   ("x if x > y else float(y)", "twin"), ("0.1 * x + 0.2 * y", "float"),
                   ("x * y / 3", "float")]
_GENERIC_BINARY = [("(x, y)", "tuple"), ("x == y", "bool"), ("str(x) + str(y)", "str"),
                   ("x if y else None", "same"), ("type(x) is type(y)", "bool")]
_PARTIAL_BINARY = [("[x, y]", "list"), ("x // y", "join"), ("x if x != y else float('nan')",
                                                              "same")]

_FACTORS = ["1", "-1", "2", "0.5", "0.1", "0.2", "0.3", "1 / 3", "0.7", "3", "1e-16",
            "1 + 2 ** -52"]
_EDGE_FACTORS = ["1e300", "1e-300", "10 ** 400", "2 ** 53", "1e308"]
_COMPARISONS = ["EQ", "LT", "LEQ", "GT", "GEQ", "NEQ", "TRUE", "FALSE"]
_PREDICATES = ["lambda k, q: k == q", "lambda k, q: str(k) < str(q)",
               "lambda k, q: type(k) == type(q)", "lambda k, q: abs(k - q) < 0.15"]
_DEFAULTS = ["None", "0", "1", "0.5", "'x'", "True", "0.1"]

# Vocabularies per theme, as (source text, kind): 10**400 would print 401 digits.
_VOCABS: dict[str, list[tuple[str, str]]] = {
    "ulp": [("['a']", "str"), ("['a', 'b']", "str"), ("[0, 1]", "int"), ("[1, 2, 3]", "int")],
    # [1, 1.0, True] has equal tokens: compile must refuse it, not merge them.
    "twins": [("[0, 1, 2]", "int"), ("[0, 1, 2]", "int"), ("[1, 1.0, True]", "twin"),
              ("[1, 2.0, 'a']", "twin"), ("[2, 2.5, True]", "twin"), ("[-0.0, 1, 2]", "twin"),
              ("[True, False]", "bool")],
    "tuples": [("[(0, 1), (1, 0), ('a',)]", "tuple"), ("[(1,), (1, 1), (2,)]", "tuple"),
               ("[(0,), (1.0,), (), (True, 2)]", "tuple"), ("[(1, 'a'), (1, 'b')]", "tuple")],
    "wide": [("list(range(40))", "int"),
             ("[chr(97 + i % 26) * (1 + i // 26) for i in range(35)]", "str"),
             ("[i / 10 for i in range(31)]", "float"), ("list(range(-15, 16))", "int")],
    "partial": [("['a', 'b', 'c']", "str"), ("[0, 1, 2]", "int"), ("['a', 0, 1.5]", "any")],
    "edge": [("[1e300, -1e300, 1.0]", "float"), ("[10 ** 400, 1, -10 ** 400]", "big"),
             ("[5e-324, 0.0, 1.0]", "float"), ("[2 ** 53, 2 ** 53 + 1, 0]", "int"),
             ("[float('inf'), 0.0, 1.0]", "float"), ("[1.7976931348623157e308, 0.5]", "float")],
}


# ------------------------------------------------------------------------------ cases


@attrs.frozen
class Case:
    """One fuzz case: a program (Python source), its vocabulary and how to compile it."""

    seed: int
    index: int
    theme: str
    vocab_src: str
    max_seq_len: int
    causal: bool
    lines: tuple[str, ...]  # statements; the last assigns ``program``

    @property
    def name(self) -> str:
        return f"case {self.index} of seed {self.seed} ({self.theme})"

    def source(self) -> str:
        return "\n".join((f"vocab = {self.vocab_src}", *self.lines))

    def build(self) -> tuple[Any, list[Any]]:
        """Execute the source with rasplang's names in scope: ``(program, vocab)``."""
        import rasplang

        scope: dict[str, Any] = {"math": math, "rl": rasplang}
        scope.update({name: getattr(rasplang, name) for name in rasplang.__all__})
        exec(self.source(), scope)  # the case's own text, so the reproducer is exact
        return scope["program"], list(scope["vocab"])

    def reproducer(self, positions: Sequence[int] | None = None) -> str:
        """A self-contained Python snippet; with ``positions``, one input to compare."""
        head = ["import math", "", "import rasplang as rl",
                "from rasplang import *  # noqa: F403", "", self.source(),
                f"model = rl.compile(program, vocab, {self.max_seq_len}, "
                f"causal={self.causal}, max_bytes={CASE_MAX_BYTES})"]
        if positions is not None:
            head += [f"xs = [vocab[i] for i in {tuple(positions)!r}]",
                     f"print('evaluate', rl.evaluate(program, xs, causal={self.causal}))",
                     "print('model   ', model.run([xs])[0])"]
        return "\n".join(head)


class _Builder:
    """Grows one program as source lines over a pool of typed variables."""

    def __init__(self, rng: np.random.Generator, theme: str, vocab_kind: str):
        self.rng = rng
        self.theme = theme
        self.lines: list[str] = []
        # (name, kind, numerical); the leaves come first.
        self.pool: list[tuple[str, str, bool]] = [
            ("tokens", vocab_kind, False), ("indices", "int", False),
            ("length", "int", False)]
        self.n_sel = 0

    def pick(self, items: Sequence[Any]) -> Any:
        return items[int(self.rng.integers(len(items)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def recent(self, where: Any = None) -> tuple[str, str, bool]:
        """A pool variable: often the newest, else weighted towards the newest (so the
        program's graph stays connected and reads what was built before)."""
        pool = [v for v in self.pool if where is None or where(v)] or self.pool
        if self.chance(0.5):
            return pool[-1]
        weights = np.arange(1, len(pool) + 1, dtype=float) ** 2
        return pool[int(self.rng.choice(len(pool), p=weights / weights.sum()))]

    def emit(self, expr: str, kind: str, numerical: bool = False) -> tuple[str, str, bool]:
        name = f"n{len(self.pool) - 2}"
        self.lines.append(f"{name} = numerical({expr})" if numerical else f"{name} = {expr}")
        self.pool.append((name, kind, numerical))
        return self.pool[-1]

    def emit_selector(self, expr: str) -> str:
        self.n_sel += 1
        self.lines.append(f"s{self.n_sel} = {expr}")
        return f"s{self.n_sel}"

    # -- functions

    def unary(self, kind: str) -> tuple[str, str]:
        options = list(_UNARY.get(kind, [])) + _GENERIC_UNARY
        if self.theme == "partial":
            options += _PARTIAL_UNARY * 2
        if self.theme == "edge":
            options += _EDGE_UNARY * 2
        body, out = self.pick(options)
        return f"lambda x: {body}", kind if out == "same" else out

    def binary(self, k1: str, k2: str) -> tuple[str, str]:
        options = list(_GENERIC_BINARY)
        if k1 in _NUMERIC and k2 in _NUMERIC:
            options += _NUMERIC_BINARY * 3
        if self.theme == "partial":
            options += _PARTIAL_BINARY
        body, out = self.pick(options)
        if out == "join":
            out = next((k for k in ("big", "float", "twin") if k in (k1, k2)), "int")
        return f"lambda x, y: {body}", k1 if out == "same" else out

    # -- moves

    def map(self) -> None:
        name, kind, _ = self.recent()
        f, out = self.unary(kind)
        self.emit(f"Map({f}, {name})", out, out in _NUMERIC and self.chance(self.p_numerical))

    def sequence_map(self) -> None:
        (a, ka, _), (b, kb, _) = self.recent(), self.recent()
        f, out = self.binary(ka, kb)
        self.emit(f"SequenceMap({f}, {a}, {b})", out,
                  out in _NUMERIC and self.chance(self.p_numerical))

    def linear(self) -> None:
        (a, ka, _), (b, kb, _) = (self.recent(lambda v: v[1] in _NUMERIC) for _ in range(2))
        factors = _FACTORS + (_EDGE_FACTORS if self.theme == "edge" else [])
        fa, fb = self.pick(factors), self.pick(factors)
        kind = "float" if "." in fa + fb or "float" in (ka, kb) else "int"
        self.emit(f"LinearSequenceMap({a}, {b}, {fa}, {fb})", kind, self.chance(0.8))

    def width(self) -> None:
        self.emit(f"SelectorWidth({self.selector()})", "int")

    def categorical_aggregate(self) -> None:
        name, kind, _ = self.recent(lambda v: not v[2])
        selector = self.one_hot() if self.chance(0.5) else self.selector()
        default = self.pick(_DEFAULTS)
        self.emit(f"Aggregate({selector}, {name}, default={default})",
                  kind if default == "None" else "any")

    def numerical_aggregate(self) -> None:
        name, kind, numerical = self.recent(lambda v: v[2] and v[1] in _NUMERIC)
        if not (numerical and kind in _NUMERIC):
            src, _, _ = self.recent()
            value = self.pick(["1", "0.1", "1 / 3", "0.3", "True"])
            test = self.pick(["str(x) < 'b'", "str(x) < '1'", "str(x)[-1] in '02468a'"])
            name = self.emit(f"Map(lambda x: {value} if {test} else 0, {src})",
                             "float", True)[0]
        default = self.pick(["0", "0", "0", "0", "0.1", "None", "1"])
        self.emit(f"Aggregate({self.selector()}, {name}, default={default})", "float", True)

    def one_hot(self) -> str:
        """A selector that selects at most one key per query."""
        query = self.pick(["indices", "SequenceMap(lambda i, n: n - 1 - i, indices, length)",
                           "SequenceMap(lambda i, n: (i + 1) % n, indices, length)"])
        return self.emit_selector(f"Select(indices, {query}, Comparison.EQ)")

    def selector(self, depth: int = 0) -> str:
        if depth < 2 and self.chance(0.3):
            op = self.pick(["&", "|", "~"])
            if op == "~":
                return self.emit_selector(f"~{self.selector(depth + 1)}")
            return self.emit_selector(f"{self.selector(depth + 1)} {op} "
                                      f"{self.selector(depth + 1)}")
        (k, _, _), (q, _, _) = self.recent(), self.recent()
        if self.chance(0.2):
            return self.emit_selector(f"Select({k}, {q}, {self.pick(_PREDICATES)})")
        return self.emit_selector(f"Select({k}, {q}, Comparison.{self.pick(_COMPARISONS)})")

    def read_categorically(self) -> None:
        """End on a categorical reader of a numerical node (the ulp corner)."""
        name, _, _ = self.recent(lambda v: v[2])
        reader = self.pick(["map", "map", "seqmap", "select"])
        if reader == "map":
            f, out = self.pick([("lambda x: x", "float"), ("lambda x: x == 0.3", "bool"),
                                ("lambda x: round(x, 2)", "float"),
                                ("lambda x: str(x)", "str"), ("lambda x: x < 0.3", "bool")])
            self.emit(f"Map({f}, {name})", out)
        elif reader == "seqmap":
            other, _, _ = self.recent()
            self.emit(f"SequenceMap(lambda x, y: (x, y), {name}, {other})", "tuple")
        else:
            cmp = self.pick(["EQ", "LT", "LEQ"])
            sel = self.emit_selector(f"Select({name}, {name}, Comparison.{cmp})")
            self.emit(self.pick([f"SelectorWidth({sel})", f"Aggregate({sel}, tokens)"]), "int")

    @property
    def p_numerical(self) -> float:
        return 0.6 if self.theme in ("ulp", "edge") else 0.3


def generate_case(seed: int, index: int) -> Case:
    """The case ``index`` of campaign ``seed`` (deterministic, cheap: no rasplang calls)."""
    rng = np.random.default_rng([seed, index])
    theme = THEMES[index % len(THEMES)]
    vocab_src, vocab_kind = _VOCABS[theme][int(rng.integers(len(_VOCABS[theme])))]
    max_seq_len = int(rng.integers(2, 4)) if theme == "wide" else int(rng.integers(2, 6))
    builder = _Builder(rng, theme, vocab_kind)
    moves = {"map": (builder.map, 3), "seqmap": (builder.sequence_map, 3),
             "linear": (builder.linear, 4 if theme in ("ulp", "edge") else 1),
             "width": (builder.width, 2), "cat_agg": (builder.categorical_aggregate, 2),
             "num_agg": (builder.numerical_aggregate, 2)}
    weights = np.array([w for _, w in moves.values()], dtype=float)
    for _ in range(int(rng.integers(2, 7))):
        move = list(moves)[int(rng.choice(len(moves), p=weights / weights.sum()))]
        moves[move][0]()
    if theme == "ulp" and not any(numerical for _, _, numerical in builder.pool):
        builder.linear()
    if theme == "ulp" or (any(v[2] for v in builder.pool) and builder.chance(0.3)):
        builder.read_categorically()
    lines = live_lines(builder.lines, builder.pool[-1][0])
    return Case(seed, index, theme, vocab_src, max_seq_len, builder.chance(0.3), lines)


def live_lines(lines: Sequence[str], output: str) -> tuple[str, ...]:
    """The statements ``output`` depends on, then ``program = output``."""
    needed, kept = {output}, []
    for line in reversed(lines):
        name, expr = line.split(" = ", 1)
        if name in needed:
            kept.append(line)
            needed.update(re.findall(r"\b[ns]\d+\b", expr))
    return (*reversed(kept), f"program = {output}")
