"""`Plan`: a program compiled into value tables, run on batches in chunks.

The pipeline of one run reads as a list of passes:

1. encode the inputs as token codes ``[B, T]`` (`interpreter.codec`);
2. per chunk of the batch, per node in topological order (`interpreter.chunk`): bring
   the node's lookup arrays up to date (`interpreter.state`), run its kernel on the
   children's codes, resolve means to codes, and drop children nobody needs any more;
3. if a kernel flagged an error, re-run `rasplang.evaluate` on the first offending
   input and raise its exception (same type, same message, plus the batch index);
4. decode the kept nodes' codes back to lists (`interpreter.result`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from rasplang.analysis import Analysis, analysis_for, sorted_values
from rasplang.evaluator import EvaluationError, evaluate
from rasplang.interpreter.backends import get_backend
from rasplang.interpreter.chunk import _RULES, Chunk, Run, selector_tables
from rasplang.interpreter.codec import encode
from rasplang.interpreter.result import BatchArrays, NodeArrays
from rasplang.interpreter.selectors import SelectorProgram, compile_selector
from rasplang.interpreter.state import TableState
from rasplang.nodes import (
    Aggregate,
    RASPExpr,
    Selector,
    SelectorWidth,
    Value,
)
from rasplang.validation import identity_problem


class Plan:
    """A program prepared for batched runs over ``vocab`` and lengths up to ``max_seq_len``.

    Building a plan reads the analysis (`rasplang.analyze`, or ``analysis`` when given:
    it must be the analysis of this program, vocabulary and length): each node's typed
    value table and the lookup arrays of Maps, SequenceMaps and Selects, so it calls no
    function of the program. `run` and `run_arrays` call none per element either. A plan
    never changes after it is built, so threads may run it at once.

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
        analysis: Analysis | None = None,
    ):
        self.analysis = analysis_for(program, vocab, max_seq_len, analysis)
        self.program = program
        self.vocab = self.analysis.vocab
        self.max_seq_len = self.analysis.max_seq_len
        self.causal = bool(causal)
        self.backend = backend
        self.nodes = self.analysis.nodes
        self.labels = self.analysis.labels
        self._by_label = {label: node for node, label in self.labels.items()}
        missing = sorted({type(n).__name__ for n in self.nodes if type(n) not in _RULES})
        if missing:
            raise NotImplementedError(f"no interpreter rule for {', '.join(missing)}")
        # Every selector program a run may need: an Aggregate's or SelectorWidth's
        # selector, and each selector node's own (kept with outputs=...).
        self._selectors: dict[RASPExpr, SelectorProgram] = {}
        for node in self.nodes:
            if isinstance(node, (Aggregate, SelectorWidth)):
                self._selectors[node] = compile_selector(node.selector)
            elif isinstance(node, Selector):
                self._selectors[node] = compile_selector(node)
        self._state = TableState.from_analysis(self.analysis)
        programs = {prog.root: prog for prog in self._selectors.values()}  # one per root
        self._selector_tables = {
            root: selector_tables(prog, tuple(self._state.luts[leaf] for leaf in prog.leaves))
            for root, prog in programs.items()}

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
        state = self._state.copy()  # grows if the run meets new values; the plan's never
        run = Run(self, state, chosen, keep)
        pieces: dict[RASPExpr, list[np.ndarray]] = {node: [] for node in keep}
        n_batch, n_pos = codes.shape
        step = chosen.chunk_size(n_pos)
        for start in range(0, n_batch, step):
            stop = min(n_batch, start + step)
            chunk = Chunk(run, codes[start:stop], lengths[start:stop])
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
        tables = self._state.tables
        for node in self.nodes:
            reason = identity_problem(node, lambda sop: tables[sop].values, self.labels)
            if reason is not None:
                return f"{type(node).__name__} {self.labels[node]!r} {reason}"
        return "e.g. a constant of another length with check_length=False"


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
