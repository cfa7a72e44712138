"""Model files: one ``.safetensors`` file per compiled model, no pickle.

Layout: the weights, under their TransformerLens names, as float32 or float64 tensors
(as compiled); the safetensors metadata (string -> string) holds

- ``format`` (``"rasplang-model"``) and ``format_version`` (`FORMAT_VERSION`);
- ``config``: the `ModelConfig` fields as JSON;
- ``residual_labels``, ``input_encoder``, ``output_encoder``, ``circuit`` as JSON;
- ``sha256``: each tensor's SHA-256 (of its little-endian bytes);
- ``rasplang_version``, for people;
- ``metadata_sha256``: the SHA-256 of each field above (of its UTF-8 text), so that a
  flipped byte or an edit anywhere, in the data or in a field such as ``causal``, is
  found instead of silently computed with.

The hashes find corruption and hand edits; they are not a signature (whoever can write
the file can recompute them). Version 1 files had no ``metadata_sha256``; they are
refused with a request to save the model again.

Tokens and values are stored as JSON with their types (``1``, ``1.0``, ``true``,
``"1"`` stay apart; tuples are tagged). Loading parses the header itself, checks the
hashes, every field and its type, and every tensor's name, shape, dtype and hash
against the config, and raises `ModelFileError` naming the file and the field; it never
executes code from the file.

Saving writes ``.<name>.<host>-<pid>.<random>.tmp`` next to the target, with the mode
``open`` would give (``0o666`` less the umask), and renames it into place
(`os.replace`), so an interrupted save never leaves a half-written model there. A save
first removes the temporaries of the same target whose writer (a process on this host)
no longer exists, e.g. after a ``kill -9``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import struct
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from rasplang.backend.encoders import InputEncoder, OutputEncoder
from rasplang.backend.model import (
    ACT_FNS,
    OUTPUT_ENCODINGS,
    CircuitStep,
    CompiledModel,
    ModelConfig,
    Sublayer,
)
from rasplang.nodes import Encoding

FORMAT = "rasplang-model"
FORMAT_VERSION = 2
_DTYPES = {"F32": np.float32, "F64": np.float64}
_HASHED = ("format", "format_version", "config", "residual_labels", "input_encoder",
           "output_encoder", "circuit", "sha256", "rasplang_version")  # in metadata_sha256
_MAX_HEADER = 100_000_000  # the largest header safetensors itself reads


class ModelFileError(ValueError):
    """A model file that cannot be loaded: says which file and which field."""


# ----------------------------------------------------------------- value <-> JSON


def _to_json(value: Any, where: str) -> Any:
    """A token or value as JSON that keeps its type (tuples tagged)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else {"float": repr(value)}
    if isinstance(value, tuple):
        return {"tuple": [_to_json(v, where) for v in value]}
    raise ValueError(f"cannot save {where}: value {value!r} of type {type(value).__name__} "
                     "is not a str, int, float, bool, None or tuple of those")


def _from_json(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict) and set(value) == {"tuple"} and isinstance(value["tuple"], list):
        return tuple(_from_json(v, where) for v in value["tuple"])
    if isinstance(value, dict) and set(value) == {"float"} and value["float"] in (
            "nan", "inf", "-inf"):
        return float(value["float"])
    raise ValueError(f"{where}: {value!r} is not an encoded value")


# -------------------------------------------------------------------------- save


def save(model: CompiledModel, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` (one safetensors file) atomically; returns the path.

    The file gets the mode ``open`` would give it (``0o666`` less the umask). Temporary
    files that an earlier, killed save to the same path left behind are removed first.
    """
    from safetensors.numpy import save as to_bytes

    path = Path(path)
    tensors = {}
    for name, w in model.weights.items():
        w = np.ascontiguousarray(w)
        if w.dtype not in (np.float32, np.float64):
            raise ValueError(f"cannot save weight {name!r} of dtype {w.dtype}: "
                             "expected float32 or float64")
        tensors[name] = w
    cfg = model.config
    config = {f.name: getattr(cfg, f.name) for f in attrs.fields(ModelConfig)}
    config["vocab"] = [_to_json(v, "config.vocab") for v in cfg.vocab]
    config["bos"], config["pad"] = _to_json(cfg.bos, "config.bos"), _to_json(cfg.pad, "config.pad")
    enc_in, enc_out = model.input_encoder, model.output_encoder
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config),
        "residual_labels": json.dumps(list(model.residual_labels)),
        "input_encoder": json.dumps({
            "vocab": [_to_json(v, "input_encoder.vocab") for v in enc_in.vocab],
            "bos": _to_json(enc_in.bos, "input_encoder.bos"),
            "pad": _to_json(enc_in.pad, "input_encoder.pad")}),
        "output_encoder": json.dumps({
            "numerical": bool(enc_out.numerical),
            "values": [_to_json(v, "output_encoder.values") for v in enc_out.values]}),
        "circuit": json.dumps({label: [_step_json(s) for s in steps]
                               for label, steps in model.circuit.items()}),
        "sha256": json.dumps({name: _digest(w) for name, w in tensors.items()}),
        "rasplang_version": _version(),
    }
    metadata["metadata_sha256"] = json.dumps({f: _text_digest(metadata[f]) for f in _HASHED})
    _write_atomically(path, to_bytes(tensors, metadata=metadata))
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a fresh temporary file next to ``path``, then rename it there."""
    _remove_stale_temporaries(path)
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
             | getattr(os, "O_CLOEXEC", 0))
    for attempt in range(100):
        tmp = path.with_name(f".{path.name}.{_host()}-{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies, as for open(path, "wb")
            break
        except FileExistsError:
            if attempt == 99:
                raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself survive a power loss
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``path``'s temporaries left by a writer on this host that no longer runs.

    Only POSIX can ask whether a process exists (``os.kill(pid, 0)``); elsewhere, and
    for other hosts' temporaries (a shared folder), nothing is removed.
    """
    if os.name != "posix":
        return
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)"
                         r"\.[0-9a-f]+\.tmp")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match and match["host"] == _host() and not _process_exists(int(match["pid"])):
            with contextlib.suppress(OSError):
                (path.parent / name).unlink()


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # e.g. PermissionError: it exists, as another user
        return True
    return True


def _host() -> str:
    """This machine's name with only letters, digits and ``-`` (for temporary names)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _step_json(step: CircuitStep) -> list[Any]:
    """``[layer, sublayer, head, hidden, reads, writes]`` with plain ints."""
    def opt(x: Any) -> int | None:
        return None if x is None else int(x)

    return [opt(step.layer), str(step.sublayer), opt(step.head), [int(i) for i in step.hidden],
            [int(i) for i in step.reads], [int(i) for i in step.writes]]


def _digest(w: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(w, dtype=w.dtype.newbyteorder("<")).tobytes()
                          ).hexdigest()


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _version() -> str:
    from rasplang import __version__

    return __version__


# -------------------------------------------------------------------------- load


def load(path: str | os.PathLike) -> CompiledModel:
    """Read a model written by `save`; its outputs are identical to the saved model's.

    Raises FileNotFoundError for a missing file and `ModelFileError` (naming the file
    and the field) for a truncated, corrupted or edited one, a file that is not a model
    file, and a format version 1 file (whose metadata has no checksum: save the model
    again). Every metadata field is checked against its SHA-256 and every tensor against
    its own. The loaded model has no ``program`` (programs hold Python functions, which a
    model file never stores).
    """
    path = Path(path)
    data = path.read_bytes()
    header, metadata = _read_header(path, data)
    reader = _Reader(path, metadata)
    reader.check_format()
    reader.check_hashes()
    config = reader.config()
    weights = _read_tensors(path, data, header, reader, config)
    labels = reader.residual_labels(config)
    enc_in = reader.input_encoder(config)
    enc_out = reader.output_encoder(config)
    circuit = reader.circuit(config)
    return CompiledModel(config, weights, labels, enc_in, enc_out, circuit, None)


def _read_header(path: Path, data: bytes) -> tuple[dict[str, Any], dict[str, str]]:
    """The safetensors header (tensor entries) and its metadata, checked for shape."""
    if len(data) < 8:
        raise ModelFileError(f"{path}: file is {len(data)} bytes, too short for a safetensors "
                             "header (truncated?)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        if size > _MAX_HEADER or data[8:9] not in (b"", b"{"):
            raise ModelFileError(f"{path}: not a safetensors model file: its first 8 bytes "
                                 f"give a header length of {size} bytes, larger than the file "
                                 f"({len(data)} bytes)")
        raise ModelFileError(f"{path}: header claims {size} bytes but only {len(data) - 8} "
                             "follow (truncated?)")
    try:
        header = json.loads(data[8:8 + size].decode("utf-8"))
    except RecursionError:
        raise ModelFileError(f"{path}: header is not valid JSON: nested too deeply "
                             "(corrupted, or not a model file)") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an over-long integer
        raise ModelFileError(f"{path}: header is not valid JSON (corrupted?): {exc}") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: header is not a JSON object (corrupted?)")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ModelFileError(f"{path}: field '__metadata__' is missing or not a string map; "
                             "not a rasplang model file")
    return header, metadata


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight's TransformerLens name and shape for ``cfg``."""
    d, h, e, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    shapes = {"embed.W_E": (cfg.d_vocab, d), "pos_embed.W_pos": (cfg.n_ctx, d)}
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        for n in "QKV":
            shapes[p + f"attn.W_{n}"] = (h, d, e)
            shapes[p + f"attn.b_{n}"] = (h, e)
        shapes[p + "attn.W_O"], shapes[p + "attn.b_O"] = (h, e, d), (d,)
        shapes[p + "mlp.W_in"], shapes[p + "mlp.b_in"] = (d, m), (m,)
        shapes[p + "mlp.W_out"], shapes[p + "mlp.b_out"] = (m, d), (d,)
    shapes["unembed.W_U"], shapes["unembed.b_U"] = (d, cfg.d_vocab_out), (cfg.d_vocab_out,)
    return shapes


def _read_tensors(path: Path, data: bytes, header: dict[str, Any], reader: _Reader,
                  cfg: ModelConfig) -> dict[str, np.ndarray]:
    expected = _expected_shapes(cfg)
    for name in header:
        if name not in expected:
            raise ModelFileError(f"{path}: tensor {name!r} is not a weight of a model with "
                                 f"n_layers={cfg.n_layers}")
    hashes = reader.tensor_hashes()
    start = 8 + struct.unpack("<Q", data[:8])[0]
    body = memoryview(data)[start:]
    weights, dtypes = {}, set()
    for name, shape in expected.items():
        entry = header.get(name)
        if entry is None:
            raise ModelFileError(f"{path}: tensor {name!r} is missing")
        try:
            dtype = _DTYPES[entry["dtype"]]
            got_shape = tuple(int(x) for x in entry["shape"])
            lo, hi = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{path}: tensor {name!r} has a malformed header entry "
                                 f"{entry!r} (dtype F32/F64, shape, data_offsets)") from None
        if got_shape != shape:
            raise ModelFileError(f"{path}: tensor {name!r} has shape {list(got_shape)}, "
                                 f"expected {list(shape)} from the config")
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if not 0 <= lo <= hi <= len(body) or hi - lo != size:
            raise ModelFileError(f"{path}: tensor {name!r} data [{lo}, {hi}) does not fit "
                                 f"the file's {len(body)} data bytes (truncated?)")
        w = np.frombuffer(body[lo:hi], dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
        if hashes.get(name) != _digest(w):
            raise ModelFileError(f"{path}: tensor {name!r} does not match its sha256 in the "
                                 "metadata (corrupted or modified)")
        weights[name] = w.astype(dtype)  # a writable native-endian copy
        dtypes.add(np.dtype(dtype))
    if len(dtypes) > 1:
        raise ModelFileError(f"{path}: tensors mix dtypes {sorted(map(str, dtypes))}")
    extra = sorted(set(hashes) - set(expected))
    if extra:
        raise reader.error("sha256", f"names {extra[:5]}, which are not tensors of the model")
    return weights


class _Reader:
    """Typed access to the metadata fields, with errors naming the file and field."""

    def __init__(self, path: Path, metadata: dict[str, str]):
        self.path = path
        self.metadata = metadata
        self.raw_config: dict[str, Any] = {}

    def error(self, field: str, message: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: metadata field {field!r}: {message}")

    def text(self, field: str) -> str:
        if field not in self.metadata:
            raise self.error(field, "missing (not a rasplang model file, or tampered)")
        return self.metadata[field]

    def json(self, field: str) -> Any:
        try:
            return json.loads(self.text(field))
        except RecursionError:
            raise self.error(field, "not valid JSON: nested too deeply") from None
        except ValueError as exc:
            raise self.error(field, f"not valid JSON: {exc}") from None

    def value(self, field: str, raw: Any) -> Any:
        try:
            return _from_json(raw, field)
        except RecursionError:
            raise self.error(field, "nested too deeply") from None
        except ValueError as exc:
            raise self.error(field, str(exc)) from None

    def check_format(self) -> None:
        """The format name and version, before anything else is read."""
        if self.text("format") != FORMAT:
            raise self.error("format", f"expected {FORMAT!r}, got {self.metadata['format']!r}")
        version = self.text("format_version")
        if version == "1":
            written = self.metadata.get("rasplang_version", "an older version")
            raise self.error("format_version", f"format version 1 (written by rasplang "
                             f"{written}) has no checksum over its metadata, so it cannot be "
                             "checked; compile the program again and save it with this "
                             f"rasplang (format version {FORMAT_VERSION})")
        if version != str(FORMAT_VERSION):
            raise self.error("format_version", f"unknown format version {version!r}; this "
                             f"rasplang reads version {FORMAT_VERSION}")

    def check_hashes(self) -> None:
        """Every hashed field against its SHA-256 in ``metadata_sha256``."""
        hashes = self.json("metadata_sha256")
        if not isinstance(hashes, dict):
            raise self.error("metadata_sha256", "expected a map from field to hex digest")
        for field in _HASHED:
            if field not in hashes:
                raise self.error("metadata_sha256", f"has no checksum for {field!r}")
            if hashes[field] != _text_digest(self.text(field)):
                raise self.error(field, "does not match its checksum in 'metadata_sha256' "
                                 "(corrupted or modified)")

    def tensor_hashes(self) -> dict[str, str]:
        hashes = self.json("sha256")
        if not (isinstance(hashes, dict) and all(isinstance(v, str) for v in hashes.values())):
            raise self.error("sha256", "expected a map from tensor name to hex digest")
        return hashes

    def config(self) -> ModelConfig:
        raw = self.json("config")
        if not isinstance(raw, dict):
            raise self.error("config", "expected a JSON object")
        fields = {f.name: f for f in attrs.fields(ModelConfig)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise self.error("config", f"unknown keys {unknown}")
        missing = [n for n, f in fields.items() if n not in raw and f.default is attrs.NOTHING]
        if missing:
            raise self.error("config", f"missing keys {missing}")
        self.raw_config = dict(raw)
        for name, f in fields.items():
            if name in raw and name not in ("vocab", "bos", "pad"):
                want = _JSON_TYPES[str(f.type)]
                if type(raw[name]) is not want or (want is int and raw[name] < 0):
                    kind = "a non-negative integer" if want is int else _TYPE_NAMES[want]
                    raise self.error(f"config.{name}", f"expected {kind}, got {raw[name]!r}")
        if not isinstance(raw["vocab"], list):
            raise self.error("config.vocab", f"expected a list, got {raw['vocab']!r}")
        raw["vocab"] = tuple(self.value("config.vocab", v) for v in raw["vocab"])
        raw["bos"] = self.value("config.bos", raw["bos"])
        raw["pad"] = self.value("config.pad", raw["pad"])
        cfg = ModelConfig(**raw)
        tokens = (*cfg.vocab, cfg.bos, cfg.pad)
        if len(set(tokens)) != len(tokens):
            raise self.error("config.vocab", f"vocab {list(cfg.vocab)}, bos {cfg.bos!r} and pad "
                             f"{cfg.pad!r} are not all different")
        checks = [
            ("d_vocab", cfg.d_vocab, len(cfg.vocab) + 2, "len(vocab) + 2 (BOS, PAD)"),
            ("n_ctx", cfg.n_ctx, cfg.max_seq_len + 1, "max_seq_len + 1 (BOS)"),
        ]
        for key, got, want, why in checks:
            if got != want:
                raise self.error(f"config.{key}", f"is {got}, expected {want} = {why}")
        for key, allowed in (("output_encoding", OUTPUT_ENCODINGS), ("act_fn", ACT_FNS)):
            if getattr(cfg, key) not in allowed:
                raise self.error(f"config.{key}", f"{getattr(cfg, key)!r} is not one of "
                                 f"{list(allowed)}")
        return attrs.evolve(cfg, output_encoding=Encoding(cfg.output_encoding))

    def residual_labels(self, cfg: ModelConfig) -> list[str]:
        labels = self.json("residual_labels")
        if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise self.error("residual_labels", "expected a list of strings")
        if len(labels) != cfg.d_model:
            raise self.error("residual_labels", f"{len(labels)} labels for d_model "
                             f"{cfg.d_model}")
        return labels

    def input_encoder(self, cfg: ModelConfig) -> InputEncoder:
        raw = self.json("input_encoder")
        if not (isinstance(raw, dict) and set(raw) == {"vocab", "bos", "pad"}
                and isinstance(raw["vocab"], list)):
            raise self.error("input_encoder", "expected {vocab: [...], bos, pad}")
        keys = ("vocab", "bos", "pad")
        if not _same_json([raw[k] for k in keys], [self.raw_config[k] for k in keys]):
            raise self.error("input_encoder", "vocab, bos or pad differ from the config's")
        return InputEncoder(cfg.vocab, cfg.bos, cfg.pad)

    def output_encoder(self, cfg: ModelConfig) -> OutputEncoder:
        raw = self.json("output_encoder")
        if not (isinstance(raw, dict) and set(raw) == {"numerical", "values"}
                and isinstance(raw["values"], list)):
            raise self.error("output_encoder", "expected {numerical, values: [...]}")
        numerical = raw["numerical"]
        values = tuple(self.value("output_encoder.values", v) for v in raw["values"])
        if numerical is not (cfg.output_encoding == "numerical"):
            raise self.error("output_encoder", f"numerical={numerical!r} but the config's "
                             f"output_encoding is {str(cfg.output_encoding)!r}")
        if numerical and values not in ((), (None,)):
            raise self.error("output_encoder.values", f"{list(values)}: a numerical output "
                             "has no values, or [None] when it can be None")
        if not numerical and len(set(values)) != len(values):
            raise self.error("output_encoder.values", f"{list(values)} holds a value twice")
        width = 1 + len(values) if numerical else len(values)  # numerical: value, None flag
        if width != cfg.d_vocab_out:
            raise self.error("output_encoder", f"{len(values)} values for d_vocab_out "
                             f"{cfg.d_vocab_out}")
        return OutputEncoder(numerical, values)

    def circuit(self, cfg: ModelConfig) -> dict[str, tuple[CircuitStep, ...]]:
        raw = self.json("circuit")
        if not isinstance(raw, dict):
            raise self.error("circuit", "expected a map from node label to steps")
        out: dict[str, tuple[CircuitStep, ...]] = {}
        for label, steps in raw.items():
            if not isinstance(steps, list):
                raise self.error("circuit", f"steps of {label!r}: expected a list")
            out[label] = tuple(self._step(cfg, f"step {i} of {label!r}", step)
                               for i, step in enumerate(steps))
        return out

    def _step(self, cfg: ModelConfig, where: str, step: Any) -> CircuitStep:
        """One ``[layer, sublayer, head, hidden, reads, writes]``, checked against ``cfg``."""
        def fail(message: str) -> ModelFileError:
            return self.error("circuit", f"malformed: {where}: {message}")

        def index(x: Any, n: int) -> bool:
            return type(x) is int and 0 <= x < n

        if not (isinstance(step, list) and len(step) == 6):
            raise fail("expected [layer, sublayer, head, hidden, reads, writes]")
        layer, sublayer, head, hidden, reads, writes = step
        shapes = {Sublayer.EMBED: (False, False), Sublayer.ATTN: (True, True),
                  Sublayer.MLP: (True, False)}
        if sublayer not in shapes:
            raise fail(f"sublayer {sublayer!r} is not one of {[str(s) for s in shapes]}")
        has_layer, has_head = shapes[sublayer]
        if not (index(layer, cfg.n_layers) if has_layer else layer is None):
            raise fail(f"layer {layer!r} for sublayer {sublayer!r} (n_layers {cfg.n_layers})")
        if not (index(head, cfg.n_heads) if has_head else head is None):
            raise fail(f"head {head!r} for sublayer {sublayer!r} (n_heads {cfg.n_heads})")
        for name, dims, n in (("hidden", hidden, cfg.d_mlp if sublayer == "mlp" else 0),
                              ("reads", reads, cfg.d_model), ("writes", writes, cfg.d_model)):
            if not (isinstance(dims, list) and all(index(i, n) for i in dims)):
                raise fail(f"{name} {dims!r} is not a list of indices below {n}" if n else
                           f"{name} {dims!r} must be empty for sublayer {sublayer!r}")
        return CircuitStep(layer, Sublayer(sublayer), head, tuple(hidden), tuple(reads),
                           tuple(writes))


# ModelConfig's field types as JSON holds them (an Encoding is its str value)
_JSON_TYPES = {"int": int, "bool": bool, "str": str, "None": type(None), "Encoding": str}
_TYPE_NAMES = {bool: "true or false", str: "a string", type(None): "null"}


def _same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are equal with the same types throughout (1 is not 1.0)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
