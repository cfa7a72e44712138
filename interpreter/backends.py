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
from rasplang.interpreter.selectors import SelectorArgs
from rasplang.interpreter.tables import NumericInfo

BACKENDS = ("numba", "numpy", "cupy")

#: Positions (C * T) of one numba chunk.
NUMBA_CHUNK_POSITIONS = 1 << 20
#: Below this many (sequence, query, key) triples a kernel runs in the calling thread.
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
    futures = [_pool().submit(run, slice(lo, hi)) for lo, hi in itertools.pairwise(bounds)]
    for future in futures:
        future.result()


class NumbaBackend(NumpyBackend):
    """Fused numba kernels over the chunk; simple position codes come from numpy."""

    name = "numba"

    def __init__(self) -> None:
        super().__init__(np)
        from rasplang.interpreter import kernels_numba

        self.k = kernels_numba

    def chunk_size(self, n_pos: int) -> int:
        """Sequences per chunk: the kernels need O(C * T) memory, never O(C * T * T)."""
        return max(1, NUMBA_CHUNK_POSITIONS // max(1, n_pos))

    def map(self, lut: Any, codes: Any, lengths: Any) -> tuple[Any, Any]:
        """See `interpreter.kernels_numba.map_kernel`."""
        out = np.empty(codes.shape, dtype=np.int32)
        err = np.zeros(len(lengths), dtype=np.uint8)
        self.k.map_kernel(lut, codes, lengths, out, err)
        return out, err

    def sequence_map(self, lut: Any, fst: Any, snd: Any, lengths: Any) -> tuple[Any, Any]:
        """See `interpreter.kernels_numba.sequence_map_kernel`."""
        out = np.empty(fst.shape, dtype=np.int32)
        err = np.zeros(len(lengths), dtype=np.uint8)
        self.k.sequence_map_kernel(lut, fst, snd, lengths, out, err)
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

    def width(self, sel: SelectorArgs, lengths: Any, causal: bool) -> tuple[Any, Any]:
        """See `interpreter.kernels_numba.width_kernel`."""
        out = np.empty(sel.kcodes.shape[1:], dtype=np.int32)
        err = np.zeros(len(lengths), dtype=np.uint8)
        _split(len(lengths), out.size * out.shape[1], lambda r: self.k.width_kernel(
            *self._sel(sel, r), sel.may_error, lengths[r], causal, out[r], err[r]))
        return out, err

    def aggregate(
        self, sel: SelectorArgs, lengths: Any, causal: bool, vcodes: Any, remap: Any,
        info: NumericInfo, default_code: int,
        means: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[Any, Any, Any]:
        """See `interpreter.kernels_numba.aggregate_kernel`."""
        out = np.empty(vcodes.shape, dtype=np.int32)
        outf = np.zeros(vcodes.shape, dtype=np.float64)
        err = np.zeros(len(lengths), dtype=np.uint8)
        if means is None:
            means = (np.zeros(0, np.float64), np.zeros(0, np.int32))

        def run(r: slice) -> None:
            self.k.aggregate_kernel(
                *self._sel(sel, r), sel.may_error, lengths[r], causal, vcodes[r], remap,
                info.isnum, info.num, info.fval, info.denom, info.exact, default_code,
                means[0], means[1], out[r], outf[r], err[r],
            )

        _split(len(lengths), out.size * out.shape[1], run)
        return out, outf, err


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
