"""Outputs whose values differ only in type (0, 0.0, False) compile and verify.

A numerical output is one number in the residual stream, so the model returns a float
(or None) and cannot tell 0 from 0.0 or False; a categorical output has one direction
per value under ==. `rasplang.verify` and the fuzzer compare outputs by ==, numbers
within a tolerance. Such outputs compile. A reader whose function tells twins apart is
refused: the model would have to know a type it does not hold.
"""

import itertools

import numpy as np
import pytest

import rasplang as rl
from rasplang import Aggregate, Comparison, Map, Select, SequenceMap, numerical, tokens

VOCAB = [0, 1, 2]
MAX_SEQ_LEN = 4


def _mean():
    """The mean of the tokens before each one: 0 (the int default) or a float mean."""
    x = numerical(Map(lambda t: t, tokens)).named("x")
    return numerical(Aggregate(Select(tokens, tokens, Comparison.LT), x, default=0)
                     ).named("mean")


PROGRAMS = {
    "identity of a mean": lambda: numerical(Map(lambda v: v, _mean())).named("out"),
    "a mean with default False": lambda: numerical(Aggregate(
        Select(tokens, tokens, Comparison.LT), numerical(Map(lambda t: t, tokens)),
        default=False)).named("out"),
    "a Map giving 0, 0.0 or False": lambda: numerical(
        Map(lambda t: (0, 0.0, False)[t], tokens)).named("out"),
    "a Map of a mean giving False for the int 0": lambda: numerical(
        Map(lambda v: False if v == 0 and type(v) is int else v, _mean())).named("out"),
    "a SequenceMap of a mean and the tokens": lambda: numerical(
        SequenceMap(lambda v, t: v * t, _mean(), tokens)).named("out"),
}


def _typed_outputs(program):
    """Every (type, value) evaluate gives for ``program`` on the whole domain."""
    return {(type(v), v) for n in range(1, MAX_SEQ_LEN + 1)
            for xs in itertools.product(VOCAB, repeat=n) for v in rl.evaluate(program, list(xs))}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_numerical_type_twins_compile_and_verify(name):
    """A numerical output with twins compiles, verifies, and runs to floats equal by value."""
    program = PROGRAMS[name]()
    outputs = _typed_outputs(program)
    assert len({type(v) for _, v in outputs if v == 0}) >= 2  # the twins do occur
    model = rl.compile(program, VOCAB, MAX_SEQ_LEN)
    for dtype in (np.float64,) if model.config.float64_only else (np.float64, np.float32):
        report = rl.verify(program, VOCAB, MAX_SEQ_LEN, model=model, exhaustive=True,
                           dtype=dtype)
        assert report.ok and report.checked == 120, report.summary()
    xs = [[0, 0, 1], [2, 1, 0, 0], [1]]
    for got, want in zip(model.run(xs), (rl.evaluate(program, x) for x in xs)):
        assert len(got) == len(want)
        assert all(type(g) is float and abs(g - w) <= 1e-6 for g, w in zip(got, want))


def test_categorical_identity_of_twins_compiles_by_the_type_rule():
    """A categorical identity of a mean that can be 0 or 0.0 compiles: the model holds one
    value per == class and returns it for both twins; verify agrees on every input, and
    the twins really occur in evaluate's outputs."""
    program = Map(lambda v: v, _mean()).named("out")
    model = rl.compile(program, VOCAB, MAX_SEQ_LEN)
    for dtype in (np.float64, np.float32):
        report = rl.verify(program, VOCAB, MAX_SEQ_LEN, model=model, exhaustive=True,
                           dtype=dtype)
        assert report.ok and report.checked == 120, report.summary()
    assert {(int, 0), (float, 0.0)} <= _typed_outputs(program)


def test_categorical_reader_that_tells_twins_apart_is_refused():
    """A categorical Map whose result depends on the type of 0 / 0.0 is refused."""
    program = Map(lambda v: type(v).__name__, _mean()).named("out")
    with pytest.raises(rl.UnsupportedProgramError,
                       match=r"out: its input 'mean' can be 0 or 0\.0 .* gives different"):
        rl.compile(program, VOCAB, MAX_SEQ_LEN)


def test_categorical_reader_blind_to_type_compiles():
    """A categorical Map that gives one value for 0 and 0.0 compiles exactly."""
    program = Map(lambda v: round(float(v), 3), _mean()).named("out")
    model = rl.compile(program, VOCAB, MAX_SEQ_LEN)
    report = rl.verify(program, VOCAB, MAX_SEQ_LEN, model=model, exhaustive=True)
    assert report.ok and report.checked == 120, report.summary()
