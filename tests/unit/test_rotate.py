"""Rotated models (`CompiledModel.rotate`): an orthonormal change of the residual basis,
exact in float64, checked against the program on every input (numpy only)."""

import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang.compression.basis import FLOAT32_UNCHECKED, rotation_matrix
from rasplang.lib import PROGRAMS

SMALL = ("frac_prevs", "reverse", "hist", "shuffle_dyck", "prev_sum", "sort_unique")


def compiled(name, n=4, **options):
    entry = PROGRAMS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library's sort warnings are not under test
        return entry, rl.compile(entry.build(n), entry.vocab, n, **options)


@pytest.mark.parametrize("name", SMALL)
def test_rotated_model_verifies_on_every_input(name):
    """A rotated library model equals its program on every input of length 1..4."""
    entry, model = compiled(name)
    rotated = model.rotate(7)
    report = rl.verify(entry.build(4), entry.vocab, 4, model=rotated, exhaustive=True)
    assert report.ok, report.summary()


def test_rotation_is_dense_and_differs_from_the_original():
    """The rotated weights are dense (no residual direction is a feature) yet the logits
    match the original's to float64 rounding on every path."""
    _, model = compiled("frac_prevs")
    rotated = model.rotate(1)
    w_e = rotated.weights["embed.W_E"][:-1]  # the PAD row stays zero
    assert np.count_nonzero(w_e) == w_e.size
    ids = model.input_encoder.encode([["BOS", "x", "y", "x", "z"]])
    want = model.forward(ids)
    for structured in (True, False):
        got = rotated.forward(ids, structured=structured)
        assert np.abs(got - want).max() < 1e-12
    assert np.allclose(rotated.run([list("xyxz")]), model.run([list("xyxz")]), atol=1e-12)


def test_rotation_matrix_is_orthogonal_and_seeded():
    """The same seed gives the same orthogonal matrix; another seed another."""
    q = rotation_matrix(9, 3)
    assert np.allclose(q.T @ q, np.eye(9), atol=1e-13)
    assert np.array_equal(q, rotation_matrix(9, 3))
    assert not np.allclose(q, rotation_matrix(9, 4))


def test_rotated_config_records_seed_and_refuses_float32():
    """The config says how the basis was rotated; float32 is refused unless verified."""
    _, model = compiled("reverse")
    rotated = model.rotate(5)
    assert rotated.config.basis == "rotate(seed=5)"
    assert rotated.config.float64_only == FLOAT32_UNCHECKED
    assert rotated.residual_labels[:2] == ["rotated:0", "rotated:1"]
    with pytest.raises(ValueError, match="exact in float64 only"):
        rotated.run([list("abc")], dtype=np.float32)
    twice = rotated.rotate(6)
    assert twice.config.basis == "rotate(seed=5), rotate(seed=6)"


def test_rotate_float32_verifies_or_refuses():
    """float32=True keeps float32 when it verifies on every input, and refuses a model
    whose float32 rounding the rotation breaks."""
    _, model = compiled("reverse")
    assert model.rotate(1, float32=True).config.float64_only == ""
    _, bad = compiled("pair_balance", n=5)
    with pytest.raises(ValueError, match="not exact in float32"):
        bad.rotate(1, float32=True)


def test_rotated_model_saves_and_loads(tmp_path):
    """A rotated model's file loads back with its basis and the same outputs."""
    _, model = compiled("hist")
    rotated = model.rotate(2)
    loaded = rl.load(rotated.save(tmp_path / "rotated.safetensors"))
    assert loaded.config.basis == "rotate(seed=2)"
    batch = [list("abca"), list("dd")]
    assert loaded.run(batch) == rotated.run(batch) == model.run(batch)


def test_rotate_refuses_layernorm_and_takes_rmsnorm():
    """LayerNorm does not commute with a rotation and is refused; RMSNorm is kept."""
    entry, ln = compiled("reverse", norm="layernorm")
    with pytest.raises(ValueError, match="LayerNorm subtracts the mean"):
        ln.rotate(0)
    entry, rms = compiled("reverse", norm="rmsnorm")
    report = rl.verify(entry.build(4), entry.vocab, 4, model=rms.rotate(0), exhaustive=True)
    assert report.ok, report.summary()


def test_rotate_refuses_a_non_integer_seed():
    """The seed must be an integer."""
    _, model = compiled("reverse")
    with pytest.raises(TypeError, match="integer seed"):
        model.rotate(1.5)
