"""Circuit-discovery methods (rasplang.circuits.methods*): ACDC and activation patching
over the numpy edge-patched forward, checked against ground truth and against an
independent ablation (the model with weights set to zero)."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

import rasplang as rl
from rasplang import circuits
from rasplang.circuits.inputs import domain_inputs
from rasplang.circuits.methods import log_probs, output_distance
from rasplang.lib import make_frac_prevs, shift_by


@pytest.fixture(scope="module")
def shift():
    """shift_by(1, tokens): one head, whose output only the logits read."""
    return rl.compile(shift_by(1, rl.tokens), ["a", "b", "c"], 3)


def _library(name, optimize=True, n=4):
    entry = rl.lib.PROGRAMS[name]
    return rl.compile(entry.build(n), entry.vocab, n, optimize=optimize)


def _domain(model):
    """Every input of the domain, as embedding ids per length."""
    return domain_inputs(model, None, 10_000, 0).groups.values()


def _without(model, key, index):
    """The model with one weight's entries set to zero (an independent ablation)."""
    w = dict(model.weights)
    w[key] = w[key].copy()
    w[key][index] = 0
    return attrs.evolve(model, weights=w)


def test_output_distance_is_kl_with_the_none_logit():
    """KL over softmax(logits, 1/2) per position, summed; BOS left out; L2 if numerical."""
    clean = np.array([[[9.0, 9.0], [1.0, 0.0]]])       # BOS row ignored
    patched = np.array([[[0.0, 0.0], [0.0, 0.0]]])     # decodes to None
    p = np.exp([1.0, 0.0, 0.5]) / np.exp([1.0, 0.0, 0.5]).sum()
    q = np.exp([0.0, 0.0, 0.5]) / np.exp([0.0, 0.0, 0.5]).sum()
    assert output_distance(clean, patched, False) == pytest.approx([(p * np.log(p / q)).sum()])
    assert output_distance(clean, clean, False) == pytest.approx([0.0])
    assert output_distance(clean, patched, True) == pytest.approx([1.0])
    np.testing.assert_allclose(np.exp(log_probs(clean[:, 1:])).sum(-1), 1.0)


@pytest.mark.parametrize("name,optimize", [("shift_by", True), ("frac_prevs", False),
                                           ("sort", True), ("dyck1", False),
                                           ("count_distinct", True)])
def test_acdc_recovers_the_resample_circuit(name, optimize):
    """At the default tau ACDC keeps exactly the ground truth, and scores it AUROC 1."""
    pytest.importorskip("sklearn")
    model = _library(name, optimize)
    truth = model.ground_truth("resample")
    result = circuits.acdc(model, "resample")
    assert result.edges == truth.edges
    assert circuits.score(result.scores, truth).auroc == 1.0
    assert circuits.check(model, result.edges, "resample").sufficient


def test_acdc_scores_are_the_metric_of_each_removal(shift):
    """The first edge tried (the head's output) scores the mean KL of zeroing W_O."""
    result = circuits.acdc(shift, "zero")
    ablated = _without(shift, "blocks.0.attn.W_O", (0,))
    total = n = 0
    for ids in _domain(shift):
        total += output_distance(shift.forward(ids), ablated.forward(ids), False).sum()
        n += len(ids)
    assert result.scores["a0.h0->logits"] == pytest.approx(total / n, rel=1e-9)
    g = shift.graph()
    assert all(result.scores[e.name] == 0 for e in g if not e.structural)


def test_acdc_threshold(shift):
    """tau = inf removes every edge (one run: then the head is dead); tau < 0 is refused."""
    result = circuits.acdc(shift, "zero", tau=float("inf"))
    assert result.edges == () and result.metric > 0 and result.runs == 1
    with pytest.raises(ValueError, match="tau must be a number >= 0"):
        circuits.acdc(shift, tau=-1.0)


def test_acdc_dead_receivers_are_not_run():
    """Once an MLP's output edges are all removed, its inputs go without a run."""
    model = rl.compile(make_frac_prevs(rl.tokens == "x"), ["x", "y"], 3, optimize=False)
    everything = circuits.acdc(model, "zero", tau=float("inf"))
    n_structural = len(model.graph().structural)
    into_logits = sum(e.structural and e.receiver == "logits" for e in model.graph())
    assert everything.runs == into_logits < n_structural


def test_acdc_per_position(shift):
    """positions=True: the per-position resample circuit."""
    truth = shift.ground_truth("resample", positions=True)
    assert circuits.acdc(shift, "resample", positions=True).edges == truth.edges


def test_activation_patching_is_the_l2_change_of_zeroing(shift):
    """Zero-ablating the head's only output edge moves the logits as zeroing W_O does."""
    scores = circuits.activation_patching(shift, "zero")
    ablated = _without(shift, "blocks.0.attn.W_O", (0,))
    total = n = 0
    for ids in _domain(shift):
        moved = (ablated.forward(ids) - shift.forward(ids))[:, 1:]
        total += np.sqrt((moved ** 2).sum(axis=(1, 2))).sum()
        n += len(ids)
    assert scores["a0.h0->logits"] == pytest.approx(total / n, rel=1e-9)


@pytest.mark.parametrize("name", ["sort", "dyck1", "double_hist"])
def test_activation_patching_ranks_the_circuit_first(name):
    """Every edge of the resample circuit moves the logits: AUROC 1 on these programs."""
    pytest.importorskip("sklearn")
    model = _library(name)
    scores = circuits.activation_patching(model, "resample")
    assert circuits.score(scores, model.ground_truth("resample")).auroc == 1.0


# auto-circuit's hand-written circuits for tracr's reverse and xproportion
# (auto_circuit/metrics/official_circuits/circuits/tracr/{reverse,xproportion}_official.py):
# "official" for resample ablation, "acdc" (after ACDC's repository) for zero ablation.
AUTO_CIRCUIT = {
    ("reverse", "resample"): {"Resid Start->A3.0.V", "A3.0->Resid End"},
    ("reverse", "zero"): {
        "A3.0->Resid End", "MLP 2->A3.0.Q", "Resid Start->A3.0.K", "Resid Start->A3.0.V",
        "MLP 1->MLP 2", "MLP 0->MLP 1", "Resid Start->MLP 1", "A0.0->MLP 0",
        "Resid Start->MLP 0", "Resid Start->A0.0.V"},
    ("xproportion", "resample"): {"Resid Start->MLP 0", "MLP 0->A1.0.V", "A1.0->Resid End"},
    ("xproportion", "zero"): {"A1.0->Resid End", "Resid Start->A1.0.Q",
                              "Resid Start->A1.0.K", "MLP 0->A1.0.V", "Resid Start->MLP 0"},
}


def _tracr_task(task):
    """tracr's reverse (vocab {1, 2, 3}) and xproportion (frac_prevs of "x", vocab
    {w, x, y, z}) at max_seq_len 5, one block per node, as auto-circuit compiles them."""
    if task == "reverse":
        return rl.compile(rl.lib.make_reverse(rl.tokens), [1, 2, 3], 5, optimize=False)
    return rl.compile(make_frac_prevs(rl.tokens == "x"), ["w", "x", "y", "z"], 5,
                      optimize=False)


@pytest.mark.parametrize("task,ablation", sorted(AUTO_CIRCUIT))
def test_agrees_with_auto_circuit_hand_written_circuits(task, ablation):
    """Our computed circuits, in auto-circuit's names, are its hand-written edge sets."""
    from rasplang.circuits.exports import auto_circuit_name

    model = _tracr_task(task)
    circuit = model.ground_truth(ablation)
    assert {auto_circuit_name(circuit, e) for e in circuit.edges} == AUTO_CIRCUIT[(task, ablation)]


def test_reverse_middle_position_is_in_the_circuit():
    """auto-circuit leaves position 3 out of reverse's circuit on length-5 inputs; but the
    middle token is copied onto itself, so resampling the value there changes the output
    at 3 on exactly the inputs whose partner has another token there."""
    from rasplang.circuits.patching import Patcher, Weights

    model = _tracr_task("reverse")
    ids = domain_inputs(model, None, 10_000, 0).groups[5]            # (243, 6)
    corrupt = ids[np.random.default_rng(0).permutation(len(ids))]
    patcher = Patcher(Weights(model, model.graph()), ids, "resample", corrupt=corrupt)
    logits = patcher.run({("a3.h0", "v"): [("input", 3)]})
    changed = (logits.argmax(-1) != patcher.clean_logits.argmax(-1))  # (243, 6)
    differ = ids[:, 3] != corrupt[:, 3]
    assert differ.any() and (changed[:, 3] == differ).all()
    assert not changed[:, [1, 2, 4, 5]].any()
    assert "input->a3.h0<v>@3" in model.ground_truth("resample", positions=True)
