"""Skip every test under tests/gpu when CuPy or a CUDA GPU is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    """Mark tests in this folder ``gpu`` and skip them without CuPy and a GPU."""
    from rasplang.interpreter.kernels_cupy import cupy_available

    available = cupy_available()
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA GPU")
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gpu)
            if not available:
                item.add_marker(skip)
