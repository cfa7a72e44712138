"""The fuzzer's float32 cases: numerical programs aimed at float32 rounding.

A compiled model whose ``config.float64_only`` is empty promises to be exact in float32
too; `rasplang.fuzzing.check_case` runs every model that way. This generator draws the
programs where float32 is most likely to break that promise:

- numerical Aggregates (means) over selectors such as ``indices <= indices``,
  ``tokens < tokens``, always-true, one-hot shifts and reversals, ``&``/``|``/``~``;
- aggregates of aggregates (means of means) and numerical Maps with large or awkward
  factors (1000, 2**20, 1/7), affine or discretised (``x * x``, ``round(x * 8) / 8``);
- SequenceMaps of numerical SOps, which the compiler converts to one-hots first;
- categorical readers of numerical values (a rounded Map, a Select on a mean);
- long inputs: ``max_seq_len`` up to 32 (sampled inputs), short ones checked on every
  input.

Cases are `rasplang.fuzz_cases.Case`\\ s (runnable source) with theme ``float32``.
"""

from __future__ import annotations

import numpy as np

from rasplang.fuzz_cases import Case, live_lines

THEME = "float32"

# (vocabulary source, leaf Maps that make a number of a token); str vocabularies need
# a Map, int ones may be read as they are.
_VOCABS = [
    ("[0, 1, 2, 3]", ["lambda x: x", "lambda x: x % 2", "lambda x: 1 if x == 0 else 0"]),
    ("[1, 2, 3]", ["lambda x: x", "lambda x: 1 / x", "lambda x: x - 2"]),
    ("['a', 'b', 'c']", ["lambda x: 1 if x == 'a' else 0", "lambda x: ord(x) - 97",
                         "lambda x: 0.5 if x == 'b' else 0"]),
    ("[0, 1]", ["lambda x: x", "lambda x: 1 - x"]),
    ("list(range(6))", ["lambda x: x", "lambda x: x * 0.1"]),
]
# Lengths: short ones are checked exhaustively (a small vocabulary), long ones sampled.
_SHORT, _LONG = (3, 4, 5), (8, 12, 16, 24, 32)
_SELECTS = [
    "Select(indices, indices, Comparison.LEQ)", "Select(indices, indices, Comparison.LT)",
    "Select(indices, indices, Comparison.GEQ)", "Select(tokens, tokens, Comparison.TRUE)",
    "Select(tokens, tokens, Comparison.LT)", "Select(tokens, tokens, Comparison.LEQ)",
    "Select(tokens, tokens, Comparison.EQ)", "Select(indices, indices, Comparison.EQ)",
    "Select(indices, Map(lambda i: i - 1, indices), Comparison.EQ)",
    "Select(indices, SequenceMap(lambda i, n: n - 1 - i, indices, length), Comparison.EQ)",
]
_DEFAULTS = ["0", "0", "0", "1", "0.5"]
# Numerical Maps: affine ones (an affine MLP, which amplifies the input's error) and
# discretised ones (a ReLU staircase over the input's value set).
_AFFINE = ["lambda x: x * 1000", "lambda x: x * 2 ** 20", "lambda x: x / 7",
           "lambda x: 1e4 * x - 3", "lambda x: -300 * x + 1", "lambda x: x * 0.001"]
_DISCRETE = ["lambda x: x * x", "lambda x: round(x * 8) / 8", "lambda x: 1 / (1 + x)",
             "lambda x: 1 if x > 0.5 else 0", "lambda x: min(x, 0.5)",
             "lambda x: abs(x - 0.5)", "lambda x: math.floor(x * 4)"]
_BINARY = ["lambda x, y: x + y", "lambda x, y: x * y", "lambda x, y: x - y",
           "lambda x, y: 1 if x > y else 0", "lambda x, y: max(x, y)",
           "lambda x, y: 10 * x + y"]
_FACTORS = ["1", "-1", "0.5", "3", "100", "1000", "1 / 3"]
# Categorical reads that give one value for 0, 0.0 and False (and 1, 1.0, True), and one
# that does not (a categorical output of twins is refused).
_CATEGORICAL_READS = ["lambda x: round(float(x), 3)", "lambda x: x > 0.5", "lambda x: x == 0",
                      "lambda x: math.floor(x * 10)", "lambda x: float(x)", "lambda x: x"]


class _Builder:
    """Grows one program as source lines over a pool of variables.

    Each variable is ``(name, numerical, small)``: a *small* one takes few values (a
    token's number, a Map or width of one), so a mean over it stays enumerable at long
    lengths; in ``long`` programs means read only small variables.
    """

    def __init__(self, rng: np.random.Generator, leaves: list[str], long: bool, causal: bool):
        self.rng = rng
        self.long = long
        self.causal = causal
        self.lines: list[str] = []
        self.pool: list[tuple[str, bool, bool]] = []
        self.means: list[str] = []
        self.n_sel = 0
        self.emit(f"Map({self.pick(leaves)}, tokens)", True, small=True)

    def pick(self, items: list[str]) -> str:
        return items[int(self.rng.integers(len(items)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def recent(self, numerical: bool | None = None, small: bool = False) -> tuple[str, bool]:
        """A pool variable (of that encoding, small, when asked), weighted towards the
        newest: ``(name, small)``."""
        pool = [(n, sm) for n, num, sm in self.pool
                if (numerical is None or num == numerical) and (sm or not small)]
        if not pool:
            return self.pool[0][0], True
        weights = np.arange(1, len(pool) + 1, dtype=float) ** 2
        return pool[int(self.rng.choice(len(pool), p=weights / weights.sum()))]

    def emit(self, expr: str, numerical: bool, small: bool = False) -> str:
        name = f"n{len(self.pool) + 1}"
        self.lines.append(f"{name} = numerical({expr})" if numerical else f"{name} = {expr}")
        self.pool.append((name, numerical, small))
        return name

    def emit_selector(self, text: str) -> str:
        self.n_sel += 1
        self.lines.append(f"s{self.n_sel} = {text}")
        return f"s{self.n_sel}"

    def selector(self) -> str:
        if self.chance(0.15):  # numerical keys and queries: one-hot conversions first
            source, _ = self.recent(True, small=self.long)
            cmp = self.pick(["LT", "LEQ", "EQ", "GT"])
            return self.emit_selector(f"Select({source}, {source}, Comparison.{cmp})")
        selects = [s for s in _SELECTS if not (self.causal and "length" in s)]
        text = self.pick(selects)
        if self.chance(0.2):
            text = f"{text} {self.pick(['&', '|'])} {self.pick(selects)}"
        elif self.chance(0.1):
            text = f"~{text}"
        return self.emit_selector(text)

    # -- moves

    def mean(self, of_mean: bool = False) -> None:
        if of_mean and self.means:
            source = self.pick(self.means)
        else:
            source, _ = self.recent(True, small=self.long)
        name = self.emit(f"Aggregate({self.selector()}, {source}, "
                         f"default={self.pick(_DEFAULTS)})", True)
        self.means.append(name)

    def numerical_map(self) -> None:
        f = self.pick(_AFFINE if self.chance(0.5) else _DISCRETE)
        source, small = self.recent(True)
        self.emit(f"Map({f}, {source})", True, small)

    def sequence_map(self) -> None:
        (a, small_a), (b, small_b) = self.recent(True), self.recent(small=self.long)
        f, numerical = self.pick(_BINARY), self.chance(0.6)
        if not numerical and self.chance(0.7):  # one categorical value for 0 and 0.0
            f = f.replace(": ", ": float(", 1) + ")"
        self.emit(f"SequenceMap({f}, {a}, {b})", numerical, small_a and small_b)

    def linear(self) -> None:
        (a, small_a), (b, small_b) = self.recent(True), self.recent(True)
        self.emit(f"LinearSequenceMap({a}, {b}, {self.pick(_FACTORS)}, "
                  f"{self.pick(_FACTORS)})", True, small_a and small_b)

    def width(self) -> None:
        width = self.emit(f"SelectorWidth({self.selector()})", False, small=True)
        if self.chance(0.5):
            self.emit(f"Map(lambda w: w, {width})", True, small=True)

    def categorical_read(self) -> None:
        source, small = self.recent(True)
        if self.chance(0.6):
            self.emit(f"Map({self.pick(_CATEGORICAL_READS)}, {source})", False, small)
            return
        cmp = self.pick(["LT", "LEQ", "EQ"])
        selector = self.emit_selector(f"Select({source}, {source}, Comparison.{cmp})")
        self.emit(f"SelectorWidth({selector})", False, small=True)


def generate_float32_case(seed: int, index: int) -> Case:
    """The float32 case ``index`` of campaign ``seed`` (deterministic, no rasplang calls)."""
    rng = np.random.default_rng([seed, index, 32])
    vocab_src, leaves = _VOCABS[int(rng.integers(len(_VOCABS)))]
    long = bool(rng.random() < 0.5)
    max_seq_len = int(rng.choice(_LONG if long else _SHORT))
    causal = bool(rng.random() < 0.3)  # a causal model cannot read length
    builder = _Builder(rng, leaves, long, causal)
    moves = [(builder.mean, 4), (lambda: builder.mean(of_mean=True), 0 if long else 1),
             (builder.numerical_map, 3), (builder.sequence_map, 2), (builder.linear, 1),
             (builder.width, 1), (builder.categorical_read, 1)]
    weights = np.array([w for _, w in moves], dtype=float)
    builder.mean()
    for _ in range(int(rng.integers(1, 5))):
        moves[int(rng.choice(len(moves), p=weights / weights.sum()))][0]()
    if builder.chance(0.25):
        builder.categorical_read()
    lines = live_lines(builder.lines, builder.pool[-1][0])
    return Case(seed, index, THEME, vocab_src, max_seq_len, causal, lines)
