"""Tests of the program library: hand-computed examples, doctests, and every registry
entry against an independent plain-Python reference on all inputs up to its length."""

from __future__ import annotations

import doctest
import functools
import itertools
from collections.abc import Callable

import pytest

import rasplang.lib as lib
import rasplang.paper as paper
import rasplang.tracr_lib as tracr_lib
from rasplang import analyze, evaluate, indices, tokens, validate
from rasplang.lib import PROGRAMS

# ------------------------------------------------------------ plain-Python references


def _balanced_each(xs: list, pairs: list[str]) -> bool:
    """Each kind of bracket balanced on its own (shuffle-Dyck)."""
    for open_token, close_token in pairs:
        depth = 0
        for x in xs:
            depth += (x == open_token) - (x == close_token)
            if depth < 0:
                return False
        if depth:
            return False
    return True


def _dyck_ptf(xs: list, pairs: list[str]) -> list[str]:
    """Stack-based Dyck per prefix: "F" failed, "T" balanced, "P" still possible."""
    opener_of = {close: open_ for open_, close in pairs}
    openers = {open_ for open_, _ in pairs}
    stack: list = []
    failed = False
    out = []
    for x in xs:
        if not failed:
            if x in openers:
                stack.append(x)
            elif x in opener_of:
                if stack and stack[-1] == opener_of[x]:
                    stack.pop()
                else:
                    failed = True
        out.append("F" if failed else ("T" if not stack else "P"))
    return out


def _sort_unique_ref(xs: list) -> list:
    """Each value moves to the number of smaller values; repeats leave gaps (None)."""
    out = []
    for pos in range(len(xs)):
        landed = [x for x in xs if sum(y < x for y in xs) == pos]
        out.append(landed[0] if landed else None)  # the values landing together are equal
    return out


def _sort_by_most_freq_ref(xs: list) -> list:
    distinct = list(dict.fromkeys(xs))  # first-occurrence order
    ranked = sorted(distinct, key=lambda t: -xs.count(t))  # stable
    return ranked + ["§"] * (len(xs) - len(ranked))


REFERENCES: dict[str, Callable[[list], list]] = {
    "length": lambda xs: [len(xs)] * len(xs),
    "reverse": lambda xs: xs[::-1],
    "hist": lambda xs: [xs.count(x) for x in xs],
    "sort_unique": _sort_unique_ref,
    "sort": sorted,
    "sort_freq": lambda xs: [
        xs[i] for i in sorted(range(len(xs)), key=lambda i: -xs.count(xs[i]))
    ],
    "frac_prevs": lambda xs: [xs[: i + 1].count("x") / (i + 1) for i in range(len(xs))],
    "pair_balance": lambda xs: [
        xs[: i + 1].count("(") / (i + 1) - xs[: i + 1].count(")") / (i + 1)
        for i in range(len(xs))
    ],
    "shuffle_dyck": lambda xs: [_balanced_each(xs, ["()"])] * len(xs),
    "shuffle_dyck2": lambda xs: [_balanced_each(xs, ["()", "{}"])] * len(xs),
    "shift_by": lambda xs: [None, *xs[:-1]],
    "detect_pattern": lambda xs: [
        None if i < 2 else xs[i - 2 : i + 1] == list("abc") for i in range(len(xs))
    ],
    "count_less_freq": lambda xs: [sum(xs.count(x) <= 2 for x in xs)] * len(xs),
    "count": lambda xs: [xs.count("a")] * len(xs),
    "nary_sequencemap": lambda xs: [x + x - i for i, x in enumerate(xs)],
    "double_hist": lambda xs: [
        len({t for t in xs if xs.count(t) == xs.count(x)}) for x in xs
    ],
    "sort_stable": sorted,
    "sort_by_most_freq": _sort_by_most_freq_ref,
    "dyck1": lambda xs: _dyck_ptf(xs, ["()"]),
    "dyck2": lambda xs: _dyck_ptf(xs, ["()", "{}"]),
    "count_distinct": lambda xs: [len(set(xs))] * len(xs),
    "same_frac": lambda xs: [
        [xs[: j + 1].count("x") / (j + 1) for j in range(len(xs))].count(
            xs[: i + 1].count("x") / (i + 1)) for i in range(len(xs))
    ],
    "shift_fill": lambda xs: ["_", *xs[:-1]],
    "above_mean": lambda xs: [x > sum(xs) / len(xs) for x in xs],
    "prev_sum": lambda xs: [None, *(a + b for a, b in zip(xs[1:], xs))],
}


def _domain(vocab: tuple, max_seq_len: int) -> list[tuple]:
    """Every input over ``vocab`` of length 1..max_seq_len."""
    return [
        xs for n in range(1, max_seq_len + 1) for xs in itertools.product(vocab, repeat=n)
    ]


@functools.cache
def _outputs(name: str) -> tuple[dict, dict]:
    """Non-causal and causal outputs of a registry program on its whole domain."""
    entry = PROGRAMS[name]
    program = entry.build(entry.max_seq_len)
    domain = _domain(entry.vocab, entry.max_seq_len)
    plain = {xs: evaluate(program, xs) for xs in domain}
    causal = {xs: evaluate(program, xs, causal=True) for xs in domain}
    return plain, causal


# ---------------------------------------------------------------------- doctests


@pytest.mark.parametrize("module", [lib, tracr_lib, paper], ids=["lib", "tracr_lib", "paper"])
def test_doctests(module):
    """Every docstring example in the library runs and prints what it shows."""
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0


# ------------------------------------------------------- hand-computed examples

HAND_CASES = [
    ("frac_prevs hello", lambda: lib.make_frac_prevs(tokens == "l"), "hello",
     [0, 0, 1 / 3, 1 / 2, 2 / 5]),
    ("frac_prevs a()b(c))", lambda: lib.make_frac_prevs(tokens == ")"), "a()b(c))",
     [0, 0, 1 / 3, 1 / 4, 1 / 5, 1 / 6, 2 / 7, 3 / 8]),
    ("pair_balance", lambda: lib.make_pair_balance(tokens, "(", ")"), "a()b(c))",
     [0, 1 / 2, 1 / 3 - 1 / 3, 1 / 4 - 1 / 4, 2 / 5 - 1 / 5, 2 / 6 - 1 / 6, 2 / 7 - 2 / 7,
      2 / 8 - 3 / 8]),
    ("shuffle_dyck2 accepts", lib.make_shuffle_dyck2, "({)}", [1, 1, 1, 1]),
    ("shuffle_dyck2 rejects", lib.make_shuffle_dyck2, "(){)}", [0, 0, 0, 0, 0]),
    ("shuffle_dyck2 unclosed", lib.make_shuffle_dyck2, "{}(", [0, 0, 0]),
    ("shuffle_dyck3 accepts", lambda: lib.make_shuffle_dyck(["()", "{}", "[]"]), "({)[}]",
     [1] * 6),
    ("shuffle_dyck3 rejects", lambda: lib.make_shuffle_dyck(["()", "{}", "[]"]), "{}[(]",
     [0] * 5),
    ("reverse", lambda: lib.make_reverse(tokens), "abcd", list("dcba")),
    ("reverse one", lambda: lib.make_reverse(tokens), "c", ["c"]),
    ("sort_unique", lambda: lib.make_sort_unique(tokens, tokens), [3, 1, 2], [1, 2, 3]),
    ("sort_unique by 1 - index", lambda: lib.make_sort_unique(tokens, 1 - indices), "abcd",
     list("dcba")),
    ("sort with repeats", lambda: lib.make_sort(tokens, tokens, max_seq_len=5, min_key=1),
     [2, 4, 1, 2], [1, 2, 2, 4]),
    ("sort_freq", lambda: lib.make_sort_freq(max_seq_len=5), [2, 4, 2, 1], [2, 2, 4, 1]),
    ("hist", lib.make_hist, "aabc", [2, 2, 1, 1]),
    ("length", lib.make_length, "abc", [3, 3, 3]),
    ("count", lambda: lib.make_count(tokens, "a"), "aaabbc", [3] * 6),
    ("count none", lambda: lib.make_count(tokens, "a"), "bbc", [0, 0, 0]),
    ("count_less_freq", lambda: lib.make_count_less_freq(2), "aacbbc", [6] * 6),
    ("count_less_freq 1", lambda: lib.make_count_less_freq(1), "aab", [1, 1, 1]),
    ("shift_by 1", lambda: lib.shift_by(1, tokens), "abcd", [None, "a", "b", "c"]),
    ("shift_by 2", lambda: lib.shift_by(2, tokens), "abcd", [None, None, "a", "b"]),
    ("detect_pattern a", lambda: lib.detect_pattern(tokens, "a"), "bacd",
     [False, True, False, False]),
    ("detect_pattern ab", lambda: lib.detect_pattern(tokens, "ab"), "aaba",
     [None, False, True, False]),
    ("detect_pattern abc", lambda: lib.detect_pattern(tokens, "abc"), "abcabc",
     [None, None, True, False, False, True]),
    ("detect_pattern too short", lambda: lib.detect_pattern(tokens, "abc"), "ab",
     [None, None]),
    ("nary x+y-z", lambda: lib.make_nary_sequencemap(
        lambda x, y, z: x + y - z, tokens, tokens, indices), [1, 2, 3], [2, 3, 4]),
    ("nary x*y/z", lambda: lib.make_nary_sequencemap(
        lambda x, y, z: x * y / z, indices, indices, tokens), [1, 2, 3], [0, 1 / 2, 4 / 3]),
    ("nary one sop", lambda: lib.make_nary_sequencemap(lambda x: x * 10, tokens), [1, 2],
     [10, 20]),
    ("nary tuple values", lambda: lib.make_nary_sequencemap(
        lambda pair, i: pair[1] + i, lib.make_nary_sequencemap(lambda a, b: (a, b), tokens,
                                                               tokens), indices),
     [5, 7], [5, 8]),
    ("double_hist paper", lib.make_double_hist, "aaabbccdef",
     [1, 1, 1, 2, 2, 2, 2, 3, 3, 3]),
    ("sort_by_most_freq", lambda: lib.make_sort_by_most_freq(max_seq_len=6), "aabbbc",
     ["b", "a", "c", "§", "§", "§"]),
    ("sort_stable stable", lambda: lib.make_sort_stable(indices, tokens), "cacb",
     [1, 3, 0, 2]),
    ("dyck1", lib.make_dyck1, "())(", ["P", "T", "F", "F"]),
    ("dyck1 other tokens", lib.make_dyck1, "(a(b))", ["P", "P", "P", "P", "P", "T"]),
    ("dyck2 nested", lib.make_dyck2, "{()}", ["P", "P", "P", "T"]),
    ("dyck2 crossed", lib.make_dyck2, "({)}", ["P", "P", "F", "F"]),
    ("dyck2 close first", lib.make_dyck2, "}{", ["F", "F"]),
    ("dyck3", lambda: lib.make_dyck(["()", "{}", "[]"]), "[{}]([)",
     ["P", "P", "P", "T", "P", "P", "F"]),
]


@pytest.mark.parametrize(
    ("build", "xs", "expected"), [case[1:] for case in HAND_CASES], ids=[c[0] for c in HAND_CASES]
)
def test_hand_computed(build, xs, expected):
    """Library programs give the outputs worked out by hand (tracr's and the paper's)."""
    assert evaluate(build(), list(xs)) == expected


def test_frac_prevs_is_causal():
    """frac_prevs gives the same outputs with and without a causal mask."""
    program = lib.make_frac_prevs(tokens == "l")
    assert evaluate(program, list("hello"), causal=True) == [0, 0, 1 / 3, 1 / 2, 2 / 5]


@pytest.mark.parametrize(
    ("program", "label"),
    [
        (lib.make_length(), "length"),
        (lib.make_reverse(tokens), "reverse"),
        (lib.make_hist(), "hist"),
        (lib.make_sort_unique(tokens, tokens), "sort"),
        (lib.make_sort(tokens, tokens, max_seq_len=5, min_key=1), "sort"),
        (lib.make_sort_freq(5), "sort_freq"),
        (lib.make_frac_prevs(tokens == "x"), "frac_prevs"),
        (lib.make_pair_balance(tokens, "(", ")"), "pair_balance"),
        (lib.make_shuffle_dyck(["()"]), "shuffle_dyck"),
        (lib.make_shuffle_dyck2(), "shuffle_dyck2"),
        (lib.shift_by(3, tokens), "shift_by(3)"),
        (lib.detect_pattern(tokens, "ab"), "detect_pattern(ab)"),
        (lib.make_count_less_freq(2), "count_less_freq"),
        (lib.make_count(tokens, "a"), "count_a"),
        (lib.make_double_hist(), "double_hist"),
        (lib.make_sort_stable(tokens, tokens), "sort"),
        (lib.make_sort_by_most_freq(5), "sort_by_most_freq"),
        (lib.make_dyck1(), "dyck1"),
        (lib.make_dyck2(), "dyck2"),
    ],
)
def test_labels(program, label):
    """Programs carry tracr's output labels, so compiled residual names read well."""
    assert program.label == label


def test_pair_balance_intermediate_labels():
    """pair_balance names its intermediate nodes as tracr does."""
    from rasplang import topological_order

    labels = {node.label for node in topological_order(lib.make_pair_balance(tokens, "(", ")"))}
    assert {"bools_open", "opens", "bools_close", "closes", "pair_balance"} <= labels


def test_module_length_is_shared():
    """make_reverse uses the module-level `length` node, as tracr's does."""
    from rasplang import topological_order

    assert any(node is lib.length for node in topological_order(lib.make_reverse(tokens)))


# ------------------------------------------------------------------ error paths


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: lib.make_shuffle_dyck([]), ValueError, "at least one pair"),
        (lambda: lib.make_shuffle_dyck(["()", "{"]), ValueError, "'{'"),
        (lambda: lib.detect_pattern(tokens, ""), ValueError, "at least 1"),
        (lambda: lib.make_nary_sequencemap(lambda: 0), ValueError, "at least one SOp"),
        (lambda: lib.make_dyck([]), ValueError, "2-character"),
        (lambda: lib.make_dyck(["(", "{}"]), ValueError, r"\['\(', '\{\}'\]"),
        (lambda: lib.make_sort_by_most_freq(0), ValueError, "max_seq_len"),
        (lambda: lib.get_program("nope"), KeyError, "no library program 'nope'.*sort_unique"),
    ],
)
def test_errors(build, error, match):
    """Bad arguments raise errors that say what was wrong."""
    with pytest.raises(error, match=match):
        build()


# ------------------------------------------------------------------------ registry


def test_registry_covers_references():
    """Every registry entry has a reference here, and every name maps to its entry."""
    assert set(PROGRAMS) == set(REFERENCES)
    for name, entry in PROGRAMS.items():
        assert entry.name == name
        assert lib.get_program(name) is entry


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_entry_is_well_formed(name):
    """Each entry's example fits its vocabulary and length, and its description is one line."""
    entry = PROGRAMS[name]
    assert 1 <= len(entry.example) <= entry.max_seq_len
    assert set(entry.example) <= set(entry.vocab)
    assert len(set(entry.vocab)) == len(entry.vocab)
    assert entry.description and "\n" not in entry.description
    assert not name.startswith("make_")


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_entry_example_matches_reference(name):
    """Each entry's example runs and matches the plain-Python reference."""
    entry = PROGRAMS[name]
    xs = list(entry.example)
    assert evaluate(entry.build(), xs) == REFERENCES[name](xs)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_entry_exhaustive_against_reference(name):
    """The program agrees with its reference on every input up to max_seq_len."""
    plain, _ = _outputs(name)
    reference = REFERENCES[name]
    wrong = [(xs, out, reference(list(xs))) for xs, out in plain.items()
             if out != reference(list(xs))]
    assert not wrong, f"{name}: {len(wrong)} inputs differ, e.g. (input, got, want) {wrong[0]}"


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_entry_causal_safe_flag(name):
    """causal_safe is True exactly when causal outputs are the prefixes' answers."""
    plain, causal = _outputs(name)
    failures = [
        xs for xs, out in causal.items()
        if out != [plain[xs[: i + 1]][i] for i in range(len(xs))]
    ]
    if PROGRAMS[name].causal_safe:
        assert not failures, f"{name}: causal output is not the prefix answer on {failures[0]}"
    else:
        assert failures, f"{name}: causal output is always the prefix answer; flag it safe"


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_entry_analyzes_soundly(name):
    """Each entry analyses cleanly and its outputs lie in the inferred value set."""
    entry = PROGRAMS[name]
    program = entry.build()
    analysis = analyze(program, entry.vocab, entry.max_seq_len)
    assert validate(analysis) == []
    values = set(analysis.value_set(program))
    plain, _ = _outputs(name)
    outside = {v for out in plain.values() for v in out} - values
    assert not outside, f"{name}: outputs {outside} are missing from the value set"


def test_sort_unique_sorts_distinct_tokens():
    """sort_unique equals sorted() on every input with distinct tokens."""
    plain, _ = _outputs("sort_unique")
    distinct = [xs for xs in plain if len(set(xs)) == len(xs)]
    assert len(distinct) == 5 + 20 + 60 + 120 + 120
    assert all(plain[xs] == sorted(xs) for xs in distinct)


def test_sort_stable_keeps_tie_order_exhaustively():
    """The paper's sort moves indices stably: ties keep their input order."""
    program = lib.make_sort_stable(indices, tokens)
    for xs in _domain(tuple("abc"), 5):
        assert evaluate(program, xs) == sorted(range(len(xs)), key=lambda i: xs[i])


def test_dyck1_ignores_other_tokens_exhaustively():
    """Dyck-1 with letters mixed in agrees with the stack reference."""
    program = lib.make_dyck1()
    for xs in _domain(("(", ")", "a"), 5):
        assert evaluate(program, xs) == _dyck_ptf(list(xs), ["()"])


def test_shuffle_dyck2_with_letters_exhaustively():
    """shuffle_dyck2 ignores other tokens, as tracr's tests use them ("a")."""
    program = lib.make_shuffle_dyck2()
    for xs in _domain(("(", ")", "{", "}", "a"), 4):
        assert evaluate(program, xs) == [_balanced_each(list(xs), ["()", "{}"])] * len(xs)


LONGER = [
    ("pair_balance", ("(", ")"), 10),
    ("shuffle_dyck", ("(", ")"), 10),
    ("dyck1", ("(", ")"), 10),
    ("dyck2", ("(", ")", "{", "}"), 6),
    ("frac_prevs", ("x", "y", "z"), 7),
]


@pytest.mark.parametrize(("name", "vocab", "max_len"), LONGER, ids=[c[0] for c in LONGER])
def test_longer_inputs_exhaustively(name, vocab, max_len):
    """Bracket and fraction programs stay exact on every input past the registry length."""
    program = PROGRAMS[name].build(max_len)
    for xs in _domain(vocab, max_len):
        assert evaluate(program, xs) == REFERENCES[name](list(xs)), xs


@pytest.mark.parametrize("name", ["pair_balance", "shuffle_dyck2", "dyck1", "dyck2"])
def test_long_random_inputs(name):
    """At lengths 40-64, where (i + 1) * (k / (i + 1)) is no longer exactly k, the
    bracket programs still agree with their references."""
    import random

    entry = PROGRAMS[name]
    rng = random.Random(0)
    program = entry.build(64)
    for _ in range(6):
        n = rng.randint(40, 64)
        # Mostly balanced-looking inputs: a random bracket sequence, rarely perturbed.
        xs = [rng.choice(entry.vocab) for _ in range(n)]
        if rng.random() < 0.5:
            half = [rng.choice(entry.vocab[::2]) for _ in range(n // 2)]
            closer = {"(": ")", "{": "}"}
            xs = half + [closer[x] for x in reversed(half)]
        assert evaluate(program, xs) == REFERENCES[name](xs), xs


# ------------------------------------------------------- building for another length

LENGTH_DEPENDENT = {"sort", "sort_freq", "sort_by_most_freq"}


def test_length_dependent_entries():
    """Exactly the programs whose construction uses max_seq_len take it in their builder."""
    assert {name for name, e in PROGRAMS.items() if e.length_dependent} == LENGTH_DEPENDENT


@pytest.mark.parametrize("name", sorted(LENGTH_DEPENDENT))
@pytest.mark.parametrize("max_len", [7, 9])
def test_build_for_longer_inputs(name, max_len):
    """build(n) agrees with the reference on random inputs of length up to n, where the
    program built for the default length does not."""
    import random

    entry = PROGRAMS[name]
    rng = random.Random(max_len)
    inputs = [[rng.choice(entry.vocab) for _ in range(rng.randint(1, max_len))]
              for _ in range(200)]
    a, b = entry.vocab[:2]  # many repeats
    inputs += [[b] + [a] * (max_len - 1), [a] * (max_len - 1) + [b]]
    program = entry.build(max_len)
    for xs in inputs:
        assert evaluate(program, xs) == REFERENCES[name](xs), xs
    default = entry.build()
    assert any(evaluate(default, xs) != REFERENCES[name](xs) for xs in inputs)


def test_build_defaults_to_the_entry_length():
    """build() is build(entry.max_seq_len); a length-independent builder ignores n."""
    sort = PROGRAMS["sort"]
    xs = [2, 1, 1, 1, 1]
    assert evaluate(sort.build(), xs) == evaluate(sort.build(sort.max_seq_len), xs) == sorted(xs)
    assert evaluate(PROGRAMS["hist"].build(9), list("aab")) == [2, 2, 1]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_build_rejects_bad_lengths(bad):
    """build refuses a length that is not a positive int, naming the program."""
    with pytest.raises(ValueError, match=rf"sort: max_seq_len must be a positive int, got {bad}"):
        PROGRAMS["sort"].build(bad)
