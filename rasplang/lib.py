"""The program library: tracr's library programs, the RASP paper's programs, a registry.

tracr's ``make_*`` functions, `shift_by` and `detect_pattern` live in
`rasplang.tracr_lib` with the names, signatures, defaults, semantics and node labels of
tracr's ``tracr/compiler/lib.py`` (Lindner et al. 2023), so code written against
tracr's library runs unchanged; the paper's programs (Weiss et al. 2021) live in
`rasplang.paper`. Both are re-exported here, beside the programs tracr refuses to
compile (which rasplang compiles).

`PROGRAMS` is the one registry of example programs that the CLI, the demo, the docs and
the differential tests share: each `LibraryProgram` carries a builder, a small
vocabulary, a default maximum length and an example input. ``entry.build(n)`` builds the
program for inputs up to length n (some programs, such as `make_sort`, depend on it).

Unlike tracr, ``numerical``/``named`` return new nodes, so every step below uses the
node they return.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

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
from rasplang.tracr_lib import (
    detect_pattern,
    length,
    make_count,
    make_count_less_freq,
    make_frac_prevs,
    make_hist,
    make_length,
    make_nary_sequencemap,
    make_pair_balance,
    make_reverse,
    make_shuffle_dyck,
    make_shuffle_dyck2,
    make_sort,
    make_sort_freq,
    make_sort_unique,
    shift_by,
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
