"""The compiled model: config, TransformerLens-named weights, encoders and circuit."""

from __future__ import annotations

import enum
import math
import reprlib
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from rasplang.backend.encoders import InputEncoder, OutputEncoder, lookup
from rasplang.backend.forward import forward, trimmed
from rasplang.nodes import Encoding

ACT_FNS = ("relu", "gelu_new")  # the MLP activations `forward` computes
NORMALIZATION_TYPES = (None, "LN", "RMS")  # and its norms (`rasplang.backend.normalize`)
OUTPUT_ENCODINGS = tuple(e.value for e in Encoding)
#: Memory `CompiledModel.run` lets one chunk's activations take: long sequences of a
#: wide model run fewer at a time.
ACTIVATION_BYTES = 2**30


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
    output_encoding: Encoding  # of the output SOp
    act_fn: str = "relu"
    #: Why the model is exact only in float64 (a discretisation's margin is below float32
    #: rounding); "" when it is exact in float32 too. `CompiledModel.run` and ``apply``
    #: refuse float32 when it is set.
    float64_only: str = ""  # one of ACT_FNS
    #: None, "LN" (LayerNorm) or "RMS" (RMSNorm), placed before each sublayer
    #: (``norm_position`` "pre", as GPT-2) or after each residual addition ("post", as
    #: BERT), with epsilon ``eps``; see `rasplang.backend.normalize`.
    normalization_type: str | None = None
    norm_position: str = "pre"
    eps: float = 1e-5
    #: The SHA-256 of the program the model was compiled from, over its graph and its
    #: functions' tables on the domain (`rasplang.fingerprint`); "" when unknown.
    #: `rasplang.verify` refuses a model compiled from another program.
    program_sha256: str = ""
    #: How the residual basis was changed after compiling (`rasplang.compress`): "" for
    #: the compiler's named basis, else each change in order, e.g. ``"rotate(seed=3)"``
    #: or ``"compress(d_model=11, d=6, seed=0, ...)"``; ``residual_labels`` then name
    #: dimensions (``rotated:0``), not features.
    basis: str = ""

    @property
    def attn_scale(self) -> float:
        """What attention scores are divided by."""
        return math.sqrt(self.d_head)

    @property
    def pad_id(self) -> int:
        """Embedding row of the PAD token (its keys are masked)."""
        return len(self.vocab) + 1


class Sublayer(str, enum.Enum):
    """Where a step of the circuit is: the embedding, an attention or an MLP sublayer
    (a str, equal to its value)."""

    EMBED = "embed"
    ATTN = "attn"
    MLP = "mlp"

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class CircuitStep:
    """Where one program node is computed (or used, for selectors).

    ``sublayer`` is a `Sublayer` ("embed", "attn" or "mlp"); ``head`` the head index for
    "attn"; ``hidden`` the MLP hidden units for "mlp"; ``reads``/``writes`` residual
    dimensions. ``fused`` names the other program nodes this head or MLP computes
    with it (``optimize=True`` fuses Maps into MLPs and folds them into heads); a fused
    node's own steps write nothing, as it has no residual dimensions.
    """

    layer: int | None
    sublayer: Sublayer
    head: int | None
    hidden: tuple[int, ...]
    reads: tuple[int, ...]
    writes: tuple[int, ...]
    fused: tuple[str, ...] = ()


@attrs.frozen
class ApplyResult:
    """`CompiledModel.apply`'s result; arrays have a leading batch axis of size 1.

    ``residuals`` holds the residual stream after the embedding and after every
    sublayer; ``layer_outputs`` every sublayer's output; ``attention`` every layer's
    attention pattern ``[1, n_heads, T, T]`` and ``attn_logits`` its scores before the
    softmax (masked keys at ``-inf``). tracr's names are aliases: ``unembedded_output``
    is ``logits``, ``transformer_output`` the last residual, ``input_embeddings`` the
    first.
    """

    decoded: list[Any]
    logits: np.ndarray
    residuals: list[np.ndarray]
    layer_outputs: list[np.ndarray]
    attention: list[np.ndarray]
    attn_logits: list[np.ndarray] = attrs.field(factory=list)

    @property
    def unembedded_output(self) -> np.ndarray:
        """tracr's name for ``logits``."""
        return self.logits

    @property
    def transformer_output(self) -> np.ndarray:
        """tracr's name for the residual stream after the last layer."""
        return self.residuals[-1]

    @property
    def input_embeddings(self) -> np.ndarray:
        """tracr's name for the residual stream after the embedding."""
        return self.residuals[0]


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
        """Total number of weight entries (the padded TransformerLens layout: every layer
        has ``n_heads`` heads of ``d_head`` and ``d_mlp`` hidden units)."""
        return int(sum(w.size for w in self.weights.values()))

    @property
    def n_params_used(self) -> int:
        """Weight entries with each head and MLP at its own size: a head's query-key rank
        times the residual dimensions its queries and keys read, and its value-output
        rank times the dimensions it reads and writes; an MLP's hidden units times the
        dimensions it reads and writes (`circuit`); the embeddings and the unembedding
        on the dimensions they write and read. Padding, the residual dimensions a block
        never touches, and biases (all zero) are left out: a model stored block by block
        holds this many numbers. Between `n_nonzero` and `n_params`."""
        w, cfg = self.weights, self.config

        def rows(a: np.ndarray, axis: int) -> int:  # rows or columns with a nonzero entry
            return int(np.any(a != 0, axis=axis).sum())

        total = sum(rows(w[k], 0) * w[k].shape[0] for k in ("embed.W_E", "pos_embed.W_pos"))
        total += rows(w["unembed.W_U"], 1) * w["unembed.W_U"].shape[1]
        for i in range(cfg.n_layers):
            p = f"blocks.{i}.attn."
            for h in range(cfg.n_heads):
                q, k, v, o = (w[p + name][h] for name in ("W_Q", "W_K", "W_V", "W_O"))
                r_qk = int((np.any(q != 0, 0) | np.any(k != 0, 0)).sum())
                r_ov = int((np.any(v != 0, 0) | np.any(o != 0, 1)).sum())
                total += (rows(q, 1) + rows(k, 1)) * r_qk + (rows(v, 1) + rows(o, 0)) * r_ov
        for steps in self.circuit.values():
            for step in steps:
                if step.sublayer == Sublayer.MLP and step.writes:  # the block's own step
                    total += len(step.hidden) * (len(step.reads) + len(step.writes))
        return int(total)

    @property
    def n_nonzero(self) -> int:
        """Weight entries that are not zero."""
        return int(sum(np.count_nonzero(w) for w in self.weights.values()))

    def __repr__(self) -> str:
        c = self.config
        name = getattr(self.program, "label", None)
        return (f"CompiledModel({name!r}: {_count(c.n_layers, 'layer')}, d_model {c.d_model}, "
                f"{_count(c.n_heads, 'head')} of {c.d_head}, d_mlp {c.d_mlp}, "
                f"{self.n_params:,} parameters, {'causal' if c.causal else 'non-causal'}, "
                f"max_seq_len {c.max_seq_len})")

    @property
    def params(self) -> dict[str, dict[str, np.ndarray]]:
        """The weights as tracr's Haiku ``params`` name and shape them (copies):
        ``token_embed/embeddings``, ``pos_embed/embeddings``,
        ``transformer/layer_{i}/attn/{query,key,value}`` ``w [d_model, n_heads * d_head]``
        and ``b``, ``transformer/layer_{i}/attn/linear`` ``w [n_heads * d_head, d_model]``,
        ``transformer/layer_{i}/mlp/linear_1`` and ``linear_2``. tracr keeps the
        unembedding outside ``params``; here it is ``weights["unembed.W_U"]``."""
        w, out = self.weights, {}
        out["token_embed"] = {"embeddings": w["embed.W_E"].copy()}
        out["pos_embed"] = {"embeddings": w["pos_embed.W_pos"].copy()}
        for i in range(self.config.n_layers):
            p, t = f"blocks.{i}.", f"transformer/layer_{i}/"
            for ours, theirs in (("Q", "query"), ("K", "key"), ("V", "value")):
                h, d, e = w[p + f"attn.W_{ours}"].shape          # (n_heads, d_model, d_head)
                out[t + f"attn/{theirs}"] = {
                    "w": w[p + f"attn.W_{ours}"].transpose(1, 0, 2).reshape(d, h * e),
                    "b": w[p + f"attn.b_{ours}"].reshape(h * e)}
            h, e, d = w[p + "attn.W_O"].shape                      # (n_heads, d_head, d_model)
            out[t + "attn/linear"] = {"w": w[p + "attn.W_O"].reshape(h * e, d),
                                      "b": w[p + "attn.b_O"].copy()}
            out[t + "mlp/linear_1"] = {"w": w[p + "mlp.W_in"].copy(), "b": w[p + "mlp.b_in"].copy()}
            out[t + "mlp/linear_2"] = {"w": w[p + "mlp.W_out"].copy(),
                                       "b": w[p + "mlp.b_out"].copy()}
        return out

    def rotate(self, seed: int = 0, *, float32: bool = False) -> CompiledModel:
        """This model in a random orthonormal residual basis (seeded), the same outputs in
        float64, refused in float32 unless ``float32=True`` verifies it there (see
        `rasplang.compression.rotate`)."""
        from rasplang.compression.basis import rotate

        return rotate(self, seed, float32=float32)

    def save(self, path: Any) -> Any:
        """Write this model to one ``.safetensors`` file (see `rasplang.backend.io`)."""
        from rasplang.backend.io import save

        return save(self, path)

    def to_transformer_lens(self, **kwargs: Any) -> Any:
        """This model as a ``transformer_lens.HookedTransformer`` (extra ``transformer-lens``;
        see `rasplang.backend.transformer_lens`)."""
        from rasplang.backend.transformer_lens import to_transformer_lens

        return to_transformer_lens(self, **kwargs)

    def to_hf(self, **kwargs: Any) -> Any:
        """This model as a Hugging Face ``transformers`` model (extra ``hf``; see
        `rasplang.backend.hf`)."""
        from rasplang.backend.hf import to_hf

        return to_hf(self, **kwargs)

    def save_pretrained(self, path: Any, **kwargs: Any) -> Any:
        """Write this model as a Hugging Face model directory (config.json,
        model.safetensors, a tokenizer; see `rasplang.backend.hf`)."""
        from rasplang.backend.hf import save_pretrained

        return save_pretrained(self, path, **kwargs)

    def graph(self) -> Any:
        """The component graph (``input``, ``a{l}.h{h}``, ``m{l}``, ``logits`` and the
        edges between them, as EAP-IG names them; see `rasplang.circuits.graph`)."""
        from rasplang.circuits import graph

        return graph(self)

    def ground_truth(self, ablation: str = "resample", *, positions: bool = False,
                     **domain: Any) -> Any:
        """The ground-truth `rasplang.circuits.Circuit` under ``ablation`` ("structural",
        "zero", "mean", "resample"), per token position with ``positions``; see
        `rasplang.circuits.ground_truth`."""
        from rasplang.circuits import ground_truth

        return ground_truth(self, ablation, positions=positions, **domain)

    def _cached(self, key: tuple[Any, ...], build: Any) -> Any:
        """``build()``, kept in ``_cache`` under ``key`` while ``weights`` holds the same
        arrays (replacing a weight rebuilds it; changing one in place does not)."""
        stamp = tuple((k, id(v)) for k, v in self.weights.items())
        found = self._cache.get(key)
        if found is None or found[0] != stamp:
            found = self._cache[key] = (stamp, build())
        return found[1]

    def _weights_for(self, xp: Any, dtype: Any, trim: bool = False) -> dict[str, Any]:
        """The weights on ``xp`` in ``dtype`` (padding dropped with ``trim``), cached."""
        def build() -> dict[str, Any]:
            source = trimmed(self.weights, self.config.n_layers) if trim else self.weights
            return {k: xp.asarray(v, dtype=dtype) for k, v in source.items()}

        return self._cached(("weights", xp.__name__, np.dtype(dtype).str, trim), build)

    def _structure(self, xp: Any, dtype: Any) -> Any:
        """The structured forward's tables for ``xp`` and ``dtype``, built once and cached
        on the model (not saved in model files)."""
        from rasplang.backend import structured

        def build() -> Any:
            return structured.build(self.weights, self.config, dtype).to(xp)

        return self._cached(("structured", xp.__name__, np.dtype(dtype).str), build)

    def forward(self, ids: Any, *, dtype: Any = np.float64, xp: Any = np,
                structured: bool = True) -> Any:
        """Logits ``[B, T, d_vocab_out]`` for embedding ids ``[B, T]`` (BOS first, padded
        with PAD; see ``input_encoder``), as TransformerLens's ``forward`` on tokens.

        ``structured`` (default) runs the structured forward pass
        (`rasplang.backend.structured`); False runs the dense reference forward
        (`rasplang.backend.forward`) on the TransformerLens-layout weights with padding
        dropped. Both give the same logits to float rounding. The whole batch runs at
        once (`run` splits a batch into chunks whose activations stay under
        `ACTIVATION_BYTES`).
        """
        return self._forward(xp.asarray(ids), _exact_dtype(dtype, self.config), xp,
                             structured)[0]

    def _forward(self, ids: Any, dtype: np.dtype, xp: Any, structured: bool,
                 keep: bool = False) -> tuple[Any, dict[str, list[Any]]]:
        """Logits and, with ``keep``, the trace, from the structured or the dense forward
        (the dense one on every head when keeping: padding heads have patterns too)."""
        if structured and self.config.normalization_type is None \
                and self.config.act_fn == "relu":  # else the dense forward runs it
            from rasplang.backend.structured import forward as structured_forward

            return structured_forward(self._structure(xp, dtype), ids, xp, keep=keep)
        return forward(self._weights_for(xp, dtype, trim=not keep), self.config, ids, xp,
                       keep=keep)

    def apply(self, tokens: Sequence[Any], *, dtype: Any = np.float64, xp: Any = np,
              structured: bool = True) -> ApplyResult:
        """Run one sequence that starts with BOS; keep every intermediate.

        ``decoded[0]`` is BOS (as in tracr); the rest are the program's outputs. Raises
        ValueError, before running anything, for a sequence that does not start with BOS,
        holds a token outside the vocabulary (BOS or PAD after position 0 included) or is
        longer than ``max_seq_len + 1``, and for a ``dtype`` other than float64 or float32.
        ``structured=False`` runs the dense reference forward instead (see `forward`);
        both give the same arrays to float rounding.
        """
        dtype = _exact_dtype(dtype, self.config)
        if isinstance(tokens, (str, bytes)):
            raise ValueError(f"apply takes one sequence of tokens starting with BOS, got the "
                             f"{type(tokens).__name__} {tokens!r}; write "
                             f"[{self.config.bos!r}, *{tokens!r}] to run its characters")
        tokens = list(tokens)
        if not tokens or lookup({self.config.bos: 0}, tokens[0]) is None:
            raise ValueError(f"apply expects the sequence to start with BOS "
                             f"{self.config.bos!r}, got {tokens[:1]!r}")
        self._check_length(0, len(tokens) - 1)
        ids = xp.asarray(self.input_encoder.encode([tokens]))
        logits, trace = self._forward(ids, dtype, xp, structured, keep=True)
        host = _to_numpy(logits)
        decoded = [self.config.bos, *self.output_encoder.decode(host[0, 1:]).tolist()]
        return ApplyResult(decoded, host, [_to_numpy(r) for r in trace["residuals"]],
                           [_to_numpy(r) for r in trace["layer_outputs"]],
                           [_to_numpy(a) for a in trace["attention"]],
                           [_to_numpy(a) for a in trace["attn_logits"]])

    def run(self, batch: Sequence[Sequence[Any]], *, dtype: Any = np.float64, xp: Any = np,
            chunk: int = 4096, structured: bool = True) -> list[list[Any]]:
        """Decoded outputs for a batch of sequences *without* BOS (lengths may differ).

        ``batch`` is a list of sequences, each a list, tuple or 1-D array of vocabulary
        tokens, or a str read as its characters: one sequence is
        ``model.run([['a', 'b', 'c']])`` or ``model.run(["abc"])``. Raises ValueError,
        before running anything, for a str batch (``run("abc")``), a batch of tokens
        (``run(list("abc"))``), an element that is one token (a tuple or a str of several
        characters that is in the vocabulary is a token, not a sequence), a token outside
        the vocabulary (BOS and PAD included), a sequence longer than ``max_seq_len``, or a
        ``dtype`` other than float64 or float32. An empty sequence gives ``[]``. At most
        ``chunk`` sequences run at once, fewer where their activations would take more
        than `ACTIVATION_BYTES`. ``structured=False`` runs the dense reference forward
        instead (see `forward`).
        """
        dtype = _exact_dtype(dtype, self.config)
        batch = self._sequences(batch)
        for i, s in enumerate(batch):
            self._check_length(i, len(s))
        bos = self.config.bos
        ids = self.input_encoder.encode([[bos, *s] for s in batch], first_position=-1)
        out: list[list[Any]] = []
        chunk = min(chunk, self._rows_in(ACTIVATION_BYTES, np.dtype(dtype).itemsize))
        for start in range(0, len(batch), chunk):
            part = batch[start:start + chunk]
            width = 1 + max(len(s) for s in part)           # BOS + the longest in the chunk
            part_ids = xp.asarray(np.ascontiguousarray(ids[start:start + chunk, :width]))
            logits, _ = self._forward(part_ids, dtype, xp, structured)
            decoded = self.output_encoder.decode(_to_numpy(logits)[:, 1:])
            out += [row[:len(s)] for row, s in zip(decoded.tolist(), part)]
        return out

    def _rows_in(self, budget: int, itemsize: int) -> int:
        """How many sequences of full length the forward pass's activations fit in
        ``budget`` bytes (at least one): the residual stream and its sublayer outputs,
        the MLP's hidden units, queries, keys, values and the [T, T] scores per head."""
        c, t = self.config, self.config.n_ctx
        per_row = t * (4 * c.d_model + c.d_mlp + 3 * c.n_heads * c.d_head + 2 * c.n_heads * t
                       + c.d_vocab_out)
        return max(1, budget // (per_row * itemsize))

    def _sequences(self, batch: Any) -> list[list[Any]]:
        """``batch`` as a list of lists of tokens, or a ValueError showing how to write it."""
        if isinstance(batch, (str, bytes)):
            raise ValueError(f"run takes a batch of sequences, got the {type(batch).__name__} "
                             f"{reprlib.repr(batch)}; to run it as one sequence, wrap it: "
                             f"model.run([{reprlib.repr(list(batch))}])")
        try:
            batch = batch.tolist() if isinstance(batch, np.ndarray) and batch.ndim else list(batch)
        except TypeError:
            raise ValueError(f"run takes a batch of sequences (a list of lists of tokens), "
                             f"got {type(batch).__name__} {reprlib.repr(batch)}") from None
        tokens = self.input_encoder.encoding_map

        def is_token(x: Any) -> bool:
            return not isinstance(x, (list, np.ndarray)) and lookup(tokens, x) is not None

        if len(batch) > 1 and all(map(is_token, batch)):
            raise ValueError(f"run takes a batch of sequences; {reprlib.repr(batch)} is a "
                             "list of tokens: to run it as one sequence, wrap it: "
                             f"model.run([{reprlib.repr(batch)}])")
        out = []
        for i, seq in enumerate(batch):
            if isinstance(seq, list):
                out.append(seq)
            elif isinstance(seq, str) and (len(seq) == 1 or not is_token(seq)):
                out.append(list(seq))  # "abc" is the sequence 'a', 'b', 'c'
            elif isinstance(seq, np.ndarray) and seq.ndim == 1:
                out.append(seq.tolist())
            elif isinstance(seq, tuple) and not is_token(seq):
                out.append(list(seq))
            else:
                raise ValueError(f"run takes a batch of sequences of tokens; element {i} of the "
                                 f"batch{_not_a_sequence(seq)}")
        return out

    def _check_length(self, index: int, n: int) -> None:
        if n > self.config.max_seq_len:
            raise ValueError(f"sequence {index} has length {n}, longer than the max_seq_len "
                             f"{self.config.max_seq_len} the model was compiled for")


def _not_a_sequence(x: Any) -> str:
    """Why a batch element ``x`` that `CompiledModel.run` refuses is not a sequence."""
    if isinstance(x, bytes):
        return f" is the bytes {reprlib.repr(x)}, not a sequence of tokens"
    if isinstance(x, np.ndarray):
        return f" is a {x.ndim}-D array, not a 1-D sequence"
    return (f", {reprlib.repr(x)}, is a single token, not a sequence (a list, tuple, 1-D "
            f"array or str of tokens); the sequence of this one token is [{reprlib.repr(x)}]")


_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))  # what `forward` computes exactly in


def _checked_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as a numpy dtype if it is float64 or float32, else a ValueError."""
    try:
        got = np.dtype(dtype)
    except (TypeError, ValueError):
        got = None
    if got is None or got not in _DTYPES:  # (a dtype == None compares as float64)
        name = got.name if got is not None else repr(dtype)
        raise ValueError(f"dtype {name} is not supported: the forward pass is exact in "
                         "float64 (the default) and float32 only")
    return got


def _exact_dtype(dtype: Any, config: ModelConfig) -> np.dtype:
    """`_checked_dtype`, and a ValueError for float32 on a model exact only in float64."""
    got = _checked_dtype(dtype)
    if got == np.float32 and config.float64_only:
        raise ValueError(f"this model is exact in float64 only ({config.float64_only}); "
                         "run it with the default dtype=np.float64")
    return got


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _to_numpy(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)
