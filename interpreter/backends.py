"""Backend selection: ``"numba"`` (default on CPU), ``"numpy"`` and ``"cupy"``.

All three implement the chunk operations of `interpreter.kernels_numpy.NumpyBackend`
and give identical results; numba and CuPy are imported only when asked for.
"""

from __future__ import annotations

import itertools
import os
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

_POOL: ThreadPoolExecutor | None = None


def _threads() -> int:
    return max(1, min(32, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 1)))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="rasplang")
    return _POOL


def _split(n_batch: int, work: int, run: Callable[[slice], None]) -> None:
    """Run ``run(rows)`` over slices of the batch, in parallel threads when it pays.

    The kernels release the GIL, so threads run them concurrently.
    """
    n = _threads() if work >= PARALLEL_MIN_PAIRS else 1
    n = min(n, n_batch)
    if n <= 1:
        run(slice(0, n_batch))
        return
    bounds = [n_batch * i // n for i in range(n + 1)]
    slices = [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]
    futures = [_pool().submit(run, rows) for rows in slices[1:]]
    try:
        run(slices[0])  # the calling thread takes the first slice
    finally:
        for future in futures:
            future.result()


class NumbaBackend(NumpyBackend):
    """Fused numba kernels over the chunk (`kernels_numba`, `kernels_runs`)."""

    name = "numba"

    def __init__(self) -> None:
        super().__init__(np)
        from rasplang.interpreter import kernels_numba, kernels_runs

        self.k = kernels_numba
        self.r = kernels_runs

    def chunk_size(self, n_pos: int) -> int:
        """Sequences per chunk: the kernels need O(C * T) memory, never O(C * T * T)."""
        return max(1, NUMBA_CHUNK_POSITIONS // max(1, n_pos))

    def indices(self, lengths: Any, n_pos: int) -> Any:
        """Codes of ``indices`` (see `interpreter.kernels_numba.positions_kernel`)."""
        out = np.empty((len(lengths), n_pos), dtype=np.int32)
        _split(len(lengths), out.size, lambda r: self.k.positions_kernel(
            lengths[r], 0, False, out[r]))
        return out

    def length(self, lengths: Any, n_pos: int) -> Any:
        """Codes of ``length`` (code = value - 1)."""
        out = np.empty((len(lengths), n_pos), dtype=np.int32)
        _split(len(lengths), out.size, lambda r: self.k.positions_kernel(
            lengths[r], -1, True, out[r]))
        return out

    def map(self, lut: Any, codes: Any, lengths: Any) -> tuple[Any, Any]:
        """See `interpreter.kernels_numba.map_kernel`."""
        out = np.empty(codes.shape, dtype=np.int32)
        err = np.zeros(len(lengths), dtype=np.uint8)
        _split(len(lengths), out.size, lambda r: self.k.map_kernel(
            lut, codes[r], lengths[r], out[r], err[r]))
        return out, err

    def sequence_map(self, lut: Any, fst: Any, snd: Any, lengths: Any) -> tuple[Any, Any]:
        """See `interpreter.kernels_numba.sequence_map_kernel`."""
        out = np.empty(fst.shape, dtype=np.int32)
        err = np.zeros(len(lengths), dtype=np.uint8)
        _split(len(lengths), out.size, lambda r: self.k.sequence_map_kernel(
            lut, fst[r], snd[r], lengths[r], out[r], err[r]))
        return out, err

    def _sel(self, sel: SelectorArgs, rows: slice) -> tuple[Any, ...]:
        return (sel.ops, sel.a0, sel.a1, sel.kcodes[:, rows], sel.qcodes[:, rows], sel.pred,
                sel.pred_off, sel.pred_nq, sel.cmats)

    def selector(self, sel: SelectorArgs, lengths: Any, causal: bool) -> tuple[Any, Any]:
        """See `interpreter.kernels_numba.selector_kernel`."""
        n_pos = sel.kcodes.shape[2]
        out = np.zeros((len(lengths), n_pos, n_pos), dtype=np.uint8)
        err = np.zeros(len(lengths), dtype=np.uint8)
        _split(len(lengths), out.size, lambda r: self.k.selector_kernel(
            *self._sel(sel, r), lengths[r], causal, out[r], err[r]))
        return out, err

    def _counting(self, sel: SelectorArgs, causal: bool) -> bool:
        """Whether to use the counting kernels (`interpreter.kernels_runs`)."""
        return sel.runs is not None and counting_pays(
            sel.runs, sel.kcodes.shape[2], causal, sel.keys_are_positions)

    def width(self, sel: SelectorArgs, lengths: Any, causal: bool) -> tuple[Any, Any]:
        """See `interpreter.kernels_numba.width_kernel` and the counting kernels of
        `interpreter.kernels_runs`, chosen by `interpreter.runs.counting_pays`."""
        out = np.empty(sel.kcodes.shape[1:], dtype=np.int32)
        err = np.zeros(len(lengths), dtype=np.uint8)
        if self._counting(sel, causal):
            runs, kcodes, qcodes = sel.runs, sel.kcodes[0], sel.qcodes[0]
            if sel.keys_are_positions:
                def run(r: slice) -> None:
                    self.r.width_positions_kernel(qcodes[r], runs.ptr, runs.lo, runs.hi,
                                                  lengths[r], causal, out[r])
            elif causal:
                def run(r: slice) -> None:
                    self.r.width_running_kernel(kcodes[r], qcodes[r], runs.ptr, runs.lo,
                                                runs.hi, runs.n_keys, lengths[r], out[r])
            elif runs.point is not None:
                def run(r: slice) -> None:
                    self.r.width_point_kernel(kcodes[r], qcodes[r], runs.point, runs.n_keys,
                                              lengths[r], out[r])
            else:
                def run(r: slice) -> None:
                    self.r.width_prefix_kernel(kcodes[r], qcodes[r], runs.ptr, runs.lo,
                                               runs.hi, runs.n_keys, lengths[r], out[r])
            _split(len(lengths), out.size * (2 + runs.mean_runs), run)
            return out, err
        _split(len(lengths), out.size * out.shape[1], lambda r: self.k.width_kernel(
            *self._sel(sel, r), sel.may_error, lengths[r], causal, out[r], err[r]))
        return out, err

    def aggregate(
        self, sel: SelectorArgs, lengths: Any, causal: bool, vcodes: Any, remap: Any,
        info: NumericInfo, default_code: int,
        means: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[Any, Any, Any]:
        """See `interpreter.kernels_numba.aggregate_kernel` and the counting kernels of
        `interpreter.kernels_runs`, chosen by `interpreter.runs.counting_pays`."""
        out = np.empty(vcodes.shape, dtype=np.int32)
        err = np.zeros(len(lengths), dtype=np.uint8)
        if means is None:
            means = (np.zeros(0, np.float64), np.zeros(0, np.int32))
        if self._counting(sel, causal):
            acc = self._aggregate_counting(sel, lengths, causal, vcodes, remap, info,
                                           default_code, means, out, err)
            return out, acc, err
        acc = np.empty((*vcodes.shape, 3), dtype=np.int64)  # read only where out is MEAN

        def run(r: slice) -> None:
            self.k.aggregate_kernel(
                *self._sel(sel, r), sel.may_error, lengths[r], causal, vcodes[r], remap,
                info.kind, info.high, info.low, info.kernel_denom, info.exact,
                info.fast, default_code, means[0], means[1], out[r], acc[r], err[r],
            )

        _split(len(lengths), out.size * out.shape[1], run)
        return out, acc, err

    def _aggregate_counting(self, sel: SelectorArgs, lengths: Any, causal: bool, vcodes: Any,
                            remap: Any, info: NumericInfo, default_code: int,
                            means: tuple[np.ndarray, np.ndarray], out: np.ndarray,
                            err: np.ndarray) -> np.ndarray:
        """Counting kernel, then the queries it marked reduced key by key; returns the
        sums of the means left to the plan (``acc [C, T, 3]``, read where ``out`` is
        `MEAN`; a read-only view of zeros when no query was reduced)."""
        runs, kcodes, qcodes = sel.runs, sel.kcodes[0], sel.qcodes[0]
        if info.fast:
            tab, tmin = self.r.answer_table(info.num, info.denom, kcodes.shape[1], *means,
                                            default_code)
        else:
            tab, tmin = np.full((1, 1), default_code, np.int32), 0
        weight = self.r.value_weights(info.kind, info.num, tab)
        need = np.zeros(len(lengths), dtype=np.uint8)
        if sel.keys_are_positions:
            def run(r: slice) -> None:
                self.r.aggregate_positions_kernel(
                    qcodes[r], runs.ptr, runs.lo, runs.hi, lengths[r], causal, vcodes[r],
                    remap, weight, tab, tmin, out[r], need[r])
        elif causal:
            def run(r: slice) -> None:
                self.r.aggregate_running_kernel(
                    kcodes[r], qcodes[r], runs.ptr, runs.lo, runs.hi, runs.n_keys, lengths[r],
                    vcodes[r], remap, weight, tab, tmin, out[r],
                    need[r])
        elif runs.point is not None:
            def run(r: slice) -> None:
                self.r.aggregate_point_kernel(
                    kcodes[r], qcodes[r], runs.point, runs.n_keys, lengths[r], vcodes[r],
                    remap, weight, tab, tmin, out[r], need[r])
        else:
            def run(r: slice) -> None:
                self.r.aggregate_prefix_kernel(
                    kcodes[r], qcodes[r], runs.ptr, runs.lo, runs.hi, runs.n_keys, lengths[r],
                    vcodes[r], remap, weight, tab, tmin, out[r], need[r])
        _split(len(lengths), out.size * (2 + runs.mean_runs), run)
        if not need.any():
            return np.broadcast_to(np.int64(0), (*out.shape, 3))
        acc = np.empty((*out.shape, 3), dtype=np.int64)
        self.r.reduce_marked_kernel(
            kcodes, qcodes, sel.pred, int(sel.pred_nq[0]), lengths, causal, vcodes, remap,
            info.kind, info.high, info.low, info.kernel_denom, info.exact,
            info.fast, default_code, means[0], means[1], need, out, acc, err)
        return acc


def get_backend(name: str | NumpyBackend) -> NumpyBackend:
    """The backend called ``name`` (one of `BACKENDS`); a backend object is returned as is
    (e.g. ``CupyBackend(fused=False)``)."""
    if isinstance(name, NumpyBackend):
        return name
    if name == "numba":
        return NumbaBackend()
    if name == "numpy":
        return NumpyBackend(np)
    if name == "cupy":
        from rasplang.interpreter.kernels_cupy import CupyBackend

        return CupyBackend()
    raise ValueError(f"unknown backend {name!r}; expected one of {list(BACKENDS)}")
