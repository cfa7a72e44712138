"""The list codec against a plain dict lookup per token: the fast paths (one-character
strs through ``"".join``, small ints through ``bytes``) give the same codes and the same
errors as the general path."""

from __future__ import annotations

import numpy as np
import pytest

from rasplang.interpreter.codec import decode, encode
from rasplang.interpreter.tables import Table


def _reference(inputs, vocab):
    index = {token: code for code, token in enumerate(vocab)}
    return [[index[token] for token in seq] for seq in inputs]


def _codes(inputs, vocab):
    codes, lengths = encode(inputs, vocab, 8)
    return [row[:n] for row, n in zip(codes.tolist(), lengths.tolist())]


CASES = [
    ("ints", [[1, 2, 3], [3, 2]], (1, 2, 3)),
    ("ints found by ==", [[1, 2.0, True], [3]], (1, 2, 3)),
    ("a numpy int64 row", [[1, 2], np.array([1, 2])], (1, 2, 3)),
    ("a numpy uint8 row", [[1, 2], np.array([1, 2], dtype=np.uint8)], (1, 2, 3)),
    ("byte range ends", [[0, 255, 3]], (0, 3, 255)),
    ("ints past a byte", [[300, 1]], (1, 300)),
    ("bools", [[True, False]], (False, True)),
    ("ints for bools", [[1, 0]], (False, True)),
    ("floats for ints", [[1.0, 2.0]], (1, 2)),
    ("str rows", ["abc", "ca"], tuple("abc")),
    ("chars", [list("abc"), ["a"]], tuple("abc")),
    ("chars past latin-1", [["é", "→"]], ("→", "é")),
    ("a numpy str", [[np.str_("a"), "b"]], ("a", "b")),
    ("tuples", [[(1, 2)]], ((1, 2),)),
    ("empty and short", [[], ["b"], ["a", "b"]], ("a", "b")),
    ("ints as tuples", [(1, 2), (2,)], (1, 2)),
    ("an int8 numpy row", [[1, 2], np.array([2, 1], dtype=np.int8)], (1, 2)),
]


@pytest.mark.parametrize(("inputs", "vocab"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_encode_matches_dict_lookup(inputs, vocab):
    """Every path of `encode` gives each token the code of the vocabulary entry it equals."""
    assert _codes(inputs, vocab) == _reference(inputs, vocab)


@pytest.mark.parametrize(("inputs", "vocab", "token"), [
    ([[1, 4]], (1, 2), "4"),
    ([["ab"]], ("a", "b"), "'ab'"),
    ([["a", ""]], ("a",), "''"),
    ([["a", "", "ab"]], ("a", "b"), "''"),  # "" and "ab" join to as many chars as tokens
    ([[1.5]], (1, 2), "1.5"),
    ([[[1]]], (1,), r"\[1\]"),
    ([[2, 0], [1, 2]], (1, 2), "0"),  # a byte outside the vocabulary
    ([[2, 256], [1]], (1, 2), "256"),  # past a byte
    ([np.array([1, -1], dtype=np.int8)], (1, 255), r"np.int8\(-1\)"),  # bytes: 255
])
def test_encode_names_a_token_outside_the_vocabulary(inputs, vocab, token):
    """A token outside the vocabulary is refused with its sequence and position."""
    with pytest.raises(ValueError, match=rf"token {token} at \(sequence 0, position \d\)"):
        encode(inputs, vocab, 8)


def test_decode_keeps_value_types():
    """`decode` gives back the table's own values (1, 1.0 and True stay apart)."""
    table = Table.of([1, 1.0, True, "x", None])
    codes = np.array([[0, 1, 2], [3, 4, 0]], dtype=np.int32)
    out = decode(codes, np.array([3, 2]), table)
    assert out == [[1, 1.0, True], ["x", None]]
    assert [type(v) for v in out[0]] == [int, float, bool]


def test_decode_numbers_are_the_tables_values():
    """Numbers come back as the table holds them: -0.0 keeps its sign, a big int stays
    exact, NaN stays NaN, and the tuple a row ends with is one value."""
    table = Table.of([-0.0, 2**70, float("nan"), 7, (1, 2)])
    out = decode(np.array([[0, 1, 2, 3, 4]], dtype=np.int32), np.array([5]), table)[0]
    assert str(out[0]) == "-0.0" and out[1] == 2**70 and out[2] != out[2]
    assert out[3:] == [7, (1, 2)] and type(out[3]) is int

