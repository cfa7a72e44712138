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
    flat = _flat_codes(inputs, index, int(lengths.sum()))
    if flat is None:
        _raise_bad_token(inputs, index, vocab)
        raise ValueError(f"a token is not in the vocabulary {list(vocab)}")
    if flat.size == len(inputs) * n_pos:  # every sequence has the longest length
        return flat.reshape(len(inputs), n_pos).astype(np.int32), lengths
    codes = np.zeros((len(inputs), n_pos), dtype=np.int32)
    codes[np.arange(n_pos)[None, :] < lengths[:, None]] = flat
    return codes, lengths


def _flat_codes(inputs: Sequence[Sequence[Value]], index: dict, total: int
                ) -> np.ndarray | None:
    """Every token's code (``index[token]``), in order; None if a token is not in ``index``.

    When the vocabulary is one-character strs or ints in 0..255 and the sequences are
    lists or tuples, the tokens are converted in C (``"".join``: one code point per
    token; ``bytes``: one byte per token) and mapped to codes through a table over those
    code points or bytes, where a point outside the vocabulary shows as -1. Otherwise,
    or if that fails, one dict lookup per token. Either way a token's code is
    ``index[token]``.
    """
    fast = _fast_kind(index)
    if fast is not None and set(map(type, inputs)) <= {list, tuple}:
        try:
            codes = _fast_codes(inputs, index, total, fast)
        except (TypeError, ValueError):  # a token of another kind; bytes refuses > 255
            codes = None
        if codes is not None:
            return codes
    tokens = itertools.chain.from_iterable(inputs)
    try:
        if len(index) <= 256:  # collected without boxing the codes
            return np.frombuffer(bytearray(map(index.__getitem__, tokens)), dtype=np.uint8)
        return np.fromiter(map(index.__getitem__, tokens), dtype=np.int32, count=total)
    except (KeyError, TypeError):
        return None


def _fast_kind(index: dict) -> type | None:
    """``str`` for a vocabulary of one-character strs, ``int`` for one of ints (or bools)
    in 0..255, else None."""
    kinds = set(map(type, index))
    if kinds == {str} and all(len(token) == 1 for token in index):
        return str
    if kinds and kinds <= {int, bool} and min(index) >= 0 and max(index) < 256:
        return int
    return None


def _fast_codes(inputs: Sequence[Sequence[Value]], index: dict, total: int, kind: type
                ) -> np.ndarray | None:
    """`_flat_codes` through ``"".join`` or ``bytes`` (which raise TypeError on a token
    of another kind, and ``bytes`` ValueError past 255, so it gives one byte per token);
    None where a token is not in ``index``."""
    if kind is str:  # "" and "ab" would join to as many characters as two tokens
        if not all(token in index for token in set().union(*inputs)):
            return None
        text = "".join(map("".join, inputs))
        if len(text) != total:
            return None
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        keys = {ord(t): code for t, code in index.items()}
    else:
        points = np.frombuffer(b"".join(map(bytes, inputs)), dtype=np.uint8)
        keys = {int(t): code for t, code in index.items()}
    if points.size != total:
        return None
    table = np.full(max(keys) + 1, -1, dtype=np.int32)
    table[list(keys)] = list(keys.values())
    if points.size and int(points.max()) >= table.size:
        return None
    codes = np.take(table, points)
    return None if points.size and int(codes.min()) < 0 else codes


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


def decode(codes: np.ndarray, lengths: np.ndarray, table: Table) -> list[list[Value]]:
    """Codes ``[B, T]`` -> one list of values per sequence, cut to its length.

    The values are the table's own objects, gathered through an object array: ``tolist``
    then only takes references, where an int64 or float64 array would build a new
    Python number per position (2.5x slower for floats and for ints outside -5..256,
    as fast for bools and small ints)."""
    rows = table.as_object_array()[codes].tolist()  # [B][T] values, in C
    if not rows or int(lengths.min()) == codes.shape[1]:
        return rows
    short = np.flatnonzero(lengths < codes.shape[1])
    for b, n in zip(short.tolist(), lengths[short].tolist()):
        del rows[b][n:]
    return rows


def decode_matrices(matrices: np.ndarray, lengths: np.ndarray) -> list[list[list[bool]]]:
    """Selector matrices ``[B, T, T]`` -> ``[query][key]`` lists of bools per sequence."""
    return [m[:n, :n].astype(bool).tolist() for m, n in zip(matrices, lengths.tolist())]
