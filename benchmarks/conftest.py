"""Collect ``bench_*.py`` files as test modules (pytest only collects ``test_*.py``)."""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    """Collect benchmark modules named ``bench_*.py``."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):  # named files pytest collects itself
        return pytest.Module.from_parent(parent, path=file_path)
    return None
