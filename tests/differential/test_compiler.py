"""Compiled models vs the oracle on the library programs, at several sizes, exactly."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang import lib
from rasplang.backend import CompilerWarning, compile
from rasplang.backend.compiler import nodes_without_values
from rasplang.interpreter import evaluate_batch
from rasplang.selection import spread_aggregates

#: Library programs this compiler refuses, with the node it names (none since `|`/`~` of
#: selectors on different SOps and numerical SequenceMap inputs compile; see
#: tests/differential/test_full_language.py). Everything in `lib.PROGRAMS` must compile
#: and agree exactly.
REFUSED: dict[str, str] = {}
COMPILED = [name for name in lib.PROGRAMS if name not in REFUSED]
SIZES = (5, 10, 16)
EXHAUSTIVE_LIMIT = 20_000
N_RANDOM = 2_000


def build(name: str, max_seq_len: int) -> rl.SOp:
    """The library program, built for ``max_seq_len`` where its definition uses it."""
    return lib.PROGRAMS[name].build(max_seq_len)


def domain(vocab, max_seq_len: int, seed: int = 0) -> list[list]:
    """Every input up to ``max_seq_len`` if there are at most 20,000, else 2,000 random."""
    total = sum(len(vocab) ** k for k in range(1, max_seq_len + 1))
    if total <= EXHAUSTIVE_LIMIT:
        return [list(x) for k in range(1, max_seq_len + 1)
                for x in itertools.product(vocab, repeat=k)]
    rng = np.random.default_rng(seed)
    return [[vocab[i] for i in rng.integers(0, len(vocab), rng.integers(1, max_seq_len + 1))]
            for _ in range(N_RANDOM)]


def compile_checked(program, vocab, max_seq_len, **kw):
    """Compile, expecting a CompilerWarning exactly for the spread Aggregates the analysis
    lists and `rasplang.selection` cannot prove to select one key (the comparison with
    `evaluate` below checks the proven ones), and for the nodes without values."""
    analysis = rl.analyze(program, vocab, max_seq_len)
    spread = spread_aggregates(analysis, kw.get("causal", False))
    expected = {analysis.labels[n] for n in (*spread, *nodes_without_values(analysis))}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = compile(program, vocab, max_seq_len, **kw)
    warned = {str(w.message).split(":")[0] for w in caught
              if issubclass(w.category, CompilerWarning)}
    assert warned == expected
    assert all(issubclass(w.category, CompilerWarning) for w in caught)
    return model


def oracle(program, inputs, causal):
    """(inputs the program is defined on, its outputs there); the batched interpreter
    when it runs the whole batch, else `rasplang.evaluate` input by input."""
    try:
        return list(inputs), evaluate_batch(program, inputs, causal=causal)
    except Exception:
        pass
    kept, outs = [], []
    for x in inputs:
        try:
            outs.append(rl.evaluate(program, x, causal=causal))
        except (ValueError, ArithmeticError, TypeError):
            continue
        kept.append(x)
    return kept, outs


def assert_agrees(model, program, inputs, causal=False, dtype=np.float64, tol=1e-6):
    """Decoded outputs equal the oracle's: categorical exactly (None included),
    numerical within ``tol`` (numerical None positions are unspecified)."""
    kept, expected = oracle(program, inputs, causal)
    assert kept, "no input on which the program is defined"
    got = model.run(kept, dtype=dtype)
    numerical = model.config.output_encoding == "numerical"
    for x, exp, out in zip(kept, expected, got):
        assert len(out) == len(exp)
        for pos, (e, g) in enumerate(zip(exp, out)):
            if numerical:
                ok = e is None or abs(g - e) <= tol
            else:
                ok = (g is None and e is None) or (g is not None and e is not None and g == e)
            assert ok, f"input {x}: position {pos} expected {e!r}, compiled model gave {g!r}"


CASES = [(name, n, causal) for name in COMPILED for n in SIZES
         for causal in ((False, True) if lib.PROGRAMS[name].causal_safe else (False,))]


@pytest.mark.parametrize(("name", "max_seq_len", "causal"), CASES)
def test_library_program_compiles_exactly(name, max_seq_len, causal):
    """Every compilable library program agrees with the evaluator on its whole domain
    (or 2,000 random inputs), causal variants included."""
    entry = lib.PROGRAMS[name]
    program = build(name, max_seq_len)
    model = compile_checked(program, entry.vocab, max_seq_len, causal=causal)
    assert_agrees(model, program, domain(list(entry.vocab), max_seq_len), causal)


@pytest.mark.parametrize("name", ["reverse", "sort", "frac_prevs", "shuffle_dyck2"])
def test_float32_agrees(name):
    """The float32 forward pass decodes the same outputs."""
    entry = lib.PROGRAMS[name]
    program = build(name, 10)
    model = compile_checked(program, entry.vocab, 10)
    assert_agrees(model, program, domain(list(entry.vocab), 10, seed=1)[:500],
                  dtype=np.float32, tol=1e-4)


@pytest.mark.parametrize("make", ["reverse", "hist", "sort_unique"])
def test_scale_64_vocab_32(make):
    """make_reverse, make_hist and make_sort_unique at max_seq_len 64 with 32 tokens."""
    vocab = list(range(32))
    program = {"reverse": lambda: lib.make_reverse(rl.tokens), "hist": lib.make_hist,
               "sort_unique": lambda: lib.make_sort_unique(rl.tokens, rl.tokens)}[make]()
    model = compile_checked(program, vocab, 64)
    rng = np.random.default_rng(64)
    inputs = [rng.choice(vocab, size=rng.integers(1, 65)).tolist() for _ in range(1_000)]
    assert_agrees(model, program, inputs)


def test_exact_where_tracr_is_not():
    """A categorical Map of a numerical mean is discretised over the exact means."""
    frac = rl.numerical(rl.Aggregate(rl.select(rl.indices, rl.indices, "<="),
                                     rl.numerical(rl.tokens == "x"), default=0))
    program = rl.Map(lambda f: f > 0.5, frac)
    model = compile_checked(program, ["x", "y"], 12)
    assert_agrees(model, program, domain(["x", "y"], 12))
