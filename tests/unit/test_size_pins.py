"""Size pins: every library program's compiled shape at max_seq_len 5 and 16, so a change
that makes a model deeper, wider or larger fails here. A change that makes one smaller
fails too, with the new numbers to pin."""

from __future__ import annotations

import warnings

import pytest

import rasplang as rl
from rasplang import lib

#: (n_layers, d_model, d_mlp, n_heads, n_params_used, n_nonzero) of `rasplang.compile`
#: (optimize=True).
PINS = {
    ('above_mean', 5): (1, 15, 8, 1, 158, 65),
    ('count', 5): (1, 17, 11, 1, 204, 70),
    ('count_distinct', 5): (2, 19, 9, 1, 309, 94),
    ('count_less_freq', 5): (2, 24, 11, 1, 354, 127),
    ('detect_pattern', 5): (1, 16, 5, 2, 216, 75),
    ('double_hist', 5): (2, 27, 12, 2, 611, 164),
    ('dyck1', 5): (3, 28, 79, 2, 2642, 875),
    ('dyck2', 5): (5, 55, 79, 2, 6541, 1539),
    ('frac_prevs', 5): (1, 11, 1, 1, 130, 34),
    ('hist', 5): (1, 17, 9, 1, 215, 67),
    ('length', 5): (1, 17, 9, 1, 173, 61),
    ('nary_sequencemap', 5): (1, 19, 15, 1, 421, 82),
    ('pair_balance', 5): (1, 12, 2, 2, 205, 58),
    ('prev_sum', 5): (1, 15, 3, 1, 143, 41),
    ('reverse', 5): (2, 21, 9, 1, 241, 88),
    ('same_frac', 5): (2, 27, 21, 1, 801, 180),
    ('shift_by', 5): (1, 15, 1, 1, 164, 37),
    ('shift_fill', 5): (1, 14, 1, 1, 153, 35),
    ('shuffle_dyck', 5): (2, 25, 17, 3, 443, 171),
    ('shuffle_dyck2', 5): (2, 30, 101, 5, 1762, 903),
    ('sort', 5): (3, 48, 25, 1, 2475, 301),
    ('sort_by_most_freq', 5): (4, 78, 90, 1, 10872, 944),
    ('sort_freq', 5): (3, 45, 45, 1, 2997, 416),
    ('sort_stable', 5): (3, 41, 20, 1, 1680, 246),
    ('sort_unique', 5): (2, 23, 9, 1, 350, 95),
    ('above_mean', 16): (1, 26, 8, 1, 400, 76),
    ('count', 16): (1, 39, 33, 1, 1260, 180),
    ('count_distinct', 16): (2, 41, 31, 1, 1893, 264),
    ('count_less_freq', 16): (2, 57, 33, 1, 1940, 331),
    ('detect_pattern', 16): (1, 27, 5, 2, 1338, 130),
    ('double_hist', 16): (2, 60, 34, 2, 3383, 448),
    ('dyck1', 16): (3, 93, 546, 2, 28845, 5600),
    ('dyck2', 16): (5, 154, 578, 2, 84317, 9888),
    ('frac_prevs', 16): (1, 22, 1, 1, 878, 99),
    ('hist', 16): (1, 39, 31, 1, 1205, 177),
    ('length', 16): (1, 39, 31, 1, 1163, 171),
    ('nary_sequencemap', 16): (1, 41, 48, 1, 2665, 236),
    ('pair_balance', 16): (1, 23, 2, 2, 1459, 177),
    ('prev_sum', 16): (1, 26, 3, 1, 847, 74),
    ('reverse', 16): (2, 43, 31, 1, 1099, 231),
    ('same_frac', 16): (2, 119, 161, 1, 28687, 1044),
    ('shift_by', 16): (1, 26, 1, 1, 868, 70),
    ('shift_fill', 16): (1, 25, 1, 1, 857, 68),
    ('shuffle_dyck', 16): (2, 47, 39, 3, 2720, 400),
    ('shuffle_dyck2', 16): (2, 52, 673, 5, 19263, 5640),
    ('sort', 16): (3, 125, 80, 1, 22605, 1036),
    ('sort_by_most_freq', 16): (4, 562, 992, 1, 1055355, 10815),
    ('sort_freq', 16): (3, 298, 496, 1, 268999, 4700),
    ('sort_stable', 16): (3, 107, 64, 1, 15221, 839),
    ('sort_unique', 16): (2, 45, 31, 1, 1615, 216),
}

FIELDS = ("n_layers", "d_model", "d_mlp", "n_heads", "n_params_used", "n_nonzero")


def test_every_library_program_is_pinned():
    assert {name for name, _ in PINS} == set(lib.PROGRAMS)


@pytest.mark.parametrize(("name", "n"), sorted(PINS))
def test_size_is_pinned(name, n):
    entry = lib.PROGRAMS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rl.compile(entry.build(n), entry.vocab, n)
    c = model.config
    got = (c.n_layers, c.d_model, c.d_mlp, c.n_heads, model.n_params_used, model.n_nonzero)
    grown = [f"{f} {w} -> {g}" for f, w, g in zip(FIELDS, PINS[name, n], got) if g > w]
    assert not grown, f"{name} at {n} grew: {', '.join(grown)}"
    assert got == PINS[name, n], f"{name} at {n} shrank: pin {got} in PINS"
