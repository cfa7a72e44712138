"""Hugging Face, TransformerLens 4 and nnsight: exported models give the program's outputs.

Skipped without the extras (``make test-interop`` installs CPU torch, transformers,
TransformerLens and nnsight). Every library program compiles with LayerNorm, is saved
with ``save_pretrained``, loaded back with ``Auto*.from_pretrained`` in the dtype it is
saved in, and checked by `rasplang.backend.hf.verify` (tokenizer, model, decode against
the interpreter) on every input up to length 5, as GPT-2 and as BERT, and on 2,000 inputs
at length 16.
"""

import itertools
import random

import numpy as np
import pytest

import rasplang as rl
from rasplang.lib import PROGRAMS

pytestmark = pytest.mark.filterwarnings("ignore::rasplang.backend.compiler.CompilerWarning",
                                        "ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

NAMES = sorted(PROGRAMS)


def _inputs(entry, n, samples=None):
    if samples is None:
        return [list(s) for k in range(1, n + 1) for s in itertools.product(entry.vocab, repeat=k)]
    rng = random.Random(0)
    return [[rng.choice(entry.vocab) for _ in range(rng.randint(1, n))] for _ in range(samples)]


def _loaded(model, path):
    from rasplang.backend.hf import architecture_for

    model.save_pretrained(path)
    cls = (transformers.AutoModelForCausalLM if architecture_for(model) == "gpt2"
           else transformers.AutoModelForMaskedLM)
    return transformers.AutoTokenizer.from_pretrained(path), cls.from_pretrained(path)


def _verified(name, causal, n, tmp_path, **kwargs):
    """Compile ``name`` with LayerNorm, save it, load it back with ``Auto*`` as a user does,
    and verify it (tokenizer, model, decode) on its own domain."""
    from rasplang.backend.hf import verify

    entry = PROGRAMS[name]
    model = rl.compile(entry.build(n), entry.vocab, n, causal=causal, norm="layernorm",
                       activation=kwargs.pop("activation", "relu"))
    _, hf = _loaded(model, tmp_path)
    return model, hf, verify(entry.build(n), hf, **kwargs)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("causal", [True, False], ids=["gpt2", "bert"])
@pytest.mark.parametrize("name", NAMES)
def test_library_program_exhaustive_at_5(name, causal, activation, tmp_path):
    """save_pretrained -> from_pretrained in the dtype it is saved in -> verify (tokenizer,
    model, decode) agrees with the program on every input up to length 5."""
    from rasplang.backend.hf import default_dtype

    model, hf, report = _verified(name, causal, min(5, PROGRAMS[name].max_seq_len), tmp_path,
                                  activation=activation, exhaustive=True)
    assert report.ok, report.summary()
    assert report.checked > 0
    kind = "gpt2" if causal else "bert"
    assert next(hf.parameters()).dtype == default_dtype(model, kind)
    if model.output_encoder.numerical:  # read off a float: float64, see hf.float64_only
        assert next(hf.parameters()).dtype == torch.float64


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_library_program_sampled_at_16(name, tmp_path):
    """2,000 seeded inputs up to length 16, causal and not."""
    n = min(16, PROGRAMS[name].max_seq_len)
    for causal in (False, True):
        _, _, report = _verified(name, causal, n, tmp_path / str(causal), samples=2000)
        assert report.ok, report.summary()


def test_tokenizer_prepends_bos_and_pads(tmp_path):
    """AutoTokenizer gives the model's ids (BOS first, PAD right); an unknown word is UNK,
    the id after PAD."""
    entry = PROGRAMS["sort_unique"]
    model = rl.compile(entry.build(), entry.vocab, 5, norm="layernorm")
    tok, _ = _loaded(model, tmp_path)
    seqs = [list(entry.vocab[:3]), list(entry.vocab[:1])]
    got = tok([" ".join(map(str, s)) for s in seqs], padding=True)["input_ids"]
    want = model.input_encoder.encode([[model.config.bos, *s] for s in seqs]).tolist()
    assert got == [row[:4] for row in want]
    assert tok("not-a-token")["input_ids"] == [model.config.d_vocab - 2, model.config.d_vocab]
    assert tok.unk_token == "[UNK]"


def test_bad_exports_are_refused(tmp_path):
    """GPT-2 for a non-causal model names the encoder export; no norm names layernorm."""
    from rasplang.backend.hf import to_hf

    entry = PROGRAMS["hist"]
    model = rl.compile(entry.build(), entry.vocab, 4, norm="layernorm")
    with pytest.raises(ValueError, match=r"bidirectional encoder.*bert"):
        to_hf(model, architecture="gpt2")
    plain = rl.compile(entry.build(), entry.vocab, 4)
    with pytest.raises(ValueError, match="norm='layernorm'"):
        plain.save_pretrained(tmp_path)


def test_transformer_lens_bridge_hooks_and_ablation():
    """TransformerLens: logits equal apply's, run_with_cache has the residual stream and
    patterns, and ablating the head that computes frac_prevs zeroes the output."""
    tl = pytest.importorskip("transformer_lens")
    entry = PROGRAMS["frac_prevs"]
    model = rl.compile(entry.build(), entry.vocab, 5, causal=True, norm="layernorm")
    hooked = model.to_transformer_lens()
    seq = [model.config.bos, *entry.example[:5]]
    ids = torch.as_tensor(model.input_encoder.encode([seq]))
    logits, cache = hooked.run_with_cache(ids)
    n_out = model.config.d_vocab_out
    np.testing.assert_allclose(logits.detach().numpy()[..., :n_out], model.apply(seq).logits,
                               atol=1e-5)
    assert cache["blocks.0.attn.hook_pattern"].shape[-1] == len(seq)
    assert cache["blocks.0.hook_resid_post"].shape[1] == len(seq)
    step = model.circuit["frac_prevs"][0]

    def ablate(z, hook):
        z[:, :, step.head] = 0
        return z

    out = hooked.run_with_hooks(ids, fwd_hooks=[(f"blocks.{step.layer}.attn.hook_z", ablate)])
    np.testing.assert_allclose(out.detach().numpy()[0, 1:, 0], 0, atol=1e-6)
    assert tl is not None


def test_nnsight_reads_a_head_and_patches_a_direction():
    """nnsight: one head's output is what apply's attention output holds, and turning a
    token direction into another at one position changes the outputs as the program
    does on the changed input."""
    nnsight = pytest.importorskip("nnsight")
    from rasplang.backend.hf import decode

    entry = PROGRAMS["frac_prevs"]
    model = rl.compile(entry.build(), entry.vocab, 5, causal=True, norm="layernorm")
    hf = model.to_hf()
    traced = nnsight.NNsight(hf)
    xs = ["x", "y", "x", "z", "x"]
    seq = [model.config.bos, *xs]
    ids = torch.as_tensor(model.input_encoder.encode([seq]))
    step = model.circuit["frac_prevs"][0]
    e = hf.config.n_embd // hf.config.n_head
    with traced.trace(ids):
        z = traced.transformer.h[step.layer].attn.c_proj.input.save()
    w_o = hf.transformer.h[step.layer].attn.c_proj.weight.detach()
    rows = slice(step.head * e, (step.head + 1) * e)
    head_out = (z.detach()[0, :, rows] @ w_o[rows]).numpy()
    want = model.apply(seq).layer_outputs[2 * step.layer][0]
    np.testing.assert_allclose(head_out[:, :model.config.d_model], want, atol=1e-5)

    labels = hf.config.rasplang["residual_labels"]
    x_dir, y_dir = labels.index("tokens:x"), labels.index("tokens:y")
    with traced.trace(ids):
        hidden = traced.transformer.h[0].input
        hidden[0, 3, x_dir] = 0.0   # position 3 holds the third token, "x": make it "y"
        hidden[0, 3, y_dir] = 1.0
        logits = traced.output.logits.save()
    patched = decode(hf.config, logits)[0]
    changed = xs.copy()
    changed[2] = "y"
    np.testing.assert_allclose(patched, rl.evaluate(entry.build(), changed, causal=True),
                               atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_lens_bridge_runs_the_bert_export(activation):
    """A non-causal model on TransformerLens 4 (BERT): the bridge's logits are apply's."""
    pytest.importorskip("transformer_lens")
    entry = PROGRAMS["hist"]
    model = rl.compile(entry.build(), entry.vocab, 5, norm="layernorm", activation=activation)
    bridge = model.to_transformer_lens()
    for xs in _inputs(entry, 5)[::97]:
        seq = [model.config.bos, *xs]
        ids = torch.as_tensor(model.input_encoder.encode([seq]))
        logits, cache = bridge.run_with_cache(ids)
        got = logits.detach().numpy()[..., :model.config.d_vocab_out]
        np.testing.assert_allclose(got, model.apply(seq).logits, atol=1e-4)  # float32
        assert model.output_encoder.decode(got[0, 1:]).tolist() == model.run([xs])[0]
        assert cache["blocks.0.attn.hook_pattern"].shape[-1] == len(seq)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_library_program_through_transformer_lens(name, causal):
    """Every library program through to_transformer_lens (TransformerLens 4's bridge on the
    GPT-2 or BERT export, or a HookedTransformer on 2/3): argmax-decoded logits are the
    program's outputs on every input up to length 5."""
    pytest.importorskip("transformer_lens")
    from rasplang.interpreter import evaluate_batch

    entry = PROGRAMS[name]
    n = min(5, entry.max_seq_len)
    model = rl.compile(entry.build(n), entry.vocab, n, causal=causal, norm="layernorm")
    hooked = model.to_transformer_lens()
    xs = _inputs(entry, n)
    want = evaluate_batch(model.program, xs, causal=causal)
    cfg = model.config
    for start in range(0, len(xs), 512):
        part = xs[start:start + 512]
        ids = model.input_encoder.encode([[cfg.bos, *s] for s in part])
        mask = torch.as_tensor(ids != cfg.pad_id, dtype=torch.long)
        with torch.no_grad():
            logits = hooked(torch.as_tensor(ids), attention_mask=mask)
        got = model.output_encoder.decode(
            logits.double().numpy()[:, 1:, :cfg.d_vocab_out]).tolist()
        _assert_outputs(model, part, got, want[start:start + 512])


def _assert_outputs(model, inputs, got, want):
    """Each decoded output (trimmed to its input's length) is the program's: exactly, or
    within 1e-5 for numerical outputs (None exactly where the program's is None)."""
    for s, g, w in zip(inputs, got, want):
        g = g[:len(s)]
        if model.output_encoder.numerical:
            assert [x is None for x in g] == [x is None for x in w], s
            np.testing.assert_allclose([x for x in g if x is not None],
                                       [x for x in w if x is not None], atol=1e-5)
        else:
            assert g == list(w), (s, g, w)
