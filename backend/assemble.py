"""Pass 4: place the scheduled blocks into one residual stream and TransformerLens weights.

Residual order (deterministic): ``one``, ``tokens:BOS``, ``tokens:<v>`` for the sorted
vocabulary, ``indices:0..max_seq_len-1``, then for every SOp in topological order its
new directions (a SelectorWidth's scratch direction first). Heads and MLP units are
packed in schedule order; every layer is padded to the largest ``n_heads``, ``d_head``
and ``d_mlp``. Each head's query-key and value-output matrices are factored exactly
with the identity on their smaller side (`BilinearMap.factor`), and ``W_Q`` carries a
factor ``sqrt(d_head)`` that the forward pass divides out, as TransformerLens does.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

from rasplang.analysis import Analysis
from rasplang.backend.build import Built, NodeBlock
from rasplang.backend.craft.bases import BasisDirection, VectorSpace, join
from rasplang.backend.craft.maps import factor_linear
from rasplang.backend.encoders import InputEncoder, OutputEncoder
from rasplang.backend.model import CircuitStep, CompiledModel, ModelConfig, Sublayer
from rasplang.backend.schedule import Schedule
from rasplang.backend.spaces import ONE
from rasplang.fingerprint import fingerprint
from rasplang.nodes import Encoding, SOp, TokensType


def residual_space(built: Built, blocks: list[NodeBlock]) -> VectorSpace:
    """The residual stream's directions in the documented order."""
    parts = [VectorSpace([ONE, built.bos]), built.tokens.space, built.indices.space]
    for b in blocks:
        if b.scratch is not None:
            parts.append(VectorSpace([b.scratch]))
        if isinstance(b.node, SOp) and b.node in built.spaces:  # a virtual node has none
            parts.append(built.spaces[b.node].space)
    return join(*parts)


def assemble(analysis: Analysis, built: Built, sched: Schedule, *, causal: bool, bos: Any,
             pad: Any) -> CompiledModel:
    """Weights, config, encoders and circuit for a scheduled program."""
    res = residual_space(built, built.blocks)
    d = res.dim
    n_layers = len(sched.layers)
    qk = {id(b): b.head.w_qk.factor() for layer in sched.layers for b in layer.heads}
    ov = {id(b): factor_linear(b.head.w_ov.matrix) for layer in sched.layers for b in layer.heads}
    d_head = max([1, *(f[0].shape[1] for f in qk.values()), *(f[0].shape[1] for f in ov.values())])
    n_heads = max([1, *(len(layer.heads) for layer in sched.layers)])
    d_mlp = max([1, *(sum(b.mlp.hidden_dim for b in layer.mlps) for layer in sched.layers)])
    # W_Q carries sqrt(d_head), which the forward pass divides out, rounded up to a power
    # of two: the scores stay integer multiples of a power of two, exact in float32, so
    # equal logits stay equal (`chambers.float32`; the head is at most twice as cold).
    scale = 2.0 ** math.ceil(math.log2(math.sqrt(d_head)))
    vocab = tuple(built.tokens.values)
    enc_in = InputEncoder(vocab, bos, pad)
    w: dict[str, np.ndarray] = {}

    w_e = np.zeros((len(vocab) + 2, d))
    w_pos = np.zeros((analysis.max_seq_len + 1, d))
    w_e[: len(vocab) + 1, res.index_of(ONE)] = 1.0
    w_e[len(vocab), res.index_of(built.bos)] = 1.0
    w_e[np.arange(len(vocab)), res.indices(built.tokens.space)] = 1.0
    w_pos[np.arange(1, analysis.max_seq_len + 1), res.indices(built.indices.space)] = 1.0
    circuit: dict[str, list[CircuitStep]] = {}
    for b in built.blocks:
        space = built.spaces.get(b.node)
        if b.head is None and b.mlp is None and space is not None:
            idx = tuple(int(i) for i in res.indices(space.space))
            circuit[b.label] = [CircuitStep(None, Sublayer.EMBED, None, (), (), idx)]
            if space.numerical and space.directions[0] != ONE and space is not built.tokens:
                col = res.index_of(space.directions[0])
                if isinstance(b.node, TokensType):
                    w_e[np.arange(len(vocab)), col] = [float(v) for v in vocab]
                else:
                    w_pos[1:, col] = np.arange(analysis.max_seq_len)
    w["embed.W_E"], w["pos_embed.W_pos"] = w_e, w_pos

    for i, layer in enumerate(sched.layers):
        p = f"blocks.{i}."
        wq, wk, wv = (np.zeros((n_heads, d, d_head)) for _ in range(3))
        wo = np.zeros((n_heads, d_head, d))
        for h, b in enumerate(layer.heads):
            (lq, rk), (a, o) = qk[id(b)], ov[id(b)]
            head = b.head
            wq[h, res.indices(head.w_qk.left_space), : lq.shape[1]] = lq * scale
            wk[h, res.indices(head.w_qk.right_space), : rk.shape[1]] = rk
            wv[h, res.indices(head.w_ov.input_space), : a.shape[1]] = a
            wo[h, : o.shape[0], res.indices(head.w_ov.output_space)] = o.T
            reads = _union(res, head.w_qk.left_space, head.w_qk.right_space,
                           head.w_ov.input_space)
            step = CircuitStep(i, Sublayer.ATTN, h, (), reads,
                               _union(res, head.w_ov.output_space), _labels(analysis, b.fused))
            circuit.setdefault(b.label, []).append(step)
            _add_fused(circuit, analysis, b, step)
            for sel in b.selectors:
                label = analysis.labels[sel]
                circuit.setdefault(label, []).append(
                    CircuitStep(i, Sublayer.ATTN, h, (),
                                _union(res, head.w_qk.left_space, head.w_qk.right_space), ()))
        w[p + "attn.W_Q"], w[p + "attn.W_K"], w[p + "attn.W_V"], w[p + "attn.W_O"] = \
            wq, wk, wv, wo
        for name in ("b_Q", "b_K", "b_V"):
            w[p + "attn." + name] = np.zeros((n_heads, d_head))
        w[p + "attn.b_O"] = np.zeros(d)
        w_in, w_out = np.zeros((d, d_mlp)), np.zeros((d_mlp, d))
        off = 0
        for b in layer.mlps:
            mlp = b.mlp
            n = mlp.hidden_dim
            w_in[:, off:off + n] = mlp.first.embedded(res)
            w_out[off:off + n, res.indices(mlp.second.output_space)] = mlp.second.matrix
            step = CircuitStep(i, Sublayer.MLP, None, tuple(range(off, off + n)),
                               _union(res, mlp.first.input_space),
                               _union(res, mlp.second.output_space), _labels(analysis, b.fused))
            circuit.setdefault(b.label, []).append(step)
            _add_fused(circuit, analysis, b, step)
            off += n
        w[p + "mlp.W_in"], w[p + "mlp.b_in"] = w_in, np.zeros(d_mlp)
        w[p + "mlp.W_out"], w[p + "mlp.b_out"] = w_out, np.zeros(d)

    out_space = built.spaces[analysis.program]
    if out_space.numerical:  # the value, and the None flag when the output can be None
        w_u = np.zeros((d, len(out_space.directions)))
        w_u[res.index_of(out_space.directions[0]), 0] = out_space.scale
        if out_space.nullable:
            w_u[res.index_of(out_space.directions[1]), 1] = 1.0
        enc_out = OutputEncoder(True, (None,) if out_space.nullable else ())
    else:
        w_u = np.zeros((d, len(out_space.values)))
        w_u[res.indices(out_space.space), np.arange(len(out_space.values))] = 1.0
        enc_out = OutputEncoder(False, tuple(out_space.values))
    w["unembed.W_U"], w["unembed.b_U"] = w_u, np.zeros(w_u.shape[1])

    config = ModelConfig(
        n_layers=n_layers, d_model=d, n_heads=n_heads, d_head=d_head, d_mlp=d_mlp,
        n_ctx=analysis.max_seq_len + 1, d_vocab=len(vocab) + 2, d_vocab_out=w_u.shape[1],
        causal=causal, vocab=vocab, bos=bos, pad=pad, max_seq_len=analysis.max_seq_len,
        output_encoding=Encoding.NUMERICAL if out_space.numerical else Encoding.CATEGORICAL,
        float64_only=built.float64_only, program_sha256=fingerprint(analysis))
    return CompiledModel(config, w, [_label(x) for x in res.basis], enc_in, enc_out,
                         {k: tuple(v) for k, v in circuit.items()}, analysis.program)


def _labels(analysis: Analysis, nodes: tuple[SOp, ...]) -> tuple[str, ...]:
    return tuple(analysis.labels[n] for n in nodes)


def _add_fused(circuit: dict[str, list[CircuitStep]], analysis: Analysis, block: NodeBlock,
               step: CircuitStep) -> None:
    """A step for each virtual node ``block`` computes: where, and fused with what (it
    writes nothing: the node is not in the residual stream)."""
    for node in block.fused:
        label = analysis.labels[node]
        others = (block.label, *(x for x in step.fused if x != label))
        circuit.setdefault(label, []).append(attrs.evolve(step, writes=(), fused=others))


def _union(res: VectorSpace, *spaces: VectorSpace) -> tuple[int, ...]:
    return tuple(sorted({int(i) for s in spaces for i in res.indices(s)}))


def _label(direction: BasisDirection) -> str:
    return str(direction)
