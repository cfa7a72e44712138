"""Ground-truth circuits: which edges of the component graph a compiled model needs.

- ``"structural"``: the edges whose sender writes residual dimensions the receiver reads
  with a nonzero weight (`rasplang.circuits.graph`). Read off the weights; no input runs.
- ``"zero"``, ``"mean"``, ``"resample"``: computed by ablating edges over the domain
  (`rasplang.circuits.inputs`), each ablation as `rasplang.circuits.patching` defines it.
  An edge is in the circuit when ablating it alone changes the output of some input.
  Only structural edges are tried: ablating any other edge provably changes nothing.
  Then the circuit alone (every other edge ablated at once) must reproduce every
  output: ``sufficient`` says whether it did. Where it did not (edges that matter only
  together, e.g. two that carry the same information), every edge outside it is put
  back, and edges are taken out again one at a time, from the logits backwards (as ACDC
  prunes), whenever every output survives without them; ``added`` lists the edges
  that stay beyond the single-edge ones. The result always reproduces every output.

With ``positions=True`` every edge is split per token position (0 is BOS), as
auto-circuit's ``seq_len`` does: ablating ``s -> r@p`` ablates the sender's output only
in the receiver's input at position ``p``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import numpy as np

from rasplang.circuits.graph import ComponentGraph, Edge, graph
from rasplang.circuits.inputs import Inputs, Reference, domain_inputs
from rasplang.circuits.patching import ABLATIONS, Patcher, Weights

GROUND_TRUTHS = ("structural", *ABLATIONS)


@attrs.frozen
class Circuit:
    """A set of edges of a model's component graph, and how it was found.

    ``edges`` are edge names in the graph's order; ``ablation`` is how the circuit was
    computed ("structural", "zero", "mean", "resample", or "given" for an edge set a
    user gave); ``sufficient`` whether the edges whose ablation alone changes an output
    already reproduced every output with everything else ablated (always True for
    "structural": no other edge can change anything); ``added`` the edges added to make
    it reproduce every output (`rasplang.circuits.truth`); ``n_inputs`` the inputs of the
    domain it was computed on (``exhaustive``: every input; else samples drawn with
    ``seed``).
    """

    graph: ComponentGraph
    edges: tuple[str, ...]
    ablation: str
    positions: bool = False
    sufficient: bool = True
    added: tuple[str, ...] = ()
    n_inputs: int = 0
    exhaustive: bool = True
    seed: int = 0

    def __len__(self) -> int:
        return len(self.edges)

    def __iter__(self) -> Iterator[str]:
        return iter(self.edges)

    def __contains__(self, name: object) -> bool:
        return name in self._set

    @property
    def _set(self) -> frozenset[str]:
        return frozenset(self.edges)

    @property
    def nodes(self) -> tuple[str, ...]:
        """The heads and MLPs on some edge of the circuit, in forward order (the
        node-level circuit)."""
        on = {part for name in self.edges for part in _ends(self.graph[name])}
        return tuple(n for n in self.graph.components if n in on)

    @property
    def carries(self) -> tuple[str, ...]:
        """The program nodes the circuit's edges carry, in first-seen order."""
        return tuple(dict.fromkeys(c for name in self.edges for c in self.graph[name].carries))

    def to_eap(self) -> list[str]:
        """The edges as EAP-IG and MIB name them (``"a0.h1->a1.h0<q>"``); a per-position
        circuit gives each edge that is in it at some position once."""
        from rasplang.circuits.exports import to_eap

        return to_eap(self)

    def to_eap_json(self, path: Any = None) -> dict[str, Any]:
        """EAP-IG's ``Graph.to_json`` dictionary of this circuit (written to ``path``
        when given; ``Graph.from_json`` reads it back)."""
        from rasplang.circuits.exports import to_eap_json

        return to_eap_json(self, path)

    def to_acdc(self, *, split_embed: bool = False) -> dict[tuple[Any, ...], bool]:
        """The edges as ACDC's TransformerLens hook names (see
        `rasplang.circuits.exports.to_acdc`)."""
        from rasplang.circuits.exports import to_acdc

        return to_acdc(self, split_embed=split_embed)

    def to_auto_circuit(self, patchable_model: Any) -> set[Any]:
        """The auto-circuit ``Edge`` objects of ``patchable_model`` that are this
        circuit's (see `rasplang.circuits.exports.to_auto_circuit`)."""
        from rasplang.circuits.exports import to_auto_circuit

        return to_auto_circuit(self, patchable_model)

    def __repr__(self) -> str:
        extra = "" if self.sufficient else f", not sufficient alone: {len(self.added)} added"
        at = ", per position" if self.positions else ""
        return (f"Circuit({self.ablation}{at}: {len(self.edges)} of {len(self.graph)} edges, "
                f"{len(self.nodes)} heads and MLPs{extra})")


def _ends(edge: Edge) -> tuple[str, str]:
    return edge.sender, edge.receiver


def ground_truth(model: Any, ablation: str = "resample", *, positions: bool = False,
                 exhaustive: bool | None = None, samples: int = 10_000,
                 seed: int = 0) -> Circuit:
    """The ground-truth circuit of ``model`` under ``ablation`` (module docstring).

    ``ablation`` is "structural", "zero", "mean" or "resample"; ``positions`` splits
    edges per token position. The domain is every input when there are at most
    `rasplang.circuits.inputs.EXHAUSTIVE_LIMIT` (``exhaustive=None``), else ``samples``
    seeded random inputs; ``seed`` also draws the resampled inputs (each input's
    partner is another input of the same length, a seeded permutation of them).
    """
    if ablation not in GROUND_TRUTHS:
        raise ValueError(f"ablation must be one of {', '.join(map(repr, GROUND_TRUTHS))}, "
                         f"got {ablation!r}")
    g = graph(model)
    full = g.per_position() if positions else g
    if ablation == "structural":
        return Circuit(full, tuple(e.name for e in full if e.structural), ablation,
                       positions, n_inputs=0)
    lab = _Lab(model, g, ablation, exhaustive, samples, seed)
    candidates = [e for e in full if e.structural]
    found = [e for e in candidates if lab.changes([e])]
    single = {e.name for e in found}
    rest = [e for e in candidates if e.name not in single]
    sufficient = lab.reproduces(rest)
    kept = list(found)
    if not sufficient:
        kept = list(candidates)
        for e in reversed(candidates):
            if e.name in single:
                continue
            trial = [k for k in kept if k is not e]
            names = {k.name for k in trial}
            if lab.reproduces([c for c in candidates if c.name not in names]):
                kept = trial
    names = {e.name for e in kept}
    return Circuit(full, tuple(e.name for e in full if e.name in names), ablation, positions,
                   sufficient, tuple(e.name for e in kept if e.name not in single),
                   lab.inputs.count, lab.inputs.exhaustive, seed)


@attrs.frozen
class Check:
    """How well an edge set alone reproduces the model: ``faithfulness`` is the share of
    the domain's ``n_inputs`` on which the model with only those edges (every other edge
    ablated) gives the program's output; ``failing`` the first few inputs (token lists)
    where it does not."""

    faithfulness: float
    n_inputs: int
    n_failing: int
    failing: tuple[tuple[Any, ...], ...]

    @property
    def sufficient(self) -> bool:
        """Whether the edges reproduce every output."""
        return self.n_failing == 0


#: How many failing inputs a `Check` lists.
SHOWN_FAILING = 5


def check(model: Any, edges: Iterable[str] | Circuit, ablation: str = "resample", *,
          exhaustive: bool | None = None, samples: int = 10_000, seed: int = 0) -> Check:
    """Run ``model`` with only ``edges`` (names, per position with ``@p`` or not, or a
    `Circuit`) over the domain, every other edge ablated by ``ablation``."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {', '.join(map(repr, ABLATIONS))}, "
                         f"got {ablation!r}")
    g = graph(model)
    names = list(edges.edges if isinstance(edges, Circuit) else edges)
    positional = any("@" in n for n in names)
    full = g.per_position() if positional else g
    unknown = [n for n in names if n not in full]
    if unknown:
        raise ValueError(f"{len(unknown)} edges are not in the model's graph, e.g. "
                         f"{unknown[0]!r}; edges are named like {full.edges[0].name!r}")
    keep = set(names)
    lab = _Lab(model, g, ablation, exhaustive, samples, seed)
    cut = [e for e in full if e.structural and e.name not in keep]
    failing, n_failing = [], 0
    vocab = {v: k for k, v in model.input_encoder.encoding_map.items()}
    for patcher, ids in lab.patchers():
        ok = lab.agree(patcher, cut)
        n_failing += int((~ok).sum())
        for row in np.flatnonzero(~ok)[: SHOWN_FAILING - len(failing)]:
            failing.append(tuple(vocab[int(i)] for i in ids[row, 1:]))
    n = lab.inputs.count
    return Check((n - n_failing) / n if n else 1.0, n, n_failing, tuple(failing))


def faithfulness(model: Any, edges: Iterable[str] | Circuit, ablation: str = "resample",
                 **domain: Any) -> float:
    """The share of the domain's inputs on which ``model`` with only ``edges`` (every
    other edge ablated) gives the program's output; see `check`."""
    return check(model, edges, ablation, **domain).faithfulness


class _Lab:
    """The patchers of every chunk of the domain, made once, with the two questions the
    ground truth asks of them."""

    def __init__(self, model: Any, g: ComponentGraph, ablation: str,
                 exhaustive: bool | None, samples: int, seed: int):
        self.model, self.ablation, self.seed = model, ablation, seed
        self.weights = Weights(model, g)
        self.inputs: Inputs = domain_inputs(model, exhaustive, samples, seed)
        self._made: list[tuple[Patcher, Reference, np.ndarray]] | None = None

    def _make(self) -> list[tuple[Patcher, Reference, np.ndarray]]:
        if self._made is not None:
            return self._made
        made = []
        visible = None
        for n, ids in self.inputs.groups.items():
            if self.weights.cfg.causal:
                visible = np.tril(np.ones((ids.shape[1],) * 2, bool))
            step = _chunk(self.weights, ids.shape[1])
            starts = range(0, len(ids), step)
            # one unablated run per chunk: the mean and the resampled outputs are read
            # off the same runs (every input's outputs, whichever chunk it is in)
            patterns: list[dict[str, np.ndarray]] = [{} for _ in starts]
            clean = [self.weights.forward(ids[at:at + step], visible, kept)
                     for at, kept in zip(starts, patterns)]
            mean = corrupt = None
            if self.ablation == "mean":
                mean = self._means(clean, len(ids))
            if self.ablation == "resample":
                corrupt = np.random.default_rng([self.seed, n]).permutation(len(ids))
            for j, at in enumerate(starts):
                rows = slice(at, at + step)
                outs = None if corrupt is None else _gather(clean, corrupt[rows], step)
                p = Patcher(self.weights, ids[rows], self.ablation, mean=mean,
                            clean=clean[j], corrupt_outs=outs, patterns=patterns[j])
                made.append((p, Reference.of(self.model, p.clean_logits), ids[rows]))
        self._made = made
        return made

    @staticmethod
    def _means(clean: list[tuple[dict[str, np.ndarray], Any, Any]], count: int,
               ) -> dict[str, np.ndarray]:
        """Each component's mean output over the unablated runs ``clean`` of all
        ``count`` inputs of one length."""
        total: dict[str, np.ndarray] = {}
        for outs, _, _ in clean:
            for k, v in outs.items():
                total[k] = total.get(k, 0) + v.sum(axis=0, keepdims=True)
        return {k: v / count for k, v in total.items()}

    def patchers(self) -> list[tuple[Patcher, np.ndarray]]:
        """Each chunk's patcher and embedding ids."""
        return [(p, ids) for p, _, ids in self._make()]

    def agree(self, patcher: Patcher, edges: list[Edge]) -> np.ndarray:
        """``[B]``: which inputs of the chunk keep their output with ``edges`` ablated."""
        ref = next(r for p, r, _ in self._make() if p is patcher)
        ok = np.ones(patcher.B, bool)
        got = patcher.run_rows(_grouped(edges))
        if got is not None:
            ok[got[0]] = ref.agrees(got[1], got[0])
        return ok

    def changes(self, edges: list[Edge]) -> bool:
        """Whether ablating ``edges`` changes some output."""
        ablated = _grouped(edges)
        for p, ref, _ in self._make():
            got = p.run_rows(ablated)
            if got is not None and not ref.agrees(got[1], got[0]).all():
                return True
        return False

    def reproduces(self, cut: list[Edge]) -> bool:
        """Whether every output survives with ``cut`` ablated."""
        return not cut or not self.changes(cut)


def _grouped(edges: Iterable[Edge]) -> dict[tuple[str, str | None], list]:
    """Edges as `rasplang.circuits.patching.Patcher.run` takes them."""
    out: dict[tuple[str, str | None], list] = {}
    for e in edges:
        out.setdefault((e.receiver, e.kind), []).append((e.sender, e.position))
    return out


def _gather(clean: list[tuple[dict[str, np.ndarray], Any, Any]], order: np.ndarray,
            step: int) -> dict[str, np.ndarray]:
    """Each component's outputs on the inputs ``order`` (indices into the inputs of one
    length, run in chunks of ``step``), read off the chunks' unablated runs ``clean``."""
    if len(clean) == 1:
        return {k: v[order] for k, v in clean[0][0].items()}
    chunk, at = np.divmod(order, step)
    out = {}
    for k, first in clean[0][0].items():
        a = np.empty((len(order), *first.shape[1:]), first.dtype)
        for j, (outs, _, _) in enumerate(clean):
            here = chunk == j
            a[here] = outs[k][at[here]]
        out[k] = a
    return out


#: Memory one chunk's kept activations may take.
CHUNK_BYTES = 1 << 29


def _chunk(weights: Weights, n_pos: int) -> int:
    """Inputs per chunk: the float64 ``[B, T, d_model]`` arrays a patcher keeps (each
    component's output and ablated value, the residual before each sublayer) and each
    head's ``[B, T, T]`` attention pattern under `CHUNK_BYTES`."""
    cfg = weights.cfg
    arrays = 2 * (1 + cfg.n_layers * (cfg.n_heads + 1)) + 2 * cfg.n_layers + 1
    per_input = n_pos * 8 * (cfg.d_model * arrays + n_pos * cfg.n_layers * cfg.n_heads)
    return max(1, CHUNK_BYTES // per_input)
