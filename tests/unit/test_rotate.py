"""Rotated models (`CompiledModel.rotate`): an orthonormal change of the residual basis,
exact in float64, checked against the program on every input (numpy only)."""

import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang.compression.basis import FLOAT32_UNCHECKED, BasisModel, rotation_matrix
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
    """A rotated model's file loads back as a BasisModel with its basis, its Q and the
    compiled labels, and the same outputs."""
    _, model = compiled("hist")
    rotated = model.rotate(2)
    loaded = rl.load(rotated.save(tmp_path / "rotated.safetensors"))
    assert isinstance(loaded, BasisModel) and loaded.config.basis == "rotate(seed=2)"
    assert np.array_equal(loaded.projection, rotation_matrix(model.config.d_model, 2))
    assert loaded.features == tuple(model.residual_labels)
    batch = [list("abca"), list("dd")]
    assert loaded.run(batch) == rotated.run(batch) == model.run(batch)


def test_a_changed_basis_field_in_the_file_is_found(tmp_path):
    """Editing the saved basis (its labels) or dropping it is found by the checksums and
    named; a plain model's file has no basis field."""
    import json

    from safetensors.numpy import load_file, save_file

    from rasplang.backend.metadata import BASIS_FIELD, ModelFileError

    _, model = compiled("reverse")
    path = model.rotate(1).save(tmp_path / "r.safetensors")
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(size))["__metadata__"]
    tensors = load_file(path)
    edited = json.loads(meta[BASIS_FIELD])
    edited["features"][0] = "tokens:z"
    save_file(tensors, tmp_path / "edited.safetensors",
              metadata={**meta, BASIS_FIELD: json.dumps(edited)})
    with pytest.raises(ModelFileError, match=f"{BASIS_FIELD}.*does not match its checksum"):
        rl.load(tmp_path / "edited.safetensors")
    dropped = {k: v for k, v in meta.items() if k != BASIS_FIELD}
    save_file(tensors, tmp_path / "dropped.safetensors", metadata=dropped)
    with pytest.raises(ModelFileError, match="basis_model"):
        rl.load(tmp_path / "dropped.safetensors")
    plain = model.save(tmp_path / "plain.safetensors")
    assert type(rl.load(plain)) is type(model)


@pytest.mark.parametrize("name", ["reverse", "frac_prevs", "sort_unique"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_rotate_keeps_layernorm_and_rmsnorm(name, norm):
    """A LayerNorm model rotates by a Q that fixes the all-ones vector, so its mean stays
    0 and its readers still cancel the rounded mean: exact on every input, as with
    RMSNorm."""
    entry, model = compiled(name, norm=norm)
    rotated = model.rotate(3)
    assert rotated.config.eps == model.config.eps
    report = rl.verify(entry.build(4), entry.vocab, 4, model=rotated, exhaustive=True)
    assert report.ok, report.summary()


def test_rotation_keeping_the_ones_vector():
    """rotation_matrix(keep_ones=True) is orthogonal, fixes 1, and is seeded."""
    q = rotation_matrix(7, 2, keep_ones=True)
    assert np.allclose(q.T @ q, np.eye(7), atol=1e-13)
    assert np.allclose(q @ np.ones(7), np.ones(7), atol=1e-13)
    assert np.array_equal(q, rotation_matrix(7, 2, keep_ones=True))
    assert not np.allclose(q, rotation_matrix(7, 3, keep_ones=True))


def test_a_basis_that_moves_the_ones_vector_is_refused_for_layernorm():
    """fold refuses a LayerNorm model's basis whose rows do not all sum alike."""
    from rasplang.compression.basis import fold

    _, model = compiled("reverse", norm="layernorm")
    with pytest.raises(ValueError, match="must map the all-ones vector"):
        fold(model, rotation_matrix(model.config.d_model, 0), "q", "rotated")


def test_rotate_refuses_a_non_integer_seed():
    """The seed must be an integer."""
    _, model = compiled("reverse")
    with pytest.raises(TypeError, match="integer seed"):
        model.rotate(1.5)
