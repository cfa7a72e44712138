"""A Select's rows as runs of key codes, for the counting kernels (`kernels_runs`).

For a query code ``qc`` the keys a Select selects are the key codes ``kc`` with
``pred[kc, qc] == 1``; listed in code order they form a few runs ``[lo, hi)`` (EQ: one
run of one code, LT/LEQ/GT/GEQ on sorted codes: one run, NEQ: two, TRUE: one). Given
per-sequence prefix sums over key codes of the statistics an Aggregate needs (how many
keys, the sum of their value codes, how many are not numbers, their scaled integer sum),
a query costs one subtraction per run instead of one predicate lookup per key: a
sequence costs ``O(n_keys + T * runs)`` instead of ``O(T * T)``.

The analysis builds each Select's runs once (`rasplang.Analysis.key_runs`, with
`rasplang.tables.key_runs`). `counting_pays` decides, per node and chunk, whether that
beats the generic kernel; both give identical results (the counting kernels fall back
to the generic reduction for a query whose answer the sums do not determine).
"""

from __future__ import annotations

from rasplang.tables import KeyRuns, key_runs  # noqa: F401  (re-exported)


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
