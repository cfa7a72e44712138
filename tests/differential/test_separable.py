"""Separable SequenceMaps (``f(x, y) = u(x) + v(y)``) compiled as one linear read:
compiled models vs `rasplang.evaluate`, exhaustively, with the chamber checked to be
used exactly where it should be."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang.backend import CompilerWarning, compile
from rasplang.backend.chambers.separable_mlp import split

CAUSAL = pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
SHIFT = rl.select(rl.indices, rl.indices, lambda k, q: k == q - 1)


def inputs(vocab, max_seq_len):
    """Every input of length 1..max_seq_len."""
    return [list(x) for n in range(1, max_seq_len + 1)
            for x in itertools.product(vocab, repeat=n)]


def same(got, expected, numerical):
    """Equal, and of the same type for categorical outputs; None where None."""
    if expected is None or got is None:
        return got is expected
    if numerical:
        return abs(got - expected) <= 1e-6 * max(1.0, abs(expected))
    return type(got) is type(expected) and got == expected


def check(program, vocab, max_seq_len, causal, numerical=False):
    """model.run equals evaluate on every input, in float64 and float32; the model
    (built one block per node, so the chamber under test computes the SequenceMap)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        model = compile(program, vocab, max_seq_len, causal=causal, optimize=False)
    xs = inputs(vocab, max_seq_len)
    expected = [rl.evaluate(program, x, causal=causal) for x in xs]
    for dtype in (np.float64, np.float32):
        for x, want, got in zip(xs, expected, model.run(xs, dtype=dtype)):
            ok = all(same(g, e, numerical) for g, e in zip(got, want))
            assert ok, (x, want, got, dtype)
    return model


def sequence_map(f, fst, snd, name="sm"):
    return rl.SequenceMap(f, fst, snd).named(name)


DIGITS = tuple(range(10))
LETTERS = tuple("abcdefghij")

CASES = {
    # name: (program, vocab, max_seq_len, separable?, numerical output?); at 10 tokens x 4
    # positions the separable MLP is smaller than every lookup layout (40 units)
    "tokens_plus_2i": (sequence_map(lambda t, i: t + 2 * i, rl.tokens, rl.indices),
                       DIGITS, 4, True, False),
    "letters_minus_i": (sequence_map(lambda t, i: ord(t) - 97 - i, rl.tokens, rl.indices),
                        LETTERS, 4, True, False),
    "dyadic_floats": (sequence_map(lambda t, i: t / 4 + i / 4, rl.tokens, rl.indices),
                      DIGITS, 4, True, False),
    "product_not_separable": (sequence_map(lambda t, i: t * i, rl.tokens, rl.indices),
                              (1, 2, 3), 4, False, False),
    "numerical_out": (rl.numerical(sequence_map(lambda t, i: 3 * t - i, rl.tokens,
                                                rl.indices)), (0, 1, 2), 4, True, True),
    "numerical_out_product": (rl.numerical(sequence_map(lambda t, i: t * i, rl.tokens,
                                                        rl.indices)), (1, 2), 4, False, True),
    "mixed_types": (sequence_map(lambda t, i: t + i if i else float(t), rl.tokens, rl.indices),
                    (1, 2), 4, False, False),
    "none_input": (sequence_map(lambda s, i: s + i, rl.Aggregate(SHIFT, rl.tokens),
                                rl.indices), DIGITS, 4, True, False),
    "none_input_numerical": (rl.numerical(sequence_map(lambda s, i: s - 2 * i,
                                                       rl.Aggregate(SHIFT, rl.tokens),
                                                       rl.indices)), (1, 2), 4, True, True),
}


def units(model, label):
    """Hidden units of the MLP that computes ``label``."""
    return max(len(step.hidden) for step in model.circuit[label])


@CAUSAL
@pytest.mark.parametrize("name", sorted(CASES))
def test_sequence_map_agrees(name, causal):
    """Separable and non-separable f, categorical and numerical outputs, None inputs."""
    program, vocab, n, _, numerical = CASES[name]
    if name == "mixed_types":  # 2 and 2.0 are one value of the output (the type rule)
        model = compile(program, vocab, n, causal=causal)
        report = rl.verify(program, vocab, n, model=model, causal=causal, exhaustive=True)
        assert report.ok and report.checked == report.total, report.summary()
        return
    check(program, vocab, n, causal, numerical)


@pytest.mark.parametrize("name", sorted(CASES))
def test_chamber_used_where_separable(name):
    """Separable f of one numeric type get the linear chamber: two units per output value
    less one (categorical), two plus a None-flag unit (numerical)."""
    program, vocab, n, separable, numerical = CASES[name]
    analysis = rl.analyze(program, vocab, n)
    node = next(v for v in analysis.nodes if analysis.labels[v] == "sm")
    fst, snd = (tuple(v for v in analysis.value_sets[c] if v is not None)
                for c in (node.fst, node.snd))
    assert (split(fst, snd, node.f) is not None) == separable
    if separable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CompilerWarning)
            model = compile(program, vocab, n)
        outputs = {v for v in analysis.value_sets[node] if v is not None}
        assert units(model, "sm") == (3 if numerical and None in analysis.value_sets[node]
                                      else 2 if numerical else 2 * len(outputs) - 1)


def test_length_minus_indices_is_small():
    """tracr's opp_idx at max_seq_len 64, one block per node: about two units per output,
    not 64 x 64. (Optimized, the length's decoding is fused into it: one layer less.)"""
    program = rl.SequenceMap(lambda x, y: x - y, rl.length, rl.indices).named("opp")
    model = compile(program, "ab", 64, optimize=False)
    assert model.config.d_mlp < 300
    fused = compile(program, "ab", 64)
    assert fused.config.n_layers < model.config.n_layers
    xs = [list("ab" * 32), list("a" * 17), ["b"]]
    for m in (model, fused):
        assert m.run(xs) == [rl.evaluate(program, x) for x in xs]


def test_reverse_at_64_verifies_in_float32():
    """make_reverse at 64 (separable opp_idx) is exact on random inputs in float32."""
    from rasplang import lib

    program = lib.make_reverse(rl.tokens)
    model = compile(program, "abcd", 64)
    rng = np.random.default_rng(0)
    xs = [list(rng.choice(list("abcd"), rng.integers(1, 65))) for _ in range(200)]
    assert model.run(xs, dtype=np.float32) == [rl.evaluate(program, x) for x in xs]


@pytest.mark.parametrize(("f", "why"), [
    (lambda x, y: x * y, "not separable"),
    (lambda x, y: True if x == y == 0 else x + y, "a bool output"),
    (lambda x, y: 1.0 if x == y == 0 else x + y, "1.0 among ints"),
    (lambda x, y: None if x == y == 0 else x + y, "a None output"),
    (lambda x, y: str(x + y), "not a number"),
    (lambda x, y: float("inf") if x == y == 0 else float(x + y), "inf"),
])
def test_split_refuses(f, why):
    """split returns None for non-separable f and for outputs of mixed or odd types."""
    assert split((0, 1, 2), (0, 1), f) is None, why


def test_split_is_exact():
    """u(x) + v(y) reproduces f exactly, floats included (0.1 + 0.2 is not separable)."""
    s = split((0.5, 1.25), (0, 3), lambda x, y: x + 2 * y)
    assert s is not None and sorted(s.outputs.values()) == [0.5, 1.25, 6.5, 7.25]
    assert all(s.u[i] + s.v[j] == x + 2 * y for i, x in enumerate((0.5, 1.25))
               for j, y in enumerate((0, 3)))
    assert split((0.1, 0.7), (0.2, 0.4), lambda x, y: x + y) is None


def test_margin_refused_falls_back_to_table():
    """Values 1 apart at a range of 10^10 are past the float32 margin: the lookup table
    is used although the linear MLP would be smaller, and the model is still exact."""
    from rasplang.backend.chambers.separable_mlp import margin_problem
    from rasplang.backend.spaces import categorical_space

    big = 10**9
    f = lambda t, y: t * big + t % 2 + y * big
    xs, ys = tuple(range(10)), tuple(range(8))
    s = split(xs, ys, f)
    assert s is not None and 2 * len(s.outputs) - 1 < len(xs) * len(ys)
    assert margin_problem(s, categorical_space("t", xs), categorical_space("y", ys), 100,
                          True) is not None
    program = sequence_map(f, rl.tokens, rl.Map(lambda t: t % 8, rl.tokens))
    model = check(program, xs, 2, causal=False)
    assert units(model, "sm") == len(xs) * len(ys)
