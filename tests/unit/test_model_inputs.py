"""CompiledModel.run and .apply: bad inputs and dtypes are refused before any forward pass."""

import numpy as np
import pytest

import rasplang as rl
from rasplang import lib


@pytest.fixture(scope="module")
def hist():
    return rl.compile(lib.make_hist(), {"a", "b"}, 4)


@pytest.fixture(scope="module")
def pairs():
    """hist over a vocabulary of tuples."""
    return rl.compile(lib.make_hist(), {(1, 2), (3, 4)}, 3)


@pytest.fixture(scope="module")
def multi():
    """hist over tokens of one and two characters."""
    return rl.compile(lib.make_hist(), {"a", "b", "ab"}, 3)


@pytest.mark.parametrize("token", ["BOS", "PAD"])
def test_bos_or_pad_inside_an_input_is_refused(hist, token):
    """BOS or PAD in a run input names the sequence, the position and the token."""
    with pytest.raises(ValueError, match=rf"sequence 0, position 1: token '{token}' is not in "
                                         r"the vocabulary \['a', 'b'\] \(the model adds BOS"):
        hist.run([["a", token, "a"]])


def test_unknown_tokens_are_listed_by_sequence_and_position(hist):
    """Every bad token is counted; the first few are named with their sequence and position."""
    batch = [["a"], ["b", "c"], ["a", ["a"]], *[["z"]] * 7]
    with pytest.raises(ValueError, match=r"^sequence 1, position 1: token 'c' is not in the "
                                         r"vocabulary \['a', 'b'\]; also sequence 2, position 1:"
                                         r" \['a'\]; sequence 3, position 0: 'z'; .*; 4 more$"):
        hist.run(batch)


def test_bad_token_is_found_before_any_forward_pass(hist, monkeypatch):
    """A bad token in the last chunk is refused before the first chunk runs."""
    def no_forward(*args, **kwargs):
        raise AssertionError("forward ran")

    monkeypatch.setattr("rasplang.backend.model.forward", no_forward)
    batch = [["a", "b"]] * 50 + [["a", "PAD"]]
    with pytest.raises(ValueError, match="sequence 50, position 1: token 'PAD'"):
        hist.run(batch, chunk=8)
    with pytest.raises(ValueError, match="dtype float16"):
        hist.run([["a"]], dtype=np.float16)


def test_apply_wants_bos_first_and_nowhere_else(hist):
    """apply refuses a missing BOS, a second BOS, PAD and a str."""
    assert hist.apply(["BOS", "a", "b", "a"]).decoded == ["BOS", 2, 1, 2]
    with pytest.raises(ValueError, match=r"start with BOS 'BOS', got \['a'\]"):
        hist.apply(["a", "b"])
    with pytest.raises(ValueError, match="sequence 0, position 2: token 'BOS' is not in"):
        hist.apply(["BOS", "a", "BOS"])
    with pytest.raises(ValueError, match="sequence 0, position 1: token 'PAD' is not in"):
        hist.apply(["BOS", "PAD"])
    with pytest.raises(ValueError, match=r"apply takes one sequence .* got the str 'ab'"):
        hist.apply("ab")


def test_str_batch_is_refused_with_the_wrapped_form(hist):
    """run("abc") shows how to write one sequence: model.run([['a', 'b', 'c']])."""
    with pytest.raises(ValueError, match=r"got the str 'abc'; .* model\.run\(\[\['a', 'b', "
                                         r"'c'\]\]\)"):
        hist.run("abc")


def test_batch_of_tokens_is_refused_with_the_wrapped_form(hist):
    """run(list("ab")) is one sequence, not two: the error shows how to wrap it."""
    with pytest.raises(ValueError, match=r"\['a', 'b'\] is a list of tokens: to run it as one "
                                         r"sequence, wrap it: model\.run\(\[\['a', 'b'\]\]\)"):
        hist.run(list("ab"))
    with pytest.raises(ValueError, match=r"model\.run\(\[\['a', 'b'\]\]\)"):
        hist.run(np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"element 1 of the batch, 3, is a single token, not a "
                                         r"sequence"):
        hist.run([["a"], 3])
    with pytest.raises(ValueError, match=r"element 0 .*, 3, is a single token.* is \[3\]$"):
        hist.run([3])


def test_str_sequences_are_read_as_characters(hist):
    """A str in a batch is the sequence of its characters, each checked as a token."""
    assert hist.run(["aba", "b", ""]) == [[2, 1, 2], [1], []]
    with pytest.raises(ValueError, match="sequence 1, position 2: token 'c' is not in the"):
        hist.run(["ab", "abc"])
    with pytest.raises(ValueError, match=r"element 0 of the batch is the bytes b'ab'"):
        hist.run([b"ab"])


def test_str_that_is_a_token_is_not_split(multi):
    """With multi-character tokens, a str that is a token is refused as ambiguous."""
    assert multi.run([["ab", "a"], "ba"]) == [[1, 1], [1, 1]]
    with pytest.raises(ValueError, match=r"element 1 of the batch, 'ab', is a single token, "
                                         r"not a sequence .* is \['ab'\]$"):
        multi.run(["ba", "ab"])
    with pytest.raises(ValueError, match=r"\['ab', 'a'\] is a list of tokens"):
        multi.run(["ab", "a"])


def test_not_a_batch(hist):
    """A batch that is not iterable, or an array that is not 1-D per sequence, is refused."""
    with pytest.raises(ValueError, match=r"run takes a batch of sequences .* got int 5"):
        hist.run(5)
    with pytest.raises(ValueError, match="element 0 of the batch is a 2-D array"):
        hist.run([np.array([["a"]])])


def test_sequences_may_be_lists_tuples_or_arrays(hist):
    """Lists, tuples and 1-D arrays of tokens are sequences; lengths may differ."""
    want = [[2, 1, 2], [1], [2, 2]]
    assert hist.run([["a", "b", "a"], ("b",), np.array(["a", "a"])]) == want
    assert hist.run(np.array([["a", "b"], ["b", "b"]])) == [[1, 1], [2, 2]]


def test_tuple_tokens(pairs):
    """With tuple tokens, a tuple in the vocabulary is a token, a tuple of them a sequence."""
    assert pairs.run([[(1, 2), (3, 4), (1, 2)]]) == [[2, 1, 2]]
    assert pairs.run([((1, 2), (3, 4))]) == [[1, 1]]
    with pytest.raises(ValueError, match=r"\[\(1, 2\), \(3, 4\)\] is a list of tokens: "
                                         r".*model\.run\(\[\[\(1, 2\), \(3, 4\)\]\]\)"):
        pairs.run([(1, 2), (3, 4)])
    with pytest.raises(ValueError, match=r"element 0 of the batch, \(1, 2\), is a single token"
                                         r".* is \[\(1, 2\)\]$"):
        pairs.run([(1, 2)])
    with pytest.raises(ValueError, match=r"sequence 0, position 0: token 1 is not in the "
                                         r"vocabulary \[\(1, 2\), \(3, 4\)\]"):
        pairs.run([[1, 2]])


def test_empty_inputs(hist):
    """An empty batch gives [], an empty sequence gives [] (as evaluate does)."""
    assert hist.run([]) == []
    assert hist.run([[], ["a"]]) == [[], [1]] == [rl.evaluate(lib.make_hist(), x)
                                                 for x in ([], ["a"])]
    assert hist.apply(["BOS"]).decoded == ["BOS"]


def test_too_long(hist):
    """A sequence longer than max_seq_len names its index and length."""
    with pytest.raises(ValueError, match="sequence 1 has length 5, longer than the max_seq_len 4"):
        hist.run([["a"], ["a"] * 5])
    with pytest.raises(ValueError, match="sequence 0 has length 5"):
        hist.apply(["BOS", *["a"] * 5])


@pytest.mark.parametrize("dtype", [np.float16, np.int64, "complex128", np.longdouble])
def test_unsupported_dtype(hist, dtype):
    """Only float64 and float32 are accepted; the error names the dtype given."""
    name = np.dtype(dtype).name
    with pytest.raises(ValueError, match=rf"dtype {name} is not supported: .*float64 .*float32"):
        hist.run([["a", "b"]], dtype=dtype)
    with pytest.raises(ValueError, match=rf"dtype {name} is not supported"):
        hist.apply(["BOS", "a"], dtype=dtype)


def test_not_a_dtype(hist):
    """Something that is not a dtype at all is refused the same way."""
    with pytest.raises(ValueError, match="dtype 'float99' is not supported"):
        hist.run([["a"]], dtype="float99")


@pytest.mark.parametrize("dtype", [np.float64, np.float32, "float32", float])
def test_supported_dtypes(hist, dtype):
    """float64 and float32, however spelled, give the program's outputs."""
    assert hist.run([["a", "b", "a"]], dtype=dtype) == [[2, 1, 2]]


def test_encoder_wants_bos_first(hist):
    """InputEncoder.encode (the TransformerLens path) checks BOS and the tokens too."""
    enc = hist.input_encoder
    assert enc.encode([["BOS", "b"]]).tolist() == [[enc.bos_id, 1]]
    with pytest.raises(ValueError, match="sequence 0: expected BOS 'BOS' at position 0, got 'a'"):
        enc.encode([["a"]])
    with pytest.raises(ValueError, match=r"sequence 1: expected BOS .* got an empty sequence"):
        enc.encode([["BOS"], []])
    with pytest.raises(ValueError, match="sequence 0, position 1: token 'BOS'"):
        enc.encode([["BOS", "BOS"]])
