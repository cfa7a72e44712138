"""The inputs a ground truth is computed on, and how ablated outputs are compared.

The domain is the one `rasplang.verify` checks: every sequence of length
``1..max_seq_len`` over the model's vocabulary (`rasplang.domain.Exhaustive`'s order)
when there are at most `EXHAUSTIVE_LIMIT` of them, else ``samples`` seeded random
inputs (`rasplang.verify_inputs.sampled_domain`, the same ones verify draws for that
seed). Inputs on which the program raises (``evaluate`` is undefined there, e.g. a
categorical Aggregate that selects several different values) are left out, as verify
skips them; on every other input the unablated model must give the program's output,
or nothing is computed (a ground truth of a model that is not exact means nothing).

An ablated run *gives the program's output* on an input when its decoded output
equals the unablated model's at every position, compared as verify compares:
categorical values exactly (the argmax above 1/2, else None), numerical ones within
`rasplang.divergence.NUMERICAL_TOLERANCE` (and the None flag equal).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from rasplang.divergence import NUMERICAL_TOLERANCE
from rasplang.domain import Exhaustive
from rasplang.verify_inputs import count_inputs, sampled_domain

#: Every input is used when the domain holds at most this many (``exhaustive=None``).
EXHAUSTIVE_LIMIT = 50_000
#: Inputs are drawn and checked this many at a time.
CHUNK = 4096


@attrs.frozen
class Inputs:
    """The inputs of a ground truth, by length: ``groups`` maps each length to its
    embedding ids ``[B, 1 + length]`` (BOS first), undefined inputs left out."""

    groups: dict[int, np.ndarray]
    exhaustive: bool
    seed: int
    skipped: int

    @property
    def count(self) -> int:
        """How many inputs there are."""
        return int(sum(len(ids) for ids in self.groups.values()))


def domain_inputs(model: Any, exhaustive: bool | None = None, samples: int = 10_000,
                  seed: int = 0) -> Inputs:
    """The inputs of the module docstring, checked against ``model.program`` (when the
    model has one: a loaded model has none, and its own outputs are the reference)."""
    cfg = model.config
    program = getattr(model, "program", None)
    vocab, plan = tuple(cfg.vocab), None
    if program is not None:
        from rasplang.interpreter import Plan

        plan = Plan(program, vocab, cfg.max_seq_len, cfg.causal)
        vocab = plan.vocab
    n_vocab, max_len = len(vocab), cfg.max_seq_len
    total = count_inputs(n_vocab, max_len)
    if exhaustive is None:
        exhaustive = total <= EXHAUSTIVE_LIMIT
    if exhaustive:
        domain = Exhaustive(n_vocab, tuple(range(1, max_len + 1)))
        batches = domain.batches(0, domain.total, batch_size=CHUNK)
    else:
        if samples < 1:
            raise ValueError(f"samples must be positive, got {samples}")
        batches = sampled_domain(n_vocab, max_len, samples, seed).batches(
            0, samples, batch_size=CHUNK, one_length=True)
    ids_of = np.array([model.input_encoder.encoding_map[t] for t in vocab], dtype=np.int64)
    checker = None
    if plan is not None:
        from rasplang.verification import _Checker

        checker = _Checker(plan, model)
    parts: dict[int, list[np.ndarray]] = {}
    skipped = 0
    for codes, _ in batches:
        if checker is not None:
            bad, undefined = checker.check(codes)
            if len(bad):
                m = checker.explain(codes[bad[0]])
                raise ValueError(f"the model does not compute its program on {len(bad)} "
                                 f"inputs, e.g. {m}; a ground truth needs an exact model "
                                 "(see rasplang.verify)")
            skipped += len(undefined)
            codes = np.delete(codes, undefined, axis=0)
        ids = np.empty((len(codes), codes.shape[1] + 1), dtype=np.int64)  # (b, 1 + n)
        ids[:, 0] = model.input_encoder.bos_id
        ids[:, 1:] = ids_of[codes]
        parts.setdefault(codes.shape[1], []).append(ids)
    groups = {n: np.concatenate(p) for n, p in sorted(parts.items()) if sum(map(len, p))}
    return Inputs(groups, bool(exhaustive), int(seed), skipped)


@attrs.frozen
class Reference:
    """The unablated outputs of a batch, and `agrees`: which inputs an ablated run's
    logits still give them on (module docstring)."""

    numerical: bool
    index: np.ndarray   # categorical: decoded index [B, n] (len(values) for None)
    value: np.ndarray   # numerical: value [B, n]
    none: np.ndarray    # numerical: None flag [B, n]

    @classmethod
    def of(cls, model: Any, logits: np.ndarray) -> Reference:
        """The reference of the unablated logits ``[B, T, d_vocab_out]``."""
        numerical = model.config.output_encoding == "numerical"
        return cls(numerical, *decode(logits, numerical))

    def agrees(self, logits: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``[B]`` bool: the run with ``logits`` gives the reference output (with
        ``rows``: ``logits`` are those inputs' alone, and so is the answer)."""
        index, value, none = decode(logits, self.numerical)
        if not self.numerical:
            ref = self.index if rows is None else self.index[rows]
            return (index == ref).all(axis=1)
        ref, ref_none = (self.value, self.none) if rows is None \
            else (self.value[rows], self.none[rows])
        tol = NUMERICAL_TOLERANCE * np.maximum(1.0, np.abs(ref))
        close = np.where(ref_none, none, ~none & (np.abs(value - ref) <= tol))
        return close.all(axis=1)


def decode(logits: np.ndarray, numerical: bool) -> tuple[np.ndarray, ...]:
    """``(index, value, none)`` of logits ``[B, T, V]`` at positions ``1..T-1``, as
    `rasplang.backend.encoders.OutputEncoder.decode` reads them."""
    logits = logits[:, 1:]
    empty = np.zeros(logits.shape[:2])
    if numerical:
        value = logits[..., 0]
        none = logits[..., 1] > 0.5 if logits.shape[-1] > 1 else np.isnan(value)
        return empty.astype(np.int64), value, none
    k = logits.shape[-1]
    if k == 0:
        return empty.astype(np.int64), empty, empty.astype(bool)
    idx = logits.argmax(axis=-1)
    best = np.take_along_axis(logits, idx[..., None], axis=-1)[..., 0]
    return np.where(best > 0.5, idx, k), empty, empty.astype(bool)
