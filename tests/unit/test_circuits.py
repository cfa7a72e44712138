"""rasplang.circuits: the component graph, ground-truth circuits, exports and scoring.

The expected circuits are worked out by hand from how each program compiles. Two
arguments recur. (1) Mean and resample ablation keep whatever depends only on the
position and the length (every input of one length has the same position embedding
and BOS at position 0), so a head's query and key edges that read indices and BOS
only are not in those circuits. (2) Ablating the only path by which the tokens reach
an output makes that output the same for every input of a length (zero or mean), so
it cannot match a program whose output varies: such an edge is in the circuit.
"""

from __future__ import annotations

import json
import types

import attrs
import numpy as np
import pytest

import rasplang as rl
from rasplang import circuits
from rasplang.circuits.patching import Patcher, Weights
from rasplang.lib import make_frac_prevs, shift_by


@pytest.fixture(scope="module")
def shift():
    """shift_by(1, tokens): one head (q, k read indices and BOS, v reads tokens)."""
    return rl.compile(shift_by(1, rl.tokens), ["a", "b", "c"], 3)


@pytest.fixture(scope="module")
def frac():
    """frac_prevs with the Map fused into its head (optimize=True): one head."""
    return rl.compile(make_frac_prevs(rl.tokens == "x"), ["x", "y", "z"], 3)


@pytest.fixture(scope="module")
def inc():
    """Map(x + 1, tokens) without fusion: one lookup MLP."""
    return rl.compile(rl.Map(lambda x: x + 1, rl.tokens), [1, 2, 3], 3, optimize=False)


def test_graph_names_edges_as_eap_ig():
    """Two layers of two heads: EAP-IG's nodes and edges, in its order."""
    model = rl.compile(make_frac_prevs(rl.tokens == "x"), ["x", "y"], 3, optimize=False)
    g = model.graph()
    assert list(g.nodes)[:4] == ["input", "a0.h0", "m0", "a1.h0"] and list(g.nodes)[-1] == "logits"
    names = [e.name for e in g.edges]
    assert names[:4] == ["input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>", "input->m0"]
    assert "a0.h0->m0" in names and "a0.h0->a1.h0<v>" in names and "m1->logits" in names
    assert "a1.h0->a0.h0<q>" not in names  # only later components read
    L, H = model.config.n_layers, model.config.n_heads
    assert len(g.nodes) == 1 + L * (H + 1) + 1
    stream = [1 + i * (H + 1) for i in range(L)]  # components before layer i
    assert len(set(names)) == sum(3 * H * s + s + H for s in stream) + 1 + L * (H + 1)


def test_edges_carry_the_sops_they_transmit(shift):
    """Structural edges of shift_by carry indices/BOS into q and k, tokens into v."""
    g = shift.graph()
    assert [e.name for e in g.structural] == [
        "input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>", "a0.h0->logits"]
    assert "indices" in g["input->a0.h0<q>"].carries
    assert g["input->a0.h0<v>"].carries == ("tokens",)
    assert g["a0.h0->logits"].carries == (shift.program.label,)
    with pytest.raises(KeyError, match="edges are named like"):
        g["a0.h0->nowhere"]


def test_structural_and_zero_keep_every_edge_of_one_head(shift):
    """Zeroing q or k makes attention uniform, v or the output removes the value."""
    expected = ("input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>", "a0.h0->logits")
    assert shift.ground_truth("structural").edges == expected
    zero = shift.ground_truth("zero")
    assert zero.edges == expected and zero.sufficient and zero.added == ()
    assert zero.nodes == ("a0.h0",) and zero.n_inputs == 3 + 9 + 27


@pytest.mark.parametrize("ablation", ["mean", "resample"])
def test_mean_and_resample_drop_positional_edges(shift, frac, ablation):
    """Query and key read only positions and BOS: mean/resample keep them (argument 1)."""
    expected = ("input->a0.h0<v>", "a0.h0->logits")
    assert shift.ground_truth(ablation).edges == expected
    assert frac.ground_truth(ablation).edges == expected


def test_fused_head_zero_circuit(frac):
    """frac_prevs' fused head: all three inputs and its output matter under zero."""
    c = frac.ground_truth("zero")
    assert c.edges == ("input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>",
                       "a0.h0->logits")
    assert c.nodes == ("a0.h0",) and frac.program.label in c.graph.nodes["a0.h0"].labels


@pytest.mark.parametrize("ablation", circuits.GROUND_TRUTHS)
def test_map_of_tokens_is_one_mlp(inc, ablation):
    """Map(x + 1): the tokens reach the output only through m0 (argument 2)."""
    c = inc.ground_truth(ablation)
    assert c.edges == ("input->m0", "m0->logits") and c.nodes == ("m0",)


def test_per_position_circuit(shift):
    """shift_by copies tokens at positions 1, 2 into 2, 3; position 1 outputs None."""
    c = shift.ground_truth("mean", positions=True)
    assert c.positions and c.edges == ("input->a0.h0<v>@1", "input->a0.h0<v>@2",
                                       "a0.h0->logits@2", "a0.h0->logits@3")
    assert c.to_eap() == ["input->a0.h0<v>", "a0.h0->logits"]


def test_insufficient_edge_set_is_reported(shift):
    """Without the value edge the output is None everywhere: not sufficient."""
    report = circuits.check(shift, ["a0.h0->logits"], "mean")
    assert not report.sufficient and report.faithfulness < 1 and report.failing
    assert circuits.check(shift, shift.ground_truth("mean"), "mean").sufficient
    with pytest.raises(ValueError, match="not in the model's graph"):
        circuits.check(shift, ["a0.h0->a9.h9<q>"])
    with pytest.raises(ValueError, match="ablation must be one of"):
        circuits.check(shift, [], "random")


def test_faithfulness_is_exact(shift):
    """All edges: 1. None under zero: logits 0, so only the length-1 inputs ([None])."""
    all_edges = [e.name for e in shift.graph()]
    assert circuits.faithfulness(shift, all_edges, "zero") == 1.0
    assert circuits.faithfulness(shift, [], "zero") == 3 / 39


@pytest.mark.parametrize("name", ["shuffle_dyck", "sort", "dyck1"])
def test_ground_truth_always_reproduces(name):
    """Whatever the single-edge pass finds, the circuit returned reproduces every output."""
    entry = rl.lib.PROGRAMS[name]
    model = rl.compile(entry.build(4), entry.vocab, 4)
    for ablation in circuits.ABLATIONS:
        c = model.ground_truth(ablation)
        assert circuits.check(model, c, ablation).sufficient, (name, ablation)
        assert set(c.added) <= set(c.edges)
        assert c.sufficient == (not c.added)


def _zeroed(model, **zero):
    """The model with the named weights set to zero (an independent way to ablate)."""
    w = dict(model.weights)
    for key, index in zero.items():
        a = w[key.replace("__", ".")].copy()
        a[index] = 0
        w[key.replace("__", ".")] = a
    return attrs.evolve(model, weights=w)


def test_patched_forward_matches_zeroed_weights():
    """Zero-ablating every edge out of a component equals zeroing its weights."""
    entry = rl.lib.PROGRAMS["sort"]
    model = rl.compile(entry.build(4), entry.vocab, 4, optimize=False)
    g = model.graph()
    ids = np.random.default_rng(0).integers(0, len(entry.vocab), (64, 5))
    ids[:, 0] = model.input_encoder.bos_id
    patcher = Patcher(Weights(model, g), ids, "zero")
    for sender, zero in (("a1.h0", {"blocks__1__attn__W_O": (0,)}),
                         ("m0", {"blocks__0__mlp__W_out": slice(None),
                                 "blocks__0__mlp__b_out": slice(None)})):
        out = {}
        for e in g.edges:
            if e.sender == sender:
                out.setdefault((e.receiver, e.kind), []).append((sender, None))
        logits = patcher.run(out)
        assert logits is not None
        np.testing.assert_allclose(logits, _zeroed(model, **zero).forward(ids), atol=1e-9)


def test_patched_forward_unablated_is_the_model(shift):
    """No edge ablated: the patcher's logits are the model's, and run says unchanged."""
    ids = np.array([[shift.input_encoder.bos_id, 0, 1, 2]])
    patcher = Patcher(Weights(shift, shift.graph()), ids, "zero")
    np.testing.assert_allclose(patcher.clean_logits, shift.forward(ids), atol=1e-12)
    assert patcher.run({}) is None


def test_score_true_circuit_and_random():
    """The circuit's own indicator scores AUROC 1; seeded random scores about 0.5."""
    pytest.importorskip("sklearn")
    entry = rl.lib.PROGRAMS["dyck1"]
    model = rl.compile(entry.build(4), entry.vocab, 4, optimize=False)
    c = model.ground_truth("zero")
    perfect = circuits.score({e.name: float(e.name in c) for e in c.graph}, c)
    assert perfect.auroc == 1.0 and perfect.level == "edges"
    n = len(c)
    assert (perfect.precision_at_k[:n] == 1).all() and perfect.recall_at_k[n - 1] == 1
    aurocs = [circuits.score({e.name: r for e, r in zip(c.graph, rng.random(len(c.graph)))},
                             c).auroc
              for rng in map(np.random.default_rng, range(50))]
    assert 0.45 < np.mean(aurocs) < 0.55
    nodes = circuits.score({n: float(n in c.nodes) for n in c.graph.components}, c)
    assert nodes.level == "nodes" and nodes.auroc == 1.0


def test_score_errors(shift):
    """Unknown names, missing scores and a degenerate circuit are refused."""
    pytest.importorskip("sklearn")
    c = shift.ground_truth("zero")
    with pytest.raises(ValueError, match="neither edges nor heads"):
        circuits.score({"x->y": 1.0}, c)
    with pytest.raises(ValueError, match="have no score"):
        circuits.score({"a0.h0->logits": 1.0}, c)
    s = circuits.score({"a0.h0->logits": 1.0}, c, missing=0.0)
    assert 0.5 < s.auroc < 1
    everything = circuits.Circuit(c.graph, tuple(e.name for e in c.graph), "given")
    with pytest.raises(ValueError, match="undefined"):
        circuits.score({e.name: 1.0 for e in c.graph}, everything)


def test_activation_patching_scores(shift):
    """Activation patching moves the logits exactly on the structural edges."""
    pytest.importorskip("sklearn")
    s = circuits.activation_patching(shift, "zero")
    assert {k for k, v in s.items() if v > 0} == {e.name for e in shift.graph().structural}
    assert circuits.score(s, shift.ground_truth("mean")).auroc == 1.0


def test_exports(shift, tmp_path):
    """EAP-IG strings and JSON, ACDC hook names, auto-circuit edge names."""
    c = shift.ground_truth("zero")
    assert c.to_eap() == ["input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>",
                          "a0.h0->logits"]
    d = c.to_eap_json(tmp_path / "g.json")
    assert json.loads((tmp_path / "g.json").read_text()) == d
    assert d["cfg"] == {"n_layers": 1, "n_heads": 1, "parallel_attn_mlp": False}
    assert d["edges"]["a0.h0->logits"] == {"score": 1.0, "in_graph": True}
    assert d["edges"]["input->m0"]["in_graph"] is False and d["nodes"]["m0"] is False
    acdc = c.to_acdc()
    head = (None, None, 0)
    assert ("blocks.0.hook_v_input", head, "blocks.0.hook_resid_pre", (None,)) in acdc
    assert ("blocks.0.hook_resid_post", (None,), "blocks.0.attn.hook_result", head) in acdc
    assert ("blocks.0.attn.hook_q", head, "blocks.0.hook_q_input", head) in acdc
    split = c.to_acdc(split_embed=True)
    assert ("blocks.0.hook_k_input", head, "hook_pos_embed", (None,)) in split


@attrs.frozen
class _FakeEdge:
    """auto-circuit's Edge as far as the mapping reads it (a frozen dataclass there)."""

    name: str
    seq_idx: int | None


def _fake_patchable(names, seq_len=None):
    """An object shaped like auto-circuit's PatchableModel: edges with name, seq_idx."""
    positions = [None] if seq_len is None else range(seq_len)
    edges = {_FakeEdge(n, p) for n in names for p in positions}
    return types.SimpleNamespace(edges=edges, seq_len=seq_len, separate_qkv=True)


def test_auto_circuit_mapping(shift):
    """Our edges map onto auto-circuit's Resid Start / A0.0.Q / Resid End names."""
    names = ["Resid Start->A0.0.Q", "Resid Start->A0.0.K", "Resid Start->A0.0.V",
             "Resid Start->MLP 0", "A0.0->MLP 0", "Resid Start->Resid End",
             "A0.0->Resid End", "MLP 0->Resid End"]
    c = shift.ground_truth("mean")
    got = c.to_auto_circuit(_fake_patchable(names))
    assert {e.name for e in got} == {"Resid Start->A0.0.V", "A0.0->Resid End"}
    per = shift.ground_truth("mean", positions=True)
    got = per.to_auto_circuit(_fake_patchable(names, seq_len=4))
    assert {(e.name, e.seq_idx) for e in got} == {
        ("Resid Start->A0.0.V", 1), ("Resid Start->A0.0.V", 2),
        ("A0.0->Resid End", 2), ("A0.0->Resid End", 3)}
    with pytest.raises(ValueError, match="positions=True"):
        c.to_auto_circuit(_fake_patchable(names, seq_len=4))
    with pytest.raises(ValueError, match="has no edge"):
        c.to_auto_circuit(_fake_patchable(names[:2]))


def test_ground_truth_refuses_unknown_ablation(shift):
    """An unknown ablation names the choices."""
    with pytest.raises(ValueError, match="'structural', 'zero', 'mean', 'resample'"):
        shift.ground_truth("noise")


def test_sampled_domain(shift):
    """exhaustive=False draws seeded samples; the circuit is the same here."""
    c = shift.ground_truth("zero", exhaustive=False, samples=200, seed=3)
    assert not c.exhaustive and c.n_inputs == 200 and c.seed == 3
    assert c.edges == shift.ground_truth("zero").edges
