"""One shard of a dataset: run the interpreter on its inputs and write one Parquet file.

A `ShardJob` is a small, picklable description of the whole dataset (the program, its
domain, the columns, the folder); `write_shard` computes shard ``k`` of it from that
description alone, anywhere: in this process, or on a Dask worker (which receives the
job with cloudpickle and builds the interpreter plan once per job).

Columns (`Column`): ``tokens`` and ``output`` (lists, one value per position), and one
per traced node, named by its label. A node's Arrow type follows from the analysis's
value table (`arrow_type`): bools, ints (int64), numbers with a float or a mean (float64),
strings; any other values (tuples, mixed types) are stored as their ``repr``. None is a
null. A traced selector is a list of rows, each a list of bools (``[query][key]``).

A shard is written to a hidden temporary file in the same folder, flushed to disk
(fsync) and renamed over its final name, so a file with the final name is always whole;
its SHA-256 goes to the dataset's metadata file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from rasplang.domain import Exhaustive, Sampled
from rasplang.nodes import RASPExpr

#: Rows per Parquet row group (and most rows held in memory at once while writing).
ROW_GROUP = 1 << 17
#: Inputs per interpreter call (an exhaustive batch is cut where the length changes),
#: fewer for long inputs: at most `BATCH_CELLS` positions, or (query, key) pairs when a
#: selector is traced.
BATCH = 1 << 17
BATCH_CELLS = 1 << 22
#: Parquet compression of every shard.
COMPRESSION = "zstd"


@attrs.frozen
class Column:
    """One column: its name, the node's label (None for ``tokens``), and how values are
    stored (``"bool"``, ``"int64"``, ``"float64"``, ``"string"``, ``"repr"``, or
    ``"selector"`` for a list of bool rows)."""

    name: str
    label: str | None
    kind: str


@attrs.frozen
class ShardJob:
    """Everything a worker needs to write any shard of one dataset."""

    program: RASPExpr
    vocab: tuple[Any, ...]
    max_seq_len: int
    causal: bool
    domain: Exhaustive | Sampled
    shard_rows: int
    columns: tuple[Column, ...]
    out: str
    n_shards: int
    key: str  # the dataset's fingerprint: one plan per key per process

    def shard_name(self, k: int) -> str:
        """The file name of shard ``k``."""
        return f"shard-{k:05d}-of-{self.n_shards:05d}.parquet"

    def shard_range(self, k: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of shard ``k``."""
        return k * self.shard_rows, min(self.domain.total, (k + 1) * self.shard_rows)


@attrs.frozen
class ShardInfo:
    """A written shard: its index, file name, rows, bytes and SHA-256."""

    index: int
    file: str
    rows: int
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def arrow_type(values: Sequence[Any], spread: bool) -> str:
    """How a node's values are stored: the narrowest of bool, int64, float64, string,
    else ``repr``. ``spread`` (a categorical Aggregate that may average several
    numbers) makes numbers float64."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return "int64"  # only None: an all-null column
    if kinds <= {bool} and not spread:
        return "bool"
    if kinds <= {bool, int} and not spread:
        big = [v for v in values if type(v) is int and not -2**63 <= v < 2**63]
        return "repr" if big else "int64"
    if kinds <= {bool, int, float}:
        return "float64"
    if kinds <= {str}:
        return "string"
    return "repr"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------ computing a shard

_PLANS: dict[str, Any] = {}
_PLANS_LOCK = threading.Lock()


def plan_for(job: ShardJob) -> Any:
    """The job's interpreter plan, built once per process (workers keep it)."""
    with _PLANS_LOCK:
        plan = _PLANS.get(job.key)
        if plan is None:
            from rasplang.interpreter import Plan

            plan = Plan(job.program, job.vocab, job.max_seq_len, job.causal)
            _PLANS.clear()  # one dataset at a time per process
            _PLANS[job.key] = plan
        return plan


class _Converter:
    """Node codes -> Arrow values for one column (the value table cached by identity)."""

    def __init__(self, column: Column):
        self.column = column
        self._table: Any = None
        self._values: Any = None

    def values(self, table: Any) -> Any:
        import pyarrow as pa

        if table is not self._table:
            kind = self.column.kind
            items = list(table.values)
            if kind == "repr":
                items = [None if v is None else repr(v) for v in items]
                kind = "string"
            try:
                self._values = pa.array(items, type=getattr(pa, "bool_" if kind == "bool"
                                                            else kind)())
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                bad = next((v for v in table.values if not _fits(v, kind)), None)
                raise ValueError(
                    f"node {self.column.label!r} produced {bad!r}, which does not fit its "
                    f"column {self.column.name!r} of type {kind} (chosen from the "
                    f"analysis's value table): {exc}") from exc
            self._table = table
        return self._values


_FITS = {"bool": (bool,), "int64": (bool, int), "float64": (bool, int, float),
         "string": (str,)}


def _fits(value: Any, kind: str) -> bool:
    if value is None:
        return True
    if kind == "int64" and type(value) is int:
        return -2**63 <= value < 2**63
    return isinstance(value, _FITS.get(kind, object))


def _lists(flat: Any, lengths: np.ndarray) -> Any:
    """A list array of ``flat`` values cut at ``lengths``."""
    import pyarrow as pa

    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), flat)


def _flat(codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The codes of every valid position, row by row ``[sum(lengths)]``."""
    if lengths.min(initial=codes.shape[1]) == codes.shape[1]:
        return codes.reshape(-1)
    return codes[np.arange(codes.shape[1])[None, :] < lengths[:, None]]


def _selector_lists(matrix: np.ndarray, lengths: np.ndarray) -> Any:
    """``[b, T, T]`` selector matrices as lists (queries) of lists (keys) of bools."""
    import pyarrow as pa

    at = np.arange(matrix.shape[1])
    valid = at[None, :] < lengths[:, None]  # (b, T)
    flat = matrix[valid[:, :, None] & valid[:, None, :]].astype(bool)  # row, query, key
    inner = _lists(pa.array(flat), np.repeat(lengths, lengths))
    return _lists(inner, lengths)


def _batch_table(job: ShardJob, plan: Any, converters: dict[str, _Converter],
                 codes: np.ndarray, lengths: np.ndarray) -> Any:
    """One batch of rows as an Arrow table with the job's columns."""
    import pyarrow as pa

    labels = [c.label for c in job.columns if c.label is not None]
    result = plan.run_arrays(codes, lengths, outputs=labels)
    arrays = []
    for column in job.columns:
        if column.label is None:  # tokens
            flat = converters[column.name].values(_vocab_table(plan))
            arrays.append(_lists(flat.take(pa.array(_flat(codes, lengths))), lengths))
            continue
        node = result.output if column.name == "output" else result[column.label]
        if column.kind == "selector":
            arrays.append(_selector_lists(node.matrix, lengths))
            continue
        values = converters[column.name].values(node.table)
        arrays.append(_lists(values.take(pa.array(_flat(node.codes, lengths))), lengths))
    return pa.Table.from_arrays(arrays, names=[c.name for c in job.columns])


def _vocab_table(plan: Any) -> Any:
    from rasplang.values import Table

    table = getattr(plan, "_dataset_vocab_table", None)
    if table is None:
        table = Table.of(plan.vocab)
        plan._dataset_vocab_table = table
    return table


def schema(job: ShardJob) -> Any:
    """The Arrow schema of every shard of ``job``."""
    import pyarrow as pa

    def item(kind: str) -> Any:
        if kind == "selector":
            return pa.list_(pa.bool_())
        return {"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64()}.get(
            kind, pa.string())
    return pa.schema([(c.name, pa.list_(item(c.kind))) for c in job.columns])


def batch_rows(job: ShardJob) -> int:
    """Rows per interpreter call for ``job``: `BATCH`, fewer for long inputs."""
    width = max(job.domain.lengths)
    if any(c.kind == "selector" for c in job.columns):
        width *= width
    return max(64, min(BATCH, BATCH_CELLS // width))


def write_shard(job: ShardJob, k: int) -> ShardInfo:
    """Compute shard ``k`` of ``job`` and write it atomically; its `ShardInfo`.

    A second thread writes (and compresses) each row group while the next one is
    computed; both release the GIL, so a shard keeps two cores busy.
    """
    plan = plan_for(job)
    start, stop = job.shard_range(k)
    converters = {c.name: _Converter(c) for c in job.columns}
    final = Path(job.out) / job.shard_name(k)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with _Writer(tmp, schema(job)) as writer:
            pending: list[Any] = []
            held = 0
            for codes, lengths in job.domain.batches(start, stop, batch_rows(job)):
                pending.append(_batch_table(job, plan, converters, codes, lengths))
                held += len(lengths)
                if held >= ROW_GROUP:
                    writer.put(pending)
                    pending, held = [], 0
            if pending or stop == start:
                writer.put(pending)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(final.parent)
    return ShardInfo(k, final.name, stop - start, final.stat().st_size, sha256_of(final))


class _Writer:
    """A Parquet file written by a thread of its own, one row group per `put`."""

    def __init__(self, path: Path, file_schema: Any):
        import queue

        self.path, self.schema = path, file_schema
        self.queue: Any = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="rasplang_parquet", daemon=True)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def put(self, tables: list[Any]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(tables)

    def _run(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with pq.ParquetWriter(self.path, self.schema, compression=COMPRESSION) as writer:
                while (tables := self.queue.get()) is not None:
                    table = pa.concat_tables(tables) if tables else self.schema.empty_table()
                    writer.write_table(table, row_group_size=ROW_GROUP)
        except BaseException as exc:  # raised again in the computing thread
            self.error = exc
            while self.queue.get() is not None:  # let put() return until the end
                pass

    def __exit__(self, *exc_info: Any) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc_info[0] is None:
            raise self.error


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
