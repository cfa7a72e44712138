"""Pass 3: assign every block to a sublayer, with the fewest layers, then balance widths.

Sublayer ``2l`` is layer ``l``'s attention and ``2l + 1`` its MLP. A node is *ready*
after the sublayer that writes it (embedded nodes: -1). As soon as possible: an
attention node goes to the first attention sublayer after all its inputs are ready,
an MLP node to the first MLP sublayer after them, and a SelectorWidth to an attention
sublayer and the MLP right after it. The number of layers is then the longest path
in the dependency graph counted in sublayers, which no schedule can beat.

Balancing: in reverse topological order, every node moves to the sublayer of the
right kind, between its inputs and its consumers, that keeps the padded widths
(``n_heads`` and ``d_mlp``: every layer is padded to the widest) smallest, then whose
own load (heads, MLP hidden units) is smallest. Its current sublayer is a candidate,
so no move grows either width, and none adds a layer.
"""

from __future__ import annotations

import enum
from collections import defaultdict

import attrs

from rasplang.backend.build import NodeBlock
from rasplang.nodes import SOp


@attrs.define(eq=False)
class Layer:
    """The heads and MLPs of one transformer layer."""

    heads: list[NodeBlock]
    mlps: list[NodeBlock]


@attrs.define(eq=False)
class Schedule:
    """Pass 3's result: the sublayer of every computed node and the layers."""

    sublayer: dict[SOp, int]
    layers: list[Layer]


class BlockKind(enum.Enum):
    """What a node's block holds, which decides the sublayers it can go to."""

    EMBED = "embed"  # nothing: the node is in the embedding
    ATTN = "attn"  # an attention head
    MLP = "mlp"  # an MLP
    BOTH = "both"  # a head and the MLP right after it (SelectorWidth)

    @property
    def has_head(self) -> bool:
        return self in (BlockKind.ATTN, BlockKind.BOTH)

    @property
    def has_mlp(self) -> bool:
        return self in (BlockKind.MLP, BlockKind.BOTH)

    @property
    def parity(self) -> int:
        """The sublayer parity it starts at: 0 attention, 1 MLP."""
        return 1 if self is BlockKind.MLP else 0


def _kind(block: NodeBlock) -> BlockKind:
    if block.head is not None and block.mlp is not None:
        return BlockKind.BOTH
    if block.head is not None:
        return BlockKind.ATTN
    if block.mlp is not None:
        return BlockKind.MLP
    return BlockKind.EMBED


def _ready(kind: BlockKind, slot: int) -> int:
    return slot + 1 if kind is BlockKind.BOTH else slot


def schedule(blocks: list[NodeBlock], output: SOp, *, balance: bool = True) -> Schedule:
    """Place ``blocks`` (topological order) into layers."""
    by_node = {b.node: b for b in blocks}
    kinds = {b.node: _kind(b) for b in blocks}
    slot: dict[SOp, int] = {}
    ready: dict[SOp, int] = {}
    for b in blocks:
        if kinds[b.node] is BlockKind.EMBED:
            ready[b.node] = -1
            continue
        start = max((ready[d] for d in b.deps), default=-1) + 1
        parity = kinds[b.node].parity
        s = start if start % 2 == parity else start + 1
        slot[b.node] = s
        ready[b.node] = _ready(kinds[b.node], s)
    last = max(ready.values(), default=-1)
    n_layers = (last + 2) // 2
    if balance:
        _balance(blocks, by_node, kinds, slot, ready, output, n_layers)
    layers = [Layer([], []) for _ in range(n_layers)]
    for b in blocks:
        k = kinds[b.node]
        if k.has_head:
            layers[slot[b.node] // 2].heads.append(b)
        if k.has_mlp:  # a SelectorWidth's MLP follows its head in the same layer
            layers[slot[b.node] // 2].mlps.append(b)
    return Schedule(slot, layers)


def _balance(blocks, by_node, kinds, slot, ready, output, n_layers) -> None:
    consumers: dict[SOp, list[SOp]] = defaultdict(list)
    for b in blocks:
        for d in b.deps:
            consumers[d].append(b.node)
    heads = defaultdict(int)
    units = defaultdict(int)

    def load(b: NodeBlock, s: int, sign: int) -> None:
        k = kinds[b.node]
        if k.has_head:
            heads[s // 2] += sign
        if k.has_mlp:
            units[s // 2] += sign * b.mlp.hidden_dim

    for b in blocks:
        if b.node in slot:
            load(b, slot[b.node], 1)
    for b in reversed(blocks):
        node = b.node
        if node not in slot:
            continue
        k = kinds[node]
        parity = k.parity
        earliest = max((ready[d] for d in b.deps), default=-1) + 1
        if node is output or not consumers[node]:
            latest_ready = 2 * n_layers - 1
        else:
            latest_ready = min(slot[c] for c in consumers[node]) - 1
        candidates = [s for s in range(earliest, 2 * n_layers)
                      if s % 2 == parity and _ready(k, s) <= latest_ready]
        if not candidates:
            continue
        load(b, slot[node], -1)

        peak_h, peak_u = max(heads.values(), default=0), max(units.values(), default=0)

        def cost(s: int, k: BlockKind = k, b: NodeBlock = b, peak_h: int = peak_h,
                 peak_u: int = peak_u) -> tuple[int, ...]:
            # the padded widths after the move first (never grown), then this layer's load
            layer = s // 2
            h = heads[layer] + (1 if k.has_head else 0)
            u = units[layer] + (b.mlp.hidden_dim if b.mlp is not None else 0)
            if k is BlockKind.MLP:
                return (max(peak_u, u), max(peak_h, h), u, h, -s)
            return (max(peak_h, h), max(peak_u, u), h, u, -s)

        best = min(candidates, key=cost)
        slot[node] = best
        ready[node] = _ready(k, best)
        load(b, best, 1)
