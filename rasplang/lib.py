"""The program library: tracr's library programs, the RASP paper's programs, a registry.

The ``make_*`` functions, `shift_by` and `detect_pattern` have the names, signatures,
defaults, semantics and node labels of tracr's ``tracr/compiler/lib.py`` (Lindner et
al. 2023), so code written against tracr's library runs unchanged. The paper's programs
(Weiss et al. 2021) live in `rasplang.paper` and are re-exported here.

`PROGRAMS` is the one registry of example programs that the CLI, the demo, the docs and
the differential tests share: each `LibraryProgram` carries a builder, a small
vocabulary, a default maximum length and an example input. ``entry.build(n)`` builds the
program for inputs up to length n (some programs, such as `make_sort`, depend on it).

Unlike tracr, ``numerical``/``named`` return new nodes, so every step below uses the
node they return.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import attrs

from rasplang import rasp
from rasplang.paper import (
    make_double_hist,
    make_dyck,
    make_dyck1,
    make_dyck2,
    make_sort_by_most_freq,
    make_sort_stable,
)

__all__ = [
    "PROGRAMS",
    "LibraryProgram",
    "detect_pattern",
    "get_program",
    "length",
    "make_above_mean",
    "make_count",
    "make_count_distinct",
    "make_count_less_freq",
    "make_double_hist",
    "make_dyck",
    "make_dyck1",
    "make_dyck2",
    "make_frac_prevs",
    "make_hist",
    "make_length",
    "make_nary_sequencemap",
    "make_pair_balance",
    "make_prev_sum",
    "make_reverse",
    "make_same_frac",
    "make_shift_fill",
    "make_shuffle_dyck",
    "make_shuffle_dyck2",
    "make_sort",
    "make_sort_by_most_freq",
    "make_sort_freq",
    "make_sort_stable",
    "make_sort_unique",
    "shift_by",
]

# ------------------------------------------- programs for non-causal evaluation


def make_length() -> rasp.SOp:
    """The input length at every position, computed with a selector width.

    Unlike the primitive `rasplang.length`, this is built from attention, so a causal
    model computes it too (as the length of the prefix).

    >>> make_length()("abcdefg")
    [7, 7, 7, 7, 7, 7, 7]
    """
    all_true_selector = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE).named(
        "all_true_selector"
    )
    return rasp.SelectorWidth(all_true_selector).named("length")


#: tracr's module-level ``length``: `make_length()` built once and shared.
length = make_length()


def make_reverse(sop: rasp.SOp) -> rasp.SOp:
    """``sop`` reversed, by selecting position ``length - index - 1``.

    >>> make_reverse(rasp.tokens)("Hello")
    ['o', 'l', 'l', 'e', 'H']
    """
    opp_idx = (length - rasp.indices).named("opp_idx")
    opp_idx = (opp_idx - 1).named("opp_idx-1")
    reverse_selector = rasp.Select(rasp.indices, opp_idx, rasp.Comparison.EQ).named(
        "reverse_selector"
    )
    return rasp.Aggregate(reverse_selector, sop).named("reverse")


def make_pair_balance(sop: rasp.SOp, open_token: str, close_token: str) -> rasp.SOp:
    """The fraction of positions so far holding ``open_token`` minus those holding
    ``close_token`` (as in the RASP paper).

    The brackets are balanced when no value is negative and the last one is 0.

    >>> pair_balance = make_pair_balance(rasp.tokens, "(", ")")
    >>> [round(v, 4) for v in pair_balance("a()b(c))")]
    [0, 0.5, 0.0, 0.0, 0.2, 0.1667, 0.0, -0.125]
    """
    bools_open = rasp.numerical(sop == open_token).named("bools_open")
    opens = rasp.numerical(make_frac_prevs(bools_open)).named("opens")

    bools_close = rasp.numerical(sop == close_token).named("bools_close")
    closes = rasp.numerical(make_frac_prevs(bools_close)).named("closes")

    pair_balance = rasp.numerical(rasp.LinearSequenceMap(opens, closes, 1, -1))
    return pair_balance.named("pair_balance")


def make_shuffle_dyck(pairs: list[str]) -> rasp.SOp:
    """1 (True) at every position if each kind of bracket is balanced on its own, else
    0 (False) (shuffle-Dyck, as in the RASP paper).

    Each kind is checked independently, so ``"({)}"`` is balanced.

    >>> shuffle_dyck2 = make_shuffle_dyck(pairs=["()", "{}"])
    >>> shuffle_dyck2("({)}")
    [True, True, True, True]
    >>> shuffle_dyck2("(){)}")
    [False, False, False, False, False]

    Args:
        pairs: two-character strings, an open and a close token each, e.g. ``["()"]``.
    """
    if len(pairs) < 1:
        raise ValueError("make_shuffle_dyck needs at least one pair of brackets")
    # The running balance of each kind of bracket.
    balances = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"each pair must be an open and a close token, got {pair!r}")
        open_token, close_token = pair
        balance = make_pair_balance(
            rasp.tokens, open_token=open_token, close_token=close_token
        ).named(f"balance_{pair}")
        balances.append(balance)

    # A negative balance anywhere means a bracket closed before it opened.
    any_negative = balances[0] < 0
    for balance in balances[1:]:
        any_negative = any_negative | (balance < 0)
    any_negative = rasp.numerical(rasp.Map(lambda x: x, any_negative)).named("any_negative")
    select_all = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE).named(
        "select_all"
    )
    has_neg = rasp.numerical(rasp.Aggregate(select_all, any_negative, default=0)).named(
        "has_neg"
    )

    # Every balance must be 0 at the last position.
    all_zero = balances[0] == 0
    for balance in balances[1:]:
        all_zero = all_zero & (balance == 0)
    select_last = rasp.Select(rasp.indices, length - 1, rasp.Comparison.EQ).named("select_last")
    last_zero = rasp.Aggregate(select_last, all_zero).named("last_zero")

    not_has_neg = (~has_neg).named("not_has_neg")
    return (last_zero & not_has_neg).named("shuffle_dyck")


def make_shuffle_dyck2() -> rasp.SOp:
    """`make_shuffle_dyck` for ``()`` and ``{}``.

    >>> make_shuffle_dyck2()("({)}")
    [True, True, True, True]
    """
    return make_shuffle_dyck(pairs=["()", "{}"]).named("shuffle_dyck2")


def make_hist() -> rasp.SOp:
    """How many times each position's token occurs in the input (as in the RASP paper).

    >>> make_hist()("abac")
    [2, 1, 2, 1]
    """
    same_tok = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ).named("same_tok")
    return rasp.SelectorWidth(same_tok).named("hist")


def make_sort_unique(vals: rasp.SOp, keys: rasp.SOp) -> rasp.SOp:
    """``vals`` sorted by the ``<`` order of ``keys``; the keys must be unique.

    Each position moves to the number of keys smaller than its own. With repeated keys
    some positions get no value (None) and others several (averaged).

    >>> make_sort_unique(rasp.tokens, rasp.tokens)([2, 4, 3, 1])
    [1, 2, 3, 4]
    """
    smaller = rasp.Select(keys, keys, rasp.Comparison.LT).named("smaller")
    target_pos = rasp.SelectorWidth(smaller).named("target_pos")
    sel_new = rasp.Select(target_pos, rasp.indices, rasp.Comparison.EQ)
    return rasp.Aggregate(sel_new, vals).named("sort")


def make_sort(
    vals: rasp.SOp, keys: rasp.SOp, *, max_seq_len: int, min_key: float
) -> rasp.SOp:
    """``vals`` sorted by numerical ``keys``, which need not be unique; ties keep their
    input order.

    Unlike the RASP paper (see `make_sort_stable`), ties are broken without composing
    selectors: the key at index i becomes ``key + min_key * i / max_seq_len``, which is
    unique as long as different keys differ by at least ``min_key`` and inputs are at
    most ``max_seq_len`` long.

    >>> sort = make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1)
    >>> sort([2, 4, 3, 1])
    [1, 2, 3, 4]
    >>> sort([2, 4, 1, 2])
    [1, 2, 2, 4]
    """
    keys = rasp.SequenceMap(lambda x, i: x + min_key * i / max_seq_len, keys, rasp.indices)
    return make_sort_unique(vals, keys)


def make_sort_freq(max_seq_len: int) -> rasp.SOp:
    """The tokens sorted by how often they occur, most frequent first; tokens that occur
    equally often keep their input order.

    >>> make_sort_freq(max_seq_len=5)([2, 4, 2, 1])
    [2, 2, 4, 1]
    """
    hist = -1 * make_hist().named("hist")
    return make_sort(rasp.tokens, hist, max_seq_len=max_seq_len, min_key=1).named("sort_freq")


# ----------------------------------- programs for causal and non-causal evaluation


def make_frac_prevs(bools: rasp.SOp) -> rasp.SOp:
    """The fraction of positions up to and including this one where ``bools`` is true
    (as in the RASP paper).

    A position that selects only itself returns its own value unaveraged, so position 0
    gives the bool itself (``False == 0``).

    >>> make_frac_prevs(rasp.tokens == "l")("hello")
    [False, 0.0, 0.3333333333333333, 0.5, 0.4]
    """
    bools = rasp.numerical(bools)
    prevs = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    return rasp.numerical(rasp.Aggregate(prevs, bools, default=0)).named("frac_prevs")


def shift_by(offset: int, /, sop: rasp.SOp) -> rasp.SOp:
    """``sop`` shifted right by ``offset`` positions; the first ``offset`` are None.

    >>> shift_by(2, rasp.tokens)("abcd")
    [None, None, 'a', 'b']
    """
    select_off_by_offset = rasp.Select(
        rasp.indices, rasp.indices, lambda k, q: q == k + offset
    )
    out = rasp.Aggregate(select_off_by_offset, sop, default=None)
    return out.named(f"shift_by({offset})")


def detect_pattern(sop: rasp.SOp, pattern: Sequence[rasp.Value]) -> rasp.SOp:
    """True at the last position of each occurrence of ``pattern`` in ``sop``.

    The first ``len(pattern) - 1`` positions are None.

    >>> detect_pattern(rasp.tokens, "abc")("abcabc")
    [None, None, True, False, False, True]
    """
    if len(pattern) < 1:
        raise ValueError(f"Length of `pattern` must be at least 1. Got {pattern}")

    # detectors[i] is true at position j iff the i-th element of the pattern, counted
    # from the end, occurs at position j - i.
    detectors = []
    for i, element in enumerate(reversed(pattern)):
        detector = sop == element
        if i != 0:
            detector = shift_by(i, detector)
        detectors.append(detector)

    # The pattern is there where every detector fires.
    pattern_detected = detectors.pop()
    while detectors:
        pattern_detected = pattern_detected & detectors.pop()

    return pattern_detected.named(f"detect_pattern({pattern})")


def make_count_less_freq(n: int) -> rasp.SOp:
    """How many positions hold a token that occurs at most ``n`` times, at every position.

    (tracr's docstring says "fewer than n"; its code, kept here, compares with ``<=``.)

    >>> count_less_freq = make_count_less_freq(2)
    >>> count_less_freq(["a", "a", "a", "b", "b", "c"])
    [3, 3, 3, 3, 3, 3]
    >>> count_less_freq(["a", "a", "c", "b", "b", "c"])
    [6, 6, 6, 6, 6, 6]
    """
    hist = make_hist().named("hist")
    select_less = rasp.Select(hist, hist, lambda x, y: x <= n).named("select_less")
    return rasp.SelectorWidth(select_less).named("count_less_freq")


def make_count(sop: rasp.SOp, token: rasp.Value) -> rasp.SOp:
    """How many times ``token`` occurs in ``sop``, at every position.

    >>> count = make_count(rasp.tokens, "a")
    >>> count(["a", "a", "a", "b", "b", "c"])
    [3, 3, 3, 3, 3, 3]
    >>> count(["c", "a", "b", "c"])
    [1, 1, 1, 1]
    """
    return rasp.SelectorWidth(rasp.Select(sop, sop, lambda k, q: k == token)).named(
        f"count_{token}"
    )


def make_nary_sequencemap(f: Callable[..., rasp.Value], *sops: rasp.SOp) -> rasp.SOp:
    """``f(x1, ..., xn)`` position by position, from binary SequenceMaps.

    The SOps are zipped into tuples by a chain of SequenceMaps, then one Map applies
    ``f``. The tuples are encoded categorically and can make large compiled models.
    Unlike tracr's, this works for a single SOp and for SOps whose values are tuples.

    >>> nary = make_nary_sequencemap(lambda x, y, z: x + y - z,
    ...                              rasp.tokens, rasp.tokens, rasp.indices)
    >>> nary([1, 2, 3])
    [2, 3, 4]
    """
    if not sops:
        raise ValueError("make_nary_sequencemap needs at least one SOp")
    first, *rest = sops
    if not rest:
        return rasp.Map(f, first)
    values = rasp.SequenceMap(lambda x, y: (x, y), first, rest[0])
    for sop in rest[1:]:
        values = rasp.SequenceMap(lambda xs, y: (*xs, y), values, sop)
    return rasp.Map(lambda args: f(*args), values)


# ------------------------------ programs tracr refuses to compile (rasplang compiles them)


def make_count_distinct() -> rasp.SOp:
    """How many distinct tokens the input holds, at every position.

    A token is counted at its first occurrence: the positions with no earlier copy,
    found with ``select(tokens, tokens, ==) & select(indices, indices, <)`` (an `and` of
    selectors on different SOps).

    >>> make_count_distinct()("abcab")
    [3, 3, 3, 3, 3]
    """
    earlier_copy = (rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
                    & rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LT)
                    ).named("earlier_copy")
    has_earlier = (rasp.SelectorWidth(earlier_copy) > 0).named("has_earlier")
    first_copies = rasp.Select(has_earlier, has_earlier, lambda key, query: not key).named(
        "first_copies")
    return rasp.SelectorWidth(first_copies).named("count_distinct")


def make_same_frac(token: rasp.Value = "x") -> rasp.SOp:
    """How many positions have the same running fraction of ``token`` as this one.

    The fractions are numerical (`make_frac_prevs`), and the Select compares them
    directly: numerical keys and queries.

    >>> make_same_frac()("xyxy")
    [1, 2, 1, 2]
    """
    frac = make_frac_prevs(rasp.tokens == token)
    same = rasp.Select(frac, frac, rasp.Comparison.EQ).named("same_frac_sel")
    return rasp.SelectorWidth(same).named("same_frac")


def make_shift_fill(offset: int = 1, fill: rasp.Value = "_") -> rasp.SOp:
    """The tokens shifted right by ``offset``, the first positions holding ``fill``
    (a categorical Aggregate with a default other than None).

    >>> make_shift_fill()("abc")
    ['_', 'a', 'b']
    """
    shift = rasp.Select(rasp.indices, (rasp.indices - offset).named("source"),
                        rasp.Comparison.EQ).named("shift")  # selects at most one key
    return rasp.Aggregate(shift, rasp.tokens, default=fill).named("shift_fill")


def make_above_mean() -> rasp.SOp:
    """Whether each token is above the mean token value (numbers as tokens).

    The mean over every position is a numerical Aggregate of non-binary values; the
    comparison is a SequenceMap with a numerical input.

    >>> make_above_mean()([1, 2, 5])
    [False, False, True]
    """
    select_all = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.TRUE).named(
        "select_all")
    mean = rasp.numerical(rasp.Aggregate(select_all, rasp.numerical(rasp.tokens), default=0)
                          ).named("mean")
    return rasp.SequenceMap(lambda t, m: t > m, rasp.tokens, mean).named("above_mean")


def make_prev_sum() -> rasp.SOp:
    """Each token plus the one before it; None at the first position (None kept in a
    numerical SOp: the shifted token is a numerical Aggregate with default None).

    >>> make_prev_sum()([1, 2, 5])
    [None, 3, 7]
    """
    value = rasp.numerical(rasp.tokens)
    prev = rasp.numerical(shift_by(1, value)).named("prev")
    return rasp.numerical(rasp.LinearSequenceMap(value, prev, 1, 1)).named("prev_sum")


# ----------------------------------------------------------------------- registry


@attrs.frozen
class LibraryProgram:
    """A library program with a small domain to run, compile and show it on.

    ``make`` builds the program. Most programs are the same at every length and
    ``make`` takes no argument; a program that depends on the longest input (e.g.
    `make_sort`, whose tie-breaking keys are unique only up to ``max_seq_len``) takes
    it as ``make(max_seq_len)``. Call `build` rather than ``make``: it passes the length
    where it is needed.

    ``causal_safe`` is True when the program answers prefix questions under causal
    evaluation: for every input ``xs`` over ``vocab`` and every position i,
    ``evaluate(build(), xs, causal=True)[i] == evaluate(build(), xs[:i + 1])[i]``, so a
    causally masked model gives at each position the answer for the prefix up to it.
    """

    name: str
    make: Callable[..., rasp.SOp]
    description: str
    vocab: tuple[rasp.Value, ...]
    max_seq_len: int
    example: tuple[rasp.Value, ...]
    causal_safe: bool

    @property
    def length_dependent(self) -> bool:
        """Whether the program depends on the longest input (``make`` takes ``max_seq_len``)."""
        return "max_seq_len" in inspect.signature(self.make).parameters

    def build(self, max_seq_len: int | None = None) -> rasp.SOp:
        """The program, exact on inputs of length 1..``max_seq_len`` (default: the entry's).

        Build for the length you run, compile or verify at: a length-dependent program
        built for 5 can be wrong on longer inputs.

        >>> PROGRAMS["sort"].build(7)([2, 1, 1, 1, 1, 1, 1])
        [1, 1, 1, 1, 1, 1, 2]
        """
        if max_seq_len is None:
            max_seq_len = self.max_seq_len
        if not isinstance(max_seq_len, int) or isinstance(max_seq_len, bool) or max_seq_len < 1:
            raise ValueError(f"{self.name}: max_seq_len must be a positive int, "
                             f"got {max_seq_len!r}")
        if self.length_dependent:
            return self.make(max_seq_len=max_seq_len)
        return self.make()


_PAREN = ("(", ")")
_PAREN2 = ("(", ")", "{", "}")

_ENTRIES = (
    LibraryProgram(
        "length", make_length, "the input length at every position",
        tuple("abcd"), 5, tuple("abcd"), causal_safe=True),
    LibraryProgram(
        "reverse", lambda: make_reverse(rasp.tokens), "the tokens in reverse order",
        tuple("abcd"), 5, tuple("abcd"), causal_safe=True),
    LibraryProgram(
        "hist", make_hist, "how often each position's token occurs",
        tuple("abcd"), 5, tuple("abac"), causal_safe=True),
    LibraryProgram(
        "sort_unique", lambda: make_sort_unique(rasp.tokens, rasp.tokens),
        "the tokens sorted (tokens must be distinct)",
        (1, 2, 3, 4, 5), 5, (3, 1, 5, 2), causal_safe=False),
    LibraryProgram(
        "sort",
        lambda max_seq_len: make_sort(rasp.tokens, rasp.tokens, max_seq_len=max_seq_len, min_key=1),
        "the tokens sorted, repeats allowed",
        (1, 2, 3, 4, 5), 5, (2, 4, 1, 2), causal_safe=False),
    LibraryProgram(
        "sort_freq", make_sort_freq,
        "the tokens sorted by frequency, most frequent first",
        (1, 2, 3), 5, (2, 3, 2, 1), causal_safe=False),
    LibraryProgram(
        "frac_prevs", lambda: make_frac_prevs(rasp.tokens == "x"),
        'the fraction of tokens so far that are "x"',
        ("x", "y", "z"), 5, tuple("xyxzx"), causal_safe=True),
    LibraryProgram(
        "pair_balance", lambda: make_pair_balance(rasp.tokens, "(", ")"),
        "fraction of opening minus closing brackets so far",
        _PAREN, 5, tuple("(()))"), causal_safe=True),
    LibraryProgram(
        "shuffle_dyck", lambda: make_shuffle_dyck(["()"]),
        "whether the brackets () are balanced",
        _PAREN, 5, tuple("(())"), causal_safe=True),
    LibraryProgram(
        "shuffle_dyck2", make_shuffle_dyck2,
        "whether () and {} are each balanced on their own",
        _PAREN2, 5, tuple("({)}"), causal_safe=True),
    LibraryProgram(
        "shift_by", lambda: shift_by(1, rasp.tokens), "the tokens shifted right by one",
        tuple("abcd"), 5, tuple("abcd"), causal_safe=True),
    LibraryProgram(
        "detect_pattern", lambda: detect_pattern(rasp.tokens, "abc"),
        'True where the pattern "abc" ends',
        tuple("abc"), 6, tuple("abcabc"), causal_safe=True),
    LibraryProgram(
        "count_less_freq", lambda: make_count_less_freq(2),
        "how many tokens occur at most twice",
        tuple("abcd"), 5, tuple("aaabc"), causal_safe=False),
    LibraryProgram(
        "count", lambda: make_count(rasp.tokens, "a"), 'how many tokens are "a"',
        tuple("abc"), 5, tuple("cabca"), causal_safe=True),
    LibraryProgram(
        "nary_sequencemap",
        lambda: make_nary_sequencemap(
            lambda x, y, z: x + y - z, rasp.tokens, rasp.tokens, rasp.indices
        ).named("nary_sequencemap"),
        "token + token - index, through a 3-ary SequenceMap",
        (1, 2, 3), 5, (1, 2, 3), causal_safe=True),
    LibraryProgram(
        "double_hist", make_double_hist,
        "how many distinct tokens occur as often as this one (RASP paper)",
        tuple("abcd"), 5, tuple("aabbc"), causal_safe=False),
    LibraryProgram(
        "sort_stable", lambda: make_sort_stable(rasp.tokens, rasp.tokens),
        "the tokens sorted, ties broken by position (RASP paper)",
        tuple("abcd"), 5, tuple("dbcab"), causal_safe=False),
    LibraryProgram(
        "sort_by_most_freq", make_sort_by_most_freq,
        "the distinct tokens, most frequent first (RASP paper)",
        tuple("abc"), 5, tuple("cabba"), causal_safe=False),
    LibraryProgram(
        "dyck1", make_dyck1, "Dyck-1 per prefix: T balanced, P open, F failed (RASP paper)",
        _PAREN, 5, tuple("(())("), causal_safe=True),
    LibraryProgram(
        "dyck2", make_dyck2,
        "Dyck-2 over () and {} per prefix: T, P or F (RASP paper)",
        _PAREN2, 5, tuple("({})("), causal_safe=True),
    LibraryProgram(
        "count_distinct", make_count_distinct,
        "how many distinct tokens occur (an and of selectors on different SOps)",
        tuple("abc"), 5, tuple("abcab"), causal_safe=True),
    LibraryProgram(
        "same_frac", make_same_frac,
        'how many positions share this running fraction of "x" (numerical Select)',
        ("x", "y"), 6, tuple("xyxyyx"), causal_safe=True),
    LibraryProgram(
        "shift_fill", make_shift_fill,
        'the tokens shifted right by one, "_" first (Aggregate default)',
        tuple("abc"), 5, tuple("abca"), causal_safe=True),
    LibraryProgram(
        "above_mean", make_above_mean,
        "whether each token is above the mean token (numerical mean into a SequenceMap)",
        (1, 2, 3, 5), 5, (1, 5, 2, 3), causal_safe=True),
    LibraryProgram(
        "prev_sum", make_prev_sum,
        "each token plus the previous one, None first (numerical None)",
        (1, 2, 3), 5, (1, 2, 3, 1), causal_safe=True),
)

#: Every library program by name: the one registry the CLI, demo, docs and tests use.
PROGRAMS: dict[str, LibraryProgram] = {entry.name: entry for entry in _ENTRIES}


def get_program(name: str) -> LibraryProgram:
    """The `PROGRAMS` entry called ``name``; a KeyError lists the names there are."""
    try:
        return PROGRAMS[name]
    except KeyError:
        raise KeyError(
            f"no library program {name!r}; the library has {', '.join(PROGRAMS)}"
        ) from None
