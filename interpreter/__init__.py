"""Batched, table-driven evaluation of RASP programs (numpy, numba, CuPy).

- `evaluate_batch` runs a program on a list of inputs and returns what
  `rasplang.evaluate` returns on each;
- `Plan` prepares a program once for repeated runs (`Plan.run`, `Plan.run_arrays`).

Modules: `plan` (the passes of a run), `state` and `tables` (value tables and lookup
arrays), `selectors` (selector register programs), `runs` (a Select's rows as runs of key
codes, and when counting pays), `kernels_numba` (generic kernels), `kernels_runs`
(numba counting kernels for one Select), `kernels_numpy`, `kernels_cupy` (the backends,
chosen in `backends`), `codec` (lists <-> codes), `result` (arrays returned to callers),
`_jit` (the one numba helper).
"""

from rasplang.interpreter.backends import BACKENDS
from rasplang.interpreter.plan import Plan, evaluate_batch
from rasplang.interpreter.result import BatchArrays, NodeArrays

__all__ = ["BACKENDS", "BatchArrays", "NodeArrays", "Plan", "evaluate_batch"]
