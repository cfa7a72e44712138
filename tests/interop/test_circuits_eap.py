"""Edge attribution patching (rasplang.circuits.methods_eap): the torch port of the
edge-patched forward against the numpy model, EAP's attributions against exact patching
where the metric is linear, and EAP-IG recovering circuits. Skipped without torch."""

from __future__ import annotations

import numpy as np
import pytest

import rasplang as rl
from rasplang import circuits
from rasplang.circuits.inputs import domain_inputs
from rasplang.circuits.methods_eap import _Port
from rasplang.circuits.patching import Patcher, Weights
from rasplang.circuits.truth import _grouped
from rasplang.lib import make_frac_prevs, shift_by

torch = pytest.importorskip("torch")


def _library(name, optimize=True, n=4, **kw):
    entry = rl.lib.PROGRAMS[name]
    return rl.compile(entry.build(n), entry.vocab, n, optimize=optimize, **kw)


@pytest.mark.parametrize("name,kw", [("sort", {}), ("dyck1", {"optimize": False}),
                                     ("frac_prevs", {"norm": "layernorm"}),
                                     ("shift_by", {"causal": True, "norm": "rmsnorm"})])
def test_port_is_the_model(name, kw):
    """The torch port's logits are the compiled model's on every input of the domain."""
    model = _library(name, **kw)
    port = _Port(Weights(model, model.graph()), torch)
    for ids in domain_inputs(model, None, 10_000, 0).groups.values():
        logits, inputs = port.forward(ids)
        np.testing.assert_allclose(logits.detach().numpy(), model.forward(ids), atol=1e-9)
        assert ("a0.h0", "q") in inputs and ("logits", None) in inputs


def test_eap_is_exact_where_the_metric_is_linear():
    """A numerical output is linear in the edges into the logits: EAP there is the mean
    absolute change of the outputs that patching the edge gives."""
    model = rl.compile(make_frac_prevs(rl.tokens == "x"), ["x", "y", "z"], 4, optimize=False)
    scores = circuits.edge_attribution_patching(model, "resample")
    g = model.graph()
    weights, total, n = Weights(model, g), {}, 0
    ids_of = domain_inputs(model, None, 10_000, 0).groups
    for length, ids in ids_of.items():
        corrupt = ids[np.random.default_rng([0, length]).permutation(len(ids))]
        patcher = Patcher(weights, ids, "resample", corrupt=corrupt)
        for e in g:
            if e.structural and e.receiver == "logits":
                logits = patcher.run(_grouped([e]))
                moved = np.abs(logits - patcher.clean_logits)[:, 1:].sum()
                total[e.name] = total.get(e.name, 0.0) + moved
        n += len(ids)
    assert total and all(scores[k] == pytest.approx(v / n, rel=1e-9) for k, v in total.items())


def test_eap_scores_the_one_head():
    """shift_by: the value and output edges score, the positional q and k edges 0; the
    last token, never copied, reaches the output only through a saturated softmax."""
    pytest.importorskip("sklearn")
    model = rl.compile(shift_by(1, rl.tokens), ["a", "b", "c"], 3)
    scores = circuits.edge_attribution_patching(model, "resample")
    assert {k for k, v in scores.items() if v > 0} == {"input->a0.h0<v>", "a0.h0->logits"}
    per = circuits.edge_attribution_patching(model, "resample", positions=True)
    assert per["input->a0.h0<v>@3"] < 1e-12 < per["input->a0.h0<v>@1"]
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        circuits.edge_attribution_patching(model, steps=0)


@pytest.mark.parametrize("name,n,steps", [("sort", 4, 10), ("count", 5, 5)])
def test_eap_ig_recovers_what_eap_misses(name, n, steps):
    """Saturated heads and flat lookup tables hide edges from EAP's gradient at the clean
    input (AUROC below 1); EAP-IG's path from the ablated input finds them."""
    pytest.importorskip("sklearn")
    model = _library(name, n=n)
    truth = model.ground_truth("resample")
    eap = circuits.score(circuits.edge_attribution_patching(model, "resample"), truth)
    ig = circuits.score(circuits.edge_attribution_patching(model, "resample", steps=steps),
                        truth)
    assert eap.auroc < 1.0 and ig.auroc == 1.0
