"""`compress`: tracr's residual compression (Lindner et al. 2023, section 5), trained with
torch on the program's own domain.

The compressed model keeps every weight of the compiled model and adds one matrix
``W [D, d]``: the residual stream is ``h [d]``, every write goes through ``W`` (the
embedding writes ``(W_E[t] + W_pos[p]) W``, a sublayer with output ``y`` adds ``y W``)
and every read through ``W^T`` (a sublayer and the unembedding read ``h W^T``, which is
``x W W^T`` when every read before was right). tracr's paper writes the same with
column vectors (reads ``W h``, writes ``W^T y``). Only ``W`` is trained, on every input
of the domain when there are at most ``max_inputs`` of them (else a seeded sample), with
the loss of the paper:

    L = mean_{b, t} |logits' - logits|^2  +  residual_weight * sum_l mean_{b, t} |h_l W^T - x_l|^2

``logits`` and ``x_l`` (the residual after the embedding and after every sublayer) are
the compiled model's, ``logits'`` and ``h_l`` the compressed one's, means over the
positions that hold a token (BOS included for the residual, left out for the output,
PAD left out). The residual term pulls ``W W^T`` towards the identity on the features
the model uses; the output term asks only for what the output needs, so a feature the
output never needs can be dropped. Training runs in float64 with Adam (``lr``, cosine
decay to 0 over ``steps``); the residual weight decays the same way, so the last steps
fit the output alone. The result is folded into the weights
(`rasplang.compression.basis.fold`) and is an ordinary model: `rasplang.verify` says on
which inputs it is still the program.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any

import numpy as np

from rasplang.backend.forward import forward as dense_forward
from rasplang.backend.forward import trimmed
from rasplang.backend.model import CompiledModel
from rasplang.compression.basis import CompressedModel, check_foldable, fold
from rasplang.verify_inputs import EXHAUSTIVE_LIMIT, _all_inputs, _random_inputs, count_inputs

#: Inputs `compress` trains on when the domain has more (a seeded sample of this many).
SAMPLES = 20_000
#: How often (steps) the loss is recorded in ``CompressedModel.history``.
LOG_EVERY = 10
#: The summed squared output error at which polishing stops (float64 rounding).
POLISHED = 1e-24
#: Polishing stops when the error has not halved over this many iterations.
STALL = 5
#: Polishing builds the output errors' Jacobian in ``W``: only up to this many entries.
POLISH_MAX_PARAMS = 1500
#: How far (relative) a nonzero seed turns the first ``W`` away from the principal one.
START_NOISE = 0.3
#: Largest gradient norm an Adam step takes (large gains make the loss steep near W).
CLIP = 1.0


def compress(model: CompiledModel, d: int, *, steps: int = 1000, lr: float = 0.01,
             seed: int = 0, progress: bool = True, residual_weight: float = 1.0,
             max_inputs: int = EXHAUSTIVE_LIMIT, samples: int = SAMPLES,
             polish: int = 50, init: str = "random", threads: int = 1) -> CompressedModel:
    """``model`` with its residual stream compressed to ``d`` dimensions by a learned
    ``W [D, d]`` (module docstring); a `CompressedModel`, which runs, verifies, saves and
    exports like any compiled model.

    Trains on every input of the model's domain (lengths 1..``max_seq_len`` over its
    vocabulary) when there are at most ``max_inputs``, else on ``samples`` seeded random
    inputs. Deterministic for a ``seed``: torch runs on ``threads`` CPU threads (restored
    after) with its generator seeded. ``W`` starts as ``d`` random orthonormal columns
    (``init="random"``) or the residuals' principal directions (``"pca"``, turned by the
    seed). ``polish`` Levenberg-Marquardt iterations follow Adam (`_Trainer.polish`).
    ``progress`` shows a tqdm bar with the loss. Needs
    torch (the ``lab`` extra). Raises ValueError for ``d`` outside ``1..d_model`` and for a
    model with a norm.
    """
    import torch

    cfg = model.config
    check_foldable(model, "compress", rotation=False)
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 1 <= d <= cfg.d_model:
        raise ValueError(f"d must be an integer in 1..{cfg.d_model} (the model's d_model), "
                         f"got {d!r}")
    if init not in ("random", "pca"):
        raise ValueError(f"init must be 'random' or 'pca', got {init!r}")
    if steps < 1 or not lr > 0:
        raise ValueError(f"steps must be at least 1 and lr positive, got {steps} and {lr}")
    ids = domain_ids(model, max_inputs, samples, seed)
    start = time.perf_counter()
    with _torch_threads(torch, threads):
        torch.manual_seed(seed)
        trainer = _Trainer(model, ids, torch, seed, init)
        w, history = trainer.fit(int(d), steps, lr, residual_weight, progress, polish)
    seconds = time.perf_counter() - start
    basis = (f"compress(d_model={cfg.d_model}, d={int(d)}, seed={seed}, steps={steps}, "
             f"lr={lr:g}, residual_weight={residual_weight:g}, inputs={len(ids)})")
    return fold(model, w, basis, "compressed", CompressedModel, projection=w,
                features=tuple(model.residual_labels), history=tuple(history), seconds=seconds)


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
    """The compiled model's weights and targets as float64 tensors, and the loop that
    fits ``W``."""

    def __init__(self, model: CompiledModel, ids: np.ndarray, torch: Any, seed: int = 0,
                 init: str = "random"):
        self.torch = torch
        self.seed, self.init = seed, init
        self.cfg = cfg = model.config
        weights = trimmed(model.weights, cfg.n_layers)          # padding heads dropped
        logits, trace = dense_forward({k: v.astype(np.float64) for k, v in weights.items()},
                                      cfg, ids, np, keep=True)
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)
        self.w = {k: t(v) for k, v in weights.items()}
        self.ids = torch.as_tensor(ids)
        self.logits = t(logits)                                   # (N, T, d_vocab_out)
        self.residuals = [t(r) for r in trace["residuals"]]      # (N, T, D) each
        real = ids != cfg.pad_id                                  # (N, T) tokens and BOS
        self.real = t(real)[..., None]
        self.out_mask = t(real & (np.arange(ids.shape[1]) > 0))[..., None]
        self.visible = torch.as_tensor(real)[:, None, None, :]     # (N, 1, 1, T) keys
        if cfg.causal:
            self.visible = self.visible & torch.tril(torch.ones(ids.shape[1], ids.shape[1],
                                                                dtype=torch.bool))

    def run(self, w: Any, reads_only: bool = False) -> tuple[Any, list[Any]]:
        """Logits and the read-back residuals ``h_l W^T`` of the compressed model (only
        the last one with ``reads_only``)."""
        torch, cfg, p = self.torch, self.cfg, self.w
        T = self.ids.shape[1]
        h = (p["embed.W_E"][self.ids] + p["pos_embed.W_pos"][:T]) @ w   # (N, T, d)
        reads = [h @ w.T]                                                # (N, T, D)
        for i in range(cfg.n_layers):
            b = f"blocks.{i}."
            x = reads[-1]
            q, k, v = (torch.einsum("ntD,hDe->nhte", x, p[b + f"attn.W_{n}"])
                       + p[b + f"attn.b_{n}"][None, :, None, :] for n in "QKV")
            scores = q @ k.transpose(-1, -2) / cfg.attn_scale             # (N, H, T, T)
            scores = scores.masked_fill(~self.visible, -math.inf)
            z = torch.softmax(scores, dim=-1) @ v                         # (N, H, T, E)
            attn = torch.einsum("nhte,heD->ntD", z, p[b + "attn.W_O"]) + p[b + "attn.b_O"]
            h = h + attn @ w
            reads.append(h @ w.T)
            pre = reads[-1] @ p[b + "mlp.W_in"] + p[b + "mlp.b_in"]
            act = (torch.nn.functional.gelu(pre, approximate="tanh")
                   if cfg.act_fn == "gelu_new" else torch.relu(pre))
            h = h + (act @ p[b + "mlp.W_out"] + p[b + "mlp.b_out"]) @ w
            reads.append(h @ w.T)
            if reads_only:
                del reads[:-1]
        return reads[-1] @ p["unembed.W_U"] + p["unembed.b_U"], reads

    def loss(self, w: Any, residual_weight: float) -> tuple[Any, Any]:
        """The output loss and the residual loss (module docstring)."""
        logits, reads = self.run(w)
        out = ((logits - self.logits) ** 2 * self.out_mask).sum() / self.out_mask.sum()
        resid = sum(((r - x) ** 2 * self.real).sum() for r, x in zip(reads, self.residuals))
        return out, resid / self.real.sum()

    def start(self, d: int) -> Any:
        """The first ``W``: the top ``d`` principal directions of every residual the model
        produces (the best rank-``d`` reconstruction of the residual loss), turned by a
        small seeded random rotation so that seeds start apart (seed 0 unturned)."""
        torch = self.torch
        mask = self.real[..., 0] > 0
        stacked = torch.cat([x[mask] for x in self.residuals])        # (M, D)
        _, _, vh = torch.linalg.svd(stacked, full_matrices=False)
        w = vh[:d].T                                                  # (D, d) orthonormal
        noise = torch.randn(w.shape, dtype=torch.float64)
        if self.seed:
            w = torch.linalg.qr(w + START_NOISE * noise)[0]
        return w

    def fit(self, d: int, steps: int, lr: float, residual_weight: float,
            progress: bool, polish: int = 0) -> tuple[np.ndarray, list[float]]:
        """Adam on ``W`` (orthonormal columns at first, from the seeded generator)."""
        torch = self.torch
        D = self.cfg.d_model
        w0 = (self.start(d) if self.init == "pca" else
              torch.linalg.qr(torch.randn(D, D, dtype=torch.float64))[0][:, :d])
        w = torch.nn.Parameter(w0.contiguous().clone())
        opt = torch.optim.Adam([w], lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, steps))
        bar = _bar(steps, progress)
        history = []
        try:
            for step in range(steps):
                opt.zero_grad()
                out, resid = self.loss(w, residual_weight)
                loss = out + residual_weight * _cosine(step, steps) * resid
                loss.backward()
                torch.nn.utils.clip_grad_norm_([w], CLIP)  # the compiled model is steep
                opt.step()
                sched.step()
                if step % LOG_EVERY == 0 or step == steps - 1:
                    history.append(float(loss.detach()))
                    if bar is not None:
                        bar.set_postfix(output=f"{float(out.detach()):.2e}",
                                        residual=f"{float(resid.detach()):.2e}",
                                        refresh=False)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if polish and D * d <= POLISH_MAX_PARAMS:
            self.polish(w, polish, history)
        return w.detach().numpy().copy(), history

    def polish(self, w: Any, iterations: int, history: list[float]) -> None:
        """Levenberg-Marquardt on the output errors alone, from Adam's ``W``: where an
        exact ``W`` is near (zero output error), it converges to it quadratically, down
        to float64 rounding, where Adam stalls orders of magnitude above."""
        torch = self.torch
        mask = self.out_mask[..., 0] > 0

        def errors(flat: Any) -> Any:
            logits, _ = self.run(flat.reshape(w.shape), reads_only=True)
            return (logits - self.logits)[mask].reshape(-1)

        x = w.detach().reshape(-1).clone()
        r = errors(x)
        cost, mu = float(r @ r), 1e-3
        costs = [cost]
        for _ in range(iterations):
            if cost < POLISHED or (len(costs) > STALL and cost > 0.5 * costs[-1 - STALL]):
                break  # exact, or no exact W near: the error stopped falling
            with warnings.catch_warnings():  # torch.func's own use of torch.jit.script
                warnings.filterwarnings("ignore", ".*torch.jit.script.*", DeprecationWarning)
                jac = torch.func.jacfwd(errors)(x)                # (M, D * d)
            jtj, jtr = jac.T @ jac, jac.T @ r
            while mu < 1e12:
                step = torch.linalg.solve(jtj + mu * torch.diag(jtj.diagonal() + 1e-12), -jtr)
                r_new = errors(x + step)
                new = float(r_new @ r_new)
                if new < cost:
                    x, r, cost, mu = x + step, r_new, new, max(mu / 3, 1e-12)
                    costs.append(cost)
                    break
                mu *= 4
            else:
                break
        with torch.no_grad():
            w.copy_(x.reshape(w.shape))
        history.append(cost / max(1, int(mask.sum())))


def _cosine(step: int, steps: int) -> float:
    """The cosine schedule's factor at ``step`` of ``steps``: 1 at the start, 0 at the end."""
    return 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def _bar(steps: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc="compress", unit="step")
