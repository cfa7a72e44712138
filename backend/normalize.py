"""Exact LayerNorm and RMSNorm: a compiled model rewritten so that a norm changes nothing.

A normalisation layer computes, per position, over the ``d`` residual coordinates

    LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps) * w + b,   var(x) = |x - mean(x)|^2 / d
    RMSNorm(x)   = x / sqrt(|x|^2 / d + eps) * w.

The compiled model's readers (queries, keys, values, MLP inputs, the unembedding) expect
the raw residual ``x``. Two facts make the norm the identity on every residual the model
can produce, so the readers keep their weights:

Mean zero (LayerNorm only). One extra direction, ``norm:balance``, balances every write:
each row of ``W_E`` and ``W_pos``, each head's ``W_O`` and ``b_O``, each MLP's ``W_out``
and ``b_out`` gets the negated sum of its other entries in the balance column. Every
write then sums to zero, so the residual of every position sums to exactly zero and
``mean(x) = 0``. No reader reads the balance direction. (RMSNorm does not centre, and
needs no extra direction.)

Known norm. The analysis bounds every residual coordinate at a real position or at BOS
(a categorical SOp is a one-hot or zero, a numerical one holds one of its values over
its scale, plus their error bounds), so ``|x|^2 <= S`` with ``S`` the sum over SOps of
their largest square norm plus the square of the balance, at most the square of the
sum of every SOp's largest coordinate sum. The compiler takes ``eps = 4^k`` with
``eps >= 2^56 S / d`` and the gains ``w = sqrt(eps) = 2^k`` (``b = 0``). ``eps`` plays the
role of an anchor direction of constant magnitude ``sqrt(d eps)`` that costs no
dimension: the norm's factor is

    sqrt(eps) / sqrt(|x|^2 / d + eps) = (1 + |x|^2 / (d eps))^(-1/2) in [1 - 2^-57, 1],

below float64's resolution, so the norm returns ``x`` to within ``2^-57 |x_i|`` per
coordinate, and in floating point ``var + eps`` rounds to ``eps``, whose square root
``2^k`` and every multiplication by it are exact. (A real anchor coordinate of magnitude
``A`` would need ``A^2`` far above ``S`` and put its rounding, ``A`` times the machine
epsilon, into the mean and so into every coordinate; ``eps`` has no such rounding.)

Rounding. What is left is the float rounding of LayerNorm's mean, which every
coordinate a reader sees carries. When every coordinate is an integer (one-hots,
counts, integer numerical values, all far below ``2^24``), the sum is exact, but for
the coordinates' error bounds ``e`` (each moves a float sum by at most ``e``, and the
balance as much again): the mean is off by at most ``2 sum e / d``. Whatever the
coordinates, recursive summation is off by at most ``(d - 1) u sum|x_i|`` (``u`` the
unit roundoff), so the mean by at most ``2 u A_1``; the smaller bound holds.
The chambers budget `numerical_mlp.ROUNDING` (float64) and `numerical_mlp.ROUNDING32`
(float32) per coordinate for rounding; the compiler accepts the norm in a dtype when
this error is within a quarter of that budget (`rounding_problem`), records why a model
is exact in float64 only otherwise (``ModelConfig.float64_only``), and refuses the
norm, naming the SOp with the largest such values, when even float64 does not hold.

Placement. Since the norm is the identity on these residuals, the same weights are exact
with the norm before each sublayer (pre-norm: ``ln1``, ``ln2``, ``ln_final``, as GPT-2
and TransformerLens place it) and after each residual addition (post-norm: ``embed.ln``,
``ln1`` after attention, ``ln2`` after the MLP, as BERT places it). The compiler uses
pre-norm for causal models (the GPT-2 export) and post-norm otherwise (the BERT export);
`rasplang.backend.forward` runs both.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

from rasplang.backend.chambers.numerical_mlp import ROUNDING, ROUNDING32
from rasplang.backend.model import CompiledModel
from rasplang.backend.spaces import SOpSpace

#: ``norm=`` values `rasplang.compile` takes, and ModelConfig's normalization_type for each.
NORMS = {None: None, "layernorm": "LN", "rmsnorm": "RMS"}
#: ``activation=`` values, and ModelConfig's act_fn (TransformerLens's names).
ACTIVATIONS = {"relu": "relu", "gelu": "gelu_new"}
#: The direction that balances every write (LayerNorm).
BALANCE = "norm:balance"
#: ``eps >= 2^EPS_BITS * S / d``: the norm's factor is within 2^-(EPS_BITS+1) of 1.
EPS_BITS = 56
#: float32's largest power of 4 below its range: a larger eps makes a model float64-only.
EPS_MAX32 = 4.0 ** 62


def norm_shapes(cfg: Any) -> dict[str, tuple[int, ...]]:
    """The norm weights of a model with config ``cfg`` (TransformerLens names): ``w``
    (and ``b`` for LayerNorm) of ``blocks.{i}.ln1``, ``ln2``, and ``ln_final`` (pre-norm)
    or ``embed.ln`` (post-norm)."""
    kind = getattr(cfg, "normalization_type", None)
    if kind is None:
        return {}
    names = [f"blocks.{i}.{n}" for i in range(cfg.n_layers) for n in ("ln1", "ln2")]
    names.append("ln_final" if cfg.norm_position == "pre" else "embed.ln")
    parts = ("w", "b") if kind == "LN" else ("w",)
    return {f"{n}.{p}": (cfg.d_model,) for n in names for p in parts}


def space_bounds(space: SOpSpace) -> tuple[float, float, float]:
    """``(largest |enc|^2, largest sum |enc_i|, deviation)`` of ``space`` at any
    position, with its error bound added to every coordinate; ``deviation`` is the sum of
    its error bounds when its coordinates are integers, and inf when they need not be."""
    e = space.error
    n = len(space.directions)
    if space.numerical:
        coords = [float(v) / (space.scale or 1.0) for v in space.values if v is not None]
        mags = [abs(c) for c in coords]
        top = max([0.0, *mags, *np.abs(space.bos[:1]).tolist()]) + e
        flag = (1.0 + e) if space.nullable else 0.0
        integral = all(c.is_integer() for c in [*coords, *space.bos.tolist()])
        return top * top + flag * flag, top + flag, n * e if integral else math.inf
    top = 1.0 + n * e  # a one-hot, every coordinate off by e
    bos = float(np.abs(space.bos).sum())
    return max(top * top, float(space.bos @ space.bos)), max(top, bos), n * e


@attrs.frozen
class ResidualBound:
    """What the analysis bounds about every residual: ``norm_sq`` (of ``|x|^2``, the
    balance included), ``a1`` (``sum |x_i|`` without it), ``deviation`` (the sum of the
    coordinates' error bounds, inf when some coordinate need not be an integer) and
    ``widest`` (the label of the SOp with the largest non-integer values, or "")."""

    norm_sq: float
    a1: float
    deviation: float
    widest: str

    def mean_error(self, unit_roundoff: float, d_model: int) -> float:
        """How far LayerNorm's computed mean over ``d_model`` coordinates may be from 0
        (the module docstring)."""
        return min(2 * unit_roundoff * self.a1, 2 * self.deviation / d_model)


def residual_bound(spaces: list[SOpSpace], extra: int) -> ResidualBound:
    """The `ResidualBound` over ``spaces`` (each counted once) and ``extra`` directions of
    magnitude 1 (``one``, BOS)."""
    sq = a1 = float(extra)
    deviation, widest, top = 0.0, "", 0.0
    seen: set[int] = set()
    for space in spaces:
        if id(space) in seen:
            continue
        seen.add(id(space))
        s, a, f = space_bounds(space)
        sq += s
        a1 += a
        deviation += f
        if math.isinf(f) and a > top:
            widest, top = space.label, a
    return ResidualBound(sq + a1 * a1, a1, deviation, widest)


def choose_eps(bound_sq: float, d_model: int) -> float:
    """``eps = 4^k >= 2^EPS_BITS * bound_sq / d_model`` (a power of 4: exact square root)."""
    need = max(1.0, 2.0 ** EPS_BITS * bound_sq / d_model)
    return 4.0 ** math.ceil(math.log(need, 4))


def rounding_problem(bound: ResidualBound, d_model: int, dtype_bits: int) -> str | None:
    """Why LayerNorm's mean over ``d_model`` coordinates may round beyond the chambers'
    rounding budget in a dtype of ``dtype_bits`` mantissa bits (53 or 24); None when it
    fits."""
    budget = ROUNDING if dtype_bits == 53 else ROUNDING32
    error = bound.mean_error(2.0 ** -dtype_bits, d_model)
    if error <= budget / 4:
        return None
    why = (f"non-integer values such as {bound.widest!r}'s, in a residual whose "
           f"coordinates sum to up to {bound.a1:.3g}" if bound.widest else
           "its coordinates' error bounds")
    return (f"LayerNorm's mean may be off by {error:.3g} per coordinate ({why}), more "
            f"than a quarter of the {budget:.3g} the discretisations allow for rounding")


def balanced(model: CompiledModel) -> tuple[dict[str, np.ndarray], list[str], dict]:
    """Weights, residual labels and circuit with the balance direction appended: every
    write's negated sum in its column, no reader reading it."""
    w = model.weights
    out: dict[str, np.ndarray] = {}
    d = model.config.d_model

    def writer(a: np.ndarray) -> np.ndarray:      # [..., d] -> [..., d + 1]
        return np.concatenate([a, -a.sum(axis=-1, keepdims=True)], axis=-1)

    def reader(a: np.ndarray, axis: int) -> np.ndarray:
        pad = [(0, 0)] * a.ndim
        pad[axis] = (0, 1)
        return np.pad(a, pad)

    for name, a in w.items():
        part = name.rsplit(".", 1)[-1]
        if part in ("W_E", "W_pos", "W_O", "b_O", "W_out", "b_out"):
            out[name] = writer(a)
        elif part in ("W_Q", "W_K", "W_V"):
            out[name] = reader(a, 1)                  # [H, d + 1, E]
        elif part in ("W_in", "W_U"):
            out[name] = reader(a, 0)                  # [d + 1, m]
        else:
            out[name] = a
    circuit = {label: tuple(attrs.evolve(s, writes=(*s.writes, d)) if s.writes else s
                            for s in steps) for label, steps in model.circuit.items()}
    return out, [*model.residual_labels, BALANCE], circuit


def normalized(model: CompiledModel, norm: str, spaces: list[SOpSpace], extra: int,
               ) -> tuple[CompiledModel, str | None]:
    """``model`` with ``norm`` ("layernorm" or "rmsnorm") placed pre-norm when the model is
    causal and post-norm otherwise, and why float32 is not exact (None when it is);
    a ValueError when float64 is not exact either."""
    kind = NORMS[norm]
    if kind == "LN":
        weights, labels, circuit = balanced(model)
    else:
        weights, labels, circuit = dict(model.weights), list(model.residual_labels), \
            dict(model.circuit)
    d = len(labels)
    bound = residual_bound(spaces, extra)
    bound_sq = bound.norm_sq - (bound.a1 ** 2 if kind == "RMS" else 0.0)  # no balance
    eps = choose_eps(bound_sq, d)
    why32 = None
    if kind == "LN":
        if (problem := rounding_problem(bound, d, 53)) is not None:
            raise ValueError(problem)
        why32 = rounding_problem(bound, d, 24)
    if eps > EPS_MAX32:
        why32 = f"the norm's eps {eps:.3g} is past float32's range"
    cfg = attrs.evolve(model.config, d_model=d, normalization_type=kind, eps=eps,
                       norm_position="pre" if model.config.causal else "post")
    gain = math.sqrt(eps)
    for name, shape in norm_shapes(cfg).items():
        weights[name] = np.full(shape, gain if name.endswith(".w") else 0.0)
    return (CompiledModel(cfg, weights, labels, model.input_encoder, model.output_encoder,
                          circuit, model.program), why32)
