"""Model files: one ``.safetensors`` file per compiled model, no pickle.

Layout: the weights, under their TransformerLens names, as float32 or float64 tensors
(as compiled); the safetensors metadata (string -> string) holds

- ``format`` (``"rasplang-model"``) and ``format_version`` (`FORMAT_VERSION`);
- ``config``: the `ModelConfig` fields as JSON;
- ``residual_labels``, ``input_encoder``, ``output_encoder``, ``circuit`` as JSON;
- ``sha256``: each tensor's SHA-256 (of its little-endian bytes);
- for a model in another residual basis (`rasplang.compression`: rotated or
  compressed), ``basis_model``: its class, the compiled model's residual labels
  (``features``) and, compressed, its training loss history and time, with the basis
  matrix ``W [len(features), d_model]`` as the float64 tensor ``basis.projection``;
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
import errno
import json
import os
import re
import secrets
import socket
import struct
from pathlib import Path
from typing import Any

import numpy as np

from rasplang.backend.metadata import (
    FORMAT,
    FORMAT_VERSION,
    PROJECTION,
    MetadataReader,
    ModelFileError,
    digest,
    metadata_of,
)
from rasplang.backend.model import CompiledModel, ModelConfig

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelFileError", "load", "save"]

_DTYPES = {"F32": np.float32, "F64": np.float64}
_MAX_HEADER = 100_000_000  # the largest header safetensors itself reads


# -------------------------------------------------------------------------- save


def save(model: CompiledModel, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` (one safetensors file) atomically; returns the path.

    The file gets the mode ``open`` would give it (``0o666`` less the umask). Temporary
    files that earlier, killed saves into the same folder left behind are removed first.
    A missing folder raises FileNotFoundError naming ``path``.
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
    projection = getattr(model, "projection", None)
    if projection is not None:   # a rasplang.compression.BasisModel: its W too
        tensors[PROJECTION] = np.ascontiguousarray(projection, dtype=np.float64)
    _write_atomically(path, to_bytes(tensors, metadata=metadata_of(model, tensors)))
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a fresh temporary file next to ``path``, then rename it there."""
    if not path.parent.is_dir():  # name the target, not the temporary file
        raise FileNotFoundError(errno.ENOENT, f"cannot save {path}: no folder "
                                f"{path.parent}", str(path))
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
    """Delete the temporaries that writers on this host which no longer run (a killed
    save) left in ``path``'s folder, whatever file they were saving.

    Only POSIX can ask whether a process exists (``os.kill(pid, 0)``); elsewhere, and
    for other hosts' temporaries (a shared folder), nothing is removed.
    """
    if os.name != "posix":
        return
    pattern = re.compile(r"\..+\.(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")
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


# -------------------------------------------------------------------------- load


def load(path: str | os.PathLike) -> CompiledModel:
    """Read a model written by `save`; its outputs are identical to the saved model's.

    Raises FileNotFoundError for a missing file and `ModelFileError` (naming the file
    and the field) for a truncated, corrupted or edited one, a file that is not a model
    file, and a format version 1 file (whose metadata has no checksum: save the model
    again). Every metadata field is checked against its SHA-256 and every tensor against
    its own. The loaded model has no ``program`` (programs hold Python functions, which a
    model file never stores). A rotated or compressed model loads as the
    `rasplang.compression` class it was saved from, with its ``projection`` and
    ``features``.
    """
    path = Path(path)
    data = path.read_bytes()
    header, metadata = _read_header(path, data)
    reader = MetadataReader(path, metadata)
    reader.check_format()
    reader.check_hashes()
    config = reader.config()
    basis = reader.basis_model(config)
    extra = {} if basis is None else {PROJECTION: (len(basis["features"]), config.d_model)}
    weights = _read_tensors(path, data, header, reader, config, extra)
    labels = reader.residual_labels(config)
    enc_in = reader.input_encoder(config)
    enc_out = reader.output_encoder(config)
    circuit = reader.circuit(config)
    if basis is None:
        return CompiledModel(config, weights, labels, enc_in, enc_out, circuit, None)
    from rasplang.compression import basis as compression

    cls = getattr(compression, basis["class"])
    fields = {"projection": weights.pop(PROJECTION), "features": basis["features"]}
    if cls is compression.CompressedModel:
        fields.update(history=basis["history"], seconds=basis["seconds"])
    return cls(config, weights, labels, enc_in, enc_out, circuit, None, **fields)


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
    from rasplang.backend.normalize import norm_shapes

    shapes.update(norm_shapes(cfg))  # ln1, ln2, ln_final / embed.ln when normalised
    return shapes


def _read_tensors(path: Path, data: bytes, header: dict[str, Any], reader: MetadataReader,
                  cfg: ModelConfig, extra: dict[str, tuple[int, ...]] | None = None,
                  ) -> dict[str, np.ndarray]:
    """Every weight of ``cfg`` and the ``extra`` tensors (a basis matrix, float64 and
    left out of the one-dtype check), each checked for shape, size and hash."""
    expected = {**_expected_shapes(cfg), **(extra or {})}
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
        if hashes.get(name) != digest(w):
            raise ModelFileError(f"{path}: tensor {name!r} does not match its sha256 in the "
                                 "metadata (corrupted or modified)")
        weights[name] = w.astype(dtype)  # a writable native-endian copy
        if name not in (extra or {}):
            dtypes.add(np.dtype(dtype))
    if len(dtypes) > 1:
        raise ModelFileError(f"{path}: tensors mix dtypes {sorted(map(str, dtypes))}")
    unknown = sorted(set(hashes) - set(expected))
    if unknown:
        raise reader.error("sha256", f"names {unknown[:5]}, which are not tensors of the model")
    return weights
