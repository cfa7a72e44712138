"""The RASP constructs tracr refuses, compiled exactly: one test per item of the issue.

Each program is compiled and checked with `rasplang.verify` (the batched interpreter
against the model's forward pass) on every input of a small domain, and on random
inputs of a longer one, with and without causal masking; a few tests also compare
`model.run` with `rasplang.evaluate` directly, None included.
"""

from __future__ import annotations

import itertools
import warnings

import pytest

import rasplang as rl
from rasplang import lib
from rasplang.backend import CompilerWarning

CAUSAL = pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])


def verified(program, vocab, max_seq_len, *, causal, samples=None):
    """Compile and verify (exhaustively, or on ``samples`` random inputs); must be exact."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        report = rl.verify(program, vocab, max_seq_len, causal=causal,
                           exhaustive=samples is None, samples=samples or 0)
    assert report.ok, report.summary()
    assert report.checked > 0
    return report


def inputs(vocab, max_seq_len):
    """Every input of length 1..max_seq_len."""
    return [list(x) for n in range(1, max_seq_len + 1)
            for x in itertools.product(vocab, repeat=n)]


def runs_like_evaluate(model, program, xs_list, causal):
    """model.run equals evaluate exactly (None where it is None) on every input given."""
    for xs, out in zip(xs_list, model.run(xs_list)):
        expected = rl.evaluate(program, xs, causal=causal)
        assert len(out) == len(expected)
        assert all(_close(g, e) for g, e in zip(out, expected)), (xs, expected, out)


def _close(got, expected):
    if expected is None or got is None:
        return got is expected
    if isinstance(got, float):
        return abs(got - float(expected)) <= 1e-6 * max(1.0, abs(float(expected)))
    return got == expected


# ------------------------------------------------------------- 1. selector combinators

TOK_EQ = rl.select(rl.tokens, rl.tokens, "==")
IDX_LT = rl.select(rl.indices, rl.indices, "<")
IDX_GT = rl.select(rl.indices, rl.indices, ">")
SELECTORS = {
    "and_across": TOK_EQ & IDX_LT,
    "or_across": rl.select(rl.tokens, rl.tokens, "<") | (TOK_EQ & IDX_LT),
    "not_and": ~(TOK_EQ & IDX_LT),
    "nested": ~(IDX_GT | (TOK_EQ & ~IDX_LT)) & rl.select(rl.tokens, rl.indices,
                                                         lambda k, q: k != "c" or q > 1),
    "or_same_sops": rl.select(rl.tokens, rl.tokens, "<") | TOK_EQ,
}


@CAUSAL
@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_selector_combinators(name, causal):
    """&, | and ~ nested arbitrarily, on the same or different SOps: widths and means."""
    sel = SELECTORS[name]
    width = rl.selector_width(sel).named("width")
    mean_index = rl.numerical(rl.Aggregate(sel, rl.numerical(rl.indices), default=-1))
    verified(width, "abc", 5, causal=causal)
    verified(mean_index, "abc", 4, causal=causal)
    verified(width, "abc", 9, causal=causal, samples=300)


def test_selector_on_shared_sops_needs_no_product():
    """An `or` of selectors on the same SOps is one table: no product is inserted."""
    model = rl.compile(rl.selector_width(SELECTORS["or_same_sops"]), "abc", 5)
    assert not any(label.startswith("(") for label in model.circuit)
    model = rl.compile(rl.selector_width(SELECTORS["or_across"]), "abc", 5)
    assert "(tokens, indices)" in model.circuit


@CAUSAL
def test_count_distinct_and_paper_sorts(causal):
    """The issue's example (distinct tokens via `&`) and the paper's sorts (via `|`)."""
    verified(lib.make_count_distinct(), "abc", 5, causal=causal)
    verified(lib.make_count_distinct(), "abcd", 10, causal=causal, samples=300)
    if not causal:
        verified(lib.make_sort_stable(rl.tokens, rl.tokens), "abcd", 5, causal=False)
        verified(lib.make_sort_by_most_freq(max_seq_len=6), "abc", 6, causal=False)


# --------------------------------------------------- 2. numerical keys and queries


@CAUSAL
def test_numerical_keys_and_queries(causal):
    """Selects on numerical SOps attend through inserted numerical -> categorical MLPs."""
    frac = lib.make_frac_prevs(rl.tokens == "x")
    value = rl.numerical(rl.Map(lambda t: {"x": 2, "y": 0, "z": 1}[t], rl.tokens))
    below = rl.select(rl.indices, value, lambda k, q: k < q)  # numerical queries
    mixed = rl.numerical(rl.Aggregate(below, value, default=0)).named("mixed")
    same = rl.selector_width(rl.select(frac, frac, "==")).named("same")
    for program in (same, mixed):
        verified(program, "xyz", 5, causal=causal)
        verified(program, "xyz", 10, causal=causal, samples=300)
    model = rl.compile(same, "xyz", 5, causal=causal)
    assert "frac_prevs:categorical" in model.circuit  # the conversion, in the layer map


# ---------------------------------------------------------- 3. any Aggregate default


@CAUSAL
@pytest.mark.parametrize("default", ["_", -1, 2.5, None], ids=repr)
def test_aggregate_defaults(default, causal):
    """Categorical and numerical Aggregates with defaults other than None / 0."""
    shift = rl.select(rl.indices, rl.indices, lambda k, q: q == k + 2)
    categorical = rl.Aggregate(shift, rl.tokens, default=default)
    verified(categorical, [1, 2, 3], 5, causal=causal)
    if not isinstance(default, str):
        numerical = rl.numerical(rl.Aggregate(shift, rl.numerical(rl.tokens), default=default))
        verified(numerical, [1, 2, 3], 5, causal=causal)
        verified(rl.numerical(numerical * 3 - 1), [1, 2, 3], 12, causal=causal, samples=300)


# ---------------------------------------------------------- 4. means of any numbers


@CAUSAL
def test_means_of_any_numbers(causal):
    """The mean token over integer tokens, exact, and read by MLPs downstream."""
    prefix = rl.select(rl.indices, rl.indices, "<=")
    mean = rl.numerical(rl.Aggregate(prefix, rl.numerical(rl.tokens), default=0)).named("mean")
    above = rl.Map(lambda m: m > 2.2, mean)
    squared = rl.numerical(rl.Map(lambda m: m * m, mean))
    for program in (mean, above, squared, lib.make_above_mean()):
        verified(program, (1, 2, 3, 5), 5, causal=causal)
    verified(above, (1, 2, 3, 5), 9, causal=causal, samples=500)


# ------------------------------- 5. numerical inputs to SequenceMaps, encoding changes


@CAUSAL
def test_numerical_sequence_maps_and_encoding_changes(causal):
    """Non-linear SequenceMaps of numerical inputs; Aggregates that change encoding."""
    frac = lib.make_frac_prevs(rl.tokens == "x")
    count = rl.SequenceMap(lambda f, i: round(f * (i + 1)), frac, rl.indices).named("count")
    product = rl.numerical(rl.SequenceMap(lambda a, b: a * b, frac, frac))
    to_categorical = rl.Aggregate(rl.select(rl.indices, rl.indices, "=="),
                                  rl.numerical(rl.tokens == "x")).named("to_categorical")
    to_numerical = rl.numerical(rl.Aggregate(rl.select(rl.indices, rl.indices, "<="),
                                             rl.tokens == "x", default=0))
    for program in (count, product, to_categorical, to_numerical):
        verified(program, "xy", 6, causal=causal)
        verified(program, "xyz", 10, causal=causal, samples=300)
    model = rl.compile(count, "xy", 6, causal=causal, optimize=False)
    step = model.circuit["frac_prevs:categorical"][0]
    assert step.sublayer == "mlp"  # where the conversion went
    # optimized, one MLP discretises frac gated by the index: no conversion, one layer
    fused = rl.compile(count, "xy", 6, causal=causal)
    assert "frac_prevs:categorical" not in fused.circuit
    assert [s.sublayer for s in fused.circuit["count"]] == ["mlp"]
    assert fused.config.n_layers < model.config.n_layers


@CAUSAL
@pytest.mark.parametrize("name", ["dyck1", "dyck2"])
def test_dyck(name, causal):
    """The paper's Dyck programs (SequenceMaps of numerical counts) compile exactly."""
    entry = lib.PROGRAMS[name]
    verified(entry.build(), entry.vocab, entry.max_seq_len, causal=causal)
    verified(entry.build(12), entry.vocab, 12, causal=causal, samples=300)


# ------------------------------------------------------------------- 6. None is kept


@CAUSAL
def test_none_is_kept(causal):
    """None flows through Maps, SequenceMaps and Aggregates, categorical and numerical,
    and the decoded output is None exactly where the program's is."""
    shifted = lib.shift_by(1, rl.tokens)
    upper = rl.Map(str.upper, shifted)
    pair = rl.SequenceMap(lambda a, b: a + b, shifted, rl.tokens)
    prev = rl.numerical(lib.shift_by(2, rl.numerical(rl.Map(lambda t: "abc".index(t),
                                                             rl.tokens))))
    prev_big = rl.Map(lambda v: v > 0, prev)  # numerical None into a categorical Map
    prev_sum = rl.numerical(rl.LinearSequenceMap(prev, prev, 1, 2))
    none_f = rl.numerical(rl.Map(lambda t: None if t == "b" else 1.5, rl.tokens))
    mean_none = rl.numerical(rl.Aggregate(rl.select(rl.tokens, rl.tokens, "=="), none_f))
    programs = [upper, pair, prev, prev_big, prev_sum, mean_none,
                lib.detect_pattern(rl.tokens, "ab")]
    for program in programs:
        verified(program, "abc", 5, causal=causal)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CompilerWarning)
            model = rl.compile(program, "abc", 5, causal=causal)
        runs_like_evaluate(model, program, inputs("abc", 3), causal)


# ------------------------------------------ 7. categorical Aggregate, spread selection


def test_spread_aggregate_exact_where_values_agree():
    """Exact where the selected values agree; verify skips where evaluate raises and
    reports the inputs where it averages."""
    same = rl.Aggregate(rl.select(rl.tokens, rl.tokens, "=="), rl.tokens).named("same")
    report = verified(same, "abc", 5, causal=False)
    assert report.skipped == 0
    everyone = rl.Aggregate(rl.select(rl.tokens, rl.tokens, rl.Comparison.TRUE),
                            rl.tokens).named("everyone")
    report = verified(everyone, "abc", 4, causal=False)  # different letters: evaluate raises
    assert report.skipped == sum(len(set(x)) > 1 for x in inputs("abc", 4))
    assert report.undefined and all(len(set(xs)) > 1 and "different non-numeric" in error
                                    for xs, error in report.undefined)
    numbers = rl.Aggregate(rl.select(rl.indices, rl.indices, "<="), rl.tokens).named("avg")
    with pytest.warns(CompilerWarning, match="avg"):
        model = rl.compile(numbers, [1, 2], 4)
    report = rl.verify(numbers, [1, 2], 4, model=model)
    disagree = [x for x in inputs([1, 2], 4) if any(len(set(x[: i + 1])) > 1
                                                      for i in range(len(x)))]
    assert report.n_mismatches == len(disagree) > 0
    assert all(m.input in disagree for m in report.mismatches)


# ---------------------------------------------------------------- 8. causal, refusals


def test_length_is_still_refused_causally():
    """`length` needs the whole input: a causal model cannot compute it (make_length's
    selector width is the prefix length instead)."""
    with pytest.raises(rl.UnsupportedProgramError, match="length needs every position"):
        rl.compile(rl.length * 2, "ab", 4, causal=True)
    verified(lib.make_length(), "ab", 5, causal=True)
