"""Fused selector programs (`interpreter.selectors.fuse`) against the register programs
they replace and against `evaluate`."""

from __future__ import annotations

import numpy as np
import pytest

import rasplang as rl
from rasplang import Aggregate, Comparison, Map, Select, SelectorWidth, indices, tokens
from rasplang.evaluator import EvaluationError
from rasplang.interpreter import Plan, selectors
from rasplang.interpreter.selectors import compile_selector, fuse


def _programs():
    """Selector combinations on several SOps, with None keys and raising predicates."""
    small = Map(lambda t: None if t == "c" else t, tokens).named("small")
    parity = (indices % 2).named("parity")
    eq = Select(tokens, tokens, Comparison.EQ)
    before = Select(indices, indices, Comparison.LT)
    odd = Select(parity, parity, lambda k, q: k != q)
    with_none = Select(small, small, Comparison.EQ)
    return {
        "and": SelectorWidth(eq & before),
        "or_not": SelectorWidth(~eq | (before & odd)),
        "three": Aggregate(eq & ~before & odd, indices),
        "none": SelectorWidth(with_none & before),
        "mean": rl.numerical(Aggregate(eq | odd, rl.numerical(indices), default=0)),
    }


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", sorted(_programs()))
def test_fused_programs_equal_evaluate_and_the_register_program(name, causal, monkeypatch):
    """A fused program gives what evaluate gives, and exactly the codes the unfused
    register program gives (errors included)."""
    program = _programs()[name]
    vocab = "abc" if name == "none" else "ab"
    rng = np.random.default_rng(0)
    inputs = [[vocab[c] for c in rng.integers(len(vocab), size=int(rng.integers(1, 7)))]
              for _ in range(300)]
    fused_plan = Plan(program, vocab, 6, causal)
    assert any(f is not None for f, _ in fused_plan._selector_tables.values())
    monkeypatch.setattr(selectors, "FUSE_LIMIT", 0)
    monkeypatch.setattr(selectors.fuse, "__defaults__", (0,))
    plain_plan = Plan(program, vocab, 6, causal)
    assert all(f is None for f, _ in plain_plan._selector_tables.values())
    for plan in (fused_plan, plain_plan):
        for x in inputs:
            try:
                want = rl.evaluate(program, x, causal=causal)
            except EvaluationError:
                with pytest.raises(EvaluationError):
                    plan.run([x])
            else:
                assert plan.run([x]) == [want], x
    if name != "none":
        codes, lengths = fused_plan.encode(inputs)
        a = fused_plan.run_arrays(codes, lengths, outputs="all")
        b = plain_plan.run_arrays(codes, lengths, outputs="all")
        for label in a.nodes:
            assert a[label].tolist() == b[label].tolist(), label


def test_fuse_builds_the_register_program_table():
    """The fused table at product codes is the register program's value there."""
    program = _programs()["or_not"]
    analysis = rl.analyze(program, "ab", 4)
    prog = compile_selector(program.selector)
    preds = tuple(analysis.select_table(leaf) for leaf in prog.leaves)
    fused = fuse(prog, preds)
    assert fused.table.shape == (2 * 4 * 2, 2 * 4 * 2)  # (tokens, indices, parity)^2
    assert [p.label for p in fused.key_parts] == ["tokens", "indices", "parity"]
    assert fuse(prog, preds, limit=100) is None
    assert fuse(compile_selector(Select(tokens, tokens, Comparison.EQ)), preds[:1]) is None


def test_fused_program_over_a_growing_table(monkeypatch):
    """A fused program whose input table grows during a run (means outside the analysis's
    table) is rebuilt for that run, and the plan keeps its own."""
    from rasplang.interpreter import chunk

    rebuilt = []
    build = chunk.selector_tables
    monkeypatch.setattr(chunk, "selector_tables", lambda *a, **k: rebuilt.append(1) or
                        build(*a, **k))
    mean = Aggregate(Select(indices, indices, Comparison.LEQ),
                     Map(lambda t: {"a": 0, "b": 3}[t], tokens)).named("mean")
    program = SelectorWidth(Select(mean, mean, Comparison.LT) & Select(indices, indices,
                                                                       Comparison.GT))
    plan = Plan(program, "ab", 5)
    before = dict(plan._selector_tables)
    inputs = [list("abbab"), list("ba"), list("bbbba")]
    assert plan.run(inputs) == [rl.evaluate(program, x) for x in inputs]
    assert rebuilt and plan._selector_tables == before
    assert before[program.selector][0] is not None  # the &: fused
