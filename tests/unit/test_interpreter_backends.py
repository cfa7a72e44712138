"""Backend objects: one per name, the numba backend's thread pool, the shared codes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rasplang import Comparison, Select, SelectorWidth, tokens
from rasplang.interpreter import Plan, backends, codes, selectors
from rasplang.interpreter.backends import NumbaBackend, get_backend


def _threads() -> set[threading.Thread]:
    """The live pool threads (objects, not names: every pool numbers its threads from 0)."""
    return {t for t in threading.enumerate() if t.name.startswith("rasplang")}


def test_get_backend_shares_one_object_per_name():
    """A name gives the same backend every time (so one thread pool); an object is kept."""
    assert get_backend("numba") is get_backend("numba")
    assert get_backend("numpy") is get_backend("numpy")
    mine = NumbaBackend(threads=2)
    assert get_backend(mine) is mine
    with pytest.raises(ValueError, match="unknown backend 'cuda'; expected one of"):
        get_backend("cuda")
    assert not hasattr(backends, "_POOL")  # no module-level pool


def test_thread_pool_is_created_on_use_and_closed():
    """The pool starts with the first parallel kernel call; close() joins its threads and
    a later call starts a new one; the backend's results do not change."""
    plan = Plan(SelectorWidth(Select(tokens, tokens, Comparison.LEQ)), (0, 1, 2), 16)
    rng = np.random.default_rng(0)
    codes_, lengths = rng.integers(3, size=(20_000, 16)), np.full(20_000, 16)
    before = _threads()
    with NumbaBackend(threads=2) as backend:
        assert backend._pool is None
        first = plan.run_arrays(codes_[:10], lengths[:10], backend=backend).output.codes
        assert backend._pool is None  # too little work for threads
        out = plan.run_arrays(codes_, lengths, backend=backend).output.codes
        assert backend._pool is not None and _threads() > before
        np.testing.assert_array_equal(out[:10], first)
        backend.close()
        assert backend._pool is None and _threads() == before
        again = plan.run_arrays(codes_, lengths, backend=backend).output.codes
        np.testing.assert_array_equal(again, out)
    assert backend._pool is None and _threads() == before
    single = plan.run_arrays(codes_, lengths, backend=NumbaBackend(threads=1)).output.codes
    np.testing.assert_array_equal(single, out)


def test_table_builders_write_the_codes_the_kernels_read():
    """`interpreter.selectors` builds programs with the kernels' op codes, and the
    analysis's lookup tables (`rasplang.tables`) hold the kernels' entries."""
    from rasplang import tables

    for name in ("SELECT", "CONST", "AND", "OR", "NOT"):
        assert getattr(selectors, name) == getattr(codes, name)
    assert (tables.PRED_FALSE, tables.PRED_TRUE, tables.PRED_ERROR, tables.RAISED_CODE) == (
        codes.PRED_FALSE, codes.PRED_TRUE, codes.PRED_ERROR, codes.RAISED)
    assert len({codes.SELECT, codes.CONST, codes.AND, codes.OR, codes.NOT}) == 5
    assert len({codes.MEAN, codes.REEVALUATE, codes.REDUCE}) == 3
    assert max(codes.MEAN, codes.REEVALUATE, codes.REDUCE) < 0  # never a table code
