"""The component graph of a compiled model, named as EAP-IG and MIB name it.

Nodes are the model's components: ``input`` (the token and position embeddings), every
attention head ``a{layer}.h{head}``, every MLP ``m{layer}``, and ``logits`` (the
unembedding). The residual stream is the sum of the components' outputs, so each
component's input is a sum over the components before it: there is an edge from every
component to every later component input, a head's query, key and value inputs
separately (``"a0.h0->a1.h0<q>"``, ``"input->a1.h0<v>"``), an MLP's input
(``"a0.h0->m1"``) and the logits (``"m1->logits"``). Edges come in EAP-IG's order
(``Graph.from_model``): layer by layer, the heads' inputs, then the MLP's, then the
logits. A head's MLP in the same layer reads it (``"a0.h0->m0"``); a head does not read
the other heads of its layer.

Each edge carries the program nodes it transmits: the SOps (labels from
``model.circuit``) whose residual directions the sender writes and the receiver reads
with a nonzero weight. An edge that carries none is not *structural*: replacing the
sender's contribution to the receiver's input by anything the sender can write (zero,
its mean, its value on another input) changes no weight product the receiver computes,
so no ablation can show it. Under a LayerNorm or RMSNorm the receiver normalises its
whole input first, so every edge from a component that writes something to one that
reads something is structural there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np

INPUT, LOGITS = "input", "logits"
#: A head's three inputs, in EAP-IG's order.
QKV = ("q", "k", "v")


def head_name(layer: int, head: int) -> str:
    """``a{layer}.h{head}``."""
    return f"a{layer}.h{head}"


def mlp_name(layer: int) -> str:
    """``m{layer}``."""
    return f"m{layer}"


def edge_name(sender: str, receiver: str, kind: str | None, position: int | None = None) -> str:
    """``sender->receiver``, with ``<q>``/``<k>``/``<v>`` for a head's input and ``@p``
    for one token position."""
    name = f"{sender}->{receiver}" + (f"<{kind}>" if kind else "")
    return name if position is None else f"{name}@{position}"


@attrs.frozen
class Node:
    """One component. ``kind`` is "input", "attn", "mlp" or "logits"; ``labels`` the
    program nodes computed (or, for selectors, used) there, from ``model.circuit``;
    ``writes`` the residual dimensions its output can be nonzero on."""

    name: str
    kind: str
    layer: int | None
    head: int | None
    labels: tuple[str, ...]
    writes: tuple[int, ...]


@attrs.frozen
class Edge:
    """From ``sender``'s output to ``receiver``'s input ``kind`` ("q", "k", "v" for a
    head, None for an MLP or the logits); ``carries`` the program nodes it transmits;
    ``structural`` whether any ablation can change what the receiver computes (see the
    module docstring); ``position`` the token position (0 is BOS) for a per-position
    edge, else None."""

    name: str
    sender: str
    receiver: str
    kind: str | None
    carries: tuple[str, ...]
    structural: bool
    position: int | None = None

    def at(self, position: int) -> Edge:
        """This edge at one token position."""
        return attrs.evolve(self, name=edge_name(self.sender, self.receiver, self.kind,
                                                 position), position=position)

    @property
    def base(self) -> str:
        """The name without the position."""
        return edge_name(self.sender, self.receiver, self.kind)


@attrs.define(eq=False)
class ComponentGraph:
    """The components of a compiled model and the edges between them (module docstring).

    ``nodes`` maps names to `Node` in forward order; ``edges`` is every edge in EAP-IG's
    order; ``reads[(receiver, kind)]`` the residual dimensions that input reads with a
    nonzero weight; ``n_ctx`` the model's token positions (BOS included); ``positions``
    is None, or ``n_ctx`` when every edge is split per position.
    """

    nodes: dict[str, Node]
    edges: tuple[Edge, ...]
    reads: dict[tuple[str, str | None], tuple[int, ...]]
    n_layers: int
    n_heads: int
    n_ctx: int
    positions: int | None = None
    _by_name: dict[str, Edge] = attrs.field(factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        self._by_name.update((e.name, e) for e in self.edges)

    def __len__(self) -> int:
        return len(self.edges)

    def __iter__(self) -> Iterator[Edge]:
        return iter(self.edges)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Edge:
        """The edge called ``name``; a KeyError that shows how edges are named."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no edge {name!r} in this graph; edges are named like "
                           f"{self.edges[0].name!r} (of {len(self.edges)} edges)") from None

    @property
    def components(self) -> list[str]:
        """The heads and MLPs (the nodes a node-level method scores)."""
        return [n for n, node in self.nodes.items() if node.kind in ("attn", "mlp")]

    @property
    def structural(self) -> tuple[Edge, ...]:
        """The edges an ablation can show (module docstring)."""
        return tuple(e for e in self.edges if e.structural)

    def per_position(self) -> ComponentGraph:
        """The same graph with every edge split into one edge per token position
        ``0..n_ctx - 1`` (0 is BOS), as auto-circuit's ``seq_len`` does."""
        if self.positions is not None:
            return self
        edges = tuple(e.at(p) for e in self.edges for p in range(self.n_ctx))
        return ComponentGraph(self.nodes, edges, self.reads, self.n_layers, self.n_heads,
                              self.n_ctx, positions=self.n_ctx)

    def __repr__(self) -> str:
        at = f", per position ({self.positions})" if self.positions else ""
        return (f"ComponentGraph({len(self.nodes)} nodes, {len(self.edges)} edges, "
                f"{len(self.structural)} structural{at})")


def graph(model: Any) -> ComponentGraph:
    """The component graph of a compiled model (module docstring)."""
    w, cfg = model.weights, model.config
    n_layers, n_heads = cfg.n_layers, cfg.n_heads
    normed = getattr(cfg, "normalization_type", None) is not None
    owner = _owners(model)
    located = _locations(model)

    def nonzero_rows(a: np.ndarray, axis: int) -> tuple[int, ...]:
        return tuple(np.flatnonzero(np.any(a != 0, axis=axis)).tolist())

    nodes: dict[str, Node] = {}
    embed = np.concatenate([w["embed.W_E"], w["pos_embed.W_pos"]])
    nodes[INPUT] = Node(INPUT, "input", None, None, located.get(("embed", None, None), ()),
                        nonzero_rows(embed, 0))
    reads: dict[tuple[str, str | None], tuple[int, ...]] = {}
    for i in range(n_layers):
        p = f"blocks.{i}."
        for h in range(n_heads):
            name = head_name(i, h)
            nodes[name] = Node(name, "attn", i, h, located.get(("attn", i, h), ()),
                               nonzero_rows(w[p + "attn.W_O"][h], 0))
            for kind in QKV:
                reads[(name, kind)] = nonzero_rows(w[p + f"attn.W_{kind.upper()}"][h], 1)
        out = np.concatenate([w[p + "mlp.W_out"], w[p + "mlp.b_out"][None]])
        nodes[mlp_name(i)] = Node(mlp_name(i), "mlp", i, None,
                                  located.get(("mlp", i, None), ()), nonzero_rows(out, 0))
        reads[(mlp_name(i), None)] = nonzero_rows(w[p + "mlp.W_in"], 1)
    nodes[LOGITS] = Node(LOGITS, "logits", None, None, (), ())
    reads[(LOGITS, None)] = nonzero_rows(w["unembed.W_U"], 1)

    def edge(sender: str, receiver: str, kind: str | None) -> Edge:
        written, read = nodes[sender].writes, reads[(receiver, kind)]
        shared = sorted(set(written) & set(read))
        carries = tuple(dict.fromkeys(owner[d] for d in shared))
        structural = bool(written and read) if normed else bool(shared)
        return Edge(edge_name(sender, receiver, kind), sender, receiver, kind, carries,
                    structural)

    edges: list[Edge] = []
    stream = [INPUT]  # the components written before the receiver, in EAP-IG's order
    for i in range(n_layers):
        heads = [head_name(i, h) for h in range(n_heads)]
        edges += [edge(s, r, kind) for s in stream for r in heads for kind in QKV]
        stream += heads
        edges += [edge(s, mlp_name(i), None) for s in stream]
        stream.append(mlp_name(i))
    edges += [edge(s, LOGITS, None) for s in stream]
    return ComponentGraph(nodes, tuple(edges), reads, n_layers, n_heads, cfg.n_ctx)


def _owners(model: Any) -> list[str]:
    """The program node each residual dimension belongs to (``model.circuit``'s writes);
    the residual label itself (``one``, ``tokens:BOS``) for a dimension no node writes."""
    owner = list(model.residual_labels)
    for label, steps in model.circuit.items():
        for step in steps:
            for d in step.writes:
                owner[d] = label
    return owner


def _locations(model: Any) -> dict[tuple[str, int | None, int | None], tuple[str, ...]]:
    """``(sublayer, layer, head)`` -> the program nodes with a step there."""
    found: dict[tuple[str, int | None, int | None], list[str]] = {}
    for label, steps in model.circuit.items():
        for step in steps:
            sub = str(step.sublayer)
            key = (sub, step.layer if sub != "embed" else None,
                   step.head if sub == "attn" else None)
            if label not in found.setdefault(key, []):
                found[key].append(label)
    return {k: tuple(v) for k, v in found.items()}
