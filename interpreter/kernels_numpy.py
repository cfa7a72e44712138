"""The array-module backend: pure numpy on the CPU, the same code with ``xp=cupy`` on a GPU.

Every method takes and returns arrays of ``self.xp``. Selectors are evaluated for a
whole chunk as ``[C, T, T]`` matrices by fancy-indexing the predicate tables, so the
chunk size is chosen to keep ``C * T * T`` small; the numba backend fuses the same
work into one loop instead. Results and error flags mean exactly what the numba
kernels' do (`interpreter.kernels_numba`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rasplang.interpreter.codes import (
    AND,
    CONST,
    LIMB_BITS,
    MEAN,
    NOT,
    NUMBER,
    OR,
    PRED_ERROR,
    PRED_TRUE,
    REEVALUATE,
    SELECT,
    UNCOMPARABLE,
)
from rasplang.interpreter.selectors import SelectorArgs
from rasplang.interpreter.tables import NumericInfo

#: Elements of one ``[C, T, T]`` chunk matrix.
PAIR_BUDGET = 1 << 20


class NumpyBackend:
    """Evaluate chunks with whole-array operations of ``xp`` (numpy by default)."""

    name = "numpy"

    def __init__(self, xp: Any = np):
        self.xp = xp

    # ---------------------------------------------------------------- transfer

    def asarray(self, array: np.ndarray) -> Any:
        """Move a host array to this backend (a no-op for numpy)."""
        return self.xp.asarray(array)

    def to_host(self, array: Any) -> np.ndarray:
        """Move an array of this backend to the host."""
        return np.asarray(array)

    def chunk_size(self, n_pos: int) -> int:
        """Sequences per chunk for sequences padded to ``n_pos`` positions."""
        return max(1, PAIR_BUDGET // max(1, n_pos * n_pos))

    # ------------------------------------------------------------- primitives

    def valid(self, lengths: Any, n_pos: int) -> Any:
        """``[C, T]``: position < length."""
        xp = self.xp
        return xp.arange(n_pos)[None, :] < lengths[:, None]

    def indices(self, lengths: Any, n_pos: int) -> Any:
        """Codes of ``indices`` (code = value)."""
        xp = self.xp
        out = xp.broadcast_to(xp.arange(n_pos, dtype=xp.int32)[None, :], (len(lengths), n_pos))
        return xp.where(self.valid(lengths, n_pos), out, 0).astype(xp.int32)

    def length(self, lengths: Any, n_pos: int) -> Any:
        """Codes of ``length`` (code = value - 1)."""
        xp = self.xp
        out = xp.broadcast_to((lengths - 1).astype(xp.int32)[:, None], (len(lengths), n_pos))
        return xp.where(self.valid(lengths, n_pos), out, 0).astype(xp.int32)

    def constant(self, codes: Any, lengths: Any, n_pos: int) -> Any:
        """Codes of a per-position constant ``codes`` (1-D, padded to ``n_pos``)."""
        xp = self.xp
        out = xp.broadcast_to(codes[None, :n_pos], (len(lengths), n_pos))
        return xp.where(self.valid(lengths, n_pos), out, 0).astype(xp.int32)

    def map(self, lut: Any, codes: Any, lengths: Any) -> tuple[Any, Any]:
        """``lut[codes]`` with error flags per sequence (see `map_kernel`)."""
        return self._lookup(lut[codes], lengths)

    def sequence_map(self, lut: Any, fst: Any, snd: Any, lengths: Any) -> tuple[Any, Any]:
        """``lut[fst, snd]`` with error flags per sequence."""
        return self._lookup(lut[fst, snd], lengths)

    def _lookup(self, out: Any, lengths: Any) -> tuple[Any, Any]:
        xp = self.xp
        valid = self.valid(lengths, out.shape[1])
        bad = (out < 0) & valid
        err = bad.any(axis=1).astype(xp.uint8)
        return xp.where(valid & ~bad, out, 0).astype(xp.int32), err

    # --------------------------------------------------------------- selectors

    def selector(self, sel: SelectorArgs, lengths: Any, causal: bool) -> tuple[Any, Any]:
        """``[C, T, T]`` uint8 selector matrix (query, key) and error flags."""
        xp = self.xp
        n_pos = int(sel.kcodes.shape[2])
        pos = xp.arange(n_pos)
        inside = pos[None, :] < lengths[:, None]
        pairs = inside[:, :, None] & inside[:, None, :]  # [C, Tq, Tk]
        err = xp.zeros(len(lengths), dtype=bool)
        regs: list[Any] = []
        ops, a0, a1, offs, nqs = (self.to_host(a).tolist() for a in (
            sel.ops, sel.a0, sel.a1, sel.pred_off, sel.pred_nq))
        for op, x, y in zip(ops, a0, a1):
            if op == SELECT:
                keys = sel.kcodes[x][:, None, :].astype(xp.int64)  # [C, 1, Tk]
                queries = sel.qcodes[x][:, :, None].astype(xp.int64)  # [C, Tq, 1]
                entry = sel.pred[offs[x] + keys * nqs[x] + queries]  # [C, Tq, Tk]
                err |= ((entry == PRED_ERROR) & pairs).any(axis=(1, 2))
                regs.append(entry == PRED_TRUE)
            elif op == CONST:
                regs.append(xp.broadcast_to(sel.cmats[x, :n_pos, :n_pos] != 0,
                                            (len(lengths), n_pos, n_pos)))
            elif op == AND:
                regs.append(regs[x] & regs[y])
            elif op == OR:
                regs.append(regs[x] | regs[y])
            elif op == NOT:
                regs.append(~regs[x])
            else:
                raise AssertionError(f"unknown selector op {op}")
        matrix = regs[-1] & pairs
        if causal:
            matrix = matrix & (pos[None, :, None] >= pos[None, None, :])
        return matrix.astype(xp.uint8), err.astype(xp.uint8)

    def width(self, sel: SelectorArgs, lengths: Any, causal: bool) -> tuple[Any, Any]:
        """Selected keys per query (code = value) and error flags."""
        matrix, err = self.selector(sel, lengths, causal)
        return matrix.sum(axis=2, dtype=self.xp.int32), err

    def aggregate(
        self, sel: SelectorArgs, lengths: Any, causal: bool, vcodes: Any, remap: Any,
        info: NumericInfo, default_code: int, means: Any = None,
    ) -> tuple[Any, Any, Any]:
        """Select + Aggregate: codes, the sums ``acc [C, T, 3]`` of means, error flags.

        As the numba kernel, except that every mean is left to the plan: `MEAN` with
        (count, high limb sum, low limb sum) in ``acc``, or `REEVALUATE` (see
        `interpreter.tables`). ``means`` is used by the numba kernel only.
        """
        xp = self.xp
        matrix, err = self.selector(sel, lengths, causal)
        chosen = matrix != 0  # [C, Tq, Tk]
        values = vcodes[:, None, :]  # [C, 1, Tk]
        count = chosen.sum(axis=2, dtype=xp.int64)  # [C, Tq]
        first = xp.take_along_axis(vcodes, chosen.argmax(axis=2), axis=1)  # [C, Tq]
        differs = (chosen & (values != first[:, :, None])).any(axis=2)
        kind = xp.asarray(info.kind)
        isnum = kind[values] == NUMBER  # [C, 1, Tk]
        allnum = ~(chosen & ~isnum).any(axis=2)
        mean = (count > 1) & allnum
        if info.fast:  # one int64 sum below 2**53, split into limbs
            total = (chosen * xp.asarray(info.num)[values]).sum(axis=2, dtype=xp.int64)
            acc = xp.stack([count, total >> LIMB_BITS, total & ((1 << LIMB_BITS) - 1)], axis=2)
        elif info.exact:
            high = (chosen * xp.asarray(info.high)[values]).sum(axis=2, dtype=xp.int64)
            low = (chosen * xp.asarray(info.low)[values]).sum(axis=2, dtype=xp.int64)
            acc = xp.stack([count, high, low], axis=2)  # [C, Tq, 3]
        else:
            acc = xp.zeros((*count.shape, 3), dtype=xp.int64)
        conflict = (count > 1) & ~allnum & differs
        uncomparable = (count > 1) & ~differs & (kind[first] == UNCOMPARABLE)
        out = xp.where(count == 0, default_code, remap[first])
        out = xp.where(mean, MEAN if info.exact else REEVALUATE, out)
        out = xp.where(uncomparable, REEVALUATE, out)  # several copies: evaluate decides
        out = xp.where(conflict | ~self.valid(lengths, vcodes.shape[1]), 0, out)
        err = err | conflict.any(axis=1).astype(xp.uint8)
        return out.astype(xp.int32), acc, err
