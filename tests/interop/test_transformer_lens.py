"""Export to TransformerLens: same logits, same residual stream, hooks that work.

Skipped when transformer_lens (2.x/3.x, with HookedTransformer) is not installed;
``make test-interop`` installs it with CPU torch and runs this file.
"""

import itertools
import sys

import numpy as np
import pytest

import rasplang as rl
from rasplang.lib import PROGRAMS

pytestmark = pytest.mark.filterwarnings("ignore::rasplang.backend.compiler.CompilerWarning")

CASES = [("sort_unique", False), ("reverse", False), ("frac_prevs", False),
         ("frac_prevs", True), ("shuffle_dyck2", False), ("detect_pattern", True),
         ("pair_balance", False)]


@pytest.fixture(scope="module")
def tl():
    module = pytest.importorskip("transformer_lens")
    from rasplang.backend.transformer_lens import has_hooked_transformer

    if not has_hooked_transformer(module):
        pytest.skip("transformer_lens >= 4 has no HookedTransformer (see test_hf_interop.py)")
    return module


def compiled(name, causal):
    entry = PROGRAMS[name]
    return entry, rl.compile(entry.build(), entry.vocab, entry.max_seq_len, causal=causal)


def all_inputs(entry, n):
    bos = "BOS"
    return [[bos, *xs] for xs in itertools.product(entry.vocab, repeat=n)]


@pytest.mark.parametrize(("name", "causal"), CASES)
def test_logits_match_apply(tl, name, causal):
    """On every input of the longest length, TL's logits equal the compiled model's."""
    import torch

    entry, model = compiled(name, causal)
    hooked = model.to_transformer_lens()
    assert isinstance(hooked, tl.HookedTransformer)
    assert hooked.cfg.attention_dir == ("causal" if causal else "bidirectional")
    for n in (1, entry.max_seq_len):
        seqs = all_inputs(entry, n)
        ids = model.input_encoder.encode(seqs)
        with torch.no_grad():
            got = hooked(torch.as_tensor(ids)).numpy()  # (B, 1 + n, d_vocab_out)
        expected = np.concatenate([model.apply(s).logits for s in seqs[:50]])
        np.testing.assert_allclose(got[:50], expected, atol=1e-5, rtol=1e-5)
        decoded = model.output_encoder.decode(got[:, 1:]).tolist()
        ours = model.run([s[1:] for s in seqs])
        if model.output_encoder.numerical:
            np.testing.assert_allclose(decoded, ours, atol=1e-5)
        else:
            assert decoded == ours


def test_float64_export_is_exact_to_rounding(tl):
    """With dtype=float64 the exported logits agree to 1e-12."""
    import torch

    entry, model = compiled("frac_prevs", False)
    hooked = model.to_transformer_lens(dtype=torch.float64)
    seq = [model.config.bos, *entry.example]
    with torch.no_grad():
        got = hooked(torch.as_tensor(model.input_encoder.encode([seq]))).numpy()
    np.testing.assert_allclose(got, model.apply(seq).logits, atol=1e-12)


def test_hooks_expose_residual_stream_and_patterns(tl):
    """run_with_cache gives the residual stream and attention patterns of `apply`."""
    import torch

    entry, model = compiled("sort_unique", False)
    hooked = model.to_transformer_lens(dtype=torch.float64)
    seq = [model.config.bos, *entry.example]
    trace = model.apply(seq)
    with torch.no_grad():
        _, cache = hooked.run_with_cache(torch.as_tensor(model.input_encoder.encode([seq])))
    for layer in range(model.config.n_layers):
        np.testing.assert_allclose(cache[f"blocks.{layer}.hook_resid_mid"].numpy(),
                                   trace.residuals[1 + 2 * layer], atol=1e-12)
        np.testing.assert_allclose(cache[f"blocks.{layer}.hook_resid_post"].numpy(),
                                   trace.residuals[2 + 2 * layer], atol=1e-12)
        np.testing.assert_allclose(cache[f"blocks.{layer}.attn.hook_pattern"].numpy(),
                                   trace.attention[layer], atol=1e-12)
    # The residual dimensions keep their names: read the sorted output off the stream.
    resid = cache[f"blocks.{model.config.n_layers - 1}.hook_resid_post"][0].numpy()
    cols = [model.residual_labels.index(f"sort:{v}") for v in entry.vocab]
    assert [entry.vocab[i] for i in resid[1:, cols].argmax(-1)] == sorted(entry.example)


def test_missing_transformer_lens_says_how_to_install(monkeypatch):
    """Without transformer_lens the export raises ImportError naming the extra."""
    _, model = compiled("hist", False)
    monkeypatch.setitem(sys.modules, "transformer_lens", None)
    with pytest.raises(ImportError, match=r"rasplang\[transformer-lens\]"):
        model.to_transformer_lens()


@pytest.mark.parametrize(("name", "causal"), [("frac_prevs", True), ("sort_unique", False)])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_layernorm_and_gelu_follow_the_model(tl, name, causal, activation):
    """A LayerNorm / GELU model exports with its norm, eps and activation; logits agree."""
    import torch

    entry = PROGRAMS[name]
    model = rl.compile(entry.build(), entry.vocab, entry.max_seq_len, causal=causal,
                       norm="layernorm", activation=activation)
    hooked = model.to_transformer_lens()
    assert hooked.cfg.normalization_type == "LN" and hooked.cfg.eps == model.config.eps
    assert hooked.cfg.act_fn == model.config.act_fn
    seqs = all_inputs(entry, entry.max_seq_len)[:200]
    with torch.no_grad():
        got = hooked(torch.as_tensor(model.input_encoder.encode(seqs))).numpy()
    expected = np.concatenate([model.apply(s).logits for s in seqs])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    decoded, ours = model.output_encoder.decode(got[:, 1:]).tolist(), model.run(
        [s[1:] for s in seqs])
    if model.output_encoder.numerical:
        np.testing.assert_allclose(decoded, ours, atol=1e-5)
    else:
        assert decoded == ours
