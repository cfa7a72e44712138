"""An adversarial fuzzer for the compiler's promise: a compiled model is exact or refused.

Written independently of `rasplang.testing` (whose programs are well-typed and total),
this generator aims at the corners where a compiler can be silently wrong:

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
`check_case` classifies one case (`OUTCOMES`); `run_campaign` runs cases in worker
processes with a per-case time budget and memory limit, so a hang or a memory blow-up
is recorded rather than taking the campaign down.
"""

from __future__ import annotations

import math
import multiprocessing
import re
import signal
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from multiprocessing.connection import wait
from typing import Any

import attrs
import numpy as np

#: How a case ended, in report order.
OUTCOMES = ("exact", "refused", "warned-wrong", "WRONG", "crash", "slow", "memory",
            "generator-error")
#: Outcomes that break the promise (``generator-error`` is a bug in this module).
BAD_OUTCOMES = frozenset({"WRONG", "crash", "slow", "memory", "generator-error"})
THEMES = ("ulp", "twins", "tuples", "wide", "partial", "edge")
#: Check every input when the domain has at most this many, else `SAMPLES` of them.
EXHAUSTIVE_LIMIT = 2000
SAMPLES = 300
#: Numerical outputs agree when ``|got - expected| <= tol * max(1, |expected|)``.
NUMERICAL_TOLERANCE = 1e-9

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
                f"causal={self.causal})"]
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
    lines = _live_lines(builder.lines, builder.pool[-1][0])
    return Case(seed, index, theme, vocab_src, max_seq_len, builder.chance(0.3), lines)


def _live_lines(lines: Sequence[str], output: str) -> tuple[str, ...]:
    """The statements ``output`` depends on, then ``program = output``."""
    needed, kept = {output}, []
    for line in reversed(lines):
        name, expr = line.split(" = ", 1)
        if name in needed:
            kept.append(line)
            needed.update(re.findall(r"\b[ns]\d+\b", expr))
    return (*reversed(kept), f"program = {output}")


# ---------------------------------------------------------------------------- checking


@attrs.define
class CaseResult:
    """What checking one case found."""

    case: Case
    outcome: str
    detail: str = ""
    positions: tuple[int, ...] | None = None  # the first mismatching input, as vocab indices
    checked: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def report(self) -> str:
        """The outcome as comments, then the reproducer."""
        header = f"{self.case.name}, max_seq_len {self.case.max_seq_len}, causal " \
                 f"{self.case.causal}: {self.outcome}: {self.detail}".rstrip()
        return "\n".join(["# " + line for line in header.splitlines()]
                         + [self.case.reproducer(self.positions)])


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def _labels(program: Any) -> set[str]:
    from rasplang.graph import topological_order, unique_labels

    return set(unique_labels(topological_order(program)).values())


def _classify_error(exc: BaseException, labels: set[str]) -> tuple[str, str]:
    from rasplang.analysis import AnalysisError, UnsupportedProgramError

    text = f"{type(exc).__name__}: {exc}"
    where = "\n" + "".join(traceback.format_exception(exc)[-4:])
    if isinstance(exc, MemoryError):
        return "memory", text + where
    if isinstance(exc, UnsupportedProgramError):
        # Problems may name a node's derived part, e.g. ``aggregate_5:categorical``, or
        # a primitive the model always embeds (ModelTooLarge lists ``tokens``).
        known = labels | {"tokens", "indices", "length"}
        named = any(str(label).split(":")[0] in known for label, _ in exc.problems)
        return ("refused" if named else "crash"), text
    if isinstance(exc, (AnalysisError, ValueError, TypeError)):
        # A clear refusal names the node it cannot build, or the vocabulary it rejects.
        named = any(label in str(exc) for label in labels) or "vocab" in str(exc)
        return ("refused" if named else "crash"), text + ("" if named else " (names no node)")
    return "crash", text + where


def _inputs(case: Case, n_vocab: int) -> Iterator[tuple[int, ...]]:
    domain = sum(n_vocab**n for n in range(1, case.max_seq_len + 1))
    if domain <= EXHAUSTIVE_LIMIT:
        for n in range(1, case.max_seq_len + 1):
            yield from np.ndindex(*(n_vocab,) * n)
        return
    rng = np.random.default_rng([case.seed, case.index, 1])
    for _ in range(SAMPLES):
        n = int(rng.integers(1, case.max_seq_len + 1))
        yield tuple(rng.integers(0, n_vocab, size=n).tolist())


def _strictly_equal(got: Any, expected: Any) -> bool:
    """Same type and value, recursively; NaN equals NaN (categorical outputs are exact)."""
    if type(got) is not type(expected):
        return False
    if isinstance(expected, (tuple, list)):
        return len(got) == len(expected) and all(map(_strictly_equal, got, expected))
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(got)
    try:
        return bool(got == expected)
    except Exception:
        return False


def _loosely_equal(got: Any, expected: Any) -> bool:
    """Equal by ``==`` (so 1, 1.0 and True agree), recursively; NaN equals NaN."""
    if isinstance(expected, (tuple, list)) and isinstance(got, (tuple, list)):
        return len(got) == len(expected) and all(map(_loosely_equal, got, expected))
    try:
        return bool(got == expected) or (got != got and expected != expected)
    except Exception:
        return False


def _numerically_equal(got: Any, expected: Any) -> bool:
    if got is None or expected is None:
        return got is expected
    try:
        g, e = float(got), float(expected)
    except (TypeError, ValueError, OverflowError):
        return _strictly_equal(got, expected)
    if math.isnan(e) or math.isinf(e):
        return _strictly_equal(g, e)
    return abs(g - e) <= NUMERICAL_TOLERANCE * max(1.0, abs(e))


def check_case(case: Case, *, compile_budget: float = 30.0, check_budget: float = 60.0,
               ) -> CaseResult:
    """Compile ``case`` and compare the model with `rasplang.evaluate` (see `OUTCOMES`)."""
    start = time.perf_counter()
    result = _check(case, compile_budget, check_budget)
    result.seconds = time.perf_counter() - start
    return result


def _check(case: Case, compile_budget: float, check_budget: float) -> CaseResult:
    import rasplang as rl
    from rasplang.backend import CompilerWarning

    try:
        program, vocab = case.build()
    except Exception as exc:
        return CaseResult(case, "generator-error", f"{type(exc).__name__}: {exc}")
    labels = _labels(program)
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, compile_budget)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = rl.compile(program, vocab, case.max_seq_len, causal=case.causal)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return CaseResult(case, "slow", f"compile took over {compile_budget:g} s")
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        outcome, detail = _classify_error(exc, labels)
        return CaseResult(case, outcome, detail)
    finally:
        signal.signal(signal.SIGALRM, previous)
    warned = [str(w.message) for w in caught if issubclass(w.category, CompilerWarning)]
    same = _numerically_equal if rl.is_numerical(program) else _strictly_equal
    result = CaseResult(case, "exact")
    batch: list[tuple[tuple[int, ...], list[Any]]] = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, check_budget)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for positions in _inputs(case, len(vocab)):
                xs = [vocab[i] for i in positions]
                try:
                    batch.append((positions, rl.evaluate(program, xs, causal=case.causal)))
                except Exception:
                    result.skipped += 1
            got = model.run([[vocab[i] for i in p] for p, _ in batch]) if batch else []
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        result.outcome, result.detail = "slow", f"checking took over {check_budget:g} s"
        return result
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        result.outcome, detail = _classify_error(exc, set())
        result.detail = "model.run raised " + detail
        return result
    finally:
        signal.signal(signal.SIGALRM, previous)
    result.checked = len(batch)
    for (positions, expected), out in zip(batch, got):
        if not all(same(g, e) for g, e in zip(out, expected)) or len(out) != len(expected):
            result.outcome = "warned-wrong" if warned else "WRONG"
            result.positions = positions
            twins = len(out) == len(expected) and all(map(_loosely_equal, out, expected))
            result.detail = f"evaluate gives {expected!r}, model gives {out!r}" + (
                " (equal values of different types)" if twins else "") + (
                f" (after CompilerWarning: {warned[0]})" if warned else "")
            break
    return result


# ---------------------------------------------------------------------------- campaigns


def _worker(conn: Any, memory_limit: int, budgets: tuple[float, float]) -> None:
    import resource

    import rasplang.backend  # noqa: F401  (import before limiting the address space)

    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    while True:
        case = conn.recv()
        if case is None:
            return
        conn.send(check_case(case, compile_budget=budgets[0], check_budget=budgets[1]))


@attrs.define
class _Slot:
    process: Any
    conn: Any
    case: Case | None = None
    started: float = 0.0


def run_campaign(cases: Sequence[Case], *, workers: int = 1, compile_budget: float = 30.0,
                 check_budget: float = 60.0, memory_limit: int = 4 << 30,
                 ) -> Iterator[CaseResult]:
    """Check ``cases`` in ``workers`` processes; yield each result as it arrives.

    Each worker has an address-space limit of ``memory_limit`` bytes (so a blow-up is a
    MemoryError) and each case a time budget; a worker that does not answer within the
    budgets plus a grace period is killed and its case recorded as ``slow`` (or
    ``memory``/``crash`` when the worker died).
    """
    context = multiprocessing.get_context("spawn")
    hard_limit = compile_budget + check_budget + 30.0
    todo = list(reversed(cases))
    slots: list[_Slot] = []

    def start() -> _Slot:
        parent, child = context.Pipe()
        process = context.Process(target=_worker, daemon=True,
                                  args=(child, memory_limit, (compile_budget, check_budget)))
        process.start()
        child.close()
        return _Slot(process, parent)

    def feed(slot: _Slot) -> None:
        if todo:
            slot.case, slot.started = todo.pop(), time.monotonic()
            slot.conn.send(slot.case)
        else:
            slot.case = None

    try:
        for _ in range(min(workers, len(cases))):
            slots.append(start())
            feed(slots[-1])
        while any(slot.case is not None for slot in slots):
            busy = [slot for slot in slots if slot.case is not None]
            ready = wait([slot.conn for slot in busy], timeout=5.0)
            for i, slot in enumerate(slots):
                if slot.case is None:
                    continue
                if slot.conn in ready:
                    try:
                        yield slot.conn.recv()
                        feed(slot)
                        continue
                    except EOFError:
                        slot.process.join(5)
                        code = slot.process.exitcode
                        outcome = "memory" if code == -signal.SIGKILL else "crash"
                        yield CaseResult(slot.case, outcome, f"worker died (exit code {code})")
                elif time.monotonic() - slot.started > hard_limit:
                    slot.process.kill()
                    slot.process.join()
                    yield CaseResult(slot.case, "slow", f"no answer within {hard_limit:g} s",
                                     seconds=hard_limit)
                else:
                    continue
                slots[i] = start()
                feed(slots[i])
    finally:
        for slot in slots:
            if slot.process.is_alive():
                slot.process.kill()
            slot.process.join()
