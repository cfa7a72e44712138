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
                 "## Unknown words", "`torch.argmax` of NaN logits is 0",
                 "## Pipelines and `generate()`", "No `transformers` pipeline gives"):
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


@pytest.mark.parametrize("causal", [True, False], ids=["gpt2", "bert"])
def test_fill_mask_pipeline_is_refused(tmp_path, causal):
    """The fill-mask pipeline needs a mask token, which a program's input has no use for:
    it refuses both exports, as the card says."""
    from transformers.pipelines.base import PipelineException

    _saved("hist", causal, tmp_path)
    assert "`fill-mask` pipeline refuses the model" in (tmp_path / "README.md").read_text()
    with pytest.raises(PipelineException, match="does not define a `mask_token`"):
        transformers.pipeline("fill-mask", model=str(tmp_path))


def _card_block(path, heading):
    """The python code block of the model card's section ``heading``."""
    text = (path / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("causal", [True, False], ids=["gpt2", "bert"])
def test_unknown_word_through_plain_transformers(tmp_path, causal):
    """Tokenizer and model alone, as the card describes: an unknown word is UNK (the id
    the card names), every logit of its text is NaN and the other text's are the
    program's, the card's check finds the text before and after the model, and
    torch.argmax reads the NaN row as output 0 everywhere."""
    entry, model, tok, hf = _saved("shift_by", causal, tmp_path)
    texts = ["a b c d", "a e c"]
    batch = tok(texts, padding=True, return_tensors="pt")
    assert tok.unk_token_id == model.config.d_vocab
    assert f"(id {tok.unk_token_id})" in (tmp_path / "README.md").read_text()
    assert tok.tokenize(texts[1]) == ["a", tok.unk_token, "c"]
    logits = _run(hf, batch)
    scope = {"batch": batch, "tokenizer": tok, "logits": logits, "torch": torch}
    *lines, last = _card_block(tmp_path, "Unknown words").strip().splitlines()
    exec("\n".join(lines), scope)
    assert scope["unknown"].tolist() == [False, True]
    assert eval(last.split("#")[0], scope).tolist() == [False, True]
    assert torch.isnan(logits[1]).all() and torch.isfinite(logits[0]).all()
    want = rl.evaluate(entry.build(5), texts[0].split(), causal=causal)
    labels = hf.config.id2label
    got = [labels[int(i)] for i in logits[0, 1:].argmax(-1)]
    assert got == [str(v) for v in want]
    assert logits[1].argmax(-1).tolist() == [0] * logits.shape[1]


def _first_ids(hf, tok, texts):
    """The id ``generate()`` appends first to each text (greedy)."""
    out = []
    for text in texts:
        batch = tok([text], return_tensors="pt")
        with torch.no_grad():
            ids = hf.generate(**batch, max_new_tokens=1, do_sample=False)
        out.append(int(ids[0, -1]))
    return out


def test_generate_takes_an_output_index_for_a_token(tmp_path):
    """GPT-2: generate() runs, and the first id it appends is the label index of the
    program's output at the last position (the card's words); the text-generation
    pipeline writes the token with that id, not the output."""
    import itertools

    entry, _, tok, hf = _saved("hist", True, tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "`generate()` and the `text-generation` pipeline run" in card
    program = entry.build(5)
    texts = [" ".join(xs) for n in (1, 2, 3) for xs in itertools.product(entry.vocab, repeat=n)]
    want = [hf.config.label2id[str(rl.evaluate(program, t.split(), causal=True)[-1])]
            for t in texts]
    assert _first_ids(hf, tok, texts) == want
    generator = transformers.pipeline("text-generation", model=str(tmp_path))
    text = "a b a"  # hist is 2 at the last position; label "2" is index 1, token 'b'
    index = hf.config.label2id["2"]
    out = generator(text, max_new_tokens=1, do_sample=False)[0]["generated_text"]
    assert out.startswith(text) and out[len(text):].strip() == tok.convert_ids_to_tokens(index)


def test_bert_has_no_generate_and_text_generation_misreads(tmp_path):
    """BERT: BertForMaskedLM has no generate(); the text-generation pipeline loads the
    directory as BertLMHeadModel and appends the token whose id is the label index of the
    program's output at the last position, as the card says."""
    entry, _, tok, hf = _saved("hist", False, tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "`BertForMaskedLM` has no `generate()`" in card and "BertLMHeadModel" in card
    assert not hasattr(hf, "generate")
    generator = transformers.pipeline("text-generation", model=str(tmp_path))
    assert type(generator.model).__name__ == "BertLMHeadModel"
    for text in ("a b a", "c c d c", "d"):
        index = hf.config.label2id[str(rl.evaluate(entry.build(5), text.split())[-1])]
        out = generator(text, max_new_tokens=1, do_sample=False)[0]["generated_text"]
        assert out.startswith(text)
        assert out[len(text):].strip() == tok.convert_ids_to_tokens(index), text


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
