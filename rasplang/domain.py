"""Input domains addressed by index, so any shard of one can be computed anywhere.

An input is a sequence of token *codes* (positions in the plan's vocabulary, which
`rasplang.analyze` sorts). Two kinds of domain:

- `Exhaustive`: every sequence of every allowed length. Input number ``i`` is found by
  *unranking*: lengths in ascending order, and within one length the sequences in
  lexicographic order of their codes (the first position varies slowest), as in
  `itertools.product`. Over 3 tokens and lengths 1..2 the order is
  ``[0] [1] [2] [0 0] [0 1] [0 2] [1 0] ... [2 2]``: input 4 is ``[0, 1]``.
- `Sampled`: ``n`` random inputs, cut into blocks of ``block`` rows. Block ``k`` is
  drawn from ``numpy.random.default_rng([seed, k])`` alone: each row's length uniformly
  from the allowed lengths, then its tokens uniformly. A block never depends on another
  one, so the same (seed, block) gives the same rows on any machine with the same
  numpy, whichever worker draws it.

Both hand out inputs as batches (`batches`): ``codes [b, T] int32`` and
``lengths [b] int64`` (codes past a row's length are 0). An exhaustive batch holds one
length; a sampled batch mixes lengths unless ``one_length=True``, which splits it by
length, shortest first (a compiled model never sees padding).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import attrs
import numpy as np

Batch = tuple[np.ndarray, np.ndarray]  # codes [b, T] int32, lengths [b] int64


def check_lengths(lengths: Iterable[int] | None, max_seq_len: int) -> tuple[int, ...]:
    """The allowed lengths, sorted and distinct: ``1..max_seq_len`` when None."""
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be at least 1, got {max_seq_len}")
    if lengths is None:
        return tuple(range(1, max_seq_len + 1))
    if isinstance(lengths, int):
        lengths = [lengths]
    chosen = sorted(set(lengths))
    if not chosen:
        raise ValueError("lengths is empty: give at least one length")
    bad = [n for n in chosen if not isinstance(n, (int, np.integer)) or not 1 <= n <= max_seq_len]
    if bad:
        raise ValueError(f"lengths {bad!r} are not in 1..max_seq_len ({max_seq_len})")
    return tuple(int(n) for n in chosen)


@attrs.frozen
class Exhaustive:
    """Every sequence over ``n_vocab`` tokens of each length in ``lengths``, by index."""

    n_vocab: int
    lengths: tuple[int, ...]

    def __attrs_post_init__(self) -> None:
        if self.n_vocab < 1:
            raise ValueError("the vocabulary is empty")
        if self.n_vocab ** max(self.lengths) >= 2**63:
            raise ValueError(f"{self.n_vocab}^{max(self.lengths)} inputs of one length are "
                             "too many to address with 64-bit indices; sample instead")

    @property
    def total(self) -> int:
        """How many inputs the domain holds."""
        return sum(self.n_vocab**n for n in self.lengths)

    def _starts(self) -> list[int]:
        """The index of the first input of each length."""
        starts, at = [], 0
        for n in self.lengths:
            starts.append(at)
            at += self.n_vocab**n
        return starts

    def unrank(self, index: int) -> list[int]:
        """Input number ``index`` as a list of codes."""
        if not 0 <= index < self.total:
            raise IndexError(f"input {index} is outside the domain of {self.total:,} inputs")
        codes, _ = next(self.batches(index, index + 1))
        return codes[0].tolist()

    def batches(self, start: int, stop: int, batch_size: int = 8192,
                one_length: bool = True) -> Iterator[Batch]:
        """Inputs ``start..stop-1`` in order, in batches of one length."""
        for n, first in zip(self.lengths, self._starts()):
            count = self.n_vocab**n
            lo, hi = max(start, first) - first, min(stop, first + count) - first
            powers = self.n_vocab ** np.arange(n - 1, -1, -1, dtype=np.int64)  # (n,)
            for at in range(lo, hi, batch_size):
                index = np.arange(at, min(hi, at + batch_size), dtype=np.int64)
                codes = ((index[:, None] // powers) % self.n_vocab).astype(np.int32)  # (b, n)
                yield codes, np.full(len(index), n, dtype=np.int64)


@attrs.frozen
class Sampled:
    """``n`` seeded random inputs in blocks of ``block`` rows; block ``k`` comes from
    ``default_rng([seed, k])`` alone."""

    n_vocab: int
    lengths: tuple[int, ...]
    n: int
    seed: int
    block: int

    def __attrs_post_init__(self) -> None:
        if self.n_vocab < 1:
            raise ValueError("the vocabulary is empty")
        if self.n < 0:
            raise ValueError(f"n must be non-negative, got {self.n}")
        if self.block < 1:
            raise ValueError(f"the block size must be positive, got {self.block}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")

    @property
    def total(self) -> int:
        """How many inputs the domain holds."""
        return self.n

    def draw(self, k: int) -> Batch:
        """Block ``k``, all its rows: ``codes [b, max(lengths)]`` and ``lengths [b]``."""
        size = min(self.block, self.n - k * self.block)
        if size <= 0:
            raise IndexError(f"block {k} is outside the {math.ceil(self.n / self.block)} "
                             f"blocks of {self.n:,} inputs")
        rng = np.random.default_rng([int(self.seed), int(k)])
        allowed = np.asarray(self.lengths, dtype=np.int64)
        lengths = allowed[rng.integers(0, len(allowed), size=size)]  # (b,)
        width = int(allowed.max())
        codes = rng.integers(0, self.n_vocab, size=(size, width), dtype=np.int32)  # (b, T)
        codes[np.arange(width)[None, :] >= lengths[:, None]] = 0
        return codes, lengths

    def batches(self, start: int, stop: int, batch_size: int = 8192,
                one_length: bool = False) -> Iterator[Batch]:
        """Inputs ``start..stop-1`` in order; with ``one_length``, grouped by length."""
        stop = min(stop, self.n)
        for k in range(start // self.block, math.ceil(stop / self.block)):
            base = k * self.block
            codes, lengths = self.draw(k)
            lo, hi = max(start, base) - base, min(stop, base + len(lengths)) - base
            codes, lengths = codes[lo:hi], lengths[lo:hi]
            if not one_length:
                for at in range(0, len(lengths), batch_size):
                    part = slice(at, at + batch_size)
                    yield codes[part, : int(lengths[part].max())], lengths[part]
                continue
            for n in np.unique(lengths).tolist():
                rows = codes[lengths == n, :n]
                for at in range(0, len(rows), batch_size):
                    part = rows[at:at + batch_size]
                    yield np.ascontiguousarray(part), np.full(len(part), n, dtype=np.int64)


Domain = Exhaustive | Sampled


def split(total: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of at most ``size`` inputs that cover ``0..total-1``."""
    return [(at, min(total, at + size)) for at in range(0, total, size)]
