"""`Plan`: a program compiled into value tables, run on batches in chunks.

The pipeline of one run reads as a list of passes:

1. encode the inputs as token codes ``[B, T]`` (`interpreter.codec`);
2. per chunk of the batch, per node in topological order: bring the node's lookup
   arrays up to date (`interpreter.state`), run its kernel on the children's codes,
   resolve means to codes, and drop children nobody needs any more;
3. if a kernel flagged an error, re-run `rasplang.evaluate` on the first offending
   input and raise its exception (same type, same message, plus the batch index);
4. decode the kept nodes' codes back to lists (`interpreter.result`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from rasplang.analysis import analyze, sorted_values
from rasplang.evaluator import EvaluationError, evaluate, evaluate_all
from rasplang.interpreter.backends import get_backend
from rasplang.interpreter.codec import encode
from rasplang.interpreter.kernels_numpy import NumpyBackend
from rasplang.interpreter.result import BatchArrays, NodeArrays
from rasplang.interpreter.selectors import SelectorArgs, SelectorProgram, compile_selector
from rasplang.interpreter.state import TableState, numeric_seeds
from rasplang.interpreter.tables import (
    MEAN,
    REEVALUATE,
    NumericInfo,
    exact_means,
    identity_dependent,
)
from rasplang.nodes import (
    Aggregate,
    ConstantSelector,
    ConstantSOp,
    Encoding,
    Full,
    IndicesType,
    LengthType,
    LinearSequenceMap,
    Map,
    RASPExpr,
    Select,
    Selector,
    SelectorWidth,
    SequenceMap,
    TokensType,
    Value,
)


class Plan:
    """A program prepared for batched runs over ``vocab`` and lengths up to ``max_seq_len``.

    Building a plan analyses the program once (`rasplang.analyze`), builds each node's
    value table and the lookup tables of Maps, SequenceMaps and Selects by applying
    their functions to the value sets; `run` and `run_arrays` then call no Python
    function per element.

    >>> import rasplang as rl
    >>> plan = Plan(rl.Map(lambda x: x + 1, rl.tokens), vocab=[1, 2, 3], max_seq_len=4)
    >>> plan.run([[1, 2], [3]])
    [[2, 3], [4]]
    """

    def __init__(
        self,
        program: RASPExpr,
        vocab: Iterable[Value],
        max_seq_len: int,
        causal: bool = False,
        *,
        backend: str = "numba",
    ):
        self.analysis = analyze(program, vocab, max_seq_len)
        self.program = program
        self.vocab = self.analysis.vocab
        self.max_seq_len = self.analysis.max_seq_len
        self.causal = bool(causal)
        self.backend = backend
        self.nodes = self.analysis.nodes
        self.labels = self.analysis.labels
        self._by_label = {label: node for node, label in self.labels.items()}
        self._selectors: dict[RASPExpr, SelectorProgram] = {}
        for node in self.nodes:
            if isinstance(node, (Aggregate, SelectorWidth)):
                self._selectors[node] = compile_selector(node.selector)
            elif node is program and isinstance(node, Selector):
                self._selectors[node] = compile_selector(node)
        self._state = self._initial_state()

    def _initial_state(self) -> TableState:
        state = TableState(self.max_seq_len, self.labels)
        for node in self.nodes:
            if isinstance(node, (TokensType, IndicesType, LengthType, Full, ConstantSOp,
                                 SelectorWidth)):
                state.init_leaf(node, self.vocab)
            state.ensure(node)
            if isinstance(node, Aggregate):
                state.default_code(node)
                if self.analysis.encodings[node] is Encoding.NUMERICAL:
                    state.add_values(node, numeric_seeds(self.analysis.value_sets[node]))
        for node in self.nodes:  # cached here so that runs do not recompute them
            if isinstance(node, Aggregate):
                state.numeric_info(node.sop)
                state.float_index(node)
        return state

    def table(self, label: str) -> tuple[Value, ...]:
        """The value table (code -> value) the plan built for the node ``label``."""
        return self._state.tables[self.node(label)].values

    def node(self, label: str) -> RASPExpr:
        """The node of the program with this label."""
        try:
            return self._by_label[label]
        except KeyError:
            raise KeyError(f"no node labelled {label!r}; labels are {sorted(self._by_label)}") \
                from None

    # --------------------------------------------------------------------- runs

    def encode(self, inputs: Sequence[Sequence[Value]]) -> tuple[np.ndarray, np.ndarray]:
        """``inputs`` -> (token codes ``[B, T]`` into ``vocab``, lengths ``[B]``)."""
        return encode(inputs, self.vocab, self.max_seq_len)

    def run(
        self, inputs: Sequence[Sequence[Value]], *, backend: str | None = None
    ) -> list[Any]:
        """``[rasplang.evaluate(program, x, causal) for x in inputs]``, computed in batch."""
        inputs = list(inputs)
        if not inputs:
            return []
        codes, lengths = self.encode(inputs)  # valid by construction: no _check_arrays
        return self._run(codes, lengths, [self.program], backend).output.tolist()

    def run_arrays(
        self,
        codes: np.ndarray,
        lengths: np.ndarray,
        *,
        outputs: Iterable[str] | str | None = None,
        backend: str | None = None,
    ) -> BatchArrays:
        """Run on token codes ``[B, T]`` (into ``vocab``) and ``lengths [B]``.

        ``outputs`` names the nodes to keep besides the program's output (``"all"``
        keeps every node; selectors come back as ``[B, T, T]`` matrices). Returns a
        `BatchArrays` with codes into each node's table (`NodeArrays`).
        """
        codes, lengths = self._check_arrays(codes, lengths)
        return self._run(codes, lengths, self._keep(outputs), backend)

    def _run(self, codes: np.ndarray, lengths: np.ndarray, keep: list[RASPExpr],
             backend: str | None) -> BatchArrays:
        """`run_arrays` on checked arrays (zero-padded int32 codes, int64 lengths)."""
        chosen = get_backend(backend or self.backend)
        state = self._state.copy()
        for node in keep:
            if isinstance(node, Selector) and node not in self._selectors:
                self._selectors[node] = compile_selector(node)
        pieces: dict[RASPExpr, list[np.ndarray]] = {node: [] for node in keep}
        n_batch, n_pos = codes.shape
        step = chosen.chunk_size(n_pos)
        for start in range(0, n_batch, step):
            stop = min(n_batch, start + step)
            chunk = _Chunk(self, state, chosen, codes[start:stop], lengths[start:stop], keep)
            bad = chunk.run()
            if bad is not None:
                self._raise_error(start + bad, codes, lengths)
            for node in keep:
                pieces[node].append(chunk.host(node))
        arrays = {}
        for node in keep:
            parts = pieces[node]
            if isinstance(node, Selector):
                stacked = (np.concatenate(parts) if parts
                           else np.zeros((0, n_pos, n_pos), dtype=np.uint8))
                arrays[self.labels[node]] = NodeArrays(self.labels[node], node, lengths,
                                                       matrix=stacked)
            else:
                stacked = (parts[0] if len(parts) == 1 else np.concatenate(parts) if parts
                           else np.zeros((0, n_pos), np.int32))
                if np.may_share_memory(stacked, codes):  # tokens: never alias the input
                    stacked = stacked.copy()
                arrays[self.labels[node]] = NodeArrays(self.labels[node], node, lengths,
                                                       table=state.tables[node], codes=stacked)
        return BatchArrays(output=arrays[self.labels[self.program]], nodes=arrays)

    def _check_arrays(self, codes: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray]:
        codes = np.ascontiguousarray(codes, dtype=np.int32)
        lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        if codes.ndim != 2 or lengths.shape != (codes.shape[0],):
            raise ValueError(f"expected codes [B, T] and lengths [B], got shapes "
                             f"{codes.shape} and {lengths.shape}")
        if codes.shape[1] == 0:
            codes = np.zeros((codes.shape[0], 1), dtype=np.int32)
        bad = np.flatnonzero((lengths < 0) | (lengths > min(codes.shape[1], self.max_seq_len)))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"sequence {i} has length {int(lengths[i])}; lengths must be in "
                             f"0..{min(codes.shape[1], self.max_seq_len)}")
        if (codes.size and codes.min() >= 0 and codes.max() < len(self.vocab)
                and lengths.min(initial=codes.shape[1]) == codes.shape[1]):
            return codes, lengths  # the common case: nothing to check or clear
        valid = np.arange(codes.shape[1])[None, :] < lengths[:, None]
        out_of_range = valid & ((codes < 0) | (codes >= len(self.vocab)))
        if out_of_range.any():
            i, j = (int(x) for x in np.argwhere(out_of_range)[0])
            raise ValueError(f"token code {int(codes[i, j])} at (sequence {i}, position {j}) "
                             f"is not a code of the vocabulary (0..{len(self.vocab) - 1})")
        codes = np.where(valid, codes, 0).astype(np.int32)
        return codes, lengths

    def _keep(self, outputs: Iterable[str] | str | None) -> list[RASPExpr]:
        if outputs == "all":
            return list(self.nodes)
        keep = {self.program: None}
        if outputs is not None:
            for label in [outputs] if isinstance(outputs, str) else outputs:
                keep[self.node(label)] = None
        return list(keep)

    def _inputs_of(self, b: int, codes: np.ndarray, lengths: np.ndarray) -> list[Value]:
        return [self.vocab[c] for c in codes[b, : lengths[b]].tolist()]

    def _raise_error(self, b: int, codes: np.ndarray, lengths: np.ndarray) -> None:
        """Raise the exception `rasplang.evaluate` raises on input ``b`` of the batch."""
        xs = self._inputs_of(b, codes, lengths)
        try:
            evaluate(self.program, xs, causal=self.causal)
        except EvaluationError as exc:
            raise EvaluationError(f"{exc} (input {b} of the batch: {xs!r})") from exc
        except Exception as exc:
            raise EvaluationError(
                f"{type(exc).__name__}: {exc} (input {b} of the batch: {xs!r})") from exc
        raise NotImplementedError(
            f"the interpreter flagged input {b} ({xs!r}) as an error but rasplang.evaluate "
            "returns a value; this program uses a construct the interpreter does not "
            f"support on this input: {self._unsupported_hint()}"
        )

    def _unsupported_hint(self) -> str:
        """What makes the interpreter refuse an input that `evaluate` accepts."""
        state = self._state
        for node in self.nodes:
            if not isinstance(node, Select):
                continue
            for side in (node.keys, node.queries):
                table = state.tables.get(side)
                value = next((v for v in table.values if identity_dependent(v)), None) \
                    if table is not None else None
                if value is not None:
                    return (f"Select {self.labels[node]!r} compares {value!r}, whose equality "
                            "depends on object identity (a NaN inside a tuple equals only "
                            "the same NaN object), so evaluate's answer depends on how many "
                            "times f built it")
        return "e.g. a constant of another length with check_length=False"


class _Chunk:
    """One chunk of a run: node codes on the backend, error flags, the shared state."""

    def __init__(self, plan: Plan, state: TableState, backend: NumpyBackend,
                 codes: np.ndarray, lengths: np.ndarray, keep: list[RASPExpr]):
        self.plan = plan
        self.state = state
        self.be = backend
        self.codes = codes
        self.lengths = lengths
        self.n_pos = codes.shape[1]
        self.keep = set(keep)
        self.values: dict[RASPExpr, Any] = {}
        self.first_error: int | None = None
        self.dev_lengths = backend.asarray(lengths)
        self._device: dict[Any, tuple[np.ndarray, Any]] = {}

    def host(self, node: RASPExpr) -> np.ndarray:
        return self.be.to_host(self.values[node])

    def dev(self, key: Any, array: np.ndarray) -> Any:
        """``array`` on the backend, cached while the host array is the same object."""
        cached = self._device.get(key)
        if cached is None or cached[0] is not array:
            cached = (array, self.be.asarray(array))
            self._device[key] = cached
        return cached[1]

    def flag(self, err: Any) -> None:
        """Record the first sequence whose error flag is set."""
        bad = np.flatnonzero(self.be.to_host(err))
        if bad.size and (self.first_error is None or bad[0] < self.first_error):
            self.first_error = int(bad[0])

    def run(self) -> int | None:
        """Compute every node; return the index (in the chunk) of the first error."""
        plan, state, be = self.plan, self.state, self.be
        uses = {node: self.uses(node) for node in plan.nodes}
        remaining = _consumer_counts(plan.nodes, uses)
        lens = self.dev_lengths
        for node in plan.nodes:
            state.ensure(node)
            if isinstance(node, Selector):
                self.selector_node(node)
            elif isinstance(node, TokensType):
                self.values[node] = be.asarray(self.codes)
            elif isinstance(node, IndicesType):
                self.values[node] = be.indices(lens, self.n_pos)
            elif isinstance(node, LengthType):
                self.values[node] = be.length(lens, self.n_pos)
            elif isinstance(node, Full):
                self.values[node] = be.asarray(np.zeros(self.codes.shape, dtype=np.int32))
            elif isinstance(node, ConstantSOp):
                self.constant_sop(node)
            elif isinstance(node, Map):
                out, err = be.map(self.dev(node, state.luts[node]), self.values[node.inner], lens)
                self.values[node] = out
                self.flag(err)
            elif isinstance(node, (SequenceMap, LinearSequenceMap)):
                out, err = be.sequence_map(self.dev(node, state.luts[node]),
                                           self.values[node.fst], self.values[node.snd], lens)
                self.values[node] = out
                self.flag(err)
            elif isinstance(node, SelectorWidth):
                out, err = be.width(self.selector_args(plan._selectors[node]), lens, plan.causal)
                self.values[node] = out
                self.flag(err)
            elif isinstance(node, Aggregate):
                self.aggregate(node)
            else:
                raise NotImplementedError(f"no interpreter rule for {type(node).__name__}")
            for child in uses[node]:
                remaining[child] -= 1
                if remaining[child] == 0 and child not in self.keep:
                    self.values.pop(child, None)
        return self.first_error

    def uses(self, node: RASPExpr) -> tuple[RASPExpr, ...]:
        """The SOps whose codes computing ``node`` reads (selectors are fused)."""
        prog = self.plan._selectors.get(node)
        leaves = () if prog is None else tuple(
            sop for leaf in prog.leaves for sop in (leaf.keys, leaf.queries))
        if isinstance(node, Aggregate):
            return (node.sop, *leaves)
        if isinstance(node, Selector) and node not in self.keep:
            return ()
        if isinstance(node, (Selector, SelectorWidth)):
            return leaves
        return node.children

    # ------------------------------------------------------------------ rules

    def constant_sop(self, node: ConstantSOp) -> None:
        size = len(node.value)
        row = np.zeros(max(self.n_pos, size), dtype=np.int32)
        row[:size] = self.state.tables[node].codes_of(node.value)
        self.values[node] = self.be.constant(self.be.asarray(row), self.dev_lengths, self.n_pos)
        self.flag(self.lengths != size)

    def selector_node(self, node: Selector) -> None:
        if isinstance(node, ConstantSelector):
            rows = node.value
            square = all(len(r) == len(rows) for r in rows)
            self.flag((self.lengths != len(rows)) | (not square))
        if node in self.keep:
            matrix, err = self.be.selector(self.selector_args(self.plan._selectors[node]),
                                           self.dev_lengths, self.plan.causal)
            self.values[node] = matrix
            self.flag(err)

    def selector_args(self, prog: SelectorProgram) -> SelectorArgs:
        """The chunk's arrays for a selector program (leaf codes, predicate tables)."""
        be, state = self.be, self.state
        n_batch = len(self.lengths)
        preds = [state.luts[leaf] for leaf in prog.leaves]
        key = ("sel", prog.root)
        cached = self._device.get(key)
        if cached is None or any(a is not b for a, b in zip(cached[0], preds)):
            flat = np.concatenate([p.ravel() for p in preds] or [np.zeros(1, np.int8)])
            sizes = [p.size for p in preds]
            off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes \
                else np.zeros(0, np.int64)
            nq = np.array([p.shape[1] for p in preds], dtype=np.int64)
            size = max([self.n_pos, *(len(c.value) for c in prog.constants)])
            cmats = np.zeros((len(prog.constants), size, size), dtype=np.uint8)
            for i, const in enumerate(prog.constants):
                rows = const.value
                if all(len(r) == len(rows) for r in rows) and rows:
                    cmats[i, : len(rows), : len(rows)] = np.array(rows, dtype=np.uint8)
            may_error = any(bool((p == 2).any()) for p in preds)
            parts = tuple(be.asarray(a) for a in (prog.ops, prog.a0, prog.a1, flat, off, nq,
                                                  cmats))
            cached = (preds, (parts, may_error))
            self._device[key] = cached
        (ops, a0, a1, flat, off, nq, cmats), may_error = cached[1]
        xp = be.xp
        if len(prog.leaves) == 1:  # [1, C, T] views, no copies
            kcodes = self.values[prog.leaves[0].keys][None]
            qcodes = self.values[prog.leaves[0].queries][None]
        elif prog.leaves:
            kcodes = xp.stack([self.values[leaf.keys] for leaf in prog.leaves])
            qcodes = xp.stack([self.values[leaf.queries] for leaf in prog.leaves])
        else:
            kcodes = qcodes = xp.zeros((0, n_batch, self.n_pos), dtype=xp.int32)
        single = len(prog.ops) == 1 and prog.leaves
        return SelectorArgs(ops=ops, a0=a0, a1=a1, kcodes=kcodes, qcodes=qcodes, pred=flat,
                            pred_off=off, pred_nq=nq, cmats=cmats, may_error=may_error,
                            runs=state.runs.get(prog.leaves[0]) if single else None,
                            keys_are_positions=bool(single) and isinstance(
                                prog.leaves[0].keys, IndicesType))

    def aggregate(self, node: Aggregate) -> None:
        plan, state, be = self.plan, self.state, self.be
        info = state.numeric_info(node.sop)
        out, acc, err = be.aggregate(
            self.selector_args(plan._selectors[node]), self.dev_lengths, plan.causal,
            self.values[node.sop], self.dev(("remap", node), state.remaps[node]), info,
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


def _consumer_counts(
    nodes: Sequence[RASPExpr], uses: dict[RASPExpr, tuple[RASPExpr, ...]]
) -> dict[RASPExpr, int]:
    counts: dict[RASPExpr, int] = {node: 0 for node in nodes}
    for node in nodes:
        for child in uses[node]:
            counts[child] += 1
    return counts


def _raise_none_token(inputs: Sequence[Sequence[Value]]) -> None:
    """Refuse the first None token (no vocabulary holds None), naming its position."""
    for i, seq in enumerate(inputs):
        for j, token in enumerate(seq):
            if token is None:
                raise ValueError(f"token None at (sequence {i}, position {j}): None cannot "
                                 "be a token (it stands for 'no value' in RASP)")


def evaluate_batch(
    program: RASPExpr,
    inputs: Sequence[Sequence[Value]],
    *,
    vocab: Iterable[Value] | None = None,
    max_seq_len: int | None = None,
    causal: bool = False,
    backend: str = "numba",
) -> list[Any]:
    """Evaluate ``program`` on every input; equal to ``[evaluate(program, x) for x in inputs]``.

    ``vocab`` and ``max_seq_len`` default to the tokens and the longest length seen in
    ``inputs``. ``backend`` is ``"numba"`` (default), ``"numpy"`` or ``"cupy"``.

    >>> import rasplang as rl
    >>> evaluate_batch(rl.tokens + 1, [[1, 2], [3], []])
    [[2, 3], [4], []]
    """
    inputs = list(inputs)
    if not inputs:
        return []
    if vocab is None:
        vocab = sorted_values(token for seq in inputs for token in seq)
        if any(token is None for token in vocab):
            _raise_none_token(inputs)
        if not vocab:  # every sequence is empty
            return [evaluate(program, [], causal=causal) for _ in inputs]
    if max_seq_len is None:
        max_seq_len = max(1, max(len(seq) for seq in inputs))
    plan = Plan(program, vocab, max_seq_len, causal, backend=backend)
    return plan.run(inputs)
