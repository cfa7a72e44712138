"""Single selection proven where the analysis can: library programs compile without
a warning, and stay exact."""

from __future__ import annotations

import itertools
import warnings

import pytest

import rasplang as rl
from rasplang import lib, rasp
from rasplang.backend import CompilerWarning
from rasplang.selection import distinct_sops, spread_aggregates


def _warnings(program, vocab, n, causal=False):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = rl.compile(program, vocab, n, causal=causal)
    return model, [w for w in caught if issubclass(w.category, CompilerWarning)]


@pytest.mark.parametrize("name", ["sort", "sort_freq", "shift_by", "detect_pattern",
                                  "sort_stable", "sort_by_most_freq"])
def test_library_programs_compile_without_warning_and_exactly(name):
    """sort's keys are distinct by construction (key + i / n), so its Aggregate selects
    one key: no warning, and the model equals evaluate on every input up to length 5."""
    entry = lib.PROGRAMS[name]
    program = entry.build(5)
    model, caught = _warnings(program, entry.vocab, 5)
    assert caught == []
    inputs = [list(x) for k in range(1, 6) for x in itertools.product(entry.vocab, repeat=k)]
    assert model.run(inputs) == [rl.evaluate(program, x) for x in inputs]


def test_causal_sort_still_warns():
    """Causally each position ranks only the keys before it: ranks repeat, so it warns."""
    entry = lib.PROGRAMS["sort"]
    _, caught = _warnings(entry.build(5), entry.vocab, 5, causal=True)
    assert len(caught) == 1 and str(caught[0].message).startswith("sort:")


def test_lexicographic_rank_needs_a_total_order_for_ties():
    """``(k < q) | ((k == q) & T)`` ranks positions only when T orders them totally: with
    T a comparison of repeated tokens, ties share a rank and the sort still warns."""
    from rasplang import indices, select, selector_width, tokens

    def sort_by(tie):
        smaller = select(tokens, tokens, "<") | (select(tokens, tokens, "==") & tie)
        target = selector_width(smaller)
        return rl.aggregate(select(target, indices, "=="), tokens).named("sorted")

    _, caught = _warnings(sort_by(select(indices, indices, ">")), ("a", "b"), 4)
    assert caught == []
    _, caught = _warnings(sort_by(select(tokens, tokens, "<")), ("a", "b"), 4)
    assert len(caught) == 1 and str(caught[0].message).startswith("sorted:")
    _, caught = _warnings(sort_by(select(indices, indices, "<")), ("a", "b"), 4, causal=True)
    assert len(caught) == 1


def test_repeated_keys_still_warn():
    """sort_unique on tokens: equal tokens share a rank, several keys can be selected."""
    _, caught = _warnings(lib.make_sort_unique(rasp.tokens, rasp.tokens), (1, 2, 3), 4)
    assert len(caught) == 1


def test_distinct_rules():
    """indices, an injective Map of them and a SequenceMap separating by indices are
    distinct; a non-injective Map and tokens are not."""
    double = rasp.Map(lambda i: 2 * i, rasp.indices)
    parity = rasp.Map(lambda i: i % 2, rasp.indices)
    keyed = rasp.SequenceMap(lambda t, i: 10 * i + t, rasp.tokens, rasp.indices)
    collide = rasp.SequenceMap(lambda t, i: t + i, rasp.tokens, rasp.indices)
    program = rasp.SequenceMap(lambda a, b: (a, b), rasp.SequenceMap(
        lambda a, b: (a, b), double, parity), rasp.SequenceMap(lambda a, b: (a, b), keyed,
                                                               collide))
    analysis = rl.analyze(program, (1, 2, 3), 4)
    distinct = distinct_sops(analysis, causal=False)
    assert {rasp.indices.label, double.label, keyed.label} <= {
        analysis.labels[n] for n in distinct}
    assert not {parity, collide, rasp.tokens} & distinct


def test_spread_candidates_are_refined_not_grown():
    """The proof only removes Aggregates from the analysis's candidates."""
    entry = lib.PROGRAMS["sort_stable"]
    analysis = rl.analyze(entry.build(5), entry.vocab, 5)
    refined = spread_aggregates(analysis, causal=False)
    assert set(refined) <= set(analysis.spread_aggregates)
