"""Without the extras, the exports say which extra to install (no torch needed)."""

import sys

import pytest

import rasplang as rl


@pytest.fixture
def model():
    return rl.compile(rl.Map(lambda x: x + 1, rl.tokens), [1, 2], 3, norm="layernorm")


def test_hf_export_names_the_extra(model, monkeypatch, tmp_path):
    """to_hf and save_pretrained raise an ImportError naming rasplang[hf]."""
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"rasplang\[hf\]"):
        model.to_hf()
    with pytest.raises(ImportError, match=r"rasplang\[hf\]"):
        model.save_pretrained(tmp_path)


def test_transformer_lens_export_names_the_extra(model, monkeypatch):
    """to_transformer_lens raises an ImportError naming rasplang[transformer-lens]."""
    monkeypatch.setitem(sys.modules, "transformer_lens", None)
    with pytest.raises(ImportError, match=r"rasplang\[transformer-lens\]"):
        model.to_transformer_lens()


def test_hf_export_refuses_models_without_layernorm():
    """A model without LayerNorm is refused before anything is imported."""
    from rasplang.backend.hf import architecture_for

    plain = rl.compile(rl.Map(lambda x: x + 1, rl.tokens), [1, 2], 3)
    with pytest.raises(ValueError, match="norm='layernorm'"):
        architecture_for(plain)
    rms = rl.compile(rl.Map(lambda x: x + 1, rl.tokens), [1, 2], 3, norm="rmsnorm")
    with pytest.raises(ValueError, match="normalization_type='RMS'"):
        architecture_for(rms)
    causal = rl.compile(rl.Map(lambda x: x + 1, rl.tokens), [1, 2], 3, causal=True,
                        norm="layernorm")
    assert architecture_for(causal) == "gpt2"
    with pytest.raises(ValueError, match="causal"):
        architecture_for(causal, "bert")
