"""The one numba helper: every kernel of the interpreter is compiled through `jit`.

Options are set once here: ``cache=True`` (compiled code is reused across processes),
``nogil=True`` (kernels release the GIL), ``error_model="numpy"`` (no Python exception
checks in arithmetic), and ``parallel=True`` only for the kernels that ask for it.
numba is imported lazily so ``import rasplang.interpreter`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}


def jit(*, parallel: bool = False, inline: bool = False) -> Callable[[Callable], Callable]:
    """Decorate a kernel with the project's numba options (imports numba on first use)."""
    import numba

    def wrap(fn: Callable) -> Callable:
        options = dict(_OPTIONS, parallel=parallel)
        if inline:
            options["inline"] = "always"
        return numba.njit(**options)(fn)

    return wrap

