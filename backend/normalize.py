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

Rounding. What is left is the float rounding of LayerNorm's mean: ``fl(sum x)`` is off
by at most ``(d - 1) u sum|x_i|`` (``u`` the unit roundoff), so the computed mean
``m`` by up to ``2 u A_1`` (``A_1`` bounds ``sum |x_i|`` without the balance, which holds
as much again), and LayerNorm subtracts ``m`` from every coordinate. A second extra
direction, ``norm:zero``, takes that out: nothing writes it, so the norm turns it into
exactly ``-m`` (``0 - m`` and multiplying by powers of 2 are exact), and every reader
(each column of ``W_Q``, ``W_K``, ``W_V``, ``W_in``, ``W_U``) reads it with the negated
sum of its other weights: ``sum_r w_r (x_r - m) + (-sum_r w_r)(-m) = sum_r w_r x_r``.
The mean's error cancels exactly; what remains is the rounding of ``x_r - m``, one unit
roundoff of ``|x_r| + |m|`` per norm a coordinate passes.

A reader sees the residual through one norm before a sublayer (pre-norm); after each
residual addition (post-norm) the norm's output is the residual, and a coordinate
carries the rounding of every norm it has passed, at most ``2 L + 2`` (the embedding's
norm, two per layer, and the output head's in the BERT export). The chambers budget
`numerical_mlp.ROUNDING` (float64, about 10^5 ulps) and `numerical_mlp.ROUNDING32`
(float32, 16 ulps) of every coordinate's largest value for float rounding; the norms may
take half of it (`rounding_problem`): always for pre-norm, and in float32 for post-norm
up to 3 layers. Otherwise the model (or its BERT export) records why it is exact in
float64 only (``ModelConfig.float64_only``). This assumes a correctly rounded square
root, which IEEE 754 requires and numpy and torch use.

Placement. Since the norm is the identity on these residuals, the same weights are exact
with the norm before each sublayer (pre-norm: ``ln1``, ``ln2``, ``ln_final``, as GPT-2
and TransformerLens place it) and after each residual addition (post-norm: ``embed.ln``,
``ln1`` after attention, ``ln2`` after the MLP, as BERT places it), with the rounding
above. The compiler builds pre-norm models (``norm_position="pre"``); the BERT export
(`rasplang.backend.hf`) runs the same weights post-norm, and `rasplang.backend.forward`
runs both.
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
#: The direction nothing writes, which readers subtract (LayerNorm's rounded mean).
ZERO = "norm:zero"
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


def space_bounds(space: SOpSpace) -> tuple[float, float]:
    """``(largest |enc|^2, largest sum |enc_i|)`` of ``space`` at any position, with its
    error bound added to every coordinate."""
    e = space.error
    n = len(space.directions)
    if space.numerical:
        mags = [abs(float(v)) / (space.scale or 1.0) for v in space.values if v is not None]
        top = max([0.0, *mags, *np.abs(space.bos[:1]).tolist()]) + e
        flag = (1.0 + e) if space.nullable else 0.0
        return top * top + flag * flag, top + flag
    top = 1.0 + n * e  # a one-hot, every coordinate off by e
    bos = float(np.abs(space.bos).sum())
    return max(top * top, float(space.bos @ space.bos)), max(top, bos)


@attrs.frozen
class ResidualBound:
    """What the analysis bounds about every residual: ``norm_sq`` (of ``|x|^2``, the
    balance included), ``a1`` (``sum |x_i|`` without it) and ``widest`` (the label of
    the SOp with the largest coordinate sum)."""

    norm_sq: float
    a1: float
    widest: str


def residual_bound(spaces: list[SOpSpace], extra: int) -> ResidualBound:
    """The `ResidualBound` over ``spaces`` (each counted once) and ``extra`` directions of
    magnitude 1 (``one``, BOS)."""
    sq = a1 = float(extra)
    widest, top = "", 0.0
    seen: set[int] = set()
    for space in spaces:
        if id(space) in seen:
            continue
        seen.add(id(space))
        s, a = space_bounds(space)
        sq += s
        a1 += a
        if a > top:
            widest, top = space.label, a
    return ResidualBound(sq + a1 * a1, a1, widest)


def choose_eps(bound_sq: float, d_model: int) -> float:
    """``eps = 4^k >= 2^EPS_BITS * bound_sq / d_model`` (a power of 4: exact square root)."""
    need = max(1.0, 2.0 ** EPS_BITS * bound_sq / d_model)
    return 4.0 ** math.ceil(math.log(need, 4))


def rounding_problem(norms: int, a1: float, dtype_bits: int) -> str | None:
    """Why a coordinate that passes ``norms`` LayerNorms may round beyond half of the
    chambers' rounding budget in a dtype of ``dtype_bits`` mantissa bits (53 or 24), in a
    residual whose coordinates sum to up to ``a1``; None when it fits (the module
    docstring: each norm rounds ``x_r - m`` once, and ``|m| <= 2 u a1``)."""
    budget = ROUNDING if dtype_bits == 53 else ROUNDING32
    u = 2.0 ** -dtype_bits
    error = norms * u * (1 + 2 * u * a1)
    if error <= budget / 2:
        return None
    return (f"a coordinate passes up to {norms} LayerNorms, each rounding it by up to "
            f"{u * (1 + 2 * u * a1):.3g} of max(1, its value): {error:.3g}, more than half "
            f"of the {budget:.3g} the discretisations allow for float rounding")


def post_norm_count(n_layers: int) -> int:
    """The norms a coordinate passes in the post-norm (BERT) form: the embedding's, two per
    layer, and the output head's."""
    return 2 * n_layers + 2


def balanced(model: CompiledModel) -> tuple[dict[str, np.ndarray], list[str], dict]:
    """Weights, residual labels and circuit with the balance and zero directions
    appended: every write's negated sum in the balance column (nothing reads it), and in
    every reader's zero row the negated sum of its column (nothing writes it)."""
    w = model.weights
    out: dict[str, np.ndarray] = {}
    d = model.config.d_model

    def writer(a: np.ndarray) -> np.ndarray:      # [..., d] -> [..., d + 2]
        return np.concatenate([a, -a.sum(axis=-1, keepdims=True), np.zeros_like(a[..., :1])],
                              axis=-1)

    def reader(a: np.ndarray, axis: int) -> np.ndarray:
        zero = -a.sum(axis=axis, keepdims=True)
        return np.concatenate([a, np.zeros_like(zero), zero], axis=axis)

    for name, a in w.items():
        part = name.rsplit(".", 1)[-1]
        if part in ("W_E", "W_pos", "W_O", "b_O", "W_out", "b_out"):
            out[name] = writer(a)
        elif part in ("W_Q", "W_K", "W_V"):
            out[name] = reader(a, 1)                  # [H, d + 2, E]
        elif part in ("W_in", "W_U"):
            out[name] = reader(a, 0)                  # [d + 2, m]
        else:
            out[name] = a

    def step(s: Any) -> Any:
        reads = (*s.reads, d + 1) if s.reads and s.sublayer != "embed" else s.reads
        return attrs.evolve(s, writes=(*s.writes, d) if s.writes else s.writes, reads=reads)

    circuit = {label: tuple(step(s) for s in steps) for label, steps in model.circuit.items()}
    return out, [*model.residual_labels, BALANCE, ZERO], circuit


def normalized(model: CompiledModel, norm: str, spaces: list[SOpSpace], extra: int,
               ) -> tuple[CompiledModel, str | None]:
    """``model`` with ``norm`` ("layernorm" or "rmsnorm"), pre-norm, and why float32 is
    not exact (None when it is); a ValueError when the norm cannot be made exact."""
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
        if (problem := rounding_problem(1, bound.a1, 53)) is not None:
            raise ValueError(f"{problem} (the largest values: {bound.widest!r})")
        why32 = rounding_problem(1, bound.a1, 24)
        why32 = why32 and f"{why32} (the largest values: {bound.widest!r})"
    if eps > EPS_MAX32:
        why32 = f"the norm's eps {eps:.3g} is past float32's range"
    cfg = attrs.evolve(model.config, d_model=d, normalization_type=kind, eps=eps,
                       norm_position="pre")
    gain = math.sqrt(eps)
    for name, shape in norm_shapes(cfg).items():
        weights[name] = np.full(shape, gain if name.endswith(".w") else 0.0)
    return (CompiledModel(cfg, weights, labels, model.input_encoder, model.output_encoder,
                          circuit, model.program), why32)
