"""Selector expressions as small register programs, evaluated per (query, key).

A selector tree (Select and ConstantSelector leaves combined with &, |, ~) becomes a
list of ops in topological order; op ``i`` writes register ``i`` and the last register
is the selector's value. Kernels run the same generic interpreter for every program
(no code is generated per program), so a Select + Aggregate never builds a
``[B, T, T]`` matrix. Shared sub-selectors appear once (a DAG, not a tree).

Causal masking is applied to the final value only: `rasplang.evaluate` masks every
Select, ConstantSelector and SelectorNot, and ``m & (m & a & m & b) == m & a & b``,
``m & (m & a | m & b) == m & (a | b)``, ``m & ~(m & a) == m & ~a``, so masking once at
the end gives the same matrix.
"""

from __future__ import annotations

import attrs
import numpy as np

from rasplang.interpreter.codes import AND, CONST, NOT, OR, SELECT
from rasplang.interpreter.runs import KeyRuns
from rasplang.nodes import (
    ConstantSelector,
    Select,
    Selector,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
)


@attrs.frozen
class SelectorProgram:
    """The ops of one selector: ``ops[i]`` with operands ``a0[i]``, ``a1[i]``.

    For ``SELECT`` ``a0`` indexes ``leaves``; for ``CONST`` it indexes ``constants``;
    for ``AND``/``OR``/``NOT`` the operands are earlier registers.
    """

    root: Selector
    ops: np.ndarray  # [n_ops] int8
    a0: np.ndarray  # [n_ops] int32
    a1: np.ndarray  # [n_ops] int32
    leaves: tuple[Select, ...]
    constants: tuple[ConstantSelector, ...]


def _selector_order(root: Selector) -> list[Selector]:
    """The selector nodes under ``root``, children first, not entering SOps (iterative)."""
    order: list[Selector] = []
    seen: set[Selector] = set()
    stack: list[tuple[Selector, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        if isinstance(node, (SelectorAnd, SelectorOr, SelectorNot)):
            stack.extend((child, False) for child in reversed(node.children)
                         if child not in seen)
    return order


def compile_selector(root: Selector) -> SelectorProgram:
    """Flatten the selector DAG under ``root`` into a `SelectorProgram`."""
    order = _selector_order(root)
    register: dict[Selector, int] = {}
    leaves: list[Select] = []
    constants: list[ConstantSelector] = []
    ops, a0, a1 = [], [], []
    for node in order:
        if isinstance(node, Select):
            ops.append(SELECT)
            a0.append(len(leaves))
            a1.append(0)
            leaves.append(node)
        elif isinstance(node, ConstantSelector):
            ops.append(CONST)
            a0.append(len(constants))
            a1.append(0)
            constants.append(node)
        elif isinstance(node, (SelectorAnd, SelectorOr)):
            ops.append(AND if isinstance(node, SelectorAnd) else OR)
            a0.append(register[node.fst])
            a1.append(register[node.snd])
        elif isinstance(node, SelectorNot):
            ops.append(NOT)
            a0.append(register[node.inner])
            a1.append(0)
        else:
            raise NotImplementedError(f"no selector rule for {type(node).__name__}")
        register[node] = len(ops) - 1
    return SelectorProgram(
        root=root,
        ops=np.array(ops, dtype=np.int8),
        a0=np.array(a0, dtype=np.int32),
        a1=np.array(a1, dtype=np.int32),
        leaves=tuple(leaves),
        constants=tuple(constants),
    )


@attrs.frozen
class SelectorArgs:
    """One chunk's arrays for a selector program (host or device arrays).

    ``kcodes``/``qcodes``: ``[n_leaves, C, T]`` key and query codes of each Select;
    ``pred``: every predicate table flattened (0 false, 1 true, 2 the predicate raised
    or saw None), leaf ``l``'s entry for key code ``k`` and query code ``q`` at
    ``pred_off[l] + k * pred_nq[l] + q``; ``cmats``: ``[n_constants, T, T]`` uint8
    constant matrices (length checks happen outside the kernels); ``may_error``: whether
    any predicate entry is 2 (else causal kernels may skip keys after the query);
    ``runs``: for a program that is one Select, its rows as runs of key codes (None when
    its table has error entries), for the counting kernels (`interpreter.runs`);
    ``keys_are_positions``: that Select's keys are ``indices``.
    """

    ops: np.ndarray
    a0: np.ndarray
    a1: np.ndarray
    kcodes: np.ndarray
    qcodes: np.ndarray
    pred: np.ndarray
    pred_off: np.ndarray
    pred_nq: np.ndarray
    cmats: np.ndarray
    may_error: bool
    runs: KeyRuns | None = None
    keys_are_positions: bool = False
