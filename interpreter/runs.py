"""A Select's rows as runs of key codes, for the counting kernels (`kernels_runs`).

For a query code ``qc`` the keys a Select selects are the key codes ``kc`` with
``pred[kc, qc] == 1``; listed in code order they form a few runs ``[lo, hi)`` (EQ: one
run of one code, LT/LEQ/GT/GEQ on sorted codes: one run, NEQ: two, TRUE: one). Given
per-sequence prefix sums over key codes of the statistics an Aggregate needs (how many
keys, the sum of their value codes, how many are not numbers, their scaled integer sum),
a query costs one subtraction per run instead of one predicate lookup per key: a
sequence costs ``O(n_keys + T * runs)`` instead of ``O(T * T)``.

`counting_pays` decides, per node and chunk, whether that beats the generic kernel;
both give identical results (the counting kernels fall back to the generic reduction for
a query whose answer the sums do not determine).
"""

from __future__ import annotations

import attrs
import numpy as np

#: Predicate-table entry meaning "raised or saw None" (`interpreter.state.PRED_ERROR`).
_PRED_ERROR = 2


@attrs.frozen
class KeyRuns:
    """Per query code ``qc``, runs ``[lo[r], hi[r])`` of selected key codes for
    ``r`` in ``ptr[qc] .. ptr[qc + 1] - 1``.

    ``mean_runs``/``mean_width``: runs and selected key codes per query code, on average
    (the cost model's inputs). ``point``: when every row selects at most one key code (EQ
    on most tables), that code per query code (-1: none), else None.
    """

    ptr: np.ndarray  # [n_queries + 1] int64
    lo: np.ndarray  # [n_runs] int32
    hi: np.ndarray  # [n_runs] int32
    n_keys: int
    mean_runs: float
    mean_width: float
    point: np.ndarray | None = None  # [n_queries] int32


def key_runs(pred: np.ndarray) -> KeyRuns | None:
    """The `KeyRuns` of a predicate table ``pred [n_keys, n_queries]`` (0/1/2), or None when
    an entry is 2 (errors need every pair checked, which the generic kernel does)."""
    n_keys, n_queries = pred.shape
    if (pred == _PRED_ERROR).any():
        return None
    rows = np.zeros((n_queries, n_keys + 2), dtype=np.int8)  # [nq, nk + 2], zero-padded
    rows[:, 1:-1] = (pred == 1).T
    edges = np.diff(rows, axis=1)  # [nq, nk + 1]: +1 where a run starts, -1 after it ends
    starts = np.argwhere(edges == 1)  # row-major, so runs come grouped by query code
    ends = np.argwhere(edges == -1)
    per_query = np.bincount(starts[:, 0], minlength=n_queries)
    ptr = np.zeros(n_queries + 1, dtype=np.int64)
    np.cumsum(per_query, out=ptr[1:])
    lo = starts[:, 1].astype(np.int32)
    hi = ends[:, 1].astype(np.int32)
    point = None
    if per_query.max(initial=0) <= 1 and bool((hi - lo <= 1).all()):
        point = np.full(n_queries, -1, dtype=np.int32)
        point[starts[:, 0]] = lo
    return KeyRuns(ptr=ptr, lo=lo, hi=hi, n_keys=n_keys,
                   mean_runs=len(lo) / max(1, n_queries),
                   mean_width=float((hi - lo).sum()) / max(1, n_queries), point=point)


def counting_pays(runs: KeyRuns, n_pos: int, causal: bool, keys_are_positions: bool) -> bool:
    """Whether a counting kernel (`interpreter.kernels_runs`) is expected to beat the
    generic one on ``n_pos`` positions; the estimates count operations per sequence (the
    generic kernel's are ~2x dearer), following the kernel the backend would pick.
    """
    generic = 2.0 * n_pos * (n_pos + 1) / (2 if causal else 1)
    if keys_are_positions:  # prefix sums over positions
        counting = n_pos * (2.0 + runs.mean_runs)
    elif causal:  # running sums, every selected code
        counting = n_pos * (2.0 + runs.mean_runs + runs.mean_width)
    elif runs.point is not None:  # one lookup per query
        return True
    else:  # prefix sums over key codes
        counting = runs.n_keys + n_pos * (3.0 + runs.mean_runs)
    return counting < generic
