"""The CuPy backend: `NumpyBackend` with ``xp=cupy``, plus one fused CUDA kernel.

Everything but Select + Aggregate and Select + SelectorWidth runs through the
array-module code of `interpreter.kernels_numpy` (so the numpy tests cover its
logic). The fused kernel below mirrors `interpreter.kernels_numba.fused_select_kernel`
line for line, one CUDA thread per (sequence, query), so no ``[B, T, T]`` matrix is
built on the GPU either; like the array-module path it leaves every mean to the plan
as exact integer sums (`interpreter.tables.NumericInfo`), so no float is rounded on the
GPU. Its codes and markers are ``-D`` options from `interpreter.codes` (`DEFINES`).
tests/differential/test_interpreter_cuda.py compiles the same source with a C++ compiler
and runs it on the CPU, so its semantics are tested without a GPU. CuPy is imported
when this backend is created.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rasplang.interpreter import codes
from rasplang.interpreter.kernels_numpy import NumpyBackend
from rasplang.interpreter.selectors import SelectorArgs
from rasplang.interpreter.tables import NumericInfo

#: Register file size of the CUDA selector interpreter; larger selector programs use the
#: array-module path.
MAX_OPS = 64

#: The names the CUDA source reads, each passed as a ``-D`` option: every code and marker
#: comes from `interpreter.codes` (the source defines none, so a missing one fails to
#: compile).
DEFINES = {
    **{name: getattr(codes, name) for name in (
        "SELECT", "CONST", "AND", "OR", "PRED_FALSE", "PRED_ERROR", "MEAN", "REEVALUATE",
        "NUMBER", "UNCOMPARABLE")},
    "MAX_OPS": MAX_OPS,
}

#: One CUDA thread per (sequence, query): `selected` is `kernels_numba._selected`, and the
#: body of `fused_select` is `kernels_numba.fused_select_kernel` with `reduce_row`,
#: except that every mean is left to the plan (``fast`` is not used).
_SOURCE = r"""
__device__ unsigned char selected(
    const signed char* ops, const int* a0, const int* a1, const int n_ops,
    const int* kcodes, const int* qcodes,
    const signed char* pred, const long long* pred_off, const long long* pred_nq,
    const unsigned char* cmats, const int csize, const long long plane, const long long bk,
    const long long bq, const int q, const int k, unsigned char* regs)
{
    int bad = 0;
    for (int i = 0; i < n_ops; ++i) {
        const int op = ops[i];
        unsigned char v;
        if (op == SELECT) {
            const int leaf = a0[i];
            const long long kc = kcodes[leaf * plane + bk];
            const long long qc = qcodes[leaf * plane + bq];
            v = (unsigned char)pred[pred_off[leaf] + kc * pred_nq[leaf] + qc];
            if (v == PRED_ERROR) { bad = 1; v = PRED_FALSE; }
        } else if (op == CONST) {
            v = cmats[((long long)a0[i] * csize + q) * csize + k];
        } else if (op == AND) {
            v = regs[a0[i]] & regs[a1[i]];
        } else if (op == OR) {
            v = regs[a0[i]] | regs[a1[i]];
        } else {  // NOT
            v = 1 - regs[a0[i]];
        }
        regs[i] = v;
    }
    return bad ? PRED_ERROR : regs[n_ops - 1];
}

extern "C" __global__ void fused_select(
    const signed char* ops, const int* a0, const int* a1, const int n_ops,
    const int* kcodes, const int* qcodes,
    const signed char* pred, const long long* pred_off, const long long* pred_nq,
    const unsigned char* cmats, const int csize,
    const int may_error, const long long* lengths, const int causal,
    const int n_batch, const int n_pos, const int width_only,
    const int* vcodes, const int* remap, const unsigned char* kind,
    const long long* high, const long long* low, const int exact,
    const int default_code, int* out, long long* acc, unsigned char* err)
{
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n_batch * n_pos) return;
    const int b = (int)(idx / n_pos);
    const int q = (int)(idx % n_pos);
    const int n = (int)lengths[b];
    if (q >= n) { out[idx] = 0; return; }
    const long long plane = (long long)n_batch * n_pos;
    const long long row = (long long)b * n_pos;
    unsigned char regs[MAX_OPS];
    int count = 0, first = 0, same = 1, allnum = 1, bad = 0;
    long long hsum = 0, lsum = 0;  // limbs of the scaled sum (NumericInfo)
    const int stop = (may_error || !causal) ? n : q + 1;
    const int limit = causal ? q + 1 : n;
    for (int k = 0; k < stop; ++k) {
        const unsigned char s = selected(ops, a0, a1, n_ops, kcodes, qcodes, pred, pred_off,
                                         pred_nq, cmats, csize, plane, row + k, row + q, q,
                                         k, regs);
        if (s == PRED_FALSE) continue;
        if (s == PRED_ERROR) { bad = 1; continue; }
        if (k >= limit) continue;
        ++count;
        if (width_only) continue;
        const int c = vcodes[row + k];
        if (count == 1) first = c; else if (c != first) same = 0;
        if (kind[c] == NUMBER) {
            hsum += high[c];
            lsum += low[c];
        } else {
            allnum = 0;
        }
    }
    if (width_only) out[idx] = count;
    else if (count == 0) out[idx] = default_code;
    else if (count == 1) out[idx] = remap[first];
    else if (allnum && !exact) out[idx] = REEVALUATE;
    else if (allnum) {  // the plan divides exactly
        acc[3 * idx] = count; acc[3 * idx + 1] = hsum; acc[3 * idx + 2] = lsum;
        out[idx] = MEAN;
    }
    else if (same && kind[first] == UNCOMPARABLE) out[idx] = REEVALUATE;
    else if (same) out[idx] = remap[first];
    else { bad = 1; out[idx] = 0; }
    if (bad) err[b] = 1;
}
"""


def cupy_available() -> bool:
    """Whether CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


class CupyBackend(NumpyBackend):
    """Chunks on the GPU; ``fused=False`` uses only the array-module path."""

    name = "cupy"

    def __init__(self, fused: bool = True):
        import cupy

        super().__init__(cupy)
        self.fused = fused
        options = tuple(f"-D{name}={value}" for name, value in DEFINES.items())
        self._kernel = cupy.RawKernel(_SOURCE, "fused_select", options=options) \
            if fused else None

    def to_host(self, array: Any) -> np.ndarray:
        """Copy a device array to the host."""
        return self.xp.asnumpy(array)

    def chunk_size(self, n_pos: int) -> int:
        """Sequences per chunk: fused kernels need O(C * T) memory, so chunks are large."""
        if self.fused:
            return max(1, (1 << 22) // max(1, n_pos))
        return max(1, (1 << 26) // max(1, n_pos * n_pos))

    def _fused(self, sel: SelectorArgs, lengths: Any, causal: bool, width_only: bool,
               vcodes: Any = None, remap: Any = None, info: NumericInfo | None = None,
               default_code: int = 0) -> tuple[Any, Any, Any]:
        cp = self.xp
        n_leaves, n_batch, n_pos = sel.kcodes.shape
        out = cp.empty((n_batch, n_pos), dtype=cp.int32)
        err = cp.zeros(n_batch, dtype=cp.uint8)
        if vcodes is None:
            vcodes = cp.zeros((n_batch, n_pos), dtype=cp.int32)
            remap = cp.zeros(1, dtype=cp.int32)
            kind, high, low, exact = (cp.zeros(1, cp.uint8), cp.zeros(1, cp.int64),
                                       cp.zeros(1, cp.int64), False)
            acc = cp.zeros((1, 1, 3), dtype=cp.int64)  # never written
        else:
            kind, high, low = (cp.asarray(info.kind), cp.asarray(info.high),
                                cp.asarray(info.low))
            exact = info.exact
            acc = cp.empty((n_batch, n_pos, 3), dtype=cp.int64)  # read where out is MEAN
        kcodes = sel.kcodes if n_leaves else cp.zeros((1, n_batch, n_pos), cp.int32)
        qcodes = sel.qcodes if n_leaves else kcodes
        cmats = sel.cmats if sel.cmats.size else cp.zeros((1, 1, 1), cp.uint8)
        total = n_batch * n_pos
        threads = 128
        blocks = (total + threads - 1) // threads
        if blocks:
            self._kernel(
                (blocks,), (threads,),
                (sel.ops, sel.a0, sel.a1, np.int32(len(sel.ops)),
                 cp.ascontiguousarray(kcodes), cp.ascontiguousarray(qcodes),
                 sel.pred, sel.pred_off, sel.pred_nq, cmats, np.int32(cmats.shape[-1]),
                 np.int32(sel.may_error), lengths, np.int32(causal), np.int32(n_batch),
                 np.int32(n_pos), np.int32(width_only), cp.ascontiguousarray(vcodes), remap,
                 kind, high, low, np.int32(exact), np.int32(default_code), out, acc, err),
            )
        return out, acc, err

    def width(self, sel: SelectorArgs, lengths: Any, causal: bool) -> tuple[Any, Any]:
        """Fused CUDA kernel (array-module path for very large selector programs)."""
        if not self.fused or len(sel.ops) > MAX_OPS:
            return super().width(sel, lengths, causal)
        out, _, err = self._fused(sel, lengths, causal, True)
        return out, err

    def aggregate(
        self, sel: SelectorArgs, lengths: Any, causal: bool, vcodes: Any, remap: Any,
        info: NumericInfo, default_code: int, means: Any = None,
    ) -> tuple[Any, Any, Any]:
        """Fused CUDA kernel (array-module path for very large selector programs)."""
        if not self.fused or len(sel.ops) > MAX_OPS:
            return super().aggregate(sel, lengths, causal, vcodes, remap, info, default_code)
        return self._fused(sel, lengths, causal, False, vcodes, remap, info, default_code)
