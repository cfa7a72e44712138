"""Every fold of the optimizer alone and with every other in one program
(`rasplang.fold_cases`): compiled with ``optimize=True`` and ``False``, both exact
against the interpreter on every input, in float64 and float32, causal or not."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang import fold_cases as fc
from rasplang.backend import CompilerWarning, distance, fusion
from rasplang.backend.build import build_blocks
from rasplang.backend.chambers.selector import SelectorUnsupported

NAMES = list(fc.CASES)


def _compile(program, causal, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        return rl.compile(program, fc.VOCAB, fc.MAX_SEQ_LEN, causal=causal, **kwargs)


def _exact(program, model, causal):
    """The model against the interpreter on every input, in float64 and float32 (or
    refused in float32 where it says it is float64 only)."""
    for dtype in (np.float64, np.float32):
        if dtype == np.float32 and model.config.float64_only:
            with pytest.raises(ValueError, match="float64 only"):
                rl.verify(program, fc.VOCAB, fc.MAX_SEQ_LEN, model=model, causal=causal,
                          dtype=dtype, progress=False)
            continue
        report = rl.verify(program, fc.VOCAB, fc.MAX_SEQ_LEN, model=model, causal=causal,
                           dtype=dtype, progress=False)
        assert report.ok and report.exhaustive, report


def _optimized_build_is_consistent(program, causal):
    """The optimized build raises nothing but the documented refusal of a Product (no
    fold's precondition fails where its block is built)."""
    analysis = rl.analyze(program, fc.VOCAB, fc.MAX_SEQ_LEN)
    try:
        build_blocks(analysis, causal=causal, bos="BOS", mlp_exactness=100, optimize=True)
    except SelectorUnsupported as exc:
        assert "Product" in str(exc)


_ALONE: dict[tuple[str, bool], int] = {}


def _alone_layers(name, causal):
    if (name, causal) not in _ALONE:
        _ALONE[name, causal] = _compile(fc.fold_program(name, causal), causal).config.n_layers
    return _ALONE[name, causal]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_each_fold_alone(name, causal):
    """Each case makes the optimizer take its fold (read off the circuit), and both
    builds are exact."""
    program = fc.fold_program(name, causal)
    model = _compile(program, causal)
    assert fc.CASES[name].check(model, ""), (name, model.circuit)
    plain = _compile(program, causal, optimize=False)
    assert model.config.n_layers <= plain.config.n_layers
    _exact(program, model, causal)
    _exact(program, plain, causal)


def _pairs(feed):
    return [pytest.param(a, b, id=f"{a}{'>' if feed else '+'}{b}")
            for i, a in enumerate(NAMES) for b in (NAMES if feed else NAMES[i:])]


def _check_pair(first, second, causal, feed):
    program = fc.pair_program(first, second, causal, feed)
    _optimized_build_is_consistent(program, causal)
    model = _compile(program, causal)
    plain = _compile(program, causal, optimize=False)
    assert model.config.n_layers <= plain.config.n_layers
    if not feed:  # the pair's tuple takes one more MLP than the deeper case at most
        deepest = max(_alone_layers(first, causal), _alone_layers(second, causal))
        assert model.config.n_layers <= deepest + 1, (model.config.n_layers, deepest)
    _exact(program, model, causal)
    _exact(program, plain, causal)


@pytest.mark.parametrize(("first", "second"), _pairs(False))
def test_fold_pairs(first, second):
    """Two folds side by side in one program, sharing their parts: exact both ways,
    never deeper than one block per node nor than the deeper case plus the tuple."""
    _check_pair(first, second, False, False)


@pytest.mark.slow
@pytest.mark.parametrize(("first", "second"), _pairs(False))
def test_fold_pairs_causal(first, second):
    """The pairs in a causal model (a count of every key for the length)."""
    _check_pair(first, second, True, False)


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("first", "second"), _pairs(True))
def test_fold_feeds_fold(first, second, causal):
    """The second case reading the first one's output as its input: exact both ways."""
    _check_pair(first, second, causal, True)


def test_fold_pairs_listing():
    """`fold_pairs` lists every unordered pair once as (name, program, vocab, length),
    and every ordered pair when one feeds the other."""
    listed = fc.fold_pairs()
    n = len(NAMES)
    assert len(listed) == n * (n + 1) // 2
    assert len({name for name, *_ in listed}) == len(listed)
    name, program, vocab, max_seq_len = listed[0]
    assert name == f"{NAMES[0]}+{NAMES[0]}" and isinstance(program, rl.SOp)
    assert (vocab, max_seq_len) == (fc.VOCAB, fc.MAX_SEQ_LEN)
    assert len(fc.fold_pairs(causal=True, feed=True)) == n * n


def _distance_and_lattice():
    """The squared-distance fold and a per-index table in one program (the first
    reported case of folds that did not compose)."""
    prevs = rl.select(rl.indices, rl.indices, "<=")
    a = rl.numerical(rl.aggregate(prevs, rl.numerical(rl.tokens == "a"), default=0))
    b = rl.numerical(rl.aggregate(prevs, rl.numerical(rl.tokens == "b"), default=0))
    both = rl.numerical(rl.LinearSequenceMap(a, b, 1, 1))
    flag = rl.SequenceMap(lambda x, y: x > 0 and y == 0, both, b).named("flag")
    query = (rl.length - rl.indices - 1).named("query")
    rev = rl.aggregate(rl.select(rl.indices, query, "=="), rl.tokens)
    return rl.SequenceMap(lambda p, q: (p, q), rev, flag)


def test_distance_fold_keeps_its_length_beside_a_table_per_index():
    """The per-index tables' search may not compute the distance fold's length inside
    another MLP (the head reads its one-hot): both folds are taken, and exact."""
    program = _distance_and_lattice()
    analysis = rl.analyze(program, "abc", 4)
    chosen = fusion.choose(analysis)
    assert chosen.distance and chosen.lattice
    assert not any(analysis.labels[x] == "length" for x in chosen.virtual)
    model = rl.compile(program, "abc", 4, analysis=analysis)
    assert fc.folded(model, "query")
    for dtype in (np.float64, np.float32):
        report = rl.verify(program, "abc", 4, model=model, dtype=dtype, progress=False)
        assert report.ok and report.exhaustive, report


def test_distance_folds_sharing_a_length_are_taken_together():
    """Two reverses of one length: each fold alone would decode the length for one head
    and not the other (deeper), together they are no deeper, so both are taken."""
    program = fc.pair_program("distance", "distance")
    analysis = rl.analyze(program, fc.VOCAB, fc.MAX_SEQ_LEN)
    assert len(fusion.choose(analysis).distance) == 2
    model = _compile(program, False)
    assert all(fc.folded(model, f"{t}q") for t in ("1_", "2_"))


def test_an_inconsistent_fold_builds_one_block_per_node(monkeypatch):
    """Where a fold's precondition fails at build time, the build names the node and
    compile falls back to one block per node, exact, instead of failing."""
    program = _distance_and_lattice()
    analysis = rl.analyze(program, "abc", 4)
    assert fusion.choose(analysis).distance  # decided (and cached) before the patch
    monkeypatch.setattr(distance, "split", lambda view: None)
    with pytest.raises(fusion.FusionInconsistent, match=r"select_\d+: its query is no longer"):
        build_blocks(analysis, causal=False, bos="BOS", mlp_exactness=100, optimize=True)
    model = rl.compile(program, "abc", 4, analysis=analysis)
    assert not fc.folded(model, "query")
    report = rl.verify(program, "abc", 4, model=model, progress=False)
    assert report.ok and report.exhaustive, report
