"""rasplang compile PROG --format hf --out DIR: a directory transformers loads."""

import pytest

from rasplang.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")


def test_compile_format_hf_writes_a_loadable_directory(tmp_path, capsys):
    """The directory loads with AutoTokenizer and AutoModelForMaskedLM and
    says how it was compiled (GELU, LayerNorm)."""
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "hf"
    assert main(["compile", "hist", "--format", "hf", "--out", str(out),
                 "--activation", "gelu"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model = transformers.AutoModelForMaskedLM.from_pretrained(out)
    assert model.config.hidden_act == "gelu_new" and model.config.layer_norm_eps > 1e10
    assert transformers.AutoTokenizer.from_pretrained(out).bos_token == "BOS"


def test_compile_format_hf_needs_out_and_layernorm(tmp_path, capsys):
    """Without --out, or with --norm rmsnorm, the command says why (exit 2)."""
    assert main(["compile", "hist", "--format", "hf"]) == 2
    assert "--out DIR" in capsys.readouterr().err
    pytest.importorskip("transformers")
    assert main(["compile", "hist", "--format", "hf", "--norm", "rmsnorm",
                 "--out", str(tmp_path)]) == 2
    assert "norm='layernorm'" in capsys.readouterr().err
