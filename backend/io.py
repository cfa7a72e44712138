"""Model files: one ``.safetensors`` file per compiled model, no pickle.

Layout: the weights, under their TransformerLens names, as float32 or float64 tensors
(as compiled); the safetensors metadata (string -> string) holds

- ``format`` (``"rasplang-model"``) and ``format_version`` (`FORMAT_VERSION`);
- ``config``: the `ModelConfig` fields as JSON;
- ``residual_labels``, ``input_encoder``, ``output_encoder``, ``circuit`` as JSON;
- ``sha256``: each tensor's SHA-256 (of its little-endian bytes), so a flipped byte in
  the data is found, not silently computed with;
- ``rasplang_version``, for people.

Tokens and values are stored as JSON with their types (``1``, ``1.0``, ``true``,
``"1"`` stay apart; tuples are tagged). Loading parses the header itself, checks every
field and every tensor's name, shape, dtype and hash against the config, and raises
`ModelFileError` naming the file and the field; it never executes code from the file.
Saving writes a temporary file next to the target and renames it into place
(`os.replace`), so an interrupted save never leaves a half-written model there.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from rasplang.backend.encoders import InputEncoder, OutputEncoder
from rasplang.backend.model import CircuitStep, CompiledModel, ModelConfig

FORMAT = "rasplang-model"
FORMAT_VERSION = 1
_DTYPES = {"F32": np.float32, "F64": np.float64}


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
    """Write ``model`` to ``path`` (one safetensors file) atomically; returns the path."""
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
    data = to_bytes(tensors, metadata=metadata)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _step_json(step: CircuitStep) -> list[Any]:
    """``[layer, sublayer, head, hidden, reads, writes]`` with plain ints."""
    def opt(x: Any) -> int | None:
        return None if x is None else int(x)

    return [opt(step.layer), str(step.sublayer), opt(step.head), [int(i) for i in step.hidden],
            [int(i) for i in step.reads], [int(i) for i in step.writes]]


def _digest(w: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(w, dtype=w.dtype.newbyteorder("<")).tobytes()
                          ).hexdigest()


def _version() -> str:
    from rasplang import __version__

    return __version__


# -------------------------------------------------------------------------- load


def load(path: str | os.PathLike) -> CompiledModel:
    """Read a model written by `save`; its outputs are identical to the saved model's.

    Raises FileNotFoundError for a missing file and `ModelFileError` (naming the file
    and the field) for a truncated, corrupted or tampered one. The loaded model has no
    ``program`` (programs hold Python functions, which a model file never stores).
    """
    path = Path(path)
    data = path.read_bytes()
    header, metadata = _read_header(path, data)
    reader = _Reader(path, metadata)
    version = reader.text("format_version")
    if reader.text("format") != FORMAT:
        raise reader.error("format", f"expected {FORMAT!r}, got {metadata['format']!r}")
    if version != str(FORMAT_VERSION):
        raise reader.error("format_version", f"unknown format version {version!r}; this "
                           f"rasplang reads version {FORMAT_VERSION}")
    config = reader.config()
    weights = _read_tensors(path, data, header, reader, config)
    labels = reader.json("residual_labels")
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise reader.error("residual_labels", "expected a list of strings")
    if len(labels) != config.d_model:
        raise reader.error("residual_labels", f"{len(labels)} labels for d_model "
                           f"{config.d_model}")
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
        raise ModelFileError(f"{path}: header claims {size} bytes but only {len(data) - 8} "
                             "follow (truncated?)")
    try:
        header = json.loads(data[8:8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
    hashes = reader.json("sha256")
    if not isinstance(hashes, dict):
        raise reader.error("sha256", "expected a map from tensor name to hex digest")
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
    return weights


class _Reader:
    """Typed access to the metadata fields, with errors naming the file and field."""

    def __init__(self, path: Path, metadata: dict[str, str]):
        self.path = path
        self.metadata = metadata

    def error(self, field: str, message: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: metadata field {field!r}: {message}")

    def text(self, field: str) -> str:
        if field not in self.metadata:
            raise self.error(field, "missing (not a rasplang model file, or tampered)")
        return self.metadata[field]

    def json(self, field: str) -> Any:
        try:
            return json.loads(self.text(field))
        except json.JSONDecodeError as exc:
            raise self.error(field, f"not valid JSON: {exc}") from None

    def value(self, field: str, raw: Any) -> Any:
        try:
            return _from_json(raw, field)
        except ValueError as exc:
            raise self.error(field, str(exc)) from None

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
        if not isinstance(raw.get("vocab"), list):
            raise self.error("config", "'vocab' must be a list")
        raw["vocab"] = tuple(self.value("config.vocab", v) for v in raw["vocab"])
        raw["bos"] = self.value("config.bos", raw.get("bos"))
        raw["pad"] = self.value("config.pad", raw.get("pad"))
        ints = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab",
                "d_vocab_out", "max_seq_len")
        for key in ints:
            if key in raw and (type(raw[key]) is not int or raw[key] < 0):
                raise self.error("config", f"{key!r} must be a non-negative integer, "
                                 f"got {raw[key]!r}")
        cfg = ModelConfig(**raw)
        checks = [
            ("d_vocab", cfg.d_vocab, len(cfg.vocab) + 2, "len(vocab) + 2 (BOS, PAD)"),
            ("n_ctx", cfg.n_ctx, cfg.max_seq_len + 1, "max_seq_len + 1 (BOS)"),
        ]
        for key, got, want, why in checks:
            if got != want:
                raise self.error("config", f"{key} is {got}, expected {want} = {why}")
        if cfg.output_encoding not in ("categorical", "numerical"):
            raise self.error("config", f"output_encoding {cfg.output_encoding!r} is not "
                             "'categorical' or 'numerical'")
        return cfg

    def input_encoder(self, cfg: ModelConfig) -> InputEncoder:
        raw = self.json("input_encoder")
        try:
            enc = InputEncoder(tuple(self.value("input_encoder", v) for v in raw["vocab"]),
                               self.value("input_encoder", raw["bos"]),
                               self.value("input_encoder", raw["pad"]))
        except (KeyError, TypeError):
            raise self.error("input_encoder", "expected {vocab, bos, pad}") from None
        if (enc.vocab, enc.bos, enc.pad) != (cfg.vocab, cfg.bos, cfg.pad):
            raise self.error("input_encoder", "vocab, bos or pad differ from the config's")
        return enc

    def output_encoder(self, cfg: ModelConfig) -> OutputEncoder:
        raw = self.json("output_encoder")
        try:
            numerical = raw["numerical"]
            values = tuple(self.value("output_encoder", v) for v in raw["values"])
        except (KeyError, TypeError):
            raise self.error("output_encoder", "expected {numerical, values}") from None
        if numerical is not (cfg.output_encoding == "numerical"):
            raise self.error("output_encoder", f"numerical={numerical!r} but the config's "
                             f"output_encoding is {cfg.output_encoding!r}")
        width = 1 + len(values) if numerical else len(values)  # numerical: value, None flag
        if width != cfg.d_vocab_out:
            raise self.error("output_encoder", f"{len(values)} values for d_vocab_out "
                             f"{cfg.d_vocab_out}")
        return OutputEncoder(numerical, values)

    def circuit(self, cfg: ModelConfig) -> dict[str, tuple[CircuitStep, ...]]:
        raw = self.json("circuit")
        out: dict[str, tuple[CircuitStep, ...]] = {}
        try:
            for label, steps in raw.items():
                parsed = []
                for layer, sublayer, head, hidden, reads, writes in steps:
                    if layer is not None and not 0 <= layer < cfg.n_layers:
                        raise ValueError(f"layer {layer} of {label!r}")
                    dims = [*reads, *writes]
                    if any(not 0 <= int(i) < cfg.d_model for i in dims):
                        raise ValueError(f"a residual dimension of {label!r} is outside "
                                         f"0..{cfg.d_model - 1}")
                    parsed.append(CircuitStep(layer, sublayer, head, tuple(hidden),
                                              tuple(reads), tuple(writes)))
                out[label] = tuple(parsed)
        except (AttributeError, TypeError, ValueError) as exc:
            raise self.error("circuit", f"malformed: {exc}") from None
        return out
