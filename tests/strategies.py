"""Hypothesis strategies shared by the property tests.

`programs` builds random well-typed RASP programs from hypothesis draws: every node
kind, function, comparison, encoding and default is a draw, so hypothesis shrinks a
failing program to a small one and prints it as a listing a person can read (`Case`).
The program is grown by `rasplang.testing.ProgramBuilder`, the builder behind
`rasplang.testing.random_program` (the numpy-seeded generator that the fuzz campaign and
the GPU tests use), with its choices drawn from hypothesis: the same kinds of values and
function menus, and its compilable subset plus LinearSequenceMap. Each menu starts with
its simplest choice, because hypothesis shrinks a draw towards the first option.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from hypothesis import strategies as st

from rasplang.graph import topological_order
from rasplang.nodes import (
    Aggregate,
    Full,
    IndicesType,
    LengthType,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    Selector,
    SequenceMap,
    SOp,
    TokensType,
    is_numerical,
    numerical,
)
from rasplang.testing import ProgramBuilder

VOCABS: tuple[tuple[Any, ...], ...] = (("a", "b", "c"), (1, 2, 3), ("a", "b"), (0, 1, 2, 3))


class _DrawnBuilder(ProgramBuilder):
    """`ProgramBuilder` drawing from hypothesis: a pick shrinks to the first option and
    a chance to False."""

    def __init__(self, draw: st.DrawFn, vocab: Sequence[Any], compilable: bool):
        super().__init__(vocab, compilable=compilable, linear=True)
        self.draw = draw

    def pick(self, options: Sequence[Any]) -> Any:
        return self.draw(st.sampled_from(options))

    def chance(self, p: float) -> bool:
        return self.draw(st.integers(0, 99)) >= 100 - round(100 * p)


class Case:
    """A drawn program and its vocabulary; unpacks as ``program, vocab`` and prints as
    a listing, one line per node, so a shrunk failure reads as a program."""

    __slots__ = ("program", "vocab")

    def __init__(self, program: SOp, vocab: tuple[Any, ...]):
        self.program = program
        self.vocab = vocab

    def __iter__(self) -> Iterator[Any]:
        return iter((self.program, self.vocab))

    def __repr__(self) -> str:
        return f"vocab {self.vocab!r}:\n{listing(self.program)}"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # hypothesis's printer
        for i, line in enumerate(repr(self).splitlines()):
            if i:
                p.break_()
            p.text(line)


@st.composite
def programs(
    draw: st.DrawFn,
    *,
    vocab: Sequence[Any] | None = None,
    max_depth: int = 8,
    compilable: bool | None = None,
) -> Case:
    """A random well-typed RASP program and its vocabulary (a `Case`).

    ``compilable=True`` keeps to what `rasplang.compile` accepts, as
    ``random_program(compilable=True)`` does: categorical Maps, SequenceMaps and
    LinearSequenceMaps, Selects with a Comparison, categorical Aggregates over a one-hot
    selector with default None, SelectorWidth; a numerical output is an Aggregate of a
    numerical 0/1 Map (default 0) or a numerical LinearSequenceMap of two of them.
    ``compilable=False`` adds Full, callable predicates, ``&``/``|``/``~`` selectors,
    spread Aggregates with defaults, other numerical levels and Maps of numerical
    Aggregates. ``None`` draws which.
    """
    vocab = tuple(vocab) if vocab is not None else draw(st.sampled_from(VOCABS))
    if compilable is None:
        compilable = draw(st.booleans())
    depth = draw(st.integers(1, max_depth))
    builder = _DrawnBuilder(draw, vocab, compilable)
    output = draw(st.integers(0, 7))  # shrinks to 0: a categorical output
    if output == 6:
        return Case(builder.numerical_aggregate(depth)[0], vocab)
    if output == 7:
        fst, _ = builder.numerical_aggregate(depth - 1)
        snd, _ = builder.numerical_aggregate(depth - 1)
        fst_fac, snd_fac = builder.pick([1, 2, -1]), builder.pick([1, 0, 0.5])
        return Case(numerical(LinearSequenceMap(fst, snd, fst_fac, snd_fac)), vocab)
    return Case(builder.sop(depth)[0], vocab)


# ------------------------------------------------------------------------- listing

def _args(node: RASPExpr, name: dict[RASPExpr, str]) -> str:
    if isinstance(node, Map):
        return f"{node.f!r}, {name[node.inner]}"
    if isinstance(node, SequenceMap):
        return f"{node.f!r}, {name[node.fst]}, {name[node.snd]}"
    if isinstance(node, LinearSequenceMap):
        return f"{name[node.fst]}, {name[node.snd]}, {node.fst_fac!r}, {node.snd_fac!r}"
    if isinstance(node, Aggregate):
        return f"{name[node.selector]}, {name[node.sop]}, default={node.default!r}"
    if isinstance(node, Select):
        return f"{name[node.keys]}, {name[node.queries]}, {node.predicate!r}"
    if isinstance(node, Full):
        return repr(node.fill)
    return ", ".join(name[child] for child in node.children)


def listing(program: RASPExpr) -> str:
    """``program`` as one line per node, children first, with short local names:
    ``s2 = Map(x + 1, tokens)``, ``sel1 = Select(indices, s2, Comparison.LT)``."""
    name: dict[RASPExpr, str] = {}
    count = {"s": 0, "sel": 0}
    lines = []
    for node in topological_order(program):
        if isinstance(node, (TokensType, IndicesType, LengthType)):
            name[node] = node.label
            continue
        prefix = "sel" if isinstance(node, Selector) else "s"
        count[prefix] += 1
        name[node] = f"{prefix}{count[prefix]}"
        text = f"{type(node).__name__}({_args(node, name)})"
        if isinstance(node, SOp) and is_numerical(node):
            text = f"numerical({text})"
        lines.append(f"{name[node]} = {text}")
    return "\n".join(lines) if lines else name[program]


def inputs(
    vocab: Sequence[Any], max_seq_len: int, *, min_size: int = 1, max_size: int = 30
) -> st.SearchStrategy[list[list[Any]]]:
    """Batches of sequences over ``vocab`` with lengths 0..``max_seq_len``."""
    sequence = st.lists(st.sampled_from(list(vocab)), min_size=0, max_size=max_seq_len)
    return st.lists(sequence, min_size=min_size, max_size=max_size)


def backend_params() -> list[Any]:
    """``numpy``, ``numba`` and ``cupy`` (marked gpu, skipped without CuPy and a GPU)."""
    import pytest

    from rasplang.interpreter.kernels_cupy import cupy_available

    return [
        "numpy",
        "numba",
        pytest.param("cupy", marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU"),
        ]),
    ]
