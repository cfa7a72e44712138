"""The size of a model before its weights are allocated, and the refusal past a limit.

Assembly pads every layer to the widest one (``n_heads``, ``d_head``, ``d_mlp``) and
stores dense float64 matrices, so a few wide nodes can make a model of many GiB from
small blocks. `model_size` computes the exact shapes `assemble` will allocate from the
scheduled blocks alone (the residual width from the SOp spaces, ``d_head`` from each
head's factors, as `BilinearMap.factor` and `factor_linear` choose them), and
charges every weight to the node whose directions or hidden units it spans, so a
refusal names the nodes that make the model big. `lower_bound` (and `build_bound`, per
build) bounds the size from below from the value sets alone, conversions, products and
layers included, so a hopeless program is refused before any block is built (blocks can
take gigabytes: a 10,045-value conversion's MLP is 1.5 GiB). `compile` refuses a model
over ``max_bytes`` with `ModelTooLarge` at both points, before allocating the weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from rasplang.analysis import Analysis, UnsupportedProgramError
from rasplang.backend.derived import Product, conversions
from rasplang.backend.fusion import Fusion
from rasplang.backend.spaces import ONE
from rasplang.nodes import (
    Aggregate,
    Encoding,
    Full,
    IndicesType,
    LengthType,
    LinearSequenceMap,
    Map,
    SelectorWidth,
    SequenceMap,
    SOp,
    TokensType,
)

if TYPE_CHECKING:
    from rasplang.backend.build import Built
    from rasplang.backend.schedule import Schedule

#: ``compile``'s default ``max_bytes``: 4 GiB of float64 weights (the forward pass needs
#: its activations on top of that).
DEFAULT_MAX_BYTES = 4 * 2**30
BYTES_PER_PARAMETER = 8  # float64, as compiled


class ModelTooLarge(UnsupportedProgramError):
    """The compiled model's weights would exceed ``max_bytes``.

    ``size`` is the `ModelSize` estimate; ``problems`` names the largest contributors.
    """

    def __init__(self, size: ModelSize, max_bytes: int):
        self.size = size
        self.max_bytes = max_bytes
        if size.exact:
            shape = (f"{size.parameters:,} parameters: {size.n_layers} layers, d_model "
                     f"{size.d_model:,}, d_mlp {size.d_mlp:,}, {size.n_heads} heads of "
                     f"{size.d_head:,} dimensions")
        else:
            shape = (f"at least {size.parameters:,} parameters: at least {size.n_layers} "
                     f"layers, d_model at least {size.d_model:,}, d_mlp at least "
                     f"{size.d_mlp:,}, d_head at least {size.d_head:,}")
        reason = (
            f"the model would need {'' if size.exact else 'at least '}{_gib(size.bytes)} of "
            f"float64 weights ({shape}), over max_bytes={max_bytes:,} ({_gib(max_bytes)}); "
            "compile with a larger max_bytes to build it anyway")
        culprits = [(label, f"{_gib(share)} of it: {what}")
                    for label, share, what in size.largest(3)]
        super().__init__(culprits)
        lines = "\n".join(f"  - {label}: {what}" for label, what in culprits)
        self.args = (f"{reason}. The largest parts:\n{lines}",)


@attrs.frozen
class ModelSize:
    """The shapes of the model `assemble` would build, and who takes the space."""

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    parameters: int
    #: label -> (parameters charged to the node, what it holds)
    shares: dict[str, tuple[int, str]]
    #: False for `lower_bound`'s estimate: the model has at least this many parameters
    exact: bool = True

    @property
    def bytes(self) -> int:
        """The weights' size in float64."""
        return self.parameters * BYTES_PER_PARAMETER

    def largest(self, k: int) -> list[tuple[str, int, str]]:
        """The ``k`` nodes charged the most bytes: ``(label, bytes, description)``."""
        ranked = sorted(self.shares.items(), key=lambda item: -item[1][0])[:k]
        return [(label, n * BYTES_PER_PARAMETER, what) for label, (n, what) in ranked]


def refuse_over(size: ModelSize, max_bytes: int) -> None:
    """Raise `ModelTooLarge` when ``size`` (exact or a lower bound) exceeds ``max_bytes``."""
    if size.bytes > max_bytes:
        raise ModelTooLarge(size, max_bytes)


def mlp_bound(label: str, rows: int, units: int) -> ModelSize:
    """A lower bound from one MLP block reading ``rows`` directions with ``units`` hidden
    units: the model's ``W_in`` and ``W_out`` hold at least ``rows x units`` each."""
    parameters = 2 * rows * units
    return ModelSize(1, rows, 1, 1, units, parameters,
                     {label: (parameters, f"an MLP of {units:,} hidden units reading "
                                          f"{rows:,} directions")}, exact=False)


def lower_bound(analysis: Analysis, optimize: bool = False) -> ModelSize:
    """A lower bound on the model's size from the value sets alone, before any block is
    built (quick: no table is built, no program function called).

    It counts the residual directions every SOp is sure to take (one per categorical
    value, one or two per numerical SOp), those of the SOps the build inserts (an
    `AsCategorical` conversion has one per value, a `Product` one per value tuple), the
    widest MLP one of them is sure to need (a categorical output computed by an MLP needs
    a unit per value but one, whichever layout the chamber picks; a conversion two per
    step, a Product one per tuple), padded into each of the layers the schedule cannot
    do without (`fusion.depth`: a conversion is an MLP before its reader), each with at
    least one head. With ``optimize`` it is the smaller of the bounds of the two models
    `compile` may return: one block per node, and the fused one, where the nodes fusion
    computes inside their readers (`rasplang.backend.fusion.choose`) take nothing."""
    plain = build_bound(analysis, Fusion())
    if not optimize:
        return plain
    from rasplang.backend.fusion import choose

    return min(plain, build_bound(analysis, choose(analysis)), key=lambda s: s.parameters)


def build_bound(analysis: Analysis, fusion: Fusion) -> ModelSize:
    """`lower_bound` for the model built with ``fusion``'s decisions (``Fusion()``: one
    block per node). Its `Product` SOps are counted only without virtual nodes (a head
    may read a virtual part's base instead)."""
    from rasplang.backend.chambers.numerical_mlp import step_units
    from rasplang.backend.fusion import depth

    n = analysis.max_seq_len
    dims: dict[str, int] = {"tokens": len(analysis.vocab) + 2, "indices": n}
    units: dict[str, int] = {}
    for node in analysis.nodes:
        if not isinstance(node, SOp) or isinstance(node, (TokensType, IndicesType, Full)) \
                or node in fusion.virtual:
            continue
        label, values = analysis.labels[node], analysis.value_sets[node]
        kept = sum(v is not None for v in values)
        if analysis.encodings[node] is Encoding.NUMERICAL:
            dims[label] = 1 + (kept < len(values))
        else:
            dims[label] = kept
            if isinstance(node, (Map, SequenceMap, LinearSequenceMap, SelectorWidth,
                                 LengthType)):
                units[label] = max(0, kept - 1)
    for sop in conversions(analysis, fusion):
        label = f"{analysis.labels[sop]}:categorical"
        raw = [v for v in analysis.value_sets[sop] if v is not None]
        dims[label] = len(raw)
        units[label] = step_units(raw)
    for label, size in (_products(analysis) if not fusion.virtual else {}).items():
        dims[label] = units[label] = size
    # a per-index table reads its fractions directly, as a direct table does
    n_layers = max(0, depth(analysis, attrs.evolve(
        fusion, direct=fusion.direct | fusion.lattice)) // 2 + 1)
    d_head = 1  # a table of constant blocks factors into as few columns as it has blocks
    d = sum(dims.values())
    d_mlp = max([1, *units.values()])
    d_out = _out_width(analysis)
    per_direction = len(analysis.vocab) + 2 + n + 1 + n_layers * (4 * d_head + 2) + d_out
    mlp_weights = n_layers * 2 * d_mlp * d
    parameters = d * per_direction + mlp_weights + n_layers * (3 * d_head + d_mlp) + d_out
    shares = {label: (k * per_direction, f"{k:,} residual dimensions")
              for label, k in dims.items()}
    widest = max(units, key=units.get, default=None)
    if widest is not None and n_layers:
        k, what = shares[widest]
        padded = f" (padded in each of {n_layers} layers)" if n_layers > 1 else ""
        shares[widest] = (k + mlp_weights, f"{what} and an MLP of at least {d_mlp:,} hidden "
                                           f"units{padded}")
    return ModelSize(n_layers, d, 1, d_head, d_mlp, parameters, shares, exact=False)


def _out_width(analysis: Analysis) -> int:
    """The unembedding's columns: the output's directions (`assemble`)."""
    program = analysis.program
    values = analysis.value_sets.get(program, ()) if isinstance(program, SOp) else ()
    kept = sum(v is not None for v in values)
    if isinstance(program, Full):
        return 1
    if analysis.encodings.get(program) is Encoding.NUMERICAL:
        return 1 + (kept < len(values))
    return kept


def _products(analysis: Analysis) -> dict[str, int]:
    """The `Product` SOps one block per node inserts for heads (``|`` and ``~`` of Selects
    on different SOps), by label, with their number of value tuples."""
    from rasplang.backend.chambers.selector import SelectorUnsupported, selector_terms
    from rasplang.backend.rules import _Sizes

    found: dict[tuple[int, ...], tuple[str, int]] = {}

    class Recording(_Sizes):
        def product(self, parts: tuple[SOp, ...]) -> SOp:
            label = "(" + ", ".join(analysis.labels[p] for p in parts) + ")"
            found.setdefault(tuple(map(id, parts)), (label, self.size(Product(parts))))
            return Product(parts)

    sizes = Recording(analysis)
    for node in analysis.nodes:
        if isinstance(node, (Aggregate, SelectorWidth)):
            try:
                selector_terms(node.selector, sizes)
            except SelectorUnsupported:  # refused by `rules.backend_problems`
                continue
    return dict(found.values())


def model_size(analysis: Analysis, built: Built, sched: Schedule) -> ModelSize:
    """The exact parameter count of ``assemble(analysis, built, sched, ...)``."""
    # the residual stream as `assemble.residual_space` lays it out, charged per node
    seen = {ONE, built.bos, *built.tokens.directions, *built.indices.directions}
    dims: dict[str, int] = {"tokens": len(built.tokens.directions) + 2,
                            "indices": len(built.indices.directions)}
    for b in built.blocks:
        new = [b.scratch] if b.scratch is not None else []
        if isinstance(b.node, SOp) and b.node in built.spaces:
            new += built.spaces[b.node].directions
        new = [x for x in dict.fromkeys(new) if x not in seen]
        seen.update(new)
        if new:
            dims[b.label] = dims.get(b.label, 0) + len(new)
    d = sum(dims.values())
    layers = sched.layers
    n_layers = len(layers)
    heads = [b for layer in layers for b in layer.heads]
    n_heads = max([1, *(len(layer.heads) for layer in layers)])
    d_head = max([1, *(max(b.head.w_qk.factor()[0].shape[1], min(b.head.w_ov.matrix.shape))
                       for b in heads)])
    d_mlp = max([1, *(sum(b.mlp.hidden_dim for b in layer.mlps) for layer in layers)])
    n_vocab, n_ctx = len(built.tokens.values) + 2, analysis.max_seq_len + 1
    d_out = len(built.spaces[analysis.program].directions) if isinstance(
        analysis.program, SOp) else 1
    per_direction = n_vocab + n_ctx + n_layers * (4 * n_heads * d_head + 2) + d_out
    mlp_weights = n_layers * 2 * d_mlp * d  # W_in and W_out
    per_layer_rest = 3 * n_heads * d_head + d_mlp  # b_Q, b_K, b_V, b_in
    parameters = d * per_direction + mlp_weights + n_layers * per_layer_rest + d_out

    shares: dict[str, tuple[int, str]] = {}
    for label, n in dims.items():
        shares[label] = (n * per_direction, f"{n:,} residual dimensions")
    widest = max(layers, key=lambda layer: sum(b.mlp.hidden_dim for b in layer.mlps),
                 default=None)
    for b in widest.mlps if widest is not None else ():
        # the widest layer sets d_mlp, which every layer is padded to
        n, what = shares.get(b.label, (0, ""))
        extra = mlp_weights * b.mlp.hidden_dim // d_mlp
        what = f"{what} and " if what else ""
        shares[b.label] = (n + extra, f"{what}an MLP of {b.mlp.hidden_dim:,} hidden units "
                                      f"in the widest layer (d_mlp {d_mlp:,}, padded in "
                                      f"all {n_layers} layers)")
    return ModelSize(n_layers, d, n_heads, d_head, d_mlp, parameters, shares)


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**27 else f"{n / 2**20:.3g} MiB"
