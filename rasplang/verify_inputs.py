"""Which inputs `rasplang.verify` checks: every input or a seeded sample, and the limit.

Inputs are every sequence of every length ``1..max_seq_len`` when there are at most
`EXHAUSTIVE_LIMIT` of them, else a seeded random sample with lengths spread uniformly.
A run of more than `MAX_INPUTS` inputs is refused before anything is compiled
(`TooManyInputsError`), unless ``max_inputs`` allows it. Inputs come batch by batch, each
batch of one length, as token codes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from rasplang.domain import Exhaustive, Sampled

#: At most this many inputs are enumerated when ``exhaustive=None``.
EXHAUSTIVE_LIMIT = 10**6
#: `verify` refuses to check more inputs than this (every input, or samples) unless its
#: ``max_inputs`` is raised: about 10 minutes at the ~20,000 inputs a second of a small
#: program on one busy core.
MAX_INPUTS = 10_000_000
#: Random inputs come in blocks of this many, block ``k`` drawn from ``(seed, k)`` alone.
SAMPLE_BLOCK = 1 << 16


class TooManyInputsError(ValueError):
    """`verify` was asked to check more than ``max_inputs`` inputs; nothing was run.

    ``count`` inputs were asked for (every input when ``exhaustive``, else samples);
    ``what`` says so in words, without the advice (the CLI gives its own).
    """

    def __init__(self, what: str, count: int, limit: int, exhaustive: bool):
        self.what, self.count, self.limit, self.exhaustive = what, count, limit, exhaustive
        raise_to = f"max_inputs={count} (or None for no limit)" if count < 10**15 else \
            "max_inputs=None"
        super().__init__(
            f"{what}; pass {raise_to} to run it anyway"
            + (", or exhaustive=False to check `samples` random inputs" if exhaustive else ""))


def count_inputs(n_vocab: int, max_seq_len: int) -> int:
    """How many inputs of length ``1..max_seq_len`` there are over ``n_vocab`` tokens."""
    if n_vocab == 1:
        return max_seq_len
    return (n_vocab ** (max_seq_len + 1) - n_vocab) // (n_vocab - 1)


def check_input_count(n_vocab: int, max_seq_len: int, exhaustive: bool | None,
                      samples: int, max_inputs: int | None = MAX_INPUTS) -> tuple[bool, int]:
    """How `verify` chooses its inputs: ``(exhaustive, how many)``.

    ``exhaustive=None`` enumerates every input when there are at most `EXHAUSTIVE_LIMIT`
    (and ``max_inputs``) of them, else samples. Raises `TooManyInputsError` when the
    run would check more than ``max_inputs`` inputs (None: no limit).
    """
    if max_inputs is not None and max_inputs < 1:
        raise ValueError(f"max_inputs must be a positive int or None, got {max_inputs!r}")
    limit = math.inf if max_inputs is None else max_inputs
    domain = count_inputs(n_vocab, max_seq_len)
    if exhaustive is None:
        exhaustive = domain <= min(EXHAUSTIVE_LIMIT, limit)
    count = domain if exhaustive else samples
    every = f"every input of length 1..{max_seq_len} over {n_vocab} tokens"
    if count > limit:
        what = (f"exhaustive verification would check {_count(count)} inputs ({every})"
                if exhaustive else f"verification would check {count:,} random inputs")
        raise TooManyInputsError(f"{what}, more than the limit of {max_inputs:,}", count,
                                 max_inputs, exhaustive)
    if exhaustive and n_vocab ** max_seq_len >= 2**63:
        raise ValueError(f"{_count(count)} inputs ({every}) are too many to enumerate "
                         "with 64-bit indices; check random samples instead")
    return bool(exhaustive), count


def _count(n: int) -> str:
    """``1,234`` up to 10^15, else ``about 1.5e+22`` (no giant integer printed)."""
    if n < 10**15:
        return f"{n:,}"
    exponent = (n.bit_length() - 1) * math.log10(2)
    if exponent < 300:
        return f"about {float(n):.2g}"
    return f"about 10^{int(exponent)}"


def _all_inputs(n_vocab: int, max_seq_len: int, batch_size: int) -> Iterator[np.ndarray]:
    """Every sequence of codes ``[b, n]``, length by length, in lexicographic order
    (`rasplang.domain.Exhaustive`'s order: input ``i`` is its unranking)."""
    domain = Exhaustive(n_vocab, tuple(range(1, max_seq_len + 1)))
    for codes, _ in domain.batches(0, domain.total, batch_size):
        yield codes


def _random_inputs(n_vocab: int, max_seq_len: int, samples: int, seed: int,
                   batch_size: int) -> Iterator[np.ndarray]:
    """``samples`` random sequences of codes, lengths uniform in ``1..max_seq_len``, in
    batches of one length: `rasplang.domain.Sampled` in blocks of `SAMPLE_BLOCK`, so a
    sharded run checks the same inputs."""
    domain = sampled_domain(n_vocab, max_seq_len, samples, seed)
    for codes, _ in domain.batches(0, samples, batch_size, one_length=True):
        yield codes


def sampled_domain(n_vocab: int, max_seq_len: int, samples: int, seed: int) -> Sampled:
    """The random inputs `verify` checks, addressed by (seed, block)."""
    return Sampled(n_vocab, tuple(range(1, max_seq_len + 1)), samples, seed, SAMPLE_BLOCK)
