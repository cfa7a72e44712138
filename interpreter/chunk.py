"""One run of a plan, chunk by chunk: the kernels of every node, by a rule table.

A `Run` holds what a run shares between its chunks: the plan, the run's copy of the
plan's `TableState` (which grows if the run meets new values), the backend, the nodes
kept for the caller and the arrays already moved to the backend. A `Chunk` computes
every node on its slice of the batch in topological order: per node, `TableState.ensure`
brings its lookup arrays up to date, then its rule in `_RULES` runs its kernel on the
children's codes; codes nobody needs any more are dropped. `_RULES` maps each node type
to what computing it does (``run``) and which SOps' codes it reads (``uses``; a selector
is fused into the Aggregate or SelectorWidth that reads it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from rasplang.evaluator import evaluate_all
from rasplang.interpreter.kernels_numpy import NumpyBackend
from rasplang.interpreter.selectors import FusedSelect, SelectorArgs, SelectorProgram, fuse
from rasplang.interpreter.state import TableState
from rasplang.interpreter.tables import MEAN, REEVALUATE, NumericInfo, exact_means
from rasplang.nodes import (
    Aggregate,
    ConstantSelector,
    ConstantSOp,
    Full,
    IndicesType,
    LengthType,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    Selector,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    TokensType,
)
from rasplang.tables import PRED_ERROR

if TYPE_CHECKING:
    from rasplang.interpreter.plan import Plan


@attrs.frozen
class SelectorHost:
    """A selector program's predicate tables, flattened on the host (see `SelectorArgs`):
    built once per plan, and again only in a run whose tables grew."""

    preds: tuple[np.ndarray, ...]  # each leaf's [n_keys, n_queries] int8 table
    flat: np.ndarray
    offsets: np.ndarray  # [n_leaves] int64
    n_queries: np.ndarray  # [n_leaves] int64
    may_error: bool

    @classmethod
    def of(cls, preds: tuple[np.ndarray, ...]) -> SelectorHost:
        flat = (preds[0].reshape(-1) if len(preds) == 1  # a view of a contiguous table
                else np.concatenate([p.ravel() for p in preds] or [np.zeros(1, np.int8)]))
        sizes = [p.size for p in preds]
        offsets = (np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes
                   else np.zeros(0, np.int64))
        n_queries = np.array([p.shape[1] for p in preds], dtype=np.int64).reshape(-1)
        return cls(preds, flat, offsets, n_queries,
                   any(bool((p == PRED_ERROR).any()) for p in preds))


class Run:
    """What the chunks of one run share (see the module docstring)."""

    def __init__(self, plan: Plan, state: TableState, backend: NumpyBackend,
                 keep: list[RASPExpr]):
        self.plan, self.state, self.be = plan, state, backend
        self.keep = set(keep)
        self.uses = {node: _RULES[type(node)].uses(self, node) for node in plan.nodes}
        self.consumers = dict.fromkeys(plan.nodes, 0)
        for node in plan.nodes:
            for child in self.uses[node]:
                self.consumers[child] += 1
        self._device: dict[Any, tuple[Any, Any]] = {}

    def dev(self, key: Any, array: np.ndarray) -> Any:
        """``array`` on the backend, cached while the host array is the same object."""
        cached = self._device.get(key)
        if cached is None or cached[0] is not array:
            cached = (array, self.be.asarray(array))
            self._device[key] = cached
        return cached[1]

    def selector_tables(self, prog: SelectorProgram) -> tuple[FusedSelect | None, SelectorHost]:
        """``prog`` fused into one Select (or None) and its flattened predicate tables,
        for this run's state: the plan's, unless this run's tables grew."""
        preds = tuple(self.state.luts[leaf] for leaf in prog.leaves)
        fused, host = self.plan._selector_tables[prog.root]
        if all(a is b for a, b in zip(fused.preds if fused else host.preds, preds)):
            return fused, host
        cached = self._device.get(("tables", prog.root))
        if cached is None or any(a is not b for a, b in zip(cached[0], preds)):
            cached = (preds, selector_tables(prog, preds, fuse_it=fused is not None))
            self._device["tables", prog.root] = cached
        return cached[1]


def selector_tables(prog: SelectorProgram, preds: tuple[np.ndarray, ...], fuse_it: bool = True
                    ) -> tuple[FusedSelect | None, SelectorHost]:
    """``prog`` fused (`interpreter.selectors.fuse`) when ``fuse_it`` and it can be, and
    the flattened tables the kernels read."""
    fused = fuse(prog, preds) if fuse_it else None
    return fused, SelectorHost.of((fused.table,) if fused is not None else preds)


class Chunk:
    """One chunk of a run: node codes on the backend, error flags, the shared state."""

    def __init__(self, run: Run, codes: np.ndarray, lengths: np.ndarray):
        self.run_, self.plan, self.state, self.be = run, run.plan, run.state, run.be
        self.codes = codes
        self.lengths = lengths
        self.n_pos = codes.shape[1]
        self.values: dict[RASPExpr, Any] = {}
        self.first_error: int | None = None
        self.dev_lengths = run.be.asarray(lengths)

    def host(self, node: RASPExpr) -> np.ndarray:
        return self.be.to_host(self.values[node])

    def flag(self, err: Any) -> None:
        """Record the first sequence whose error flag is set."""
        bad = np.flatnonzero(self.be.to_host(err))
        if bad.size and (self.first_error is None or bad[0] < self.first_error):
            self.first_error = int(bad[0])

    def run(self) -> int | None:
        """Compute every node; return the index (in the chunk) of the first error."""
        remaining = dict(self.run_.consumers)
        for node in self.plan.nodes:
            self.state.ensure(node)
            _RULES[type(node)].run(self, node)
            for child in self.run_.uses[node]:
                remaining[child] -= 1
                if remaining[child] == 0 and child not in self.run_.keep:
                    self.values.pop(child, None)
        return self.first_error

    # ------------------------------------------------------------------ rules

    def tokens(self, node: TokensType) -> None:
        self.values[node] = self.be.asarray(self.codes)

    def indices(self, node: IndicesType) -> None:
        self.values[node] = self.be.indices(self.dev_lengths, self.n_pos)

    def length(self, node: LengthType) -> None:
        self.values[node] = self.be.length(self.dev_lengths, self.n_pos)

    def full(self, node: Full) -> None:
        self.values[node] = self.be.asarray(np.zeros(self.codes.shape, dtype=np.int32))

    def constant_sop(self, node: ConstantSOp) -> None:
        size = len(node.value)
        row = np.zeros(max(self.n_pos, size), dtype=np.int32)
        row[:size] = self.state.tables[node].codes_of(node.value)
        self.values[node] = self.be.constant(self.be.asarray(row), self.dev_lengths, self.n_pos)
        self.flag(self.lengths != size)

    def map(self, node: Map) -> None:
        out, err = self.be.map(self.run_.dev(node, self.state.luts[node]),
                               self.values[node.inner], self.dev_lengths)
        self.values[node] = out
        self.flag(err)

    def sequence_map(self, node: SequenceMap | LinearSequenceMap) -> None:
        out, err = self.be.sequence_map(self.run_.dev(node, self.state.luts[node]),
                                        self.values[node.fst], self.values[node.snd],
                                        self.dev_lengths)
        self.values[node] = out
        self.flag(err)

    def selector_width(self, node: SelectorWidth) -> None:
        out, err = self.be.width(self.selector_args(self.plan._selectors[node]),
                                 self.dev_lengths, self.plan.causal)
        values = self.state.tables[node].values   # the counts low, low + 1, ...
        low, xp = values[0], self.be.xp
        if low:  # 1 where every query selects itself: code = count - 1 (a count of 0
            # only where evaluate raises: code 0)
            out = xp.maximum(out - low, 0).astype(out.dtype)
        # A count past the table only where evaluate raises (a cell whose every key makes
        # the predicate raise holds no count): flagged, and kept in range for the readers.
        top = max(len(values) - 1, 0)
        over = ((out > top) & self.be.valid(self.dev_lengths, out.shape[1])).any(axis=1)
        self.values[node] = xp.minimum(out, top).astype(out.dtype)
        self.flag(err | over)

    def selector(self, node: Selector) -> None:
        if isinstance(node, ConstantSelector):
            rows = node.value
            square = all(len(r) == len(rows) for r in rows)
            self.flag((self.lengths != len(rows)) | (not square))
        if node in self.run_.keep:
            matrix, err = self.be.selector(self.selector_args(self.plan._selectors[node]),
                                           self.dev_lengths, self.plan.causal)
            self.values[node] = matrix
            self.flag(err)

    def selector_args(self, prog: SelectorProgram) -> SelectorArgs:
        """The chunk's arrays for a selector program (leaf codes, predicate tables); a
        fused program reads one table at its inputs' product codes."""
        be, run = self.be, self.run_
        fused, host = run.selector_tables(prog)
        key = ("sel", prog.root)
        cached = run._device.get(key)
        if cached is None or cached[0] is not host:
            size = max([self.n_pos, *(len(c.value) for c in prog.constants)])
            cmats = np.zeros((len(prog.constants), size, size), dtype=np.uint8)
            for i, const in enumerate(prog.constants):
                rows = const.value
                if all(len(r) == len(rows) for r in rows) and rows:
                    cmats[i, : len(rows), : len(rows)] = np.array(rows, dtype=np.uint8)
            ops, a0 = (prog.ops, prog.a0) if fused is None else (fused.ops, fused.a0)
            a1 = prog.a1 if fused is None else fused.a0
            parts = tuple(be.asarray(a) for a in (ops, a0, a1, host.flat, host.offsets,
                                                  host.n_queries, cmats))
            cached = (host, parts)
            run._device[key] = cached
        ops, a0, a1, flat, off, nq, cmats = cached[1]
        xp = be.xp
        n_batch = len(self.lengths)
        if fused is not None:  # [1, C, T] product codes
            kcodes = self.product_codes(fused.key_parts, fused.key_sizes)[None]
            qcodes = self.product_codes(fused.query_parts, fused.query_sizes)[None]
        elif len(prog.leaves) == 1:  # [1, C, T] views, no copies
            kcodes = self.values[prog.leaves[0].keys][None]
            qcodes = self.values[prog.leaves[0].queries][None]
        elif prog.leaves:
            kcodes = xp.stack([self.values[leaf.keys] for leaf in prog.leaves])
            qcodes = xp.stack([self.values[leaf.queries] for leaf in prog.leaves])
        else:
            kcodes = qcodes = xp.zeros((0, n_batch, self.n_pos), dtype=xp.int32)
        if fused is not None:
            runs, positions = fused.runs, False
        elif len(prog.ops) == 1 and prog.leaves:
            runs = self.state.runs.get(prog.leaves[0])
            positions = isinstance(prog.leaves[0].keys, IndicesType)
        else:
            runs, positions = None, False
        return SelectorArgs(ops=ops, a0=a0, a1=a1, kcodes=kcodes, qcodes=qcodes, pred=flat,
                            pred_off=off, pred_nq=nq, cmats=cmats, may_error=host.may_error,
                            runs=runs, keys_are_positions=positions)

    def product_codes(self, parts: tuple[RASPExpr, ...], sizes: tuple[int, ...]) -> Any:
        """``[C, T]`` int32: each position's codes in ``parts``, numbered in C order."""
        codes = self.values[parts[0]]
        for part, size in zip(parts[1:], sizes[1:]):
            codes = codes * size + self.values[part]
        return codes

    def aggregate(self, node: Aggregate) -> None:
        plan, state, be = self.plan, self.state, self.be
        info = state.numeric_info(node.sop)
        out, acc, err = be.aggregate(
            self.selector_args(plan._selectors[node]), self.dev_lengths, plan.causal,
            self.values[node.sop], self.run_.dev(("remap", node), state.remaps[node]), info,
            state.default_code(node), state.float_index(node),
        )
        self.flag(err)
        if bool((out < 0).any()):
            host = be.to_host(out).copy()
            marked = host == MEAN
            sums = be.to_host(acc[be.asarray(marked)]) if marked.any() else None  # [m, 3]
            self.resolve_means(node, host, sums, info)
            out = be.asarray(host)
        self.values[node] = out

    def resolve_means(self, node: Aggregate, out: np.ndarray, sums: np.ndarray | None,
                      info: NumericInfo) -> None:
        """Turn mean markers into codes of ``node``'s table, exactly.

        `MEAN`: ``sums`` holds, for each in row-major order, the count and the exact
        scaled sum; `exact_means` rounds each mean once, as `rasplang.evaluator.mean`
        does, and the table is looked up or grows. `REEVALUATE` (no exact integer form,
        e.g. an infinity among the values, or copies of an identity-dependent value): the
        sequence is evaluated with `rasplang.evaluate_all` (slow, exact).
        """
        state = self.state
        marked = out == MEAN
        if marked.any():
            means = exact_means(sums, info)  # [m] float64
            got = np.full(len(means), MEAN, dtype=np.int64)
            values, codes = state.float_index(node)
            if len(values):  # the table's floats, bit for bit (-0.0 is not 0.0)
                at = np.minimum(np.searchsorted(values, means), len(values) - 1)
                found = values[at].view(np.int64) == means.view(np.int64)
                got[found] = codes[at[found]]
            new = got == MEAN
            if new.any():  # means this table lacks: this run's table grows
                bits, inverse = np.unique(means[new].view(np.int64), return_inverse=True)
                got[new] = state.add_values(node, bits.view(np.float64).tolist())[
                    inverse.reshape(-1)]
            out[marked] = got
        for b in np.unique(np.argwhere(out == REEVALUATE)[:, 0]).tolist():
            xs = self.plan._inputs_of(b, self.codes, self.lengths)
            try:
                exact_values = evaluate_all(self.plan.program, xs, self.plan.causal)[node]
            except Exception:
                out[b] = 0
                self.flag(np.arange(len(self.lengths)) == b)
                continue
            row = out[b]
            todo = np.flatnonzero(row == REEVALUATE)
            row[todo] = state.add_values(node, [exact_values[q] for q in todo.tolist()])


# ------------------------------------------------------------------- rule table


def _children(run: Run, node: RASPExpr) -> tuple[RASPExpr, ...]:
    return node.children


def _leaves(run: Run, node: RASPExpr) -> tuple[RASPExpr, ...]:
    prog = run.plan._selectors[node]
    return tuple(sop for leaf in prog.leaves for sop in (leaf.keys, leaf.queries))


def _aggregate_uses(run: Run, node: Aggregate) -> tuple[RASPExpr, ...]:
    return (node.sop, *_leaves(run, node))


def _selector_uses(run: Run, node: Selector) -> tuple[RASPExpr, ...]:
    return _leaves(run, node) if node in run.keep else ()  # else fused into its readers


@attrs.frozen
class _Rule:
    """How a run computes one node type (``run``) and whose codes it reads (``uses``)."""

    run: Callable[[Chunk, Any], None]
    uses: Callable[[Run, Any], tuple[RASPExpr, ...]] = _children


#: The interpreter's rule for each node type.
_RULES: dict[type, _Rule] = {
    TokensType: _Rule(Chunk.tokens),
    IndicesType: _Rule(Chunk.indices),
    LengthType: _Rule(Chunk.length),
    Full: _Rule(Chunk.full),
    ConstantSOp: _Rule(Chunk.constant_sop),
    Map: _Rule(Chunk.map),
    SequenceMap: _Rule(Chunk.sequence_map),
    LinearSequenceMap: _Rule(Chunk.sequence_map),
    SelectorWidth: _Rule(Chunk.selector_width, _leaves),
    Aggregate: _Rule(Chunk.aggregate, _aggregate_uses),
    Select: _Rule(Chunk.selector, _selector_uses),
    ConstantSelector: _Rule(Chunk.selector, _selector_uses),
    SelectorAnd: _Rule(Chunk.selector, _selector_uses),
    SelectorOr: _Rule(Chunk.selector, _selector_uses),
    SelectorNot: _Rule(Chunk.selector, _selector_uses),
}
