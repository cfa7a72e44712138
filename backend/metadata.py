"""The metadata of a model file (see `rasplang.backend.io` for the layout): the format
name and version, tokens and values as typed JSON, the SHA-256 digests, how `save`
writes each field (`metadata_of`) and how `load` reads each one back, checked
(`MetadataReader`), with errors naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
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
HASHED = ("format", "format_version", "config", "residual_labels", "input_encoder",
          "output_encoder", "circuit", "sha256", "rasplang_version")  # in metadata_sha256
#: The field of a model in another residual basis (`rasplang.compression`), hashed too
#: when present: its class, the compiled model's residual labels and, for a compressed
#: model, its training history; the basis matrix is the tensor `PROJECTION`.
BASIS_FIELD = "basis_model"
PROJECTION = "basis.projection"
BASIS_CLASSES = ("BasisModel", "CompressedModel")


class ModelFileError(ValueError):
    """A model file that cannot be loaded: says which file and which field."""


def to_json(value: Any, where: str) -> Any:
    """A token or value as JSON that keeps its type (tuples tagged)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else {"float": repr(value)}
    if isinstance(value, tuple):
        return {"tuple": [to_json(v, where) for v in value]}
    raise ValueError(f"cannot save {where}: value {value!r} of type {type(value).__name__} "
                     "is not a str, int, float, bool, None or tuple of those")


def from_json(value: Any, where: str) -> Any:
    """The token or value that `to_json` wrote (ValueError naming ``where`` otherwise)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict) and set(value) == {"tuple"} and isinstance(value["tuple"], list):
        return tuple(from_json(v, where) for v in value["tuple"])
    if isinstance(value, dict) and set(value) == {"float"} and value["float"] in (
            "nan", "inf", "-inf"):
        return float(value["float"])
    raise ValueError(f"{where}: {value!r} is not an encoded value")


def metadata_of(model: CompiledModel, tensors: dict[str, np.ndarray]) -> dict[str, str]:
    """The metadata of ``model``'s file, whose weights are ``tensors``: every field as
    JSON text, and ``metadata_sha256`` over them."""
    cfg = model.config
    config = {f.name: getattr(cfg, f.name) for f in attrs.fields(ModelConfig)}
    config["vocab"] = [to_json(v, "config.vocab") for v in cfg.vocab]
    config["bos"], config["pad"] = to_json(cfg.bos, "config.bos"), to_json(cfg.pad, "config.pad")
    enc_in, enc_out = model.input_encoder, model.output_encoder
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config),
        "residual_labels": json.dumps(list(model.residual_labels)),
        "input_encoder": json.dumps({
            "vocab": [to_json(v, "input_encoder.vocab") for v in enc_in.vocab],
            "bos": to_json(enc_in.bos, "input_encoder.bos"),
            "pad": to_json(enc_in.pad, "input_encoder.pad")}),
        "output_encoder": json.dumps({
            "numerical": bool(enc_out.numerical),
            "values": [to_json(v, "output_encoder.values") for v in enc_out.values]}),
        "circuit": json.dumps({label: [step_json(s) for s in steps]
                               for label, steps in model.circuit.items()}),
        "sha256": json.dumps({name: digest(w) for name, w in tensors.items()}),
        "rasplang_version": _version(),
    }
    hashed = HASHED
    if PROJECTION in tensors:
        metadata[BASIS_FIELD] = json.dumps({
            "class": type(model).__name__,
            "features": list(model.features),
            "history": [float(x) for x in getattr(model, "history", ())],
            "seconds": float(getattr(model, "seconds", 0.0))})
        hashed = (*HASHED, BASIS_FIELD)
    metadata["metadata_sha256"] = json.dumps({f: text_digest(metadata[f]) for f in hashed})
    return metadata


def step_json(step: CircuitStep) -> list[Any]:
    """``[layer, sublayer, head, hidden, reads, writes]`` with plain ints, then the
    labels it is fused with when there are any."""
    def opt(x: Any) -> int | None:
        return None if x is None else int(x)

    out = [opt(step.layer), str(step.sublayer), opt(step.head), [int(i) for i in step.hidden],
           [int(i) for i in step.reads], [int(i) for i in step.writes]]
    return [*out, list(step.fused)] if step.fused else out


def digest(w: np.ndarray) -> str:
    """The SHA-256 of a tensor's little-endian bytes (the ``sha256`` field)."""
    return hashlib.sha256(np.ascontiguousarray(w, dtype=w.dtype.newbyteorder("<")).tobytes()
                          ).hexdigest()


def text_digest(text: str) -> str:
    """The SHA-256 of a field's UTF-8 text (the ``metadata_sha256`` field)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _version() -> str:
    from rasplang import __version__

    return __version__


# ------------------------------------------------------------------------- read


class MetadataReader:
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
            return from_json(raw, field)
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
        optional = (BASIS_FIELD,) if BASIS_FIELD in self.metadata or BASIS_FIELD in hashes \
            else ()
        for field in (*HASHED, *optional):
            if field not in hashes:
                raise self.error("metadata_sha256", f"has no checksum for {field!r}")
            if hashes[field] != text_digest(self.text(field)):
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
                if type(raw[name]) is int and want is float:
                    raw[name] = float(raw[name])
                if type(raw[name]) not in (want if isinstance(want, tuple) else (want,)) or (
                        want is int and raw[name] < 0):
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
        for key, allowed in (("output_encoding", OUTPUT_ENCODINGS), ("act_fn", ACT_FNS),
                             ("normalization_type", (None, "LN", "RMS")),
                             ("norm_position", ("pre", "post"))):
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

    def basis_model(self, cfg: ModelConfig) -> dict[str, Any] | None:
        """The `BASIS_FIELD` of a model in another residual basis (None for a compiled
        one), checked: ``class``, ``features`` (labels), ``history``, ``seconds``."""
        if BASIS_FIELD not in self.metadata:
            return None
        raw = self.json(BASIS_FIELD)
        if not (isinstance(raw, dict) and set(raw) == {"class", "features", "history",
                                                        "seconds"}):
            raise self.error(BASIS_FIELD, "expected {class, features, history, seconds}")
        if raw["class"] not in BASIS_CLASSES:
            raise self.error(BASIS_FIELD, f"class {raw['class']!r} is not one of "
                             f"{list(BASIS_CLASSES)}")
        features = raw["features"]
        if not (isinstance(features, list) and features
                and all(isinstance(x, str) for x in features)):
            raise self.error(BASIS_FIELD, "features: expected a list of residual labels")
        history = raw["history"]
        if not (isinstance(history, list) and all(type(x) in (int, float) for x in history)):
            raise self.error(BASIS_FIELD, "history: expected a list of numbers")
        if type(raw["seconds"]) not in (int, float):
            raise self.error(BASIS_FIELD, f"seconds: expected a number, got {raw['seconds']!r}")
        if not cfg.basis:
            raise self.error(BASIS_FIELD, "present, but the config's basis is empty")
        return {"class": raw["class"], "features": tuple(features),
                "history": tuple(float(x) for x in history), "seconds": float(raw["seconds"])}

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

        if not (isinstance(step, list) and len(step) in (6, 7)):
            raise fail("expected [layer, sublayer, head, hidden, reads, writes(, fused)]")
        layer, sublayer, head, hidden, reads, writes = step[:6]
        fused = step[6] if len(step) == 7 else []
        if not ((isinstance(fused, list) and fused and all(isinstance(x, str) for x in fused))
                or len(step) == 6):
            raise fail(f"fused {fused!r} is not a list of node labels")
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
                           tuple(writes), tuple(fused))


# ModelConfig's field types as JSON holds them (an Encoding is its str value)
_JSON_TYPES = {"int": int, "bool": bool, "str": str, "None": type(None), "Encoding": str,
               "float": float, "str | None": (str, type(None))}
_TYPE_NAMES = {bool: "true or false", str: "a string", type(None): "null", float: "a number",
               (str, type(None)): "a string or null"}


def _same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are equal with the same types throughout (1 is not 1.0)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
