"""Selector expressions as small register programs, evaluated per (query, key).

A selector tree (Select and ConstantSelector leaves combined with &, |, ~) becomes a
list of ops in topological order; op ``i`` writes register ``i`` and the last register
is the selector's value. Kernels run the same generic interpreter for every program
(no code is generated per program), so a Select + Aggregate never builds a
``[B, T, T]`` matrix. Shared sub-selectors appear once (a DAG, not a tree).

A program of Selects only, whose inputs take few values, is fused into one Select over
the tuples of its inputs' codes (`fuse`), so the kernels read one table per pair.

Causal masking is applied to the final value only: `rasplang.evaluate` masks every
Select, ConstantSelector and SelectorNot, and ``m & (m & a & m & b) == m & a & b``,
``m & (m & a | m & b) == m & (a | b)``, ``m & ~(m & a) == m & ~a``, so masking once at
the end gives the same matrix.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

from rasplang.interpreter.codes import AND, CONST, NOT, OR, PRED_ERROR, PRED_FALSE, SELECT
from rasplang.interpreter.runs import KeyRuns, key_runs
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


#: Largest predicate table (entries, one byte each) `fuse` builds for one program.
FUSE_LIMIT = 1 << 20


@attrs.frozen
class FusedSelect:
    """A selector program of Selects only (``&``, ``|``, ``~``), as one predicate table
    over *product codes*: the key of position ``k`` is the tuple of its codes in
    ``key_parts`` (the distinct SOps the leaves read as keys), numbered in C order
    (mixed radix ``key_sizes``), and likewise for queries.

    Exactness: ``table[K, Q]`` is computed from the leaves' tables exactly as the kernels'
    register machine computes the selector at one (query, key) pair (`PRED_ERROR` if any
    leaf's entry is, else the ops on 0/1), and a position's product code determines
    every leaf's key and query codes, so reading ``table`` at the product codes gives the
    program's value. One Select lets the kernels gather a row instead of running the ops
    per pair, and take the counting kernels when its rows are few runs (``runs``).
    """

    key_parts: tuple[Any, ...]
    query_parts: tuple[Any, ...]
    key_sizes: tuple[int, ...]
    query_sizes: tuple[int, ...]
    table: np.ndarray  # [prod(key_sizes), prod(query_sizes)] int8
    preds: tuple[np.ndarray, ...]  # the leaves' tables it was built from
    runs: KeyRuns | None
    ops: np.ndarray = attrs.field(factory=lambda: np.array([SELECT], dtype=np.int8))
    a0: np.ndarray = attrs.field(factory=lambda: np.zeros(1, dtype=np.int32))


def fuse(prog: SelectorProgram, preds: tuple[np.ndarray, ...],
         limit: int = FUSE_LIMIT) -> FusedSelect | None:
    """``prog`` as a `FusedSelect`, given its leaves' predicate tables (``[n_keys,
    n_queries]`` each), or None: a single Select, a ConstantSelector, or a table past
    ``limit`` entries."""
    if len(prog.ops) < 2 or prog.constants:
        return None
    key_axis = {sop: i for i, sop in enumerate(dict.fromkeys(x.keys for x in prog.leaves))}
    query_axis = {sop: i for i, sop in enumerate(dict.fromkeys(x.queries for x in prog.leaves))}
    key_parts, query_parts = tuple(key_axis), tuple(query_axis)
    key_sizes = [0] * len(key_parts)
    query_sizes = [0] * len(query_parts)
    for leaf, pred in zip(prog.leaves, preds):
        key_sizes[key_axis[leaf.keys]] = pred.shape[0]
        query_sizes[query_axis[leaf.queries]] = pred.shape[1]
    n_keys, n_queries = math.prod(key_sizes), math.prod(query_sizes)
    if n_keys * n_queries > limit:
        return None
    m = len(key_parts)
    regs: list[np.ndarray] = []
    bad = np.zeros((1,) * (m + len(query_parts)), dtype=bool)
    for op, a0, a1 in zip(prog.ops.tolist(), prog.a0.tolist(), prog.a1.tolist()):
        if op == SELECT:  # the leaf's table on its two axes of the product grid
            leaf, pred = prog.leaves[a0], preds[a0]
            shape = [1] * len(bad.shape)
            shape[key_axis[leaf.keys]] = pred.shape[0]
            shape[m + query_axis[leaf.queries]] = pred.shape[1]
            grid = pred.reshape(shape)
            bad = bad | (grid == PRED_ERROR)
            regs.append(np.where(grid == PRED_ERROR, PRED_FALSE, grid).astype(np.int8))
        elif op == AND:
            regs.append(regs[a0] & regs[a1])
        elif op == OR:
            regs.append(regs[a0] | regs[a1])
        else:  # NOT
            regs.append(1 - regs[a0])
    full = np.broadcast_to(np.where(bad, PRED_ERROR, regs[-1]).astype(np.int8),
                           (*key_sizes, *query_sizes))
    table = np.ascontiguousarray(full).reshape(n_keys, n_queries)
    return FusedSelect(key_parts, query_parts, tuple(key_sizes), tuple(query_sizes), table,
                       tuple(preds), key_runs(table))
