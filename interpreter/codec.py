"""Inputs to integer codes and codes back to Python lists."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from rasplang.interpreter.tables import Table

Value = Any


def encode(
    inputs: Sequence[Sequence[Value]], vocab: Sequence[Value], max_seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """``inputs`` -> (codes ``[B, T]`` int32 into ``vocab``, lengths ``[B]`` int64).

    ``T`` is the longest input (at least 1). A token is found by ``==`` (as a dict
    lookup), so ``1.0`` matches a vocabulary entry ``1``. Raises ValueError naming the
    sequence and position of a token outside ``vocab``, or the index and length of a
    sequence longer than ``max_seq_len``.
    """
    lengths = np.fromiter(map(len, inputs), dtype=np.int64, count=len(inputs))
    too_long = np.flatnonzero(lengths > max_seq_len)
    if too_long.size:
        i = int(too_long[0])
        raise ValueError(
            f"sequence {i} has length {int(lengths[i])}, longer than max_seq_len={max_seq_len}"
        )
    n_pos = max(1, int(lengths.max(initial=0)))
    index = {token: code for code, token in enumerate(vocab)}
    total = int(lengths.sum())
    tokens = itertools.chain.from_iterable(inputs)
    try:  # one dict lookup per token, in C (map), collected without boxing the codes
        if len(vocab) <= 256:
            flat = np.frombuffer(bytearray(map(index.__getitem__, tokens)), dtype=np.uint8)
        else:
            flat = np.fromiter(map(index.__getitem__, tokens), dtype=np.int32, count=total)
    except (KeyError, TypeError):
        _raise_bad_token(inputs, index, vocab)
        raise
    if total == len(inputs) * n_pos:  # every sequence has the longest length
        return flat.reshape(len(inputs), n_pos).astype(np.int32), lengths
    codes = np.zeros((len(inputs), n_pos), dtype=np.int32)
    codes[np.arange(n_pos)[None, :] < lengths[:, None]] = flat
    return codes, lengths


def _raise_bad_token(inputs: Sequence[Sequence[Value]], index: dict, vocab: Sequence[Value]):
    for i, seq in enumerate(inputs):
        for j, token in enumerate(seq):
            try:
                found = token in index
            except TypeError:
                found = False
            if not found:
                raise ValueError(
                    f"token {token!r} at (sequence {i}, position {j}) is not in the "
                    f"vocabulary {list(vocab)}"
                )


def _lookup_array(table: Table) -> np.ndarray:
    """``table.values`` as an array whose ``tolist`` gives back equal values of the same
    types: int64, bool or float64 when every value is exactly that type, else objects."""
    kinds = set(map(type, table.values))
    if kinds == {int} and all(-(2**63) <= v < 2**63 for v in table.values):
        return np.array(table.values, dtype=np.int64)
    if kinds == {bool}:
        return np.array(table.values, dtype=bool)
    if kinds == {float}:
        return np.array(table.values, dtype=np.float64)
    return table.as_object_array()


def decode(codes: np.ndarray, lengths: np.ndarray, table: Table) -> list[list[Value]]:
    """Codes ``[B, T]`` -> one list of values per sequence, cut to its length."""
    rows = _lookup_array(table)[codes].tolist()  # [B][T] values, in C
    if not rows or int(lengths.min()) == codes.shape[1]:
        return rows
    short = np.flatnonzero(lengths < codes.shape[1])
    for b, n in zip(short.tolist(), lengths[short].tolist()):
        del rows[b][n:]
    return rows


def decode_matrices(matrices: np.ndarray, lengths: np.ndarray) -> list[list[list[bool]]]:
    """Selector matrices ``[B, T, T]`` -> ``[query][key]`` lists of bools per sequence."""
    return [m[:n, :n].astype(bool).tolist() for m, n in zip(matrices, lengths.tolist())]
