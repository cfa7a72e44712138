"""`compress`: tracr's residual compression (Lindner et al. 2023, section 5), trained with
torch on the program's own domain.

The compressed model keeps every weight of the compiled model and adds one matrix
``W [D, d]``: the residual stream is ``h [d]``, every write goes through ``W`` (the
embedding writes ``(W_E[t] + W_pos[p]) W``, a sublayer with output ``y`` adds ``y W``)
and every read through ``W^T`` (a sublayer and the unembedding read ``h W^T``, which is
``x W W^T`` when every read before was right). tracr's paper writes the same with
column vectors (reads ``W h``, writes ``W^T y``). Only ``W`` is trained, on every input
of the domain when there are at most ``max_inputs`` of them (else a seeded sample).

The loss asks for what each reader needs, not for the whole residual: a feature that
nothing reads costs nothing, and one read by a saturated attention or a discretising
MLP may carry interference up to what that reader tolerates. With the compressed
model run freely (each sublayer reading what the compressed sublayers before it wrote)
and compared with the compiled model on the same input, per position that holds a token:

- ``output``: for a numerical output the squared error of the logits; for a
  categorical one a hinge with margin `MARGIN` around the decoding threshold 1/2: the
  compiled model's value's logit above ``1/2 + MARGIN``, every other logit below
  ``1/2 - MARGIN`` (all of them for a None);
- ``sublayer``: the squared error of every sublayer's output (what it writes, in the
  compiled basis): the layer-local loss, in place of the paper's residual
  reconstruction (which asks for every feature, read or not);
- ``mlp_input``: the squared error of every MLP's pre-activations;
- ``attention``: per query, the spread of the score errors over the keys the compiled
  head selects (their weights stay equal, so a mean stays exact) and a hinge that keeps
  every other key at least ``min(its compiled gap, GAP)`` below them (softmax then
  leaves it at most ``e^-GAP``).

Adam minimises the weighted sum (`WEIGHTS`) on minibatches of ``batch`` inputs, the
learning rate decaying to 0 along a cosine over ``steps``, gradients clipped to norm
`CLIP` (the compiled model's gains make the loss steep). Then up to ``polish``
Levenberg-Marquardt iterations on the output term alone: each builds the Jacobian on
the `POLISH_INPUTS` inputs with the largest error and takes a step only if it lowers
the error summed over every training input. Where an exact ``W`` is near, they converge
to it to float64 rounding within a few iterations, where Adam stalls orders of
magnitude above (the internal terms guide Adam there, but an exact output does not
need them exact); a polish is kept only if it leaves no more inputs wrong. Whether an
exact ``W`` is near depends on where Adam started: up to ``restarts`` runs (each from
new random orthonormal columns of the same generator) stop at the first with no
training input wrong, else the one with the fewest is kept. The forward pass treats a
norm as the identity, which it is on these residuals (`rasplang.compression.basis`; a
LayerNorm model's ``W`` has rows summing to zero). The result is folded into the weights
(`rasplang.compression.basis.fold`) and is an ordinary model: `rasplang.verify` says on
which inputs it is still the program.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any

import attrs
import numpy as np

from rasplang.backend.forward import forward as dense_forward
from rasplang.backend.forward import trimmed
from rasplang.backend.model import CompiledModel
from rasplang.compression.basis import FLOAT64_ONLY, CompressedModel, check_foldable, fold
from rasplang.verify_inputs import _all_inputs, _random_inputs, count_inputs

#: `compress` trains on every input when the domain has at most this many, else on a
#: seeded sample of this many.
SAMPLES = 20_000
#: How often (steps) the loss is recorded in ``CompressedModel.history``.
LOG_EVERY = 10
#: The loss terms' weights (module docstring).
WEIGHTS = {"output": 1.0, "sublayer": 1.0, "mlp_input": 0.1, "attention": 0.1}
#: A categorical logit's margin around the decoding threshold 1/2.
MARGIN = 0.25
#: A key the compiled head leaves out stays at least min(its gap, GAP) below the keys
#: it selects (scores after the division by sqrt(d_head)).
GAP = 20.0
#: A key is selected when its compiled weight is above this fraction of the largest.
SELECTED = 1e-3
#: Largest gradient norm an Adam step takes.
CLIP = 1.0
#: The inputs a polish iteration builds its Jacobian on: those with the largest error.
POLISH_INPUTS = 512
#: A polish builds the Jacobian of its residuals in ``W``: at most this many entries
#: (fewer polish inputs for a wide model).
POLISH_ENTRIES = 10**7
#: Polishing stops at this summed squared error (float64 rounding) ...
POLISHED = 1e-24
#: ... or when the error has not halved over this many iterations.
STALL = 5
#: A numerical output counts as wrong during training beyond this error (relative above
#: 1), ten times stricter than `rasplang.verify`'s.
TOLERANCE = 1e-7


def compress(model: CompiledModel, d: int, *, steps: int = 1000, lr: float = 0.02,
             seed: int = 0, progress: bool = True, batch: int = 256, polish: int = 30,
             restarts: int = 3, weights: dict[str, float] | None = None,
             max_inputs: int = SAMPLES,
             samples: int = SAMPLES, threads: int = 1) -> CompressedModel:
    """``model`` with its residual stream compressed to ``d`` dimensions by a learned
    ``W [D, d]`` (module docstring); a `CompressedModel`, which runs, verifies, saves and
    exports like any compiled model.

    Trains on every input of the model's domain (lengths 1..``max_seq_len`` over its
    vocabulary) when there are at most ``max_inputs``, else on ``samples`` seeded random
    inputs: ``steps`` Adam steps on minibatches of ``batch`` inputs at learning rate
    ``lr`` (cosine decay), then up to ``polish`` Levenberg-Marquardt iterations on the
    output (0: none); up to ``restarts`` such runs, stopping at the first with no
    training input wrong, else keeping the one with the fewest. ``weights`` overrides
    entries of `WEIGHTS`. Each run's ``W`` starts as ``d`` random orthonormal
    columns. Deterministic for a ``seed``: torch runs on ``threads`` CPU threads
    (restored after) from a generator seeded with it. ``progress`` shows a tqdm bar with
    the loss. A LayerNorm model's ``W`` has rows summing to zero, so its ``d``
    dimensions hold ``d - 1`` of the compiled model's (`rasplang.compression.basis`).
    The result is exact in float64 only where `rasplang.verify` says so (and refuses
    float32). Needs torch (the ``lab`` extra). Raises ValueError for ``d`` outside
    ``1..d_model``, bad ``steps``, ``lr``, ``batch``, ``restarts`` or ``weights``, and
    for a norm whose gains differ between coordinates.
    """
    import torch

    cfg = model.config
    check_foldable(model, "compress")
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 1 <= d <= cfg.d_model:
        raise ValueError(f"d must be an integer in 1..{cfg.d_model} (the model's d_model), "
                         f"got {d!r}")
    if steps < 1 or not lr > 0 or batch < 1 or polish < 0 or restarts < 1:
        raise ValueError(f"steps, batch and restarts must be at least 1, lr positive and "
                         f"polish at least 0, got steps={steps}, lr={lr}, batch={batch}, "
                         f"polish={polish}, restarts={restarts}")
    unknown = sorted(set(weights or {}) - set(WEIGHTS))
    if unknown:
        raise ValueError(f"unknown loss weights {unknown}; the terms are {sorted(WEIGHTS)}")
    terms = {**WEIGHTS, **(weights or {})}
    ids = domain_ids(model, max_inputs, samples, seed)
    start = time.perf_counter()
    with _torch_threads(torch, threads):
        generator = torch.Generator().manual_seed(int(seed))
        trainer = _Trainer(model, ids, torch)
        best = None
        for _ in range(restarts):
            w, history = trainer.fit(int(d), steps, lr, batch, terms, generator, progress)
            if polish and trainer.wrong(w).any():
                w = trainer.polish(w, {"output": terms["output"]}, polish)
            wrong = int(trainer.wrong(w).sum())
            if best is None or wrong < best[0]:
                best = (wrong, w, history)
            if not wrong:
                break
        _, w, history = best
        w = trainer.basis(w).numpy().copy()
    seconds = time.perf_counter() - start
    basis = (f"compress(d_model={cfg.d_model}, d={int(d)}, seed={seed}, steps={steps}, "
             f"lr={lr:g}, inputs={len(ids)})")
    small = fold(model, w, basis, "compressed", CompressedModel, history=tuple(history),
                 seconds=seconds)
    return attrs.evolve(small, config=attrs.evolve(
        small.config, float64_only=small.config.float64_only or FLOAT64_ONLY))


def domain_ids(model: CompiledModel, max_inputs: int, samples: int, seed: int) -> np.ndarray:
    """Embedding ids ``[N, 1 + max_seq_len]`` of the training inputs (BOS first, PAD
    after each input): every input of the domain when there are at most ``max_inputs``,
    else ``samples`` seeded random ones (`rasplang.verify_inputs`)."""
    cfg, enc = model.config, model.input_encoder
    n_vocab, n = len(cfg.vocab), cfg.max_seq_len
    token_ids = np.array([enc.encoding_map[t] for t in cfg.vocab], dtype=np.int64)
    if count_inputs(n_vocab, n) <= max_inputs:
        batches = _all_inputs(n_vocab, n, 1 << 16)
    else:
        batches = _random_inputs(n_vocab, n, samples, seed, 1 << 16)
    rows = []
    for codes in batches:
        ids = np.full((len(codes), n + 1), cfg.pad_id, dtype=np.int64)
        ids[:, 0] = enc.bos_id
        ids[:, 1:1 + codes.shape[1]] = token_ids[codes]
        rows.append(ids)
    return np.concatenate(rows)


@contextlib.contextmanager
def _torch_threads(torch: Any, threads: int) -> Any:
    """torch on ``threads`` intra-op threads inside the block (float sums then run in
    one order: the same bits for the same seed), the previous count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Trainer:
    """The compiled model's weights and, on every training input, what it computes (the
    targets of the loss) as float64 tensors; the compressed forward pass, the loss
    terms, and the Adam and Levenberg-Marquardt loops that fit ``W``."""

    def __init__(self, model: CompiledModel, ids: np.ndarray, torch: Any):
        self.torch = torch
        self.cfg = cfg = model.config
        #: A LayerNorm model's W has rows summing to zero (`rasplang.compression.basis`).
        self.centred = cfg.normalization_type == "LN"
        weights = {k: v.astype(np.float64)
                   for k, v in trimmed(model.weights, cfg.n_layers).items()}  # no padding
        logits, trace = dense_forward(weights, cfg, ids, np, keep=True)
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)
        self.w = {k: t(v) for k, v in weights.items()}
        self.ids = torch.as_tensor(ids)
        self.n = len(ids)
        self.numerical = model.output_encoder.numerical
        self.logits = t(logits)                                   # (N, T, d_vocab_out)
        real = ids != cfg.pad_id                                  # (N, T) tokens and BOS
        self.real = torch.as_tensor(real)
        self.out_mask = torch.as_tensor(real & (np.arange(ids.shape[1]) > 0))
        n_ctx = ids.shape[1]
        self.causal = (torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool))
                       if cfg.causal else None)
        self.outputs = [t(y) for y in trace["layer_outputs"]]    # attn, mlp per layer
        mids = trace["residuals"][1::2]                           # what each MLP reads
        self.pre = [t(mids[i] @ weights[f"blocks.{i}.mlp.W_in"]
                      + weights[f"blocks.{i}.mlp.b_in"]) for i in range(cfg.n_layers)]
        self.heads = [self._head_targets(s, a, real)
                      for s, a in zip(trace["attn_logits"], trace["attention"])]
        if not self.numerical:                                    # the compiled decode
            top = self.logits.amax(-1)
            self.target = torch.where(top > 0.5, self.logits.argmax(-1), -1)   # -1: None

    def _head_targets(self, scores: np.ndarray, pattern: np.ndarray,
                      real: np.ndarray) -> tuple[Any, ...]:
        """For one layer's heads: the compiled scores, the selected and the other visible
        keys of every query at a real position, how many are selected, and each key's
        gap below the selected ones (at most `GAP`)."""
        torch = self.torch
        visible = np.isfinite(scores)
        s = np.where(visible, scores, 0.0)
        query = real[:, None, :, None]
        selected = (pattern > SELECTED * pattern.max(-1, keepdims=True)) & visible & query
        others = visible & ~selected & query
        count = np.maximum(selected.sum(-1, keepdims=True), 1)
        gap = np.minimum((s * selected).sum(-1, keepdims=True) / count - s, GAP)
        f = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)
        return (f(s), torch.as_tensor(selected), torch.as_tensor(others), f(count), f(gap))

    def basis(self, w: Any) -> Any:
        """The ``W`` that the parameter ``w`` stands for: itself, or for a LayerNorm model
        with each row's mean taken out (``W 1 = 0``)."""
        return w - w.mean(dim=1, keepdim=True) if self.centred else w

    def run(self, w: Any, idx: Any) -> tuple[Any, list[Any], list[Any], list[Any]]:
        """The compressed model on inputs ``idx``: logits, every sublayer's output (in
        the compiled basis), every layer's attention scores and MLP pre-activations."""
        torch, cfg, p = self.torch, self.cfg, self.w
        w = self.basis(w)
        ids = self.ids[idx]
        visible = self.real[idx][:, None, None, :]                  # (n, 1, 1, T) keys
        if self.causal is not None:
            visible = visible & self.causal
        h = (p["embed.W_E"][ids] + p["pos_embed.W_pos"][:ids.shape[1]]) @ w   # (n, T, d)
        outputs, scores, pres = [], [], []
        for i in range(cfg.n_layers):
            b = f"blocks.{i}."
            x = h @ w.T                                               # (n, T, D) read
            q, k, v = (torch.einsum("ntD,hDe->nhte", x, p[b + f"attn.W_{n}"])
                       + p[b + f"attn.b_{n}"][None, :, None, :] for n in "QKV")
            s = q @ k.transpose(-1, -2) / cfg.attn_scale              # (n, H, T, T)
            z = torch.softmax(s.masked_fill(~visible, -math.inf), dim=-1) @ v
            attn = torch.einsum("nhte,heD->ntD", z, p[b + "attn.W_O"]) + p[b + "attn.b_O"]
            h = h + attn @ w
            pre = (h @ w.T) @ p[b + "mlp.W_in"] + p[b + "mlp.b_in"]
            act = (torch.nn.functional.gelu(pre, approximate="tanh")
                   if cfg.act_fn == "gelu_new" else torch.relu(pre))
            mlp = act @ p[b + "mlp.W_out"] + p[b + "mlp.b_out"]
            h = h + mlp @ w
            outputs += [attn, mlp]
            scores.append(s)
            pres.append(pre)
        return (h @ w.T) @ p["unembed.W_U"] + p["unembed.b_U"], outputs, scores, pres

    def residuals(self, w: Any, terms: dict[str, float], idx: Any) -> list[Any]:
        """The weighted residual vectors of the loss terms on inputs ``idx`` (module
        docstring): the loss is their summed square over the positions that hold a
        token."""
        torch = self.torch
        logits, outputs, scores, pres = self.run(w, idx)
        mask = self.out_mask[idx]
        out = []
        if terms.get("output"):
            if self.numerical:
                r = logits - self.logits[idx]
            else:
                want = self.target[idx]
                hot = (torch.nn.functional.one_hot(want.clamp(min=0), logits.shape[-1]).bool()
                       & (want >= 0)[..., None])
                r = (torch.relu(0.5 + MARGIN - logits) * hot
                     + torch.relu(logits - 0.5 + MARGIN) * ~hot)
            out.append((r * mask[..., None]).reshape(-1) * terms["output"])
        real = self.real[idx][..., None]
        if terms.get("sublayer"):
            out += [((y - want[idx]) * real).reshape(-1) * terms["sublayer"]
                    for y, want in zip(outputs, self.outputs)]
        if terms.get("mlp_input"):
            out += [((y - want[idx]) * real).reshape(-1) * terms["mlp_input"]
                    for y, want in zip(pres, self.pre)]
        if terms.get("attention"):
            for s, (want, selected, others, count, gap) in zip(scores, self.heads):
                selected, others, count = selected[idx], others[idx], count[idx]
                err = s - want[idx]
                spread = (err - (err * selected).sum(-1, keepdim=True) / count) * selected
                top = (s * selected).sum(-1, keepdim=True) / count
                above = torch.relu(s - top + gap[idx]) * others
                out += [spread.reshape(-1) * terms["attention"],
                        above.reshape(-1) * terms["attention"]]
        return out

    def costs(self, w: Any, terms: dict[str, float], idx: Any) -> Any:
        """Each input's summed squared residuals ``[len(idx)]``."""
        return sum((r.reshape(len(idx), -1) ** 2).sum(-1)
                   for r in self.residuals(w, terms, idx))

    def loss(self, w: Any, terms: dict[str, float], idx: Any) -> Any:
        return (sum((r ** 2).sum() for r in self.residuals(w, terms, idx))
                / max(1, int(self.out_mask[idx].sum())))

    def wrong(self, w: Any, chunk: int = 4096) -> Any:
        """bool ``[N]``: the training inputs on which the compressed model decodes another
        output than the compiled one (a numerical one off by more than `TOLERANCE`)."""
        torch = self.torch
        bad = []
        with torch.no_grad():
            for lo in range(0, self.n, chunk):
                idx = torch.arange(lo, min(self.n, lo + chunk))
                logits, want = self.run(w, idx)[0], self.logits[idx]
                if self.numerical:
                    ok = ((logits[..., 0] - want[..., 0]).abs()
                          <= TOLERANCE * want[..., 0].abs().clamp(min=1.0))
                    if logits.shape[-1] > 1:                         # the None flag
                        ok = ok & ((logits[..., 1] > 0.5) == (want[..., 1] > 0.5))
                else:
                    top = logits.amax(-1)
                    ok = torch.where(top > 0.5, logits.argmax(-1), -1) == self.target[idx]
                bad.append((~ok & self.out_mask[idx]).any(-1))
        return torch.cat(bad)

    def fit(self, d: int, steps: int, lr: float, batch: int, terms: dict[str, float],
            generator: Any, progress: bool) -> tuple[Any, list[float]]:
        """Adam from ``d`` random orthonormal columns; ``W`` and the loss history."""
        torch = self.torch
        D = self.cfg.d_model
        start = torch.linalg.qr(torch.randn(D, D, dtype=torch.float64,
                                            generator=generator))[0][:, :d]
        w = torch.nn.Parameter(start.contiguous().clone())
        opt = torch.optim.Adam([w], lr=lr)
        every = torch.arange(self.n)
        bar = _bar(steps, progress)
        history = []
        try:
            for step in range(steps):
                idx = every if self.n <= batch else torch.randint(self.n, (batch,),
                                                                  generator=generator)
                for group in opt.param_groups:
                    group["lr"] = lr * _cosine(step, steps)
                opt.zero_grad()
                loss = self.loss(w, terms, idx)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([w], CLIP)
                opt.step()
                if step % LOG_EVERY == 0 or step == steps - 1:
                    history.append(float(loss.detach()))
                    if bar is not None:
                        bar.set_postfix(loss=f"{history[-1]:.2e}", refresh=False)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return w.detach(), history

    def polish(self, w: Any, terms: dict[str, float], iterations: int) -> Any:
        """Levenberg-Marquardt on the residuals of ``terms``: each iteration builds the
        Jacobian on the inputs with the largest error (`POLISH_INPUTS` of them, fewer for
        a wide model) and takes a step only if it lowers the error summed over every
        training input. Where an exact ``W`` is near, it converges to it quadratically.
        ``w`` back unchanged unless the result leaves no more training inputs wrong."""
        torch = self.torch
        wrong = self.wrong(w)
        longest = self.out_mask.sum(-1).argmax().reshape(1)
        rows = sum(r.numel() for r in self.residuals(w, terms, longest))
        n = max(1, min(POLISH_INPUTS, POLISH_ENTRIES // max(1, rows * w.numel())))

        def costs(flat: Any) -> Any:     # every input's error
            with torch.no_grad():
                return torch.cat([self.costs(flat.reshape(w.shape), terms,
                                             torch.arange(lo, min(self.n, lo + 4096)))
                                  for lo in range(0, self.n, 4096)])

        x = w.reshape(-1).clone()
        each = costs(x)
        cost, mu = float(each.sum()), 1e-3
        history = [cost]
        for _ in range(iterations):
            if cost < POLISHED or (len(history) > STALL and cost > 0.5 * history[-1 - STALL]):
                break  # exact, or no exact W near: the error stopped falling
            idx = torch.sort(torch.argsort(each, descending=True, stable=True)[:n]).values

            def errors(flat: Any, idx: Any = idx) -> Any:
                return torch.cat(self.residuals(flat.reshape(w.shape), terms, idx))

            with warnings.catch_warnings():  # torch.func's own use of torch.jit.script
                warnings.filterwarnings("ignore", ".*torch.jit.script.*", DeprecationWarning)
                jac = torch.func.jacfwd(errors)(x)                # (rows, D * d)
            r = errors(x)
            jtj, jtr = jac.T @ jac, jac.T @ r
            while mu < 1e12:
                step = torch.linalg.solve(jtj + mu * torch.diag(jtj.diagonal() + 1e-12), -jtr)
                new_each = costs(x + step)
                new = float(new_each.sum())
                if new < cost:
                    x, each, cost, mu = x + step, new_each, new, max(mu / 3, 1e-12)
                    history.append(cost)
                    break
                mu *= 4
            else:
                break
        polished = x.reshape(w.shape)
        return polished if int(self.wrong(polished).sum()) <= int(wrong.sum()) else w


def _cosine(step: int, steps: int) -> float:
    """The cosine schedule's factor at ``step`` of ``steps``: 1 at the start, 0 at the end."""
    return 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def _bar(steps: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc="compress", unit="step")
