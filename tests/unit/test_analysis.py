"""Program analysis: value sets (checked for soundness by brute force) and validation."""

import itertools
from fractions import Fraction

import pytest

import rasplang as rl
from rasplang import (
    Aggregate,
    Comparison,
    ConstantSOp,
    Map,
    Select,
    SelectorWidth,
    SequenceMap,
    analyze,
    evaluate_all,
    indices,
    length,
    tokens,
)
from rasplang.analysis import (
    AnalysisError,
    UnsupportedProgramError,
    ValueSetTooLarge,
    raise_if_unsupported,
    validate,
)


def all_inputs(vocab, max_len):
    """Every sequence over vocab of length 1..max_len."""
    for n in range(1, max_len + 1):
        yield from itertools.product(vocab, repeat=n)


def assert_sound(program, vocab, max_len, causal=False):
    """Every value evaluate produces at every SOp is in its inferred value set.

    The documented exception: a categorical Aggregate listed in spread_aggregates may
    return the mean of several different numbers.
    """
    analysis = analyze(program, vocab, max_len)
    spread = set(analysis.spread_aggregates)
    checked = 0
    for xs in all_inputs(vocab, max_len):
        values = evaluate_all(program, list(xs), causal=causal)
        for node, out in values.items():
            if node not in analysis.value_sets:
                continue  # selectors
            allowed = set(analysis.value_sets[node])
            for v in out:
                if node in spread and isinstance(v, float) and v not in allowed:
                    continue
                assert v in allowed, (analysis.labels[node], xs, v, analysis.value_sets[node])
                checked += 1
    assert checked > 0


def frac_prevs():
    prevs = Select(indices, indices, Comparison.LEQ)
    return rl.numerical(Aggregate(prevs, rl.numerical(tokens == "x"), default=0))


def build_programs():
    """A handful of programs covering every node type."""
    fp = frac_prevs()
    sel_eq = Select(tokens, tokens, Comparison.EQ)
    hist = SelectorWidth(sel_eq)
    smaller = Select(tokens, tokens, Comparison.LT)
    target = SelectorWidth(smaller)
    sort = Aggregate(Select(target, indices, Comparison.EQ), tokens)
    reverse = Aggregate(Select(indices, length - indices - 1, Comparison.EQ), tokens)
    shift = Aggregate(Select(indices, indices, lambda k, q: k == q - 1), tokens)
    shifted_plus = SequenceMap(lambda a, b: f"{a}{b}", shift, tokens)
    numeric_mean = rl.numerical(
        Aggregate(Select(indices, indices, Comparison.LEQ), rl.numerical(Map(int, tokens)),
                  default=0)
    )
    discretised = Map(lambda f: f > 0.5, fp)
    distinct = SelectorWidth(sel_eq & Select(indices, indices, Comparison.LT))
    either = SelectorWidth(sel_eq | ~Select(indices, indices, Comparison.GEQ))
    return {
        "frac_prevs": (fp, "xy"),
        "hist": (hist, "abc"),
        "sort": (sort, "abc"),
        "reverse": (reverse, "abc"),
        "shift": (shifted_plus, "ab"),
        "numeric_mean": (numeric_mean, "012"),
        "discretised": (discretised, "xy"),
        "distinct": (distinct, "ab"),
        "either": (either, "ab"),
    }


@pytest.mark.parametrize("name", sorted(build_programs()))
@pytest.mark.parametrize("causal", [False, True])
def test_value_sets_are_sound(name, causal):
    """Brute force: evaluate's values at every node lie in the inferred sets (len <= 5)."""
    program, vocab = build_programs()[name]
    assert_sound(program, list(vocab), 5, causal=causal)


def test_primitive_value_sets():
    """tokens -> vocab, indices -> 0..N-1, length -> 1..N; SelectorWidth -> the counts
    the cells allow: from 1 where every query selects its own position, up to N, or
    fewer where no query can select every key."""
    width = SelectorWidth(Select(tokens, tokens, Comparison.LT))
    analysis = analyze(width, ["b", "a"], 4)
    assert analysis.value_set(tokens) == ("a", "b")
    assert analysis.value_set(width) == (0, 1, 2, 3)  # a query never selects itself
    cases = [
        (Select(tokens, tokens, Comparison.EQ), 1, 4),
        (Select(indices, indices, Comparison.LEQ) & Select(tokens, tokens, Comparison.TRUE),
         1, 4),
        (Select(tokens, tokens, Comparison.LT) | Select(tokens, tokens, Comparison.GEQ), 1, 4),
        (Select(tokens, indices, Comparison.TRUE) & Select(tokens, tokens, Comparison.EQ),
         1, 4),
        (Select(tokens, tokens, lambda k, q: k == q), 1, 4),  # its table, built once
        (Select(indices, indices, Comparison.LEQ) & Select(tokens, tokens, Comparison.GT),
         0, 3),
        (Select(tokens, indices, Comparison.TRUE), 1, 4),  # every key
        (Select(tokens, tokens, lambda k, q: k != "a"), 0, 4),
        (Select(tokens, indices, Comparison.EQ), 0, 0),  # a str is never an int
    ]
    for selector, low, high in cases:
        node = SelectorWidth(selector)
        assert analyze(node, "ab", 4).value_set(node) == tuple(range(low, high + 1)), selector
    a2 = analyze(length + indices, "ab", 3)
    assert a2.value_set(indices) == (0, 1, 2)
    assert a2.value_set(length) == (1, 2, 3)


def test_numerical_aggregate_of_bits_is_every_fraction():
    """For 0/1 inputs the set is every k/w, 0 <= k <= w <= N (tracr keeps only 1/w)."""
    n = 6
    fp = frac_prevs()
    got = analyze(fp, "xy", n).value_set(fp)
    expected = {float(Fraction(k, w)) for w in range(1, n + 1) for k in range(w + 1)}
    assert set(got) == expected and len(got) == len(expected)
    assert 2 / 3 in got and 0.4 in got


def test_numerical_aggregate_of_integers():
    """For inputs {0, 1, 2} the set is every mean of 1..N values from it."""
    values = rl.numerical(Map(int, tokens))
    agg = rl.numerical(Aggregate(Select(indices, indices, Comparison.LEQ), values, default=0))
    got = set(analyze(agg, "012", 3).value_set(agg))
    expected = {float(Fraction(sum(c), len(c))) for w in (1, 2, 3)
                for c in itertools.combinations_with_replacement((0, 1, 2), w)}
    assert got == expected


def test_categorical_aggregate_is_input_set_plus_default():
    """A categorical Aggregate takes its input's values or the default."""
    agg = Aggregate(Select(indices, indices, Comparison.EQ), tokens, default="z")
    analysis = analyze(agg, "ab", 3)
    assert analysis.value_set(agg) == ("a", "b", "z")
    assert analysis.spread_aggregates == ()


def test_spread_aggregate_is_reported():
    """A categorical Aggregate whose selector may select several values is flagged."""
    agg = Aggregate(Select(tokens, tokens, Comparison.LEQ), tokens).named("spread")
    analysis = analyze(agg, "ab", 3)
    assert analysis.spread_aggregates == (agg,)
    assert any("spread: categorical Aggregate may select" in d for d in analysis.diagnostics)


def test_dropped_values_are_diagnosed():
    """Values where f raises are dropped from the set and listed in diagnostics."""
    inv = Map(lambda x: 6 // x, indices).named("inv")
    analysis = analyze(inv, "a", 4)
    assert analysis.value_set(inv) == (2, 3, 6)
    assert any(d.startswith("inv: f(0) raised ZeroDivisionError") for d in analysis.diagnostics)


def test_none_in_value_sets():
    """A default-None Aggregate contributes None; Maps of it keep None."""
    shift = Aggregate(Select(indices, indices, lambda k, q: k == q - 1), tokens)
    plus = Map(lambda x: x + "!", shift)
    analysis = analyze(plus, "ab", 3)
    assert analysis.value_set(shift) == (None, "a", "b")
    assert analysis.value_set(plus) == (None, "a!", "b!")


def test_value_set_too_large_names_node():
    """An explosion of means (of token-dependent values) raises ValueSetTooLarge naming
    the node."""
    values = rl.numerical(Map(lambda x: x * 1.01 ** x, tokens))
    agg = rl.numerical(Aggregate(Select(indices, indices, Comparison.LEQ), values,
                                 default=0)).named("huge")
    with pytest.raises(ValueSetTooLarge, match="Aggregate 'huge'"):
        analyze(agg, range(16), 64)


def test_numerical_aggregate_of_strings_is_an_error():
    """A numerical Aggregate of non-numbers names the node."""
    agg = rl.numerical(Aggregate(Select(indices, indices, Comparison.EQ), tokens)).named("n")
    with pytest.raises(AnalysisError, match="Aggregate 'n' is numerical but"):
        analyze(agg, "ab", 3)


@pytest.mark.parametrize(
    ("vocab", "max_len", "match"),
    [([], 3, "vocab must not be empty"), ([1, 1], 3, "duplicate tokens"),
     ([None], 3, "must not contain None"), ([1], 0, "max_seq_len must be a positive")],
)
def test_bad_vocab_or_length(vocab, max_len, match):
    """Bad vocabularies and lengths are rejected with a clear message."""
    with pytest.raises(ValueError, match=match):
        analyze(tokens, vocab, max_len)


def test_node_lookup_by_label():
    """Analysis.node finds a node by its unique label."""
    prog = (tokens + 1).named("succ")
    analysis = analyze(prog, [1, 2], 2)
    assert analysis.node("succ") is prog
    with pytest.raises(KeyError, match="no node labelled 'nope'"):
        analysis.node("nope")


def test_validate_collects_every_problem():
    """validate lists every uncompilable node with its label, in one error."""
    const = ConstantSOp([1, 2]).named("const")
    words = rl.numerical(Map(lambda x: x + "!", tokens)).named("words")
    prog = SequenceMap(lambda a, b: a, const, words)
    problems = validate(analyze(prog, "ab", 2))
    labels = [label for label, _ in problems]
    assert labels == ["const", "words"]
    with pytest.raises(UnsupportedProgramError, match=r"cannot compile 2 node\(s\)") as info:
        raise_if_unsupported(problems)
    assert "const: ConstantSOp depends on the input length" in str(info.value)
    assert "words: numerical encoding needs numbers" in str(info.value)
    assert isinstance(info.value, NotImplementedError)
    raise_if_unsupported([])


def _library_cases():
    from rasplang.lib import PROGRAMS

    return sorted(PROGRAMS)


@pytest.mark.parametrize("name", _library_cases())
def test_library_value_sets_are_sound(name):
    """Brute force over every library program: values lie in the inferred sets.

    Inputs are every sequence up to the longest length with at most ~1,500 of them.
    """
    from rasplang.lib import PROGRAMS

    entry = PROGRAMS[name]
    vocab = list(entry.vocab)
    max_len = 1
    while max_len < entry.max_seq_len and sum(
        len(vocab) ** n for n in range(1, max_len + 2)
    ) <= 1500:
        max_len += 1
    assert_sound(entry.build(), vocab, max_len)


def test_type_collisions_are_found_and_kept_apart():
    """A categorical node that can be 1 or True keeps both in typed_values."""
    mixed = Map(lambda x: True if x == "a" else 1, tokens).named("mixed")
    analysis = analyze(mixed, "ab", 2)
    assert analysis.value_set(mixed) == (True,) or analysis.value_set(mixed) == (1,)
    assert set(map(type, analysis.typed_values[mixed])) == {bool, int}
    assert analysis.type_collisions[mixed] == ((True, 1),)
    assert any("mixed: values [True, 1] compare equal" in d for d in analysis.diagnostics)


@pytest.mark.parametrize(
    ("consumer", "refused"),
    [
        (lambda m: Map(str, m, simplify=False), True),
        (lambda m: Map(lambda x: x + 1, m, simplify=False), False),
        (lambda m: SequenceMap(lambda x, y: f"{x}{y}", m, tokens), True),
        (lambda m: SequenceMap(lambda x, y: x == y, tokens, m), False),
        (lambda m: SelectorWidth(Select(m, m, lambda k, q: type(k) is type(q))), True),
        (lambda m: SelectorWidth(Select(m, m, Comparison.EQ)), False),
    ],
)
def test_validate_refuses_functions_that_tell_twins_apart(consumer, refused):
    """Consumers of 1-or-True are refused exactly when their function tells them apart."""
    mixed = Map(lambda x: True if x == "a" else 1, tokens).named("mixed")
    program = consumer(mixed)
    problems = validate(analyze(program, "ab", 2))
    messages = [reason for _, reason in problems]
    assert any("its input 'mixed' can be True or 1" in m for m in messages) == refused


def test_numerical_linear_sequence_map_is_exact_and_fast_path_matches():
    """The numpy path of LinearSequenceMap agrees with the generic enumeration (which
    keeps every pair; the numerical node keeps the pairs some cell holds) and is sound."""
    fp = frac_prevs()
    lin = rl.numerical(rl.LinearSequenceMap(fp, fp * 1, 2, -0.5))
    cat = rl.LinearSequenceMap(fp, fp * 1, 2, -0.5)  # categorical: generic path
    fast = analyze(lin, "xy", 6).value_set(lin)
    slow = analyze(cat, "xy", 6).value_set(cat)
    assert set(fast) < set(slow) and len(fast) > 20 and len(slow) > 50
    assert_sound(lin, "xy", 6)
