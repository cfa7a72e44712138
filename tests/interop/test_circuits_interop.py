"""rasplang.circuits with the circuit tools' models: ACDC's hook names on the model
loaded in TransformerLens, and auto-circuit where it installs. Skipped without torch."""

from __future__ import annotations

import pytest

import rasplang as rl
from rasplang.lib import shift_by

torch = pytest.importorskip("torch")
transformer_lens = pytest.importorskip("transformer_lens")


@pytest.fixture(scope="module")
def model():
    """shift_by with LayerNorm, as the Hugging Face / TransformerLens 4 export needs."""
    return rl.compile(shift_by(1, rl.tokens), ["a", "b", "c"], 3, norm="layernorm")


def test_ground_truth_of_a_pre_norm_model(model):
    """The norm reads the whole residual; the circuit is still the one head's."""
    assert model.ground_truth("mean").edges == ("input->a0.h0<v>", "a0.h0->logits")


@pytest.mark.parametrize("split_embed", [False, True])
def test_acdc_hooks_exist_in_transformer_lens(model, split_embed):
    """Every hook the ACDC export names is a hook of the model in TransformerLens."""
    tl = model.to_transformer_lens()
    hooks = set(tl.hook_dict)
    named = {k[i] for k in model.ground_truth("zero").to_acdc(split_embed=split_embed)
             for i in (0, 2)}
    assert named and named <= hooks, sorted(named - hooks)


def test_auto_circuit_edges(model):
    """Our circuit picks edges of auto-circuit's patchable model (where it imports)."""
    graph_utils = pytest.importorskip("auto_circuit.utils.graph_utils", exc_type=ImportError)
    from rasplang.backend.transformer_lens import has_hooked_transformer

    if not has_hooked_transformer():
        pytest.skip("auto-circuit needs TransformerLens's HookedTransformer")
    tl = model.to_transformer_lens()
    tl.set_use_attn_result(True)
    tl.set_use_split_qkv_input(True)
    tl.set_use_hook_mlp_in(True)
    patchable = graph_utils.patchable_model(tl, factorized=True, separate_qkv=True)
    got = model.ground_truth("zero").to_auto_circuit(patchable)
    assert {e.name for e in got} == {"Resid Start->A0.0.Q", "Resid Start->A0.0.K",
                                     "Resid Start->A0.0.V", "A0.0->Resid End"}
