"""`rasplang.compress` and `rasplang.smallest_compression` (torch) on tiny models."""

import numpy as np
import pytest

pytest.importorskip("torch")

import rasplang as rl
from rasplang.compression import CompressedModel
from rasplang.lib import PROGRAMS

N = 3  # 39 inputs: every test here trains in about a second


def frac_prevs(**options):
    entry = PROGRAMS["frac_prevs"]
    program = entry.build(N)
    return entry, program, rl.compile(program, entry.vocab, N, **options)


def test_compress_is_deterministic_and_folds_w():
    """The same seed gives the same W; the folded weights are the original ones through W."""
    _, _, model = frac_prevs()
    a = rl.compress(model, 6, steps=40, seed=3, progress=False, polish=0)
    b = rl.compress(model, 6, steps=40, seed=3, progress=False, polish=0)
    assert isinstance(a, CompressedModel)
    assert np.array_equal(a.projection, b.projection)
    w = a.projection
    assert a.config.d_model == 6 and a.projection.shape == (model.config.d_model, 6)
    assert np.allclose(a.weights["embed.W_E"], model.weights["embed.W_E"] @ w)
    assert np.allclose(a.weights["unembed.W_U"], w.T @ model.weights["unembed.W_U"])
    assert a.config.basis.startswith("compress(d_model=")
    assert a.overlaps().shape == (model.config.d_model,) * 2


def test_full_width_compression_verifies_and_matches_the_dense_forward():
    """At d = d_model, training keeps the model exact; verify checks it like any model,
    and the structured and dense forwards agree."""
    entry, program, model = frac_prevs()
    full = rl.compress(model, model.config.d_model, steps=20, lr=1e-4, progress=False)
    report = rl.verify(program, entry.vocab, N, model=full)
    assert report.ok, report.summary()
    ids = model.input_encoder.encode([["BOS", "x", "y", "x"]])
    assert np.allclose(full.forward(ids), full.forward(ids, structured=False), atol=1e-12)


def test_verify_reports_a_too_narrow_compression():
    """A one-dimensional residual cannot hold frac_prevs: verify says where it is wrong."""
    entry, program, model = frac_prevs()
    narrow = rl.compress(model, 1, steps=20, progress=False, polish=0)
    report = rl.verify(program, entry.vocab, N, model=narrow)
    assert not report.ok and report.n_mismatches > 0


def test_compressed_model_saves_loads_and_rotates(tmp_path):
    """A compressed model's file loads as a model that computes the same; rotating it
    keeps its outputs and rotates its W."""
    _, _, model = frac_prevs()
    small = rl.compress(model, 5, steps=30, progress=False, polish=0)
    loaded = rl.load(small.save(tmp_path / "small.safetensors"))
    assert loaded.config.basis == small.config.basis
    batch = [list("xyx"), list("zx")]
    assert loaded.run(batch) == small.run(batch)
    turned = small.rotate(2)
    assert isinstance(turned, CompressedModel)
    for got, want in zip(turned.run(batch), small.run(batch)):
        assert np.allclose(got, want, atol=1e-9)
    assert np.allclose(turned.overlaps(), small.overlaps(), atol=1e-12)


def test_compress_refuses_bad_widths_and_norms():
    """A width outside 1..d_model and a normalised model are refused, saying why."""
    _, _, model = frac_prevs()
    d_model = model.config.d_model
    with pytest.raises(ValueError, match=rf"d must be an integer in 1\.\.{d_model}"):
        rl.compress(model, d_model + 1, progress=False)
    _, _, ln = frac_prevs(norm="layernorm")
    with pytest.raises(ValueError, match="LayerNorm"):
        rl.compress(ln, 4, progress=False)


def test_smallest_compression_finds_an_exact_width():
    """The search returns a width whose model verifies on every input, and records
    every trial."""
    entry, program, model = frac_prevs()
    found = rl.smallest_compression(model, seeds=1, steps=150, low=8, progress=False)
    assert found.d <= model.config.d_model
    assert rl.verify(program, entry.vocab, N, model=found.model).ok
    assert found.trials and all(t.d >= 8 for t in found.trials)
    assert found.accuracy()[model.config.d_model] == 1.0
