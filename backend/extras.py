"""Optional dependencies, imported only where a feature needs them."""

from __future__ import annotations

import importlib
from typing import Any


def import_extra(what: str, extra: str, *modules: str) -> tuple[Any, ...]:
    """``modules``, imported; where one is missing, an ImportError that says ``what``
    needs it and which extra of rasplang installs it."""
    try:
        return tuple(importlib.import_module(name) for name in modules)
    except ImportError as exc:
        raise ImportError(
            f"{what} needs {' and '.join(modules)} ({exc}): install the extra: pip install "
            f"'rasplang[{extra}]' (on CPU, install torch's CPU wheel first)") from exc
