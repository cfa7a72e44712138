"""Every code and marker that the interpreter's tables, kernels and backends share.

One module, so that the numba kernels (`kernels_numba`, `kernels_runs`), the array-module
backend (`kernels_numpy`), the CUDA source (`kernels_cupy`, which receives each of these
as a ``-D`` option) and the modules that build their inputs (`selectors`, `runs`,
`state`, `tables`, `plan`) read the same numbers. numba freezes module-level integers
into the compiled code, so a kernel pays nothing for the names.
"""

from __future__ import annotations

# ----------------------------------------------------------------- selector programs

#: Op codes of a selector register program (`interpreter.selectors.SelectorProgram`):
#: a Select leaf, a ConstantSelector, and the combinators &, |, ~.
SELECT, CONST, AND, OR, NOT = 0, 1, 2, 3, 4

# ------------------------------------------------------------------- lookup tables

#: Predicate-table entries (`interpreter.state`): not selected, selected, and "the
#: predicate raised or saw None" (the kernels flag the sequence; `evaluate` names it).
PRED_FALSE, PRED_TRUE, PRED_ERROR = 0, 1, 2
#: Map and SequenceMap lookup-table entry: ``f`` raised on this value (any negative entry
#: flags the sequence).
RAISED = -1
#: `interpreter.runs.KeyRuns.point` entry: this query code selects no key code.
NO_KEY = -1

# ------------------------------------------------------------- Aggregate markers

#: ``out`` markers of an Aggregate kernel for a query whose answer is not yet a code.
#: `MEAN`: a mean of several numbers, exact in ``acc[b, q]`` (count and the two limbs of
#: the scaled sum, see `interpreter.tables.NumericInfo`); the plan divides.
#: `REEVALUATE`: a mean over a table with no exact integer form, or several copies of an
#: `UNCOMPARABLE` value; the plan re-evaluates the sequence with `rasplang.evaluate_all`.
#: `REDUCE`: a query the counting kernels' sums do not determine; the backend reduces it
#: key by key (`kernels_runs.reduce_marked_kernel`), so the plan never sees it.
MEAN, REEVALUATE, REDUCE = -1, -3, -4

# ------------------------------------------------------------------ numeric values

#: `interpreter.tables.NumericInfo.kind` of a value: not a number; a number (several are
#: averaged); a non-number whose equality depends on object identity
#: (`rasplang.values.identity_dependent`), so that whether several selected copies of
#: it are "the same" is left to `evaluate`.
OTHER, NUMBER, UNCOMPARABLE = 0, 1, 2
#: A scaled sum is kept in two int64 limbs, ``high * 2**LIMB_BITS + low``.
LIMB_BITS = 32
