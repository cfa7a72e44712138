"""The compiled model: config, TransformerLens-named weights, encoders and circuit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from rasplang.backend.encoders import InputEncoder, OutputEncoder
from rasplang.backend.forward import forward, trimmed


@attrs.frozen
class ModelConfig:
    """Shapes and conventions of a compiled model (TransformerLens names where they exist).

    ``n_layers`` counts attention+MLP pairs; ``n_ctx = max_seq_len + 1`` (BOS first);
    ``attn_scale = sqrt(d_head)`` divides the scores, as in TransformerLens.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    n_ctx: int
    d_vocab: int
    d_vocab_out: int
    causal: bool
    vocab: tuple[Any, ...]
    bos: Any
    pad: Any
    max_seq_len: int
    output_encoding: str  # "categorical" or "numerical"
    act_fn: str = "relu"
    normalization_type: None = None

    @property
    def attn_scale(self) -> float:
        """What attention scores are divided by."""
        return math.sqrt(self.d_head)

    @property
    def pad_id(self) -> int:
        """Embedding row of the PAD token (its keys are masked)."""
        return len(self.vocab) + 1


@attrs.frozen
class CircuitStep:
    """Where one program node is computed (or used, for selectors).

    ``sublayer`` is "embed", "attn" or "mlp"; ``head`` the head index for "attn";
    ``hidden`` the MLP hidden units for "mlp"; ``reads``/``writes`` residual dimensions.
    """

    layer: int | None
    sublayer: str
    head: int | None
    hidden: tuple[int, ...]
    reads: tuple[int, ...]
    writes: tuple[int, ...]


@attrs.frozen
class ApplyResult:
    """`CompiledModel.apply`'s result; arrays have a leading batch axis of size 1."""

    decoded: list[Any]
    logits: np.ndarray
    residuals: list[np.ndarray]
    layer_outputs: list[np.ndarray]
    attention: list[np.ndarray]


@attrs.define(eq=False)
class CompiledModel:
    """A transformer computing a RASP program exactly.

    ``weights`` are named and shaped as in TransformerLens; ``residual_labels`` name the
    residual dimensions (``one``, ``tokens:BOS``, ``tokens:<v>``, ``indices:<i>``, then
    every SOp's directions in topological order, ``label:value`` or ``label``);
    ``circuit`` maps each node label to the steps that compute or use it.
    """

    config: ModelConfig
    weights: dict[str, np.ndarray]
    residual_labels: list[str]
    input_encoder: InputEncoder
    output_encoder: OutputEncoder
    circuit: dict[str, tuple[CircuitStep, ...]]
    program: Any = None
    _cache: dict = attrs.field(factory=dict, repr=False)

    @property
    def n_params(self) -> int:
        """Total number of weight entries."""
        return int(sum(w.size for w in self.weights.values()))

    def save(self, path: Any) -> Any:
        """Write this model to one ``.safetensors`` file (see `rasplang.backend.io`)."""
        from rasplang.backend.io import save

        return save(self, path)

    def to_transformer_lens(self, **kwargs: Any) -> Any:
        """This model as a ``transformer_lens.HookedTransformer`` (extra ``transformer-lens``;
        see `rasplang.backend.transformer_lens`)."""
        from rasplang.backend.transformer_lens import to_transformer_lens

        return to_transformer_lens(self, **kwargs)

    def _weights_for(self, xp: Any, dtype: Any, trim: bool = False) -> dict[str, Any]:
        key = (xp.__name__, np.dtype(dtype).str, trim)
        if key not in self._cache:
            source = trimmed(self.weights, self.config.n_layers) if trim else self.weights
            self._cache[key] = {k: xp.asarray(v, dtype=dtype) for k, v in source.items()}
        return self._cache[key]

    def apply(self, tokens: Sequence[Any], *, dtype: Any = np.float64, xp: Any = np,
              ) -> ApplyResult:
        """Run one sequence that starts with BOS; keep every intermediate.

        ``decoded[0]`` is BOS (as in tracr); the rest are the program's outputs.
        """
        tokens = list(tokens)
        if not tokens or tokens[0] != self.config.bos:
            raise ValueError(f"apply expects the sequence to start with BOS "
                             f"{self.config.bos!r}, got {tokens[:1]!r}")
        self._check_length(len(tokens) - 1)
        ids = xp.asarray(self.input_encoder.encode([tokens]))
        logits, trace = forward(self._weights_for(xp, dtype), self.config, ids, xp, keep=True)
        host = _to_numpy(logits)
        decoded = [self.config.bos, *self.output_encoder.decode(host[0, 1:]).tolist()]
        return ApplyResult(decoded, host, [_to_numpy(r) for r in trace["residuals"]],
                           [_to_numpy(r) for r in trace["layer_outputs"]],
                           [_to_numpy(a) for a in trace["attention"]])

    def run(self, batch: Sequence[Sequence[Any]], *, dtype: Any = np.float64, xp: Any = np,
            chunk: int = 4096) -> list[list[Any]]:
        """Decoded outputs for a batch of sequences *without* BOS (lengths may differ)."""
        batch = [list(s) for s in batch]
        lengths = [len(s) for s in batch]
        for n in lengths:
            self._check_length(n)
        weights = self._weights_for(xp, dtype, trim=True)
        out: list[list[Any]] = []
        bos = self.config.bos
        for start in range(0, len(batch), chunk):
            part = batch[start:start + chunk]
            ids = xp.asarray(self.input_encoder.encode([[bos, *s] for s in part],
                                                       first_position=-1))
            logits, _ = forward(weights, self.config, ids, xp)
            decoded = self.output_encoder.decode(_to_numpy(logits)[:, 1:])
            out += [row[:len(s)] for row, s in zip(decoded.tolist(), part)]
        return out

    def _check_length(self, n: int) -> None:
        if n > self.config.max_seq_len:
            raise ValueError(f"input of length {n} exceeds max_seq_len "
                             f"{self.config.max_seq_len} the model was compiled for")


def _to_numpy(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)
