"""The schedule (backend/schedule.py): fewest layers, then balanced widths.

Blocks come from tiny programs (`build_blocks`) or are stand-ins with only a kind and an
MLP width. The layer count is compared with hand-counted dependency paths and with an
exhaustive search over every placement of the blocks; placements are read back from the
layers (heads in sublayer 2l, MLPs in 2l + 1), not from the schedule's own slots.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import rasplang as rl
from rasplang.backend.build import NodeBlock, build_blocks
from rasplang.backend.craft.bases import BasisDirection, VectorSpace
from rasplang.backend.craft.blocks import MLP, AttentionHead
from rasplang.backend.craft.maps import BilinearMap, LinearMap
from rasplang.backend.schedule import schedule

EMPTY = VectorSpace(())


def stub(kind, deps=(), width=1):
    """A stand-in block: ``kind`` in "embed", "attn", "mlp", "both"; an MLP of ``width``."""
    node = rl.Map(lambda x: x, rl.tokens)  # only its identity matters
    head = mlp = None
    if kind in ("attn", "both"):
        head = AttentionHead(BilinearMap(EMPTY, EMPTY, np.zeros((0, 0))),
                             LinearMap(EMPTY, EMPTY, np.zeros((0, 0))))
    if kind in ("mlp", "both"):
        hidden = VectorSpace(BasisDirection("h", i) for i in range(width))
        mlp = MLP(LinearMap(EMPTY, hidden, np.zeros((0, width))),
                  LinearMap(hidden, EMPTY, np.zeros((width, 0))))
    return NodeBlock(node, kind, head=head, mlp=mlp, deps=tuple(d.node for d in deps))


def sublayers(block, layers):
    """(first, last) sublayer of ``block`` as the layers hold it; None if in none."""
    found = [2 * i for i, layer in enumerate(layers) if any(b is block for b in layer.heads)]
    found += [2 * i + 1 for i, layer in enumerate(layers)
              if any(b is block for b in layer.mlps)]
    return (min(found), max(found)) if found else None


def check_placement(blocks, layers):
    """Every block is placed once per sublayer kind it has, a head and MLP in one layer,
    and strictly after the sublayers that write its inputs (embedded: before all)."""
    where = {}
    for b in blocks:
        place = sublayers(b, layers)
        n_heads = sum(x is b for layer in layers for x in layer.heads)
        n_mlps = sum(x is b for layer in layers for x in layer.mlps)
        assert (n_heads, n_mlps) == (int(b.head is not None), int(b.mlp is not None))
        if place is not None and b.head is not None and b.mlp is not None:
            assert place[1] == place[0] + 1  # the head, then the MLP right after it
        where[b.node] = place
    for b in blocks:
        for d in b.deps:
            if where[d] is not None:
                assert where[d][1] < where[b.node][0]


def fewest_layers(blocks):
    """The fewest layers any placement needs, by exhaustive search (blocks in order)."""
    for n_layers in itertools.count(0):
        if _placeable(blocks, 0, {}, n_layers):
            return n_layers


def _placeable(blocks, i, ready, n_layers):
    if i == len(blocks):
        return True
    b = blocks[i]
    if b.head is None and b.mlp is None:
        return _placeable(blocks, i + 1, {**ready, b.node: -1}, n_layers)
    after = max((ready[d] for d in b.deps), default=-1)
    first = 0 if b.head is not None else 1
    for s in range(first, 2 * n_layers, 2):
        if s > after:
            last = s + 1 if (b.head is not None and b.mlp is not None) else s
            if _placeable(blocks, i + 1, {**ready, b.node: last}, n_layers):
                return True
    return False


def random_blocks(rng, n):
    """A random DAG of ``n`` stand-in blocks after an embedded one, in topological order
    (embedded blocks, like tokens or a Full, read nothing)."""
    blocks = [stub("embed")]
    for _ in range(n):
        kind = str(rng.choice(["attn", "mlp", "both", "embed"], p=[0.35, 0.35, 0.2, 0.1]))
        k = 0 if kind == "embed" else int(rng.integers(1, min(3, len(blocks)) + 1))
        deps = [blocks[j] for j in rng.choice(len(blocks), size=k, replace=False)]
        blocks.append(stub(kind, deps, width=int(rng.integers(1, 9))))
    return blocks


def build(program, vocab=("a", "b", "c"), n=4):
    """Blocks for a tiny program."""
    analysis = rl.analyze(program, vocab, n)
    return build_blocks(analysis, causal=False, bos="BOS", mlp_exactness=100).blocks


def _f(x):
    return x


def _programs():
    t = rl.tokens
    eq = rl.select(t, t, "==")
    word = rl.Map(lambda x: x == "a", t)
    num = rl.numerical(rl.Map(lambda x: float(x == "a"), t))
    frac = rl.numerical(rl.Aggregate(eq, num, default=0))
    width = rl.selector_width(eq)
    return [
        # (program, layers): hand-counted longest paths in sublayers
        (word, 1),  # mlp
        (rl.Map(_f, word, simplify=False), 2),  # mlp -> mlp
        (frac, 2),  # mlp -> attn
        (rl.Map(lambda x: x > 0.5, frac), 2),  # mlp -> attn -> mlp
        (rl.Aggregate(eq, t), 1),  # attn
        (rl.Map(_f, rl.Aggregate(eq, t)), 1),  # attn -> mlp
        (width, 1),  # attn + mlp
        (rl.Map(_f, width), 2),  # attn + mlp -> mlp
        (rl.selector_width(rl.select(width, width, "==")), 2),  # (attn + mlp) -> (attn + mlp)
        (rl.length, 1),  # attn + mlp
        (rl.SequenceMap(lambda x, y: f"{x}{y}", word, rl.Aggregate(eq, t)), 2),  # max(...) -> mlp
    ]


@pytest.mark.parametrize(("program", "n_layers"), _programs())
def test_layers_of_small_programs(program, n_layers):
    """Small programs get their hand-counted layers, which no placement beats."""
    # Every block after its inputs, balanced or not.
    blocks = build(program)
    assert fewest_layers(blocks) == n_layers
    for balance in (False, True):
        layers = schedule(blocks, program, balance=balance).layers
        assert len(layers) == n_layers
        check_placement(blocks, layers)


def test_random_graphs_fewest_layers_and_valid_balancing():
    """On random DAGs the layers are minimal and balancing keeps them valid."""
    # The minimum is an exhaustive search; balancing keeps the count and every block
    # after its inputs.
    rng = np.random.default_rng(0)
    for _ in range(100):
        blocks = random_blocks(rng, int(rng.integers(2, 11)))
        best = fewest_layers(blocks)
        for balance in (False, True):
            layers = schedule(blocks, blocks[-1].node, balance=balance).layers
            assert len(layers) == best
            check_placement(blocks, layers)


def test_balancing_reduces_the_widest_layer():
    """Balancing spreads side blocks: widest MLP 12 -> 8, heads 3 -> 2, 3 layers."""
    # Two side MLPs (width 4) and two side heads that ASAP puts in layer 0.
    tokens = stub("embed")
    h1 = stub("attn", [tokens])
    m1 = stub("mlp", [h1], width=4)
    h2 = stub("attn", [m1])
    m2 = stub("mlp", [h2], width=4)
    x, y = stub("mlp", [tokens], width=4), stub("mlp", [tokens], width=4)
    g1, g2 = stub("attn", [tokens]), stub("attn", [tokens])
    out = stub("attn", [m2, x, y, g1, g2])
    blocks = [tokens, h1, m1, h2, m2, x, y, g1, g2, out]

    def widths(layers):
        return (max(sum(b.mlp.hidden_dim for b in layer.mlps) for layer in layers),
                max(len(layer.heads) for layer in layers))

    plain = schedule(blocks, out.node, balance=False).layers
    balanced = schedule(blocks, out.node).layers
    assert (len(plain), widths(plain)) == (3, (12, 3))
    assert (len(balanced), widths(balanced)) == (3, (8, 2))
    check_placement(blocks, balanced)


def test_balancing_does_not_widen_the_model():
    """Balancing never makes d_mlp or n_heads larger than the ASAP schedule."""
    # A SelectorWidth block (head + MLP of 5) sits in a layer with 2 heads and 6 units;
    # ASAP gives n_heads 2, d_mlp 8. Moving it to the layer with fewer heads but 8 units
    # gives d_mlp 13 and leaves n_heads at 2 (layer 0).
    t = stub("embed")
    a1, a2 = stub("attn", [t]), stub("attn", [t])
    m1 = stub("mlp", [a1, a2], width=1)
    c = stub("attn", [m1])
    m2 = stub("mlp", [c], width=1)
    m3 = stub("mlp", [m2], width=8)
    width = stub("both", [m1], width=5)
    out = stub("attn", [m3, width])
    blocks = [t, a1, a2, m1, c, m2, m3, width, out]

    def widths(layers):
        return (max(sum(b.mlp.hidden_dim for b in layer.mlps) for layer in layers),
                max(len(layer.heads) for layer in layers))

    plain = widths(schedule(blocks, out.node, balance=False).layers)
    balanced = widths(schedule(blocks, out.node).layers)
    assert plain == (8, 2)
    assert balanced[0] <= plain[0] and balanced[1] <= plain[1], (plain, balanced)
