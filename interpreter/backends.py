"""Backend selection: ``"numba"`` (default on CPU), ``"numpy"`` and ``"cupy"``.

All three implement the chunk operations of `interpreter.kernels_numpy.NumpyBackend`
and give identical results; numba and CuPy are imported only when asked for. A backend
asked for by name is created once and shared (`get_backend`), so the numba backend's
thread pool lives as long as the process, or until `NumbaBackend.close`.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from rasplang.interpreter.kernels_numpy import NumpyBackend
from rasplang.interpreter.runs import counting_pays
from rasplang.interpreter.selectors import SelectorArgs
from rasplang.interpreter.tables import NumericInfo

BACKENDS = ("numba", "numpy", "cupy")

#: Positions (C * T) of one numba chunk.
NUMBA_CHUNK_POSITIONS = 1 << 20
#: Below this much work (positions, or (sequence, query, key) triples) a kernel runs in
#: the calling thread.
PARALLEL_MIN_PAIRS = 1 << 16


def _cpus() -> int:
    """CPUs this process may run on (at most 32)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(32, n or 1))


#: The value arguments of a SelectorWidth: the generic kernel's ``(vcodes, remap, kind,
#: high, low, denom, exact, fast, default_code, mean_values, mean_codes)``, None where an
#: Aggregate passes arrays (numba compiles the None case as its own, count-only kernel).
_NO_VALUES = (None, None, None, None, None, 1, False, False, 0, None, None)


def _rows(array: np.ndarray | None, rows: slice) -> np.ndarray | None:
    """``array[rows]``, or None for a value argument a SelectorWidth leaves out."""
    return None if array is None else array[rows]


class NumbaBackend(NumpyBackend):
    """Fused numba kernels over the chunk (`kernels_numba`, `kernels_runs`).

    Kernels release the GIL, so a large chunk is split into slices of sequences that run
    in this backend's thread pool (``threads`` workers, created on first use). `close`
    shuts the pool down (a later call creates a new one); so does dropping the backend.
    """

    name = "numba"

    def __init__(self, threads: int | None = None) -> None:
        super().__init__(np)
        from rasplang.interpreter import kernels_numba, kernels_runs

        self.k = kernels_numba
        self.r = kernels_runs
        self.threads = threads if threads is not None else _cpus()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    # ---------------------------------------------------------------- threads

    def _executor(self) -> ThreadPoolExecutor:
        """The thread pool, created on first use."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads,
                                                thread_name_prefix="rasplang")
                self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=False)
            return self._pool

    def close(self) -> None:
        """Shut the thread pool down, waiting for its threads (the backend stays usable)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> NumbaBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _split(self, n_batch: int, work: int, run: Callable[[slice], None]) -> None:
        """Run ``run(rows)`` over slices of the batch, in parallel threads when ``work``
        (positions, or (sequence, query, key) triples) pays for them."""
        n = min(self.threads if work >= PARALLEL_MIN_PAIRS else 1, n_batch)
        if n <= 1:
            run(slice(0, n_batch))
            return
        bounds = [n_batch * i // n for i in range(n + 1)]
        slices = [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]
        futures = [self._executor().submit(run, rows) for rows in slices[1:]]
        try:
            run(slices[0])  # the calling thread takes the first slice
        finally:
            for future in futures:
                future.result()

    # ------------------------------------------------------------- primitives

    def chunk_size(self, n_pos: int) -> int:
        """Sequences per chunk: the kernels need O(C * T) memory, never O(C * T * T)."""
        return max(1, NUMBA_CHUNK_POSITIONS // max(1, n_pos))

    def indices(self, lengths: Any, n_pos: int) -> Any:
        """Codes of ``indices`` (see `interpreter.kernels_numba.positions_kernel`)."""
        return self._positions(lengths, n_pos, 0, False)

    def length(self, lengths: Any, n_pos: int) -> Any:
        """Codes of ``length`` (code = value - 1)."""
        return self._positions(lengths, n_pos, -1, True)

    def _positions(self, lengths: Any, n_pos: int, offset: int, per_sequence: bool) -> Any:
        out = np.empty((len(lengths), n_pos), dtype=np.int32)
        self._split(len(lengths), out.size, lambda r: self.k.positions_kernel(
            lengths[r], offset, per_sequence, out[r]))
        return out

    def map(self, lut: Any, codes: Any, lengths: Any) -> tuple[Any, Any]:
        """See `interpreter.kernels_numba.map_kernel`."""
        out = np.empty(codes.shape, dtype=np.int32)
        err = np.zeros(len(lengths), dtype=np.uint8)
        self._split(len(lengths), out.size, lambda r: self.k.map_kernel(
            lut, codes[r], lengths[r], out[r], err[r]))
        return out, err

    def sequence_map(self, lut: Any, fst: Any, snd: Any, lengths: Any) -> tuple[Any, Any]:
        """See `interpreter.kernels_numba.sequence_map_kernel`."""
        out = np.empty(fst.shape, dtype=np.int32)
        err = np.zeros(len(lengths), dtype=np.uint8)
        self._split(len(lengths), out.size, lambda r: self.k.sequence_map_kernel(
            lut, fst[r], snd[r], lengths[r], out[r], err[r]))
        return out, err

    # -------------------------------------------------------------- selectors

    def _sel(self, sel: SelectorArgs, rows: slice) -> tuple[Any, ...]:
        return (sel.ops, sel.a0, sel.a1, sel.kcodes[:, rows], sel.qcodes[:, rows], sel.pred,
                sel.pred_off, sel.pred_nq, sel.cmats)

    def selector(self, sel: SelectorArgs, lengths: Any, causal: bool) -> tuple[Any, Any]:
        """See `interpreter.kernels_numba.selector_kernel`."""
        n_pos = sel.kcodes.shape[2]
        out = np.zeros((len(lengths), n_pos, n_pos), dtype=np.uint8)
        err = np.zeros(len(lengths), dtype=np.uint8)
        self._split(len(lengths), out.size, lambda r: self.k.selector_kernel(
            *self._sel(sel, r), lengths[r], causal, out[r], err[r]))
        return out, err

    def width(self, sel: SelectorArgs, lengths: Any, causal: bool) -> tuple[Any, Any]:
        """See `interpreter.kernels_numba.fused_select_kernel` and the counting kernels of
        `interpreter.kernels_runs`, chosen by `interpreter.runs.counting_pays`."""
        out = np.empty(sel.kcodes.shape[1:], dtype=np.int32)
        err = np.zeros(len(lengths), dtype=np.uint8)
        if self._counting(sel, causal):
            self._count(sel, lengths, causal, None, None, None, None, 0, out, None)
        else:
            self._fused(sel, lengths, causal, _NO_VALUES, out, None, err)
        return out, err

    def aggregate(
        self, sel: SelectorArgs, lengths: Any, causal: bool, vcodes: Any, remap: Any,
        info: NumericInfo, default_code: int,
        means: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[Any, Any, Any]:
        """See `interpreter.kernels_numba.fused_select_kernel` and the counting kernels of
        `interpreter.kernels_runs`, chosen by `interpreter.runs.counting_pays`."""
        out = np.empty(vcodes.shape, dtype=np.int32)
        err = np.zeros(len(lengths), dtype=np.uint8)
        if means is None:
            means = (np.zeros(0, np.float64), np.zeros(0, np.int32))
        values = (vcodes, remap, info.kind, info.high, info.low, info.kernel_denom,
                  info.exact, info.fast, default_code, *means)
        if self._counting(sel, causal):
            acc = self._aggregate_counting(sel, lengths, causal, info, values, out, err)
        else:
            acc = np.empty((*vcodes.shape, 3), dtype=np.int64)  # read only where out is MEAN
            self._fused(sel, lengths, causal, values, out, acc, err)
        return out, acc, err

    def _fused(self, sel: SelectorArgs, lengths: Any, causal: bool, values: tuple[Any, ...],
               out: np.ndarray, acc: np.ndarray | None, err: np.ndarray) -> None:
        """The generic kernel over the chunk; ``values`` as `_NO_VALUES` lists them."""
        vcodes, *rest = values

        def run(r: slice) -> None:
            self.k.fused_select_kernel(
                *self._sel(sel, r), sel.may_error, lengths[r], causal, _rows(vcodes, r),
                *rest, out[r], _rows(acc, r), err[r])

        self._split(len(lengths), out.size * out.shape[1], run)

    def _counting(self, sel: SelectorArgs, causal: bool) -> bool:
        """Whether to use the counting kernels (`interpreter.kernels_runs`)."""
        return sel.runs is not None and counting_pays(
            sel.runs, sel.kcodes.shape[2], causal, sel.keys_are_positions)

    def _count(self, sel: SelectorArgs, lengths: Any, causal: bool, vcodes: Any, remap: Any,
               weight: np.ndarray | None, tab: np.ndarray | None, tmin: int, out: np.ndarray,
               need: np.ndarray | None) -> None:
        """The counting kernel for ``sel``'s one Select over the chunk (see
        `interpreter.kernels_runs`): prefix sums over positions or key codes, or sums per
        key code (one lookup per query, or running sums when causal). A SelectorWidth
        passes None for the value arguments and ``need``."""
        runs, kcodes, qcodes = sel.runs, sel.kcodes[0], sel.qcodes[0]
        if sel.keys_are_positions or (not causal and runs.point is None):
            def run(r: slice) -> None:
                self.r.prefix_sums_kernel(
                    kcodes[r], qcodes[r], runs.ptr, runs.lo, runs.hi, runs.n_keys, lengths[r],
                    sel.keys_are_positions, causal, _rows(vcodes, r), remap, weight, tab, tmin,
                    out[r], _rows(need, r))
        else:  # rows of at most one key code (point), or causal
            point = None if causal else runs.point

            def run(r: slice) -> None:
                self.r.code_sums_kernel(
                    kcodes[r], qcodes[r], runs.ptr, runs.lo, runs.hi, point, runs.n_keys,
                    lengths[r], causal, _rows(vcodes, r), remap, weight, tab, tmin, out[r],
                    _rows(need, r))
        self._split(len(lengths), out.size * (2 + runs.mean_runs), run)

    def _aggregate_counting(self, sel: SelectorArgs, lengths: Any, causal: bool,
                            info: NumericInfo, values: tuple[Any, ...], out: np.ndarray,
                            err: np.ndarray) -> np.ndarray:
        """Counting kernel, then the queries it marked reduced key by key; returns the
        sums of the means left to the plan (``acc [C, T, 3]``, read where ``out`` is
        `MEAN`; a read-only view of zeros when no query was reduced)."""
        vcodes, remap, *_, default_code, mean_values, mean_codes = values
        if info.fast:
            tab, tmin = self.r.answer_table(info.num, info.denom, out.shape[1], mean_values,
                                            mean_codes, default_code)
        else:
            tab, tmin = np.full((1, 1), default_code, np.int32), 0
        weight = self.r.value_weights(info.kind, info.num, tab)
        need = np.zeros(len(lengths), dtype=np.uint8)
        self._count(sel, lengths, causal, vcodes, remap, weight, tab, tmin, out, need)
        if not need.any():
            return np.broadcast_to(np.int64(0), (*out.shape, 3))
        acc = np.empty((*out.shape, 3), dtype=np.int64)
        self.r.reduce_marked_kernel(sel.kcodes[0], sel.qcodes[0], sel.pred,
                                    int(sel.pred_nq[0]), lengths, causal, *values, need, out,
                                    acc, err)
        return acc


@functools.cache
def _shared(name: str) -> NumpyBackend:
    """The one backend object of each name (`get_backend`)."""
    if name == "numba":
        return NumbaBackend()
    if name == "numpy":
        return NumpyBackend(np)
    from rasplang.interpreter.kernels_cupy import CupyBackend

    return CupyBackend()


def get_backend(name: str | NumpyBackend) -> NumpyBackend:
    """The backend called ``name`` (one of `BACKENDS`; one shared object per name), or a
    backend object as is (e.g. ``CupyBackend(fused=False)``)."""
    if isinstance(name, NumpyBackend):
        return name
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {list(BACKENDS)}")
    return _shared(name)
