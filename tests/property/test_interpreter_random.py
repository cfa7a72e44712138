"""Property: on random well-typed programs and inputs, evaluate_batch equals evaluate.

Programs come from `tests.strategies.programs`: a failure shrinks to a small program,
printed as a listing ("Draw 1"), and a short batch ("Draw 2")."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rasplang.analysis import AnalysisError
from rasplang.interpreter import evaluate_batch
from rasplang.testing import assert_batch_matches_oracle, oracle_outputs
from tests.strategies import backend_params, inputs, programs

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("backend", backend_params())
@SETTINGS
@given(data=st.data(), causal=st.booleans(), max_seq_len=st.integers(1, 6))
def test_random_programs_match_evaluate(backend, data, causal, max_seq_len):
    """A random program (depth up to 8) gives evaluate's outputs or its first error."""
    program, vocab = data.draw(programs(max_depth=8))
    batch = data.draw(inputs(vocab, max_seq_len))
    expected = oracle_outputs(program, batch, causal)

    def run(xs):
        return evaluate_batch(program, xs, vocab=vocab, max_seq_len=max_seq_len,
                              causal=causal, backend=backend)

    # An AnalysisError (e.g. a value set too large to tabulate) leaves nothing to compare.
    with contextlib.suppress(AnalysisError):
        assert_batch_matches_oracle(run, batch, expected)


@SETTINGS
@given(data=st.data(), causal=st.booleans())
def test_backends_agree_on_intermediate_nodes(data, causal):
    """numpy and numba give the same codes and tables for every node of a random program."""
    from rasplang.interpreter import Plan

    program, vocab = data.draw(programs(max_depth=6))
    batch = data.draw(inputs(vocab, 5, min_size=1))
    if any(isinstance(e, Exception) for e in oracle_outputs(program, batch, causal)):
        return
    try:
        plan = Plan(program, vocab, 5, causal)
    except AnalysisError:
        return
    codes, lengths = plan.encode(batch)
    a = plan.run_arrays(codes, lengths, outputs="all", backend="numpy")
    b = plan.run_arrays(codes, lengths, outputs="all", backend="numba")
    assert a.nodes.keys() == b.nodes.keys()
    for label in a.nodes:
        assert a[label].tolist() == b[label].tolist(), label
