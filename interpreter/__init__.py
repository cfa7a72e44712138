"""Batched, table-driven evaluation of RASP programs (numpy, numba, CuPy).

- `evaluate_batch` runs a program on a list of inputs and returns what
  `rasplang.evaluate` returns on each;
- `Plan` prepares a program once for repeated runs (`Plan.run`, `Plan.run_arrays`).

Modules: `plan` (`Plan`, `evaluate_batch`), `chunk` (one run, chunk by chunk, one rule
per node type), `state` and `tables` (the analysis's value tables and lookup arrays, and
what the Aggregate kernels need), `selectors` (selector register programs, fused into one
Select where their inputs take few values), `runs` (when counting pays), `codes` (the
codes the kernels share), `kernels_numba` (generic kernels), `kernels_runs` (numba
counting kernels for one Select), `kernels_numpy`, `kernels_cupy` (the backends, chosen
in `backends`), `codec` (lists <-> codes), `result` (arrays returned to callers), `_jit`
(the one numba helper).
"""

from rasplang.interpreter.backends import BACKENDS
from rasplang.interpreter.plan import Plan, evaluate_batch
from rasplang.interpreter.result import BatchArrays, NodeArrays

__all__ = ["BACKENDS", "BatchArrays", "NodeArrays", "Plan", "evaluate_batch"]
