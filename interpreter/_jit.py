"""The one numba helper: every kernel of the interpreter is compiled through `jit`.

Options are set once here: ``cache=True`` (compiled code is reused across processes),
``nogil=True`` (kernels release the GIL), ``error_model="numpy"`` (no Python exception
checks in arithmetic), and ``parallel=True`` or ``fastmath`` only for the kernels that
ask for them. numba is imported lazily so ``import rasplang.interpreter`` stays cheap.

A semantic rule that several kernels share is written once as a *helper*
(``jit(helper=True)``), which kernels call inside their loops; LLVM inlines it. Helpers
are compiled without numba's reference counting (``_nrt=False``), so they may not
allocate arrays. Why not numba's own ``inline="always"``: it copies the helper's body
into the kernel with an atomic increment and decrement of every array argument's
reference count, which numba removes again only when the body is one basic block. A
helper with a branch, called once per key, then costs several atomic operations per key
on arrays that every thread shares: 20-50x slower than the same code written inline
(measured on the counting kernels, numba 0.68).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}


def jit(*, parallel: bool = False, helper: bool = False,
        fastmath: bool | set[str] = False) -> Callable[[Callable], Callable]:
    """Decorate a kernel, or with ``helper`` a function that kernels call, with the
    project's numba options (imports numba on first use)."""
    import numba

    def wrap(fn: Callable) -> Callable:
        options = dict(_OPTIONS, parallel=parallel)
        if fastmath:
            options["fastmath"] = fastmath
        if helper:
            options["_nrt"] = False
        return numba.njit(**options)(fn)

    return wrap
