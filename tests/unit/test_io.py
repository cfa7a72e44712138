"""Model files: safetensors round trips, clear errors for damaged files, atomic writes."""

import hashlib
import json
import os
import pickle
import signal
import stat
import struct
import subprocess
import sys

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


def rewrite_metadata(path, field, change, rehash=True):
    """Change (or, with ``change=None``, delete) one metadata field; with ``rehash``, also
    its checksum, as a forger would, so that the field's own checks are reached."""
    header, body = read_header(path)
    meta = header["__metadata__"]
    if change is None:
        del meta[field]
    else:
        meta[field] = change(meta[field])
    if rehash and change is not None and field != "metadata_sha256":
        hashes = json.loads(meta["metadata_sha256"])
        hashes[field] = hashlib.sha256(meta[field].encode()).hexdigest()
        meta["metadata_sha256"] = json.dumps(hashes)
    write_header(path, header, body)


def edit_json(key, change):
    """A field change: the JSON object's ``key`` set to ``change(old value or None)``."""
    def edit(text):
        value = json.loads(text)
        value[key] = change(value.get(key))
        return json.dumps(value)

    return edit


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
    ("field", "change"),
    [
        ("config", edit_json("causal", lambda v: not v)),
        ("output_encoder", edit_json("values", lambda v: v[::-1])),
        ("config", edit_json("act_fn", lambda v: "gelu")),
        ("config", edit_json("d_mlp", lambda v: v + 1)),
        ("residual_labels", lambda v: json.dumps(["x", *json.loads(v)[1:]])),
        ("circuit", lambda v: v.replace('"attn", 0', '"attn", 1', 1)),
        ("sha256", edit_json("unembed.b_U", lambda v: "0" * 64)),
        ("rasplang_version", lambda v: "0.0.1"),
    ],
    ids=["causal", "output_values", "act_fn", "config_int", "residual_labels", "circuit",
         "tensor_digest", "version"],
)
def test_tampered_metadata_fails_its_checksum(saved, field, change):
    """An edited metadata field, even a consistent one, is refused by its checksum."""
    before = saved.read_bytes()
    rewrite_metadata(saved, field, change, rehash=False)
    assert saved.read_bytes() != before
    with pytest.raises(ModelFileError, match=rf"{saved.name}: metadata field '{field}': does "
                                             "not match its checksum in 'metadata_sha256'"):
        load(saved)


@pytest.mark.parametrize(
    ("field", "change", "message"),
    [
        ("format_version", lambda v: "99", "'format_version': unknown format version '99'"),
        ("format", lambda v: "something-else", "'format': expected 'rasplang-model'"),
        ("residual_labels", lambda v: json.dumps(json.loads(v)[:-1]),
         "'residual_labels': 22 labels for d_model 23"),
        ("residual_labels", lambda v: json.dumps([1, *json.loads(v)[1:]]),
         "'residual_labels': expected a list of strings"),
        ("config", edit_json("d_vocab", lambda v: 3), "'config.d_vocab': is 3, expected 7"),
        ("config", edit_json("n_layers", lambda v: 3), "tensor 'blocks.2.attn.W_Q' is missing"),
        ("config", edit_json("d_mlp", lambda v: v + 1),
         r"tensor 'blocks\.0\.mlp\.W_in' has shape .* expected"),
        ("config", lambda v: json.dumps(dict(json.loads(v), colour="red")),
         "'config': unknown keys \\['colour'\\]"),
        ("config", edit_json("causal", lambda v: 1), "'config.causal': expected true or false, "
                                                    "got 1"),
        ("config", edit_json("act_fn", lambda v: "gelu"),
         r"'config\.act_fn': 'gelu' is not one of \['relu', 'gelu_new'\]"),
        ("config", edit_json("output_encoding", lambda v: "ordinal"),
         r"'config\.output_encoding': 'ordinal' is not one of"),
        ("config", edit_json("d_model", lambda v: "24"),
         "'config.d_model': expected a non-negative integer, got '24'"),
        ("config", edit_json("n_heads", lambda v: -1),
         "'config.n_heads': expected a non-negative integer, got -1"),
        ("config", edit_json("n_heads", lambda v: True),
         "'config.n_heads': expected a non-negative integer, got True"),
        ("config", edit_json("normalization_type", lambda v: "BatchNorm"),
         r"'config\.normalization_type': 'BatchNorm' is not one of \[None, 'LN', 'RMS'\]"),
        ("config", edit_json("normalization_type", lambda v: 1),
         "'config.normalization_type': expected a string or null, got 1"),
        ("config", edit_json("vocab", lambda v: 5), "'config.vocab': expected a list, got 5"),
        ("config", edit_json("vocab", lambda v: [v[0], *v[:-1]]),
         "'config.vocab': vocab .* are not all different"),
        ("config", edit_json("bos", lambda v: 1), "'config.vocab': vocab .* bos 1 .* not all "
                                                  "different"),
        ("config", edit_json("vocab", lambda v: [{"set": 1}, *v[1:]]),
         r"'config\.vocab': .*is not an encoded value"),
        ("output_encoder", edit_json("values", lambda v: [1, 2]),
         "'output_encoder': 2 values for d_vocab_out 5"),
        ("output_encoder", edit_json("values", lambda v: [v[0], *v[:-1]]),
         r"'output_encoder\.values': \[1, 1, 2, 3, 4\] holds a value twice"),
        ("output_encoder", edit_json("numerical", lambda v: 0),
         "'output_encoder': numerical=0 but the config's output_encoding is 'categorical'"),
        ("output_encoder", lambda v: "[]", "'output_encoder': expected"),
        ("input_encoder", edit_json("bos", lambda v: "START"),
         "'input_encoder': vocab, bos or pad differ from the config's"),
        ("input_encoder", edit_json("vocab", lambda v: [float(x) for x in v]),
         "'input_encoder': vocab, bos or pad differ from the config's"),
        ("circuit", lambda v: json.dumps({"sort": [[9, "attn", 0, [], [], [1]]]}),
         r"'circuit': malformed: step 0 of 'sort': layer 9 for sublayer 'attn' \(n_layers 2\)"),
        ("circuit", lambda v: json.dumps({"sort": [[0, "ffn", None, [], [], [1]]]}),
         "'circuit': malformed: step 0 of 'sort': sublayer 'ffn' is not one of"),
        ("circuit", lambda v: json.dumps({"sort": [[0, "attn", 7, [], [], [1]]]}),
         "'circuit': malformed: step 0 of 'sort': head 7 for sublayer 'attn'"),
        ("circuit", lambda v: json.dumps({"sort": [[0, "mlp", None, [10**6], [], [1]]]}),
         r"'circuit': malformed: step 0 of 'sort': hidden \[1000000\] is not a list of indices"),
        ("circuit", lambda v: json.dumps({"sort": [[None, "embed", None, [], [], [99]]]}),
         r"'circuit': malformed: step 0 of 'sort': writes \[99\] is not a list of indices "
         "below 23"),
        ("circuit", lambda v: json.dumps({"sort": [[0, "attn", 0, [], [], [1.5]]]}),
         r"'circuit': malformed: step 0 of 'sort': writes \[1\.5\]"),
        ("circuit", lambda v: json.dumps({"sort": [[0, "attn", 0]]}),
         r"'circuit': malformed: step 0 of 'sort': expected \[layer, sublayer"),
        ("circuit", lambda v: "[]", "'circuit': expected a map"),
        ("sha256", lambda v: "[]", "'sha256': expected a map"),
        ("sha256", edit_json("extra", lambda v: "0"),
         r"'sha256': names \['extra'\], which are not tensors"),
        ("metadata_sha256", edit_json("config", lambda v: None),
         "'config': does not match its checksum"),
        ("metadata_sha256", lambda v: json.dumps({}), "'metadata_sha256': has no checksum for "
                                                      "'format'"),
        ("metadata_sha256", None, "'metadata_sha256': missing"),
        ("config", lambda v: v[:-2], "'config': not valid JSON"),
        ("config", lambda v: "[" * 200_000 + "]" * 200_000,
         "'config': not valid JSON: nested too deeply"),
        ("config", None, "'config': missing"),
        ("circuit", None, "'circuit': missing"),
    ],
)
def test_rehashed_metadata_is_still_checked(saved, field, change, message):
    """A field edited together with its checksum is refused by the field's own checks."""
    rewrite_metadata(saved, field, change)
    with pytest.raises(ModelFileError, match=message) as info:
        load(saved)
    assert saved.name in str(info.value)


def test_version_1_file_is_refused(saved):
    """A format version 1 file (no metadata checksum) asks for the model to be saved again."""
    rewrite_metadata(saved, "format_version", lambda v: "1", rehash=False)
    with pytest.raises(ModelFileError, match=r"'format_version': format version 1 \(written by "
                                             r"rasplang .*\) has no checksum over its metadata.*"
                                             r"compile the program again and save it"):
        load(saved)


def test_deeply_nested_header(tmp_path):
    """A header nested 200,000 deep is refused as invalid JSON, not a RecursionError."""
    path = tmp_path / "deep.safetensors"
    raw = b"[" * 200_000 + b"]" * 200_000
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(ModelFileError, match=r"deep\.safetensors: header is not valid JSON: "
                                             "nested too deeply"):
        load(path)


def test_png_is_not_a_model_file(tmp_path):
    """A PNG is reported as not a safetensors model file, not as a truncated one."""
    path = tmp_path / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(40))
    with pytest.raises(ModelFileError, match=r"picture\.png: not a safetensors model file: its "
                                             r"first 8 bytes give a header length of "
                                             r"727905341920923785 bytes, larger than the file "
                                             r"\(56 bytes\)"):
        load(path)


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


KILLED_SAVE = """
import os, signal, sys
import rasplang as rl
model = rl.load(sys.argv[1])
os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # die just before the rename
model.save(sys.argv[1])
"""


@pytest.mark.skipif(os.name != "posix", reason="kill -9 and os.kill(pid, 0) are POSIX")
def test_save_removes_temporaries_of_a_killed_save(model, saved):
    """A save killed before its rename leaves a temporary; the next save into the folder
    removes it, and a dead writer's temporary for another file too."""
    before = saved.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(saved)])
    assert writer.wait() == -signal.SIGKILL
    assert saved.read_bytes() == before
    (stale,) = (p for p in saved.parent.iterdir() if p.name.endswith(".tmp"))
    assert stale.name.startswith(f".{saved.name}.") and stale.stat().st_size == len(before)
    host, pid = stale.name[len(saved.name) + 2:].split(".")[0].rsplit("-", 1)
    assert int(pid) == writer.pid
    kept = [saved.parent / f".{saved.name}.{host}-{os.getpid()}.0a1b2c3d.tmp",  # a live writer
            saved.parent / f".{saved.name}.elsewhere-{pid}.0a1b2c3d.tmp"]      # another host
    other = saved.parent / f".other.safetensors.{host}-{pid}.0a1b2c3d.tmp"     # another target
    for path in (*kept, other):
        path.write_bytes(b"x")
    save(model, saved.parent / "third.safetensors")
    assert not stale.exists() and not other.exists() and all(path.exists() for path in kept)
    assert load(saved).run([[2, 1]]) == [[1, 2]]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_file_has_the_umask_mode(model, tmp_path, umask):
    """A saved file gets 0o666 less the umask (0644 under umask 022), as open() would."""
    old = os.umask(umask)
    try:
        path = save(model, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_unsavable_token(model, tmp_path):
    """A token that JSON cannot hold with its type is refused, naming the field."""
    cfg = attrs.evolve(model.config, bos=object())
    with pytest.raises(ValueError, match=r"cannot save config\.bos"):
        save(attrs.evolve(model, config=cfg), tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


def test_save_into_a_missing_folder_names_the_target(model, tmp_path):
    """A save into a folder that does not exist names the file asked for."""
    target = tmp_path / "nope" / "model.safetensors"
    with pytest.raises(FileNotFoundError, match=r"cannot save .*model\.safetensors: no folder"):
        save(model, target)
    assert not (tmp_path / "nope").exists()
