"""Model files: safetensors round trips, clear errors for damaged files, atomic writes."""

import json
import os
import pickle
import struct

import attrs
import numpy as np
import pytest

import rasplang as rl
from rasplang.backend.io import FORMAT_VERSION, ModelFileError, load, save
from rasplang.lib import PROGRAMS

pytestmark = pytest.mark.filterwarnings("ignore::rasplang.backend.compiler.CompilerWarning")

ROUND_TRIP = [("sort_unique", False), ("frac_prevs", False), ("frac_prevs", True),
              ("shift_by", False), ("detect_pattern", False), ("length", True)]


def compiled(name, causal=False):
    entry = PROGRAMS[name]
    return entry, rl.compile(entry.build(), entry.vocab, entry.max_seq_len, causal=causal)


@pytest.fixture(scope="module")
def model():
    return compiled("sort_unique")[1]


@pytest.fixture
def saved(model, tmp_path):
    path = tmp_path / "model.safetensors"
    model.save(path)
    return path


def read_header(path):
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size]), data[8 + size:]


def write_header(path, header, body):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def rewrite_metadata(path, field, change):
    header, body = read_header(path)
    if change is None:
        del header["__metadata__"][field]
    else:
        header["__metadata__"][field] = change(header["__metadata__"][field])
    write_header(path, header, body)


def typed(values):
    return [(type(v), v) for v in values]


@pytest.mark.parametrize(("name", "causal"), ROUND_TRIP)
def test_round_trip_is_identical(tmp_path, name, causal):
    """A loaded model has the same config, weights, labels, circuit and outputs."""
    entry, original = compiled(name, causal)
    path = tmp_path / f"{name}.safetensors"
    assert original.save(path) == path
    loaded = rl.load(path)
    assert loaded.config == original.config
    assert typed(loaded.config.vocab) == typed(original.config.vocab)
    assert typed(loaded.output_encoder.values) == typed(original.output_encoder.values)
    assert loaded.input_encoder == original.input_encoder
    assert loaded.residual_labels == original.residual_labels
    assert loaded.circuit == original.circuit
    assert loaded.weights.keys() == original.weights.keys()
    for key, w in original.weights.items():
        assert loaded.weights[key].dtype == w.dtype
        np.testing.assert_array_equal(loaded.weights[key], w)
    example = list(entry.example)
    np.testing.assert_array_equal(loaded.apply([loaded.config.bos, *example]).logits,
                                  original.apply([original.config.bos, *example]).logits)
    assert loaded.run([example]) == original.run([example])
    assert loaded.program is None
    assert rl.verify(entry.build(), entry.vocab, entry.max_seq_len, model=loaded,
                     causal=causal).ok


def test_float32_weights_stay_float32(model, tmp_path):
    """Weights are stored in the dtype they have (float32 here)."""
    small = attrs.evolve(model, weights={k: w.astype(np.float32) for k, w in model.weights.items()},
                         cache={})
    loaded = load(save(small, tmp_path / "f32.safetensors"))
    assert {w.dtype for w in loaded.weights.values()} == {np.dtype(np.float32)}
    assert loaded.run([[3, 1, 2]]) == [[1, 2, 3]]


def test_file_is_plain_safetensors(saved):
    """Any safetensors reader opens the file; the metadata names the format version."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    assert "unembed.W_U" in load_file(saved)
    with safe_open(saved, framework="np") as f:
        meta = f.metadata()
    assert meta["format"] == "rasplang-model" and meta["format_version"] == str(FORMAT_VERSION)
    assert json.loads(meta["config"])["n_layers"] == 2


def test_loading_never_unpickles(saved, monkeypatch):
    """Loading works with every pickle entry point disabled."""
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", refuse)
    assert load(saved).run([[2, 1]]) == [[1, 2]]


@pytest.mark.parametrize("keep", [0, 7, 8, 40, -1, -100])
def test_truncated_file(saved, keep):
    """A truncated file names the file and what is missing."""
    data = saved.read_bytes()
    saved.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    with pytest.raises(ModelFileError, match=rf"{saved.name}: .*truncated"):
        load(saved)


def test_flipped_data_byte(saved):
    """A changed byte in the tensor data is caught by the tensor's hash."""
    data = bytearray(saved.read_bytes())
    data[-3] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"tensor 'unembed\.[Wb]_U' does not match its sha256"):
        load(saved)


def test_garbage_header(saved):
    """A header that is not JSON is reported as corrupted."""
    data = bytearray(saved.read_bytes())
    data[9:13] = b"\xff\xfe{]"
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="header is not valid JSON"):
        load(saved)


def test_wrong_shape_missing_and_extra_tensors(model, tmp_path):
    """Tensors must be exactly the config's, by name and shape."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    path = save(model, tmp_path / "m.safetensors")
    with safe_open(path, framework="np") as f:
        meta = f.metadata()
    tensors = load_file(path)

    wrong = dict(tensors, **{"blocks.0.mlp.W_in": tensors["blocks.0.mlp.W_in"][:, :-1].copy()})
    save_file(wrong, path, metadata=meta)
    with pytest.raises(ModelFileError, match=r"tensor 'blocks\.0\.mlp\.W_in' has shape .* "
                                             "expected .* from the config"):
        load(path)

    save_file({k: v for k, v in tensors.items() if k != "unembed.b_U"}, path, metadata=meta)
    with pytest.raises(ModelFileError, match=r"tensor 'unembed\.b_U' is missing"):
        load(path)

    save_file(dict(tensors, **{"blocks.7.attn.W_Q": tensors["blocks.0.attn.W_Q"]}), path,
              metadata=meta)
    with pytest.raises(ModelFileError, match=r"tensor 'blocks\.7\.attn\.W_Q' is not a weight"):
        load(path)


@pytest.mark.parametrize(
    ("field", "change", "message"),
    [
        ("format_version", lambda v: "99", "'format_version': unknown format version '99'"),
        ("format", lambda v: "something-else", "'format': expected 'rasplang-model'"),
        ("residual_labels", lambda v: json.dumps(json.loads(v)[:-1]),
         "'residual_labels': 23 labels for d_model 24"),
        ("config", lambda v: json.dumps(dict(json.loads(v), d_vocab=3)),
         "'config': d_vocab is 3, expected 7"),
        ("config", lambda v: json.dumps(dict(json.loads(v), n_layers=3)),
         "tensor 'blocks.2.attn.W_Q' is missing"),
        ("config", lambda v: json.dumps(dict(json.loads(v), colour="red")),
         "'config': unknown keys \\['colour'\\]"),
        ("output_encoder", lambda v: json.dumps(dict(json.loads(v), values=[1, 2])),
         "'output_encoder': 2 values for d_vocab_out 5"),
        ("input_encoder", lambda v: json.dumps(dict(json.loads(v), bos="START")),
         "'input_encoder': vocab, bos or pad differ from the config's"),
        ("circuit", lambda v: json.dumps({"sort": [[9, "attn", 0, [], [], [1]]]}),
         "'circuit': malformed: layer 9"),
        ("sha256", lambda v: "[]", "'sha256': expected a map"),
        ("config", lambda v: v[:-2], "'config': not valid JSON"),
        ("config", None, "'config': missing"),
        ("circuit", None, "'circuit': missing"),
    ],
)
def test_tampered_metadata(saved, field, change, message):
    """Metadata that contradicts itself or the tensors names the field."""
    rewrite_metadata(saved, field, change)
    with pytest.raises(ModelFileError, match=message) as info:
        load(saved)
    assert saved.name in str(info.value)


def test_not_a_rasplang_file(tmp_path):
    """A safetensors file without rasplang metadata is refused as such."""
    from safetensors.numpy import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(3)}, path)
    with pytest.raises(ModelFileError, match="not a rasplang model file"):
        load(path)


def test_missing_file(tmp_path):
    """A missing file raises FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.safetensors")


def test_interrupted_save_leaves_nothing_behind(model, saved, monkeypatch):
    """A save interrupted before the rename keeps the old file and leaves no temp file."""
    before = saved.read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(attrs.evolve(model, weights={k: w * 2 for k, w in model.weights.items()}), saved)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]
    monkeypatch.undo()
    fresh = saved.parent / "fresh.safetensors"
    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(model, fresh)
    assert not fresh.exists() and os.listdir(saved.parent) == [saved.name]


def test_unsavable_token(model, tmp_path):
    """A token that JSON cannot hold with its type is refused, naming the field."""
    cfg = attrs.evolve(model.config, bos=object())
    with pytest.raises(ValueError, match=r"cannot save config\.bos"):
        save(attrs.evolve(model, config=cfg), tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())
