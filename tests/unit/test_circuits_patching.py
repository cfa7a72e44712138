"""rasplang.circuits.patching: the incremental patched forward against a from-scratch one.

`Patcher.run` recomputes only the components, inputs and positions an ablation can
change, and runs each row-wise step once per distinct row. Here every receiver input is
instead rebuilt from scratch as the sum of every earlier component's output (the
ablated ones replaced), and every component is run on the whole batch, for every
structural edge alone and for sets of them, under every ablation.
"""

from __future__ import annotations

import numpy as np
import pytest

import rasplang as rl
from rasplang.circuits import patching
from rasplang.circuits.graph import INPUT, LOGITS, QKV, head_name, mlp_name
from rasplang.circuits.inputs import domain_inputs
from rasplang.circuits.patching import ABLATIONS, Patcher, Weights, _distinct, _rowwise
from rasplang.circuits.truth import _grouped


def _from_scratch(wt: Weights, p: Patcher, edges) -> np.ndarray:
    """The logits with ``edges`` ablated: each receiver input summed over the senders."""
    cfg = wt.cfg
    cut = {(e.sender, e.receiver, e.kind): e.position for e in edges}
    outs = {INPUT: p.outs[INPUT]}
    B, T = p.B, p.T

    def receiver_input(receiver, kind, senders, layers):
        rows = wt.rows[(receiver, kind)]
        x = np.zeros((B, T, len(rows)))
        for i in range(layers):
            x += wt.w[f"blocks.{i}.attn.b_O"][rows]
        for s in senders:
            link = wt.links.get((s, receiver, kind))
            if link is None:
                continue
            src, dst = link
            value = np.broadcast_to(outs[s], (B, T, outs[s].shape[-1])).copy()
            if (s, receiver, kind) in cut:
                at = cut[(s, receiver, kind)]
                ablated = np.broadcast_to(p.ablated[s], value.shape)
                if at is None:
                    value = ablated.copy()
                elif at < T:
                    value[:, at] = ablated[:, at]
            x[..., dst] += value[..., src]
        return x

    stream = [INPUT]
    for i in range(cfg.n_layers):
        heads = [head_name(i, h) for h in range(cfg.n_heads)]
        for h in heads:
            q, k, v = (receiver_input(h, kind, stream, i) for kind in QKV)
            outs[h] = wt.head(h, q, k, v, p.visible) if len(wt.writes[h]) \
                else np.zeros((B, T, 0))
        stream += heads
        m = mlp_name(i)
        x = receiver_input(m, None, stream, i + 1)
        outs[m] = wt.mlp(m, x) if len(wt.writes[m]) else np.zeros((B, T, 0))
        stream.append(m)
    return wt.logits(receiver_input(LOGITS, None, stream, cfg.n_layers))


def _patcher(model, ablation):
    wt = Weights(model, model.graph())
    ids = domain_inputs(model).groups[model.config.max_seq_len]
    corrupt = ids[np.random.default_rng(1).permutation(len(ids))]
    return wt, Patcher(wt, ids, ablation, corrupt=corrupt)


@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("name,optimize", [("sort", False), ("dyck1", True),
                                           ("shuffle_dyck", False), ("frac_prevs", True)])
def test_run_equals_the_forward_from_scratch(name, optimize, ablation):
    entry = rl.lib.PROGRAMS[name]
    model = rl.compile(entry.build(4), entry.vocab, 4, optimize=optimize)
    wt, p = _patcher(model, ablation)
    g = model.graph()
    structural = list(g.structural)
    rng = np.random.default_rng(0)
    trials = [[e] for e in structural]
    trials += [[e.at(int(rng.integers(0, g.n_ctx)))] for e in structural]
    trials += [list(rng.choice(structural, size=min(len(structural), k), replace=False))
               for k in (2, 3, 5, len(structural))]
    moved = 0
    for edges in trials:
        expected = _from_scratch(wt, p, edges)
        got = p.run(_grouped(edges))
        if got is None:
            got = p.clean_logits
        else:
            rows, part = p.run_rows(_grouped(edges))
            np.testing.assert_array_equal(np.delete(got, rows, axis=0),
                                          np.delete(p.clean_logits, rows, axis=0))
            np.testing.assert_array_equal(got[rows], part)
        np.testing.assert_allclose(got, expected, atol=1e-9, err_msg=str(edges))
        moved += not np.allclose(expected, p.clean_logits, atol=1e-9)
    assert moved, "no trial changed the logits: the comparison shows nothing"


def test_rowwise_once_per_distinct_row():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 40))
    f = lambda a: np.maximum(a @ w, 0)
    few = rng.integers(0, 3, (7, 6)).astype(float)           # 7 distinct rows at most
    x = few[rng.integers(0, 7, (50, 30))]                    # (50, 30, 6)
    np.testing.assert_allclose(_rowwise(f, x, w.size), f(x.reshape(-1, 6)).reshape(50, 30, 40),
                               atol=1e-12)
    first, inverse = _distinct(x.reshape(-1, 6))
    np.testing.assert_array_equal(x.reshape(-1, 6)[first][inverse], x.reshape(-1, 6))
    assert len(first) == len(np.unique(x.reshape(-1, 6), axis=0))


def test_distinct_refuses_what_it_cannot_prove(monkeypatch):
    rng = np.random.default_rng(0)
    assert _distinct(rng.standard_normal((100, 4))) is None        # every row distinct
    nan = np.zeros((100, 4))
    nan[::2, 1] = np.nan                                            # NaN != NaN
    assert _distinct(nan) is None
    rows = np.eye(2)[np.arange(100) % 2]
    first, inverse = _distinct(rows)
    np.testing.assert_array_equal(rows[first][inverse], rows)
    # two different rows that the projection cannot tell apart: the check refuses
    monkeypatch.setattr(patching, "_probe", lambda n: np.ones(n))
    assert _distinct(rows) is None
    f = lambda a: a * 2
    np.testing.assert_array_equal(_rowwise(f, rows, 100), rows * 2)
