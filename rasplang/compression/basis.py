"""A compiled model in another residual basis: one matrix ``W [D, d]`` folded into every
weight that writes to or reads from the residual stream (numpy only).

A transformer touches its residual stream ``x [D]`` (a row, as TransformerLens writes it)
only linearly: the embeddings and every sublayer *write* ``x += y V`` and every sublayer
and the unembedding *read* ``x R``. With ``h = x W`` the stream of the new model:

- writes ``V -> V W``: ``W_E``, ``W_pos`` rows, ``W_O``, ``b_O``, ``W_out``, ``b_out``;
- reads ``R -> W^T R``: ``W_Q``, ``W_K``, ``W_V``, ``W_in``, ``W_U`` (the biases of
  queries, keys, values, MLP units and logits are not in the stream and stay).

Each read then sees ``h W^T = x W W^T``. For an orthogonal ``W = Q`` (`rotate`,
``d = D``), ``Q Q^T = I``: every read is the original one, every sublayer computes what
it computed, and by induction over the sublayers ``h = x Q`` exactly, up to float
rounding (each folded weight and each product is one rounding of a sum of ``D`` terms,
``|Q Q^T - I|`` is about ``D`` float64 ulps, so a feature moves by about ``D u |x|_2``,
far below the margins the compiler keeps in float64; `rasplang.verify` checks it). For
``d < D`` (`rasplang.compress`) ``W W^T`` is not the identity: features share
directions (superposition) and each read picks up the others' interference, which the
training of ``W`` keeps below what each reader tolerates, and verify checks on every
input.

A norm reads the residual's coordinates. The compiler makes each norm the identity on
the residuals its model produces (`rasplang.backend.normalize`): ``eps`` far above
``|x|^2 / D`` and the gains ``sqrt(eps)``, so the norm's factor is 1 to within 2^-57;
for LayerNorm also every write summing to zero (the mean is 0) and every reader's
columns summing to zero (the ``norm:zero`` row: the rounded mean cancels). Both survive
a change of basis that keeps the all-ones vector: ``W 1_d = a 1_D``. A rotation of a
LayerNorm model fixes it (``Q 1 = 1``, `rotation_matrix` with ``keep_ones``; each
write ``y Q`` still sums to ``y 1 = 0`` and each reader ``Q^T R`` still has columns
summing to ``1^T R = 0``); a compression has ``W 1_d = 0`` (every row of ``W`` sums to
zero, so every write ``y W`` sums to zero and every reader's columns ``W^T R`` do too,
whatever ``y`` and ``R``). The norm's factor needs ``eps >= 2^56 |h|^2 / d``, with
``|h| <= s |x|`` for ``s`` the largest singular value of ``W``: `fold` multiplies
``eps`` by the power of 4 at or above ``s^2 D / d`` (1 for a rotation) and the gains by
its square root (a power of 2). A norm whose gains differ between coordinates, or a
LayerNorm with a bias, is refused.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

from rasplang.backend.model import CompiledModel

#: Largest ``|Q^T Q - I|`` `rotation_matrix` accepts (float64: a few ulps times D).
ORTHOGONALITY_TOLERANCE = 1e-12
#: Largest ``|W 1 - a 1|`` (relative to ``W``'s largest entry) `fold` takes as keeping the
#: all-ones vector (a LayerNorm model).
ONES_TOLERANCE = 1e-10
#: The float64_only reason of a rotated model not checked in float32.
FLOAT32_UNCHECKED = ("rotated residual basis: float32 rounding is not bounded after a "
                     "rotation; rotate(..., float32=True) verifies it on every input")
#: The float64_only reason of a compressed model (`rasplang.compress` trains and
#: checks its interference in float64).
FLOAT64_ONLY = ("compressed residual basis: its interference is trained and verified in "
                "float64")

_WRITES = ("attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out")   # [..., D] -> [..., D] W
_READS = ("attn.W_Q", "attn.W_K", "attn.W_V")                   # [H, D, E] -> W^T per head


@attrs.define(eq=False)
class BasisModel(CompiledModel):
    """A compiled model in another residual basis (`rotate`, `rasplang.compress`).

    It runs, verifies, saves and exports like any `CompiledModel` (``config.basis`` says
    how it was made; its ``residual_labels`` name dimensions, ``rotated:0`` ...). It
    keeps ``projection``, the matrix ``W [D, d]`` folded into its weights (row ``i`` is
    where feature ``i`` of the compiled model writes, and what a reader of it reads), and
    ``features``, the ``D`` residual labels of the compiled model; `save` writes both
    and `rasplang.load` reads them back.
    """

    projection: Any = None
    features: tuple[str, ...] = ()

    def overlaps(self) -> np.ndarray:
        """``W W^T [D, D]``: entry ``(i, j)`` is how much reading feature ``i`` picks up
        of feature ``j`` (1 on the diagonal and 0 elsewhere without superposition); the
        tracr paper's figure of which features share directions."""
        w = np.asarray(self.projection, dtype=np.float64)
        return w @ w.T

    def reader(self, coefficients: dict[str, float]) -> np.ndarray:
        """The vector ``r [d]`` with ``h r = sum_f c_f x_f`` on the stream ``h = x W``:
        how this model reads a combination of the compiled model's features (a
        `KeyError` for a label that is not one of ``features``)."""
        index = {label: i for i, label in enumerate(self.features)}
        w = np.asarray(self.projection, dtype=np.float64)
        out = np.zeros(self.config.d_model)
        for label, c in coefficients.items():
            out += c * w[index[label]]
        return out


@attrs.define(eq=False)
class CompressedModel(BasisModel):
    """A compiled model whose residual stream was compressed (`rasplang.compress`): a
    `BasisModel` whose ``projection`` is the learned ``W [D, d]``, its
    ``residual_labels`` ``compressed:0`` ...; also ``history``, the training loss every
    `rasplang.compression.train.LOG_EVERY` steps, and ``seconds``, how long training
    took (both saved too)."""

    history: tuple[float, ...] = ()
    seconds: float = 0.0


def rotation_matrix(n: int, seed: int, *, keep_ones: bool = False) -> np.ndarray:
    """A random orthogonal ``[n, n]`` float64 matrix, the same for the same ``(n, seed)``:
    the Q of the QR decomposition of a standard normal matrix, with R's diagonal made
    positive (Haar-distributed; Mezzadri 2007). With ``keep_ones`` it fixes the all-ones
    vector (``Q 1 = 1``, for a LayerNorm model): a Haar rotation of the hyperplane
    orthogonal to it."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"rotate takes an integer seed, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    m = n - 1 if keep_ones else n
    g = rng.standard_normal((m, m))
    q, r = np.linalg.qr(g)
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    if keep_ones:
        # An orthonormal basis whose first vector is 1 / sqrt(n) (a Householder
        # reflection of e_1 onto it), the rotation on the others.
        h = _ones_basis(n)
        block = np.eye(n)
        block[1:, 1:] = q
        q = h @ block @ h.T
    err = float(np.abs(q.T @ q - np.eye(n)).max(initial=0.0))
    if err > ORTHOGONALITY_TOLERANCE:  # never seen; a broken LAPACK would show here
        raise ArithmeticError(f"rotation for seed {seed} is not orthogonal: |Q^T Q - I| = "
                              f"{err:.3g}")
    return q


def _ones_basis(n: int) -> np.ndarray:
    """An orthogonal ``[n, n]`` matrix whose first column is ``1 / sqrt(n)``: the
    Householder reflection that maps ``e_1`` to it."""
    v = np.full(n, -1.0 / np.sqrt(n))
    v[0] += 1.0
    norm = float(v @ v)
    if norm == 0.0:
        return np.eye(n)
    return np.eye(n) - 2.0 * np.outer(v, v) / norm


def check_foldable(model: CompiledModel, what: str) -> None:
    """A ValueError for a model whose norm a change of basis would not keep: gains that
    differ between coordinates, or a LayerNorm bias (module docstring)."""
    cfg = model.config
    if cfg.normalization_type is None:
        return
    for name, w in model.weights.items():
        if name.endswith(".w") and np.any(w != w.flat[0]):
            raise ValueError(f"cannot {what} a model whose norm gains differ between "
                             f"coordinates ({name}): only one gain for every coordinate "
                             "is kept by a change of basis")
        if name.endswith(".b") and np.any(w != 0):
            raise ValueError(f"cannot {what} a model whose LayerNorm has a bias ({name}): "
                             "a change of basis does not keep it")


def _norm_scale(model: CompiledModel, w: np.ndarray) -> float:
    """The power of 4 that ``eps`` is multiplied by for the basis ``w`` (module
    docstring), after checking that ``w`` keeps a LayerNorm model's all-ones vector."""
    cfg = model.config
    D, d = w.shape
    if cfg.normalization_type == "LN":
        ones = w.sum(axis=1)
        a = float(ones.mean())
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        if float(np.abs(ones - a).max(initial=0.0)) > ONES_TOLERANCE * scale * d:
            raise ValueError("a LayerNorm model's basis matrix must map the all-ones vector "
                             "to a multiple of it (W 1 = a 1): every row of W summing to "
                             "the same number; rotate() and compress() build such a W")
    factor = float(np.linalg.norm(w, 2)) ** 2 * D / d
    if factor <= 1.0 + 1e-9:   # a rotation: eps as it was
        return 1.0
    return 4.0 ** math.ceil(math.log(factor, 4) - 1e-12)


def fold(model: CompiledModel, w: np.ndarray, basis: str, prefix: str,
         cls: type = BasisModel, **extra: Any) -> CompiledModel:
    """``model`` with the residual ``h = x w`` (``w [D, d]``, see the module docstring),
    ``config.basis`` extended with ``basis``, residual labels ``prefix:i``, every circuit
    step that touched the stream now touching all ``d`` dimensions, a norm's ``eps`` and
    gains scaled for the new width; a new model of class ``cls`` (with ``extra``
    fields), its caches empty."""
    cfg = model.config
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != cfg.d_model:
        raise ValueError(f"basis matrix has shape {w.shape}, expected ({cfg.d_model}, d)")
    d = w.shape[1]
    scale = _norm_scale(model, w) if cfg.normalization_type is not None else 1.0
    out: dict[str, np.ndarray] = {}
    for name, a in model.weights.items():
        dtype = a.dtype
        x = a.astype(np.float64)
        short = name.split(".", 2)[-1] if name.startswith("blocks.") else name
        if name in ("embed.W_E", "pos_embed.W_pos") or short in _WRITES:
            x = x @ w                                          # (..., D) @ (D, d)
        elif short in _READS:
            x = np.einsum("Dd,hDe->hde", w, x)                 # (H, d, E) = W^T per head
        elif short == "mlp.W_in" or name == "unembed.W_U":
            x = w.T @ x                                        # (d, m) = W^T (D, m)
        elif name.endswith((".w", ".b")) and cfg.normalization_type is not None:
            x = (np.full(d, x.flat[0] * math.sqrt(scale)) if name.endswith(".w")
                 else np.zeros(d))
        out[name] = np.ascontiguousarray(x.astype(dtype))
    every = tuple(range(d))
    circuit = {label: tuple(attrs.evolve(s, reads=every if s.reads else (),
                                         writes=every if s.writes else ())
                            for s in steps)
               for label, steps in model.circuit.items()}
    history = f"{cfg.basis}, {basis}" if getattr(cfg, "basis", "") else basis
    config = attrs.evolve(cfg, d_model=d, basis=history, eps=cfg.eps * scale)
    labels = [f"{prefix}:{i}" for i in range(d)]
    if isinstance(model, BasisModel):   # the compiled features, through both changes
        projection, features = np.asarray(model.projection) @ w, model.features
    else:
        projection, features = w, tuple(model.residual_labels)
    extra = {"projection": projection, "features": features, **extra}
    return cls(config, out, labels, model.input_encoder, model.output_encoder, circuit,
               model.program, **extra)


def rotate(model: CompiledModel, seed: int = 0, *, float32: bool = False) -> CompiledModel:
    """``model`` in a random orthonormal residual basis (`rotation_matrix` of ``seed``;
    one that fixes the all-ones vector for a LayerNorm model): every weight folded with
    ``Q`` (module docstring), so that no residual direction is a feature; the same
    outputs in float64. ``config.basis`` records ``rotate(seed=...)``. The result is a
    `BasisModel` (a `CompressedModel` stays one), its ``projection`` the compiled
    features' directions (``Q``, or ``W Q``).

    float32 is refused on the result (``config.float64_only``) unless ``float32=True``,
    which verifies the rotated model in float32 on every input of its domain (it needs
    ``model.program`` and a domain of at most ``rasplang.verify``'s exhaustive limit) and
    raises ValueError when it is not exact there. Raises ValueError for a norm whose
    gains differ between coordinates.
    """
    check_foldable(model, "rotate")
    q = rotation_matrix(model.config.d_model, seed,
                        keep_ones=model.config.normalization_type == "LN")
    extra = {}
    if isinstance(model, CompressedModel):
        extra = {"history": model.history, "seconds": model.seconds}
    cls = type(model) if isinstance(model, BasisModel) else BasisModel
    rotated = fold(model, q, f"rotate(seed={int(seed)})", "rotated", cls, **extra)
    if not float32 or model.config.float64_only:
        if float32:
            raise ValueError(f"cannot rotate for float32: the model is exact in float64 only "
                             f"({model.config.float64_only})")
        return _with_config(rotated, float64_only=rotated.config.float64_only
                            or FLOAT32_UNCHECKED)
    _verify_float32(rotated)
    return rotated


def _verify_float32(model: CompiledModel) -> None:
    """A ValueError unless ``model`` is exact in float32 on every input of its domain."""
    from rasplang.verification import verify

    cfg = model.config
    if model.program is None:
        raise ValueError("rotate(..., float32=True) verifies the rotated model against its "
                         "program, and this model has none (a loaded model); rotate it "
                         "without float32=True and run it in float64")
    report = verify(model.program, cfg.vocab, cfg.max_seq_len, model=model, causal=cfg.causal,
                    exhaustive=True, dtype=np.float32, progress=False)
    if not report.ok:
        raise ValueError(f"the rotated model is not exact in float32: {report.n_mismatches} of "
                         f"{report.checked} inputs differ; run it in float64")


def _with_config(model: CompiledModel, **changes: Any) -> CompiledModel:
    """``model`` with its config changed (same weights and class, caches empty)."""
    return attrs.evolve(model, config=attrs.evolve(model.config, **changes), cache={})
