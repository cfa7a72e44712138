"""Size pins: every library program's compiled shape at max_seq_len 5 and 16, so a change
that makes a model deeper, wider or larger fails here. A change that makes one smaller
fails too, with the new numbers to pin."""

from __future__ import annotations

import warnings

import pytest

import rasplang as rl
from rasplang import lib

#: (n_layers, d_model, d_mlp, n_heads, n_params_used) of `rasplang.compile` (optimize=True).
PINS = {
    ('above_mean', 5): (1, 15, 9, 1, 167),
    ('count', 5): (1, 17, 11, 1, 204),
    ('count_distinct', 5): (2, 20, 11, 1, 347),
    ('count_less_freq', 5): (2, 25, 11, 1, 376),
    ('detect_pattern', 5): (1, 16, 5, 2, 216),
    ('double_hist', 5): (2, 28, 14, 2, 669),
    ('dyck1', 5): (3, 28, 108, 2, 3164),
    ('dyck2', 5): (5, 56, 108, 2, 7170),
    ('frac_prevs', 5): (1, 11, 1, 1, 130),
    ('hist', 5): (1, 18, 11, 1, 253),
    ('length', 5): (1, 18, 11, 1, 211),
    ('nary_sequencemap', 5): (1, 19, 15, 1, 421),
    ('pair_balance', 5): (1, 12, 2, 2, 205),
    ('prev_sum', 5): (1, 15, 3, 1, 143),
    ('reverse', 5): (2, 26, 21, 1, 574),
    ('same_frac', 5): (2, 28, 21, 1, 839),
    ('shift_by', 5): (1, 15, 1, 1, 164),
    ('shift_fill', 5): (1, 14, 1, 1, 153),
    ('shuffle_dyck', 5): (2, 26, 19, 3, 470),
    ('shuffle_dyck2', 5): (3, 38, 16, 4, 727),
    ('sort', 5): (3, 49, 25, 1, 2502),
    ('sort_by_most_freq', 5): (4, 84, 110, 1, 13699),
    ('sort_freq', 5): (3, 51, 55, 1, 4179),
    ('sort_stable', 5): (3, 42, 20, 1, 1707),
    ('sort_unique', 5): (2, 24, 11, 1, 377),
    ('above_mean', 16): (1, 26, 9, 1, 409),
    ('count', 16): (1, 39, 33, 1, 1260),
    ('count_distinct', 16): (2, 42, 33, 1, 1997),
    ('count_less_freq', 16): (2, 58, 33, 1, 2037),
    ('detect_pattern', 16): (1, 27, 5, 2, 1338),
    ('double_hist', 16): (2, 61, 36, 2, 3529),
    ('dyck1', 16): (3, 93, 546, 2, 30054),
    ('dyck2', 16): (5, 155, 578, 2, 85809),
    ('frac_prevs', 16): (1, 22, 1, 1, 878),
    ('hist', 16): (1, 40, 33, 1, 1309),
    ('length', 16): (1, 40, 33, 1, 1267),
    ('nary_sequencemap', 16): (1, 41, 48, 1, 2665),
    ('pair_balance', 16): (1, 23, 2, 2, 1459),
    ('prev_sum', 16): (1, 26, 3, 1, 847),
    ('reverse', 16): (2, 59, 241, 1, 13235),
    ('same_frac', 16): (2, 120, 161, 1, 28791),
    ('shift_by', 16): (1, 26, 1, 1, 868),
    ('shift_fill', 16): (1, 25, 1, 1, 857),
    ('shuffle_dyck', 16): (2, 48, 41, 3, 2791),
    ('shuffle_dyck2', 16): (3, 60, 38, 4, 4060),
    ('sort', 16): (3, 126, 80, 1, 22676),
    ('sort_by_most_freq', 16): (4, 579, 1056, 1, 1139714),
    ('sort_freq', 16): (3, 315, 528, 1, 303214),
    ('sort_stable', 16): (3, 108, 64, 1, 15292),
    ('sort_unique', 16): (2, 46, 33, 1, 1686),
}

FIELDS = ("n_layers", "d_model", "d_mlp", "n_heads", "n_params_used")


def test_every_library_program_is_pinned():
    assert {name for name, _ in PINS} == set(lib.PROGRAMS)


@pytest.mark.parametrize(("name", "n"), sorted(PINS))
def test_size_is_pinned(name, n):
    entry = lib.PROGRAMS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rl.compile(entry.build(n), entry.vocab, n)
    c = model.config
    got = (c.n_layers, c.d_model, c.d_mlp, c.n_heads, model.n_params_used)
    grown = [f"{f} {w} -> {g}" for f, w, g in zip(FIELDS, PINS[name, n], got) if g > w]
    assert not grown, f"{name} at {n} grew: {', '.join(grown)}"
    assert got == PINS[name, n], f"{name} at {n} shrank: pin {got} in PINS"
