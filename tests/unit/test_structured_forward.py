"""The structured forward pass: what `structure.build` reads off the weights, each of its
paths against the dense forward, the thread split, and the cache on the model."""

from __future__ import annotations

import warnings

import attrs
import numpy as np
import pytest

import rasplang as rl
from rasplang import lib
from rasplang.backend import CompilerWarning, compile, structure, structured
from rasplang.backend.forward import forward as dense_forward
from rasplang.backend.structure import Folded, Head, Unit, build


def compiled(program, vocab, max_seq_len, causal=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        return compile(program, vocab, max_seq_len, causal=causal)


def library(name, max_seq_len=None):
    entry = lib.PROGRAMS[name]
    n = max_seq_len or entry.max_seq_len
    return compiled(entry.build(n), entry.vocab, n)


def ids_for(model, seed=0, batch=40):
    cfg = model.config
    rng = np.random.default_rng(seed)
    ids = np.full((batch, cfg.max_seq_len + 1), cfg.pad_id, dtype=np.int64)
    ids[:, 0] = model.input_encoder.bos_id
    for b, n in enumerate(rng.integers(0, cfg.max_seq_len + 1, batch)):
        ids[b, 1:n + 1] = rng.integers(0, len(cfg.vocab), n)
    return ids


def assert_matches_dense(model, ids, s=None, dtype=np.float64, **kwargs):
    """Logits and every trace array of ``s`` (default: built from the model) equal the
    dense forward's to float64 rounding."""
    s = s if s is not None else build(model.weights, model.config, dtype)
    ref, ref_trace = dense_forward(model._weights_for(np, dtype), model.config, ids, np,
                                   keep=True)
    got, trace = structured.forward(s, ids, np, keep=True, **kwargs)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
    for name, arrays in ref_trace.items():
        for a, r in zip(trace[name], arrays, strict=True):
            np.testing.assert_allclose(a, r, rtol=1e-9, atol=1e-9, err_msg=name)
    plain, _ = structured.forward(s, ids, np, **kwargs)
    np.testing.assert_allclose(plain, ref, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------- structure


def test_heads_keep_only_the_dimensions_they_use():
    """A head's query-key and value-output widths are its own, not the padded d_head."""
    model = library("sort_unique")
    s = build(model.weights, model.config, np.float64)
    heads = [h for layer in s.sublayers if layer.attention for h in layer.steps if h.writes]
    assert heads and all(h.q.weight.shape[1] <= model.config.d_head for h in heads)
    assert any(h.v.weight.shape[1] < model.config.d_head for h in heads)
    for h in heads:
        assert h.q.weight.shape[1] == h.k.weight.shape[1]
        assert h.v.weight.shape[1] == h.o.weight.shape[0]


def test_maps_of_tokens_fold_into_tables():
    """An MLP reading only token and position dimensions becomes a gathered table, and so
    does a head whose queries and keys read only them."""
    model = compiled(rl.Map(lambda t: t + 1, rl.tokens) * 2, [1, 2, 3], 4)
    s = build(model.weights, model.config, np.float64)
    steps = [step for layer in s.sublayers for step in layer.steps]
    assert any(isinstance(step, Folded) for step in steps)
    assert not any(isinstance(step, Unit) for step in steps)
    hist = build(library("hist").weights, library("hist").config, np.float64)
    head = hist.sublayers[0].steps[0]
    assert isinstance(head, Head) and head.scores is not None


def test_components_of_an_mlp():
    """Units sharing an input row or an output column form one component."""
    reads = np.zeros((6, 5), dtype=bool)   # rows x units
    writes = np.zeros((5, 6), dtype=bool)  # units x columns
    reads[0, [0, 1]] = True   # units 0, 1 share row 0
    reads[1, 2] = True
    writes[2, 4] = writes[3, 4] = True  # units 2, 3 share column 4
    reads[2, 3] = True
    reads[3, 4] = True        # unit 4 alone
    writes[[0, 1, 4], [0, 1, 5]] = True
    groups = structure._components(reads, writes)
    assert sorted(g.tolist() for g in groups) == [[0, 1], [2, 3], [4]]


def test_loaded_weights_are_structured_alike(tmp_path):
    """Nothing depends on how the weights were compiled: a loaded model runs the same."""
    model = library("sort")
    path = tmp_path / "sort.safetensors"
    model.save(path)
    loaded = rl.load(path)
    assert loaded._cache == {}
    ids = ids_for(model)
    np.testing.assert_array_equal(loaded.forward(ids), model.forward(ids))


# ----------------------------------------------------------------------- each path


@pytest.mark.parametrize("name", ["sort", "dyck1", "count_less_freq", "above_mean"])
def test_every_product_path(name, monkeypatch):
    """All sparse, all dense (BLAS), zero-skipping dense products, no static tables, a
    few: every path equals the dense forward."""
    model = library(name, 8)
    ids = ids_for(model)
    for setting in ({"SPARSE_DENSITY": 0.0, "MIN_DENSE": 0}, {"SPARSE_DENSITY": 2.0},
                    {"MAX_TABLE": 0}, {"MAX_TABLES": 20_000}):
        with monkeypatch.context() as m:
            for k, v in setting.items():
                m.setattr(structure, k, v)
            s = build(model.weights, model.config, np.float64)
        for kernels in ("numba", "arrays"):
            assert_matches_dense(model, ids, s, kernels=kernels)
    with monkeypatch.context() as m:
        m.setattr(structure, "SPARSE_DENSITY", 0.0)
        m.setattr(structure, "MIN_DENSE", 0)
        m.setattr(structured, "ZERO_SKIP_SIZE", 1)
        m.setattr(structured, "ZERO_SKIP", 1)  # skip zeros whenever there are any
        s = build(model.weights, model.config, np.float64)
        assert_matches_dense(model, ids, s, kernels="numba")


def test_arbitrary_weights_with_biases():
    """Random sparse weights in every matrix, nonzero biases everywhere, sublayers that
    read what they write: the structure is read off any weights, not only compiled ones."""
    model = library("sort_unique")
    rng = np.random.default_rng(0)
    weights = {}
    for name, w in model.weights.items():
        mask = rng.random(w.shape) < 0.3
        weights[name] = np.where(mask, rng.normal(0, 0.5, w.shape), 0)
    random = attrs.evolve(model, weights=weights, cache={})
    s = build(random.weights, random.config, np.float64)
    assert not all(layer.in_place for layer in s.sublayers)
    ids = ids_for(random)
    for kernels in ("numba", "arrays"):
        assert_matches_dense(random, ids, s, kernels=kernels)


def test_small_batches_take_the_array_path(monkeypatch):
    """Below NUMBA_POSITIONS positions ``auto`` runs array operations (no numba load)."""
    model = library("hist")
    s = build(model.weights, model.config, np.float64)
    ids = ids_for(model, batch=3)
    monkeypatch.setattr(structured, "_Numba", None)  # any use of the numba path fails
    got, _ = structured.forward(s, ids, np)
    ref, _ = dense_forward(model._weights_for(np, np.float64), model.config, ids, np)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_causal_and_float32():
    """A causal model, in float32: equal to the dense float32 forward to its rounding."""
    entry = lib.PROGRAMS["frac_prevs"]
    model = compiled(entry.build(8), entry.vocab, 8, causal=True)
    ids = ids_for(model)
    ref, _ = dense_forward(model._weights_for(np, np.float32), model.config, ids, np)
    for kernels in ("numba", "arrays"):
        got, _ = structured.forward(model._structure(np, np.float32), ids, np, kernels=kernels)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_threads_split_the_batch(monkeypatch):
    """A batch split over threads gives the logits of the unsplit batch."""
    model = library("sort", 8)
    s = build(model.weights, model.config, np.float64)
    ids = ids_for(model, batch=101)
    whole, _ = structured.forward(s, ids, np, kernels="numba", threads=1)
    monkeypatch.setattr(structured, "PARALLEL_WORK", 1)
    split, _ = structured.forward(s, ids, np, kernels="numba", threads=3)
    np.testing.assert_array_equal(split, whole)


# ----------------------------------------------------------------------- the model


def test_run_apply_and_forward_use_the_structure():
    """run, apply and forward agree with their dense (structured=False) versions."""
    entry = lib.PROGRAMS["shuffle_dyck2"]
    model = compiled(entry.build(8), entry.vocab, 8)
    rng = np.random.default_rng(3)
    batch = [[entry.vocab[i] for i in rng.integers(0, 4, rng.integers(0, 9))]
             for _ in range(200)]
    assert model.run(batch) == model.run(batch, structured=False)
    a = model.apply([model.config.bos, *"({)}"])
    d = model.apply([model.config.bos, *"({)}"], structured=False)
    assert a.decoded == d.decoded
    for name in ("residuals", "layer_outputs", "attention", "attn_logits"):
        for x, y in zip(getattr(a, name), getattr(d, name), strict=True):
            assert x.shape == y.shape
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9)
    assert a.attention[0].shape[1] == model.config.n_heads  # padding heads included
    ids = ids_for(model)
    np.testing.assert_allclose(model.forward(ids), model.forward(ids, structured=False),
                               rtol=1e-9, atol=1e-9)


def test_structure_is_cached_until_a_weight_is_replaced():
    """Built once per dtype; replacing a weight array rebuilds it."""
    model = library("hist")
    first = model._structure(np, np.float64)
    assert model._structure(np, np.float64) is first
    assert model._structure(np, np.float32) is not first
    ids = ids_for(model)
    before = model.forward(ids)
    model.weights["unembed.W_U"] = model.weights["unembed.W_U"] * 2
    assert model._structure(np, np.float64) is not first
    np.testing.assert_allclose(model.forward(ids), 2 * before, rtol=1e-12)
