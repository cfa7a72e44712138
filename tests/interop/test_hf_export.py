"""A saved export is a normal Hugging Face model: TransformerLens 4 boots it, its config
names the outputs, it has a model card, and what it cannot run (unknown words, special
tokens in the text, long inputs, float16, left padding) is refused clearly.

Each test loads the saved directory as a user does (``AutoTokenizer``,
``AutoModelFor*``, ``TransformerBridge.boot_transformers``). Skipped without torch and
transformers (``make test-interop`` installs them).
"""

import os
import re

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


def _saved(name, causal, path, n=5, **kwargs):
    """``name`` compiled with LayerNorm, saved to ``path`` and loaded back with Auto*."""
    entry = PROGRAMS[name]
    model = rl.compile(entry.build(n), entry.vocab, n, causal=causal, norm="layernorm")
    model.save_pretrained(path, **kwargs)
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForMaskedLM
    return (entry, model, transformers.AutoTokenizer.from_pretrained(path),
            auto.from_pretrained(path))


def _run(hf, batch):
    with torch.no_grad():
        return hf(**batch).logits


def test_transformer_lens_4_boots_the_saved_directory(tmp_path):
    """boot_transformers(dir) on the default export: text and ids give the program's outputs."""
    tl = pytest.importorskip("transformer_lens")
    from rasplang.backend.transformer_lens import has_hooked_transformer

    if has_hooked_transformer(tl):
        pytest.skip("TransformerLens 2/3 has no TransformerBridge")
    from transformer_lens.model_bridge import TransformerBridge

    for causal, name in ((True, "frac_prevs"), (False, "hist")):
        entry, model, _, _ = _saved(name, causal, tmp_path / name)
        bridge = TransformerBridge.boot_transformers(str(tmp_path / name))
        xs = list(entry.example[:4])
        with torch.no_grad():
            logits = bridge(" ".join(map(str, xs)))
        got = model.output_encoder.decode(
            logits[0, 1:, :model.config.d_vocab_out].double().numpy()).tolist()
        want = rl.evaluate(entry.build(5), xs, causal=causal)
        if model.output_encoder.numerical:
            np.testing.assert_allclose(got, want, atol=1e-9)
        else:
            assert got == want


def test_unknown_word_is_nan_and_named(tmp_path):
    """An unknown word becomes UNK, whose embedding is NaN: decode refuses the logits, and
    names the position given the batch; encode names the word before the model runs."""
    from rasplang.backend.hf import decode, encode

    _, model, tok, hf = _saved("frac_prevs", True, tmp_path)
    batch = tok(["x w y"], return_tensors="pt")
    assert batch["input_ids"][0, 2] == model.config.d_vocab  # UNK, after PAD
    logits = _run(hf, batch)
    assert torch.isnan(logits).all()
    with pytest.raises(ValueError, match=r"not finite at positions \[1, 2, 3\].*UNK"):
        decode(hf.config, logits)
    with pytest.raises(ValueError, match=r"row 0, position 2 is UNK: a word outside"):
        decode(hf.config, logits, batch)
    with pytest.raises(ValueError, match=r"word 1, 'w', is not in the model's vocabulary"):
        encode(tok, ["x y", "x w y"])


def test_special_tokens_inside_the_text_are_refused(tmp_path):
    """BOS or PAD written in the text is read as UNK, not as BOS; encode and decode say so."""
    from rasplang.backend.hf import decode, encode

    _, model, tok, hf = _saved("hist", False, tmp_path)
    unk = model.config.d_vocab
    for text in ("a BOS b", "a PAD b", "a [UNK] b"):
        assert tok(text)["input_ids"][2] == unk, text
        word = text.split()[1]
        with pytest.raises(ValueError, match=rf"special token '{re.escape(word)}' at word 1"):
            encode(tok, text)
    batch = tok(["a BOS b"], return_tensors="pt")
    with pytest.raises(ValueError, match="position 2 is UNK"):
        decode(hf.config, _run(hf, batch), batch)


def test_ids_that_skip_the_tokenizer_are_checked(tmp_path):
    """decode with the ids: BOS missing, BOS inside, too long, each named."""
    from rasplang.backend.hf import check_inputs

    _, model, _, hf = _saved("hist", False, tmp_path)
    info = hf.config.rasplang
    bos = model.config.d_vocab - 2
    with pytest.raises(ValueError, match="row 0 starts with 'a', not BOS"):
        check_inputs(info, [[0, 1]])
    with pytest.raises(ValueError, match="row 0, position 2 holds BOS"):
        check_inputs(info, [[bos, 0, bos]])
    with pytest.raises(ValueError, match="row 0 has 6 tokens, more than the model's max_seq_len 5"):
        check_inputs(info, [[bos, 0, 1, 2, 3, 0, 1]])
    assert check_inputs(info, [[bos, 0, 1]]).tolist() == [3]


def test_model_max_length_is_max_seq_len_plus_bos(tmp_path):
    """model_max_length is max_seq_len + 1; encode refuses a longer text naming the length."""
    from rasplang.backend.hf import encode

    _, _, tok, _ = _saved("hist", False, tmp_path)
    assert tok.model_max_length == 6
    assert encode(tok, "a b c d a")["input_ids"].shape == (1, 6)
    with pytest.raises(ValueError, match="has 12 words, more than the model's max_seq_len 5"):
        encode(tok, " ".join(["a"] * 12))


def test_id2label_names_the_outputs(tmp_path):
    """id2label / label2id are the output values (categorical, None last where it can be
    None) or the value and the None flag (numerical)."""
    _, model, _, hf = _saved("sort_unique", False, tmp_path / "cat")
    values = hf.config.rasplang["outputs"]
    assert hf.config.id2label == {i: str(v) for i, v in enumerate(values)}
    assert hf.config.label2id == {str(v): i for i, v in enumerate(values)}
    assert [v for v in values if v is not None] == list(model.output_encoder.values)
    _, _, _, num = _saved("frac_prevs", True, tmp_path / "num")
    assert num.config.id2label == {0: "value"}
    from rasplang.backend.hf import output_labels

    assert output_labels(True, ["value", None]) == ["value", "None"]
    assert output_labels(False, [1, "1", None]) == ["1", "'1'", "None"]


def test_model_card_describes_the_model(tmp_path):
    """README.md names the program, vocabulary, max_seq_len, masking, decoding and
    verification, with transformers as its library; a report passed in is quoted."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    entry = PROGRAMS["hist"]
    program = entry.build(5)
    model = rl.compile(program, entry.vocab, 5, norm="layernorm")
    report = rl.verify(program, entry.vocab, 5, model=model)
    model.save_pretrained(tmp_path, report=report)
    card = huggingface_hub.ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "transformers" and "rasplang" in card.data.tags
    text = card.text
    for want in ("`hist`", "`a`, `b`, `c`, `d`", "| max_seq_len | 5 tokens", "| causal | False",
                 "SelectorWidth(same_tok)", "decode(model.config, logits, batch)",
                 "AutoModelForMaskedLM", "verified 'hist' on 1,364 of 1,364 inputs",
                 "generate()"):
        assert want in text, want
    model.save_pretrained(tmp_path / "plain")
    assert "not verified when it was written" in (tmp_path / "plain" / "README.md").read_text()


def test_float16_is_refused(tmp_path):
    """Loaded in float16 the logits are NaN: decode and verify refuse it, naming float16."""
    from rasplang.backend.hf import decode, verify

    entry, _, tok, _ = _saved("hist", False, tmp_path)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path, dtype=torch.float16)
    logits = _run(hf, tok(["a b"], return_tensors="pt"))
    with pytest.raises(ValueError, match="logits are float16: this model is exact in float32"):
        decode(hf.config, logits)
    with pytest.raises(ValueError, match="loaded in float16"):
        verify(entry.build(5), hf)


def test_left_padding_is_refused_and_encode_pads_right(tmp_path):
    """shift_by reads positions: a left-padded batch is refused by decode; encode pads on
    the right whatever the tokenizer's side, and the outputs are the program's."""
    from rasplang.backend.hf import decode, encode

    entry, _, tok, hf = _saved("shift_by", True, tmp_path)
    assert tok.padding_side == "right"
    texts = ["a b c d", "b a"]
    tok.padding_side = "left"
    left = tok(texts, padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="row 1 is padded on the left"):
        decode(hf.config, _run(hf, left), left)
    batch = encode(tok, texts)
    got = decode(hf.config, _run(hf, batch), batch)
    assert got == [rl.evaluate(entry.build(5), t.split(), causal=True) for t in texts]
    assert rl.backend.hf.verify(entry.build(5), hf, tokenizer=tok).ok  # pads right too


@pytest.mark.parametrize("causal", [True, False], ids=["gpt2", "bert"])
def test_output_attentions_returns_the_patterns(tmp_path, causal):
    """output_attentions=True (eager attention, saved in config.json) returns each layer's
    pattern, and the compiled model's heads are its first heads."""
    name = "frac_prevs" if causal else "sort_unique"
    entry, model, tok, hf = _saved(name, causal, tmp_path)
    assert hf.config._attn_implementation == "eager"
    xs = list(entry.example[:4])
    batch = tok([" ".join(map(str, xs))], return_tensors="pt")
    with torch.no_grad():
        out = hf(**batch, output_attentions=True)
    assert len(out.attentions) == model.config.n_layers
    trace = model.apply([model.config.bos, *xs])
    for layer, pattern in enumerate(out.attentions):
        want = np.asarray(trace.attention[layer])
        got = pattern[0, :model.config.n_heads].double().numpy()
        np.testing.assert_allclose(got, want.reshape(got.shape), atol=1e-6)


def test_fill_mask_pipeline_is_refused(tmp_path):
    """The fill-mask pipeline needs a mask token, which a program's input has no use for:
    it refuses the model (the card says the pipelines do not apply)."""
    from transformers.pipelines.base import PipelineException

    _saved("hist", False, tmp_path)
    with pytest.raises(PipelineException, match="does not define a `mask_token`"):
        transformers.pipeline("fill-mask", model=str(tmp_path))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_follow_the_umask(tmp_path, umask):
    """model.safetensors gets the mode of the other files: 0666 less the umask."""
    old = os.umask(umask)
    try:
        _saved("hist", False, tmp_path)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}, modes
