"""Compressed and rotated models: the residual stream in another basis.

- `rotate` (``model.rotate(seed)``): a random orthonormal basis folded into every weight;
  the same model in float64, with no residual direction a feature (`basis`, numpy).
- `compress`: tracr's compression (Lindner et al. 2023, section 5): one learned
  ``W [D, d]``, every write through ``W`` and every read through ``W^T``, trained on the
  program's own domain with torch (`train`; the ``lab`` extra).
- `smallest_compression`: the smallest ``d`` at which `compress` gives a model that
  `rasplang.verify` finds exact on every input (`search`).

Importing this package imports neither torch nor the compiler's training code: torch is
imported when `compress` runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CompressedModel", "Search", "compress", "rotate", "rotation_matrix",
           "smallest_compression"]

_LAZY = {
    "CompressedModel": "rasplang.compression.basis",
    "rotate": "rasplang.compression.basis",
    "rotation_matrix": "rasplang.compression.basis",
    "compress": "rasplang.compression.train",
    "smallest_compression": "rasplang.compression.search",
    "Search": "rasplang.compression.search",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rasplang.compression' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
