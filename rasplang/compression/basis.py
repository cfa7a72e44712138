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

A norm reads the residual's coordinates: RMSNorm with one gain for every coordinate (as
the compiler builds it) is invariant under a rotation (``|x Q| = |x|``) and kept;
LayerNorm subtracts the mean of the coordinates, which a rotation does not keep, and is
refused.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from rasplang.backend.model import CompiledModel

#: Largest ``|Q^T Q - I|`` `rotation_matrix` accepts (float64: a few ulps times D).
ORTHOGONALITY_TOLERANCE = 1e-12
#: The float64_only reason of a rotated model not checked in float32.
FLOAT32_UNCHECKED = ("rotated residual basis: float32 rounding is not bounded after a "
                     "rotation; rotate(..., float32=True) verifies it on every input")

_WRITES = ("attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out")   # [..., D] -> [..., D] W
_READS = ("attn.W_Q", "attn.W_K", "attn.W_V")                   # [H, D, E] -> W^T per head


@attrs.define(eq=False)
class CompressedModel(CompiledModel):
    """A compiled model whose residual stream was compressed (`rasplang.compress`).

    It runs, verifies, saves and exports like any `CompiledModel` (``config.basis`` says
    how it was made; its ``residual_labels`` are ``compressed:0`` ...). In memory it also
    keeps ``projection``, the learned ``W [D, d]`` (row ``i`` is where feature ``i``
    writes), ``features``, the ``D`` residual labels of the model it was compressed from,
    ``history``, the training loss every `rasplang.compression.train.LOG_EVERY` steps, and
    ``seconds``, how long training took. A saved file holds the
    folded weights only: `rasplang.load` gives a `CompiledModel` that computes the same.
    """

    projection: Any = None
    features: tuple[str, ...] = ()
    history: tuple[float, ...] = ()
    seconds: float = 0.0

    def overlaps(self) -> np.ndarray:
        """``W W^T [D, D]``: entry ``(i, j)`` is how much reading feature ``i`` picks up
        of feature ``j`` (1 on the diagonal and 0 elsewhere without superposition); the
        tracr paper's figure of which features share directions."""
        w = np.asarray(self.projection, dtype=np.float64)
        return w @ w.T


def rotation_matrix(n: int, seed: int) -> np.ndarray:
    """A random orthogonal ``[n, n]`` float64 matrix, the same for the same ``(n, seed)``:
    the Q of the QR decomposition of a standard normal matrix, with R's diagonal made
    positive (Haar-distributed; Mezzadri 2007)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"rotate takes an integer seed, got {seed!r}")
    g = np.random.default_rng(int(seed)).standard_normal((n, n))
    q, r = np.linalg.qr(g)
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    err = float(np.abs(q.T @ q - np.eye(n)).max(initial=0.0))
    if err > ORTHOGONALITY_TOLERANCE:  # never seen; a broken LAPACK would show here
        raise ArithmeticError(f"rotation for seed {seed} is not orthogonal: |Q^T Q - I| = "
                              f"{err:.3g}")
    return q


def check_foldable(model: CompiledModel, what: str, rotation: bool) -> None:
    """A ValueError for a model whose norm a change of basis would not keep."""
    cfg = model.config
    if cfg.normalization_type == "LN":
        raise ValueError(f"cannot {what} a model with LayerNorm: LayerNorm subtracts the mean "
                         "of the residual coordinates, which a change of basis does not keep; "
                         "compile with norm=None or norm='rmsnorm'" if rotation else
                         f"cannot {what} a model with LayerNorm; compile with norm=None")
    if cfg.normalization_type == "RMS":
        if not rotation:
            raise ValueError(f"cannot {what} a model with RMSNorm (the norm reads the "
                             "residual's length, which compression changes); compile with "
                             "norm=None")
        for name, w in model.weights.items():
            if name.endswith(".w") and np.any(w != w.flat[0]):
                raise ValueError(f"cannot {what} a model whose RMSNorm gains differ between "
                                 f"coordinates ({name}): only one gain for every coordinate "
                                 "is invariant under a rotation")


def fold(model: CompiledModel, w: np.ndarray, basis: str, prefix: str,
         cls: type = CompiledModel, **extra: Any) -> CompiledModel:
    """``model`` with the residual ``h = x w`` (``w [D, d]``, see the module docstring),
    ``config.basis`` extended with ``basis``, residual labels ``prefix:i``, every circuit
    step that touched the stream now touching all ``d`` dimensions; a new model of class
    ``cls`` (with ``extra`` fields), its caches empty."""
    cfg = model.config
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != cfg.d_model:
        raise ValueError(f"basis matrix has shape {w.shape}, expected ({cfg.d_model}, d)")
    d = w.shape[1]
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
            x = np.full(d, x.flat[0]) if name.endswith(".w") else np.zeros(d)
        out[name] = np.ascontiguousarray(x.astype(dtype))
    every = tuple(range(d))
    circuit = {label: tuple(attrs.evolve(s, reads=every if s.reads else (),
                                         writes=every if s.writes else ())
                            for s in steps)
               for label, steps in model.circuit.items()}
    history = f"{cfg.basis}, {basis}" if getattr(cfg, "basis", "") else basis
    config = attrs.evolve(cfg, d_model=d, basis=history)
    labels = [f"{prefix}:{i}" for i in range(d)]
    return cls(config, out, labels, model.input_encoder, model.output_encoder, circuit,
               model.program, **extra)


def rotate(model: CompiledModel, seed: int = 0, *, float32: bool = False) -> CompiledModel:
    """``model`` in a random orthonormal residual basis (`rotation_matrix` of ``seed``):
    every weight folded with ``Q`` (module docstring), so that no residual direction is a
    feature; the same outputs in float64. ``config.basis`` records ``rotate(seed=...)``.

    float32 is refused on the result (``config.float64_only``) unless ``float32=True``,
    which verifies the rotated model in float32 on every input of its domain (it needs
    ``model.program`` and a domain of at most ``rasplang.verify``'s exhaustive limit) and
    raises ValueError when it is not exact there. A `CompressedModel` stays one, its
    ``projection`` rotated too. Raises ValueError for a LayerNorm model.
    """
    check_foldable(model, "rotate", rotation=True)
    q = rotation_matrix(model.config.d_model, seed)
    extra = {}
    if isinstance(model, CompressedModel):
        extra = {"projection": np.asarray(model.projection) @ q, "features": model.features,
                 "history": model.history, "seconds": model.seconds}
    rotated = fold(model, q, f"rotate(seed={int(seed)})", "rotated", type(model), **extra)
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
