"""`dataset`: exact input/output (and trace) datasets of a program, as Parquet shards.

A dataset is a folder of Parquet files ``shard-KKKKK-of-NNNNN.parquet`` (rows
``K * shard_rows`` up to the next shard's first row) and one metadata file,
`METADATA` (``.rasplang-dataset.json``, read by `read_metadata`), which records the
program's node table, the vocabulary, max_seq_len, the lengths, the seed, the rasplang
version, the columns and each shard's SHA-256. The folder loads as it is with
``datasets.load_dataset("parquet", data_dir=...)``, ``pandas.read_parquet`` and
``polars.read_parquet("DIR/*.parquet")``: the metadata file and unfinished writes are
hidden files (their names start with ``.``), which these loaders skip.

Rows: with ``n=None`` every input of the domain, row ``i`` being input number ``i`` in
`rasplang.domain.Exhaustive`'s order (lengths ascending, then lexicographic); with
``n``, ``n`` random inputs, shard ``k`` drawn from ``(seed, k)`` alone
(`rasplang.domain.Sampled`). Running `dataset` again with the same arguments resumes:
shards whose file is there with the recorded checksum are kept, the others (missing,
half-written by a killed run, or damaged) are computed again. The same arguments, the
same rasplang, numpy and pyarrow give byte-identical shards.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from rasplang._version import __version__
from rasplang.analysis import analyze
from rasplang.domain import Exhaustive, Sampled, check_lengths
from rasplang.nodes import RASPExpr, Selector, SOp, TokensType
from rasplang.shards import Column, ShardInfo, ShardJob, arrow_type, sha256_of, write_shard

#: The metadata file of a dataset folder.
METADATA = ".rasplang-dataset.json"
#: The metadata file is rewritten at most this often while shards complete (seconds).
METADATA_EVERY_S = 1.0
#: Shards written at once without a client (each also keeps a thread writing Parquet).
LOCAL_THREADS = min(2, os.cpu_count() or 1)
#: Arguments that must match for a run to resume a folder.
SAME = ("fingerprint", "columns", "vocab", "max_seq_len", "lengths", "causal", "domain",
        "n", "seed", "shard_rows")


@attrs.define(eq=False)
class DatasetReport:
    """What `dataset` wrote: ``rows`` rows in ``shards`` (`rasplang.shards.ShardInfo`),
    of which ``written`` were computed by this run, ``reused`` were kept from an earlier
    run and ``repaired`` were there but damaged (rewritten). ``columns`` are the column
    names; ``metadata`` the metadata file; ``seconds`` the run's time."""

    out: Path
    rows: int
    columns: list[str]
    shards: list[ShardInfo]
    written: list[int]
    reused: list[int]
    repaired: list[int]
    metadata: Path
    seconds: float

    @property
    def files(self) -> list[Path]:
        """The shard files, in row order."""
        return [self.out / s.file for s in self.shards]

    def summary(self) -> str:
        rate = self.rows / self.seconds if self.seconds and self.written else 0
        text = (f"wrote {len(self.written):,} of {len(self.shards):,} shards "
                f"({self.rows:,} rows, columns {', '.join(self.columns)}) to {self.out} in "
                f"{self.seconds:.2f} s")
        if rate and len(self.written) == len(self.shards):
            text += f" ({rate:,.0f} rows/s)"
        if self.reused:
            text += f"; {len(self.reused):,} kept from an earlier run"
        if self.repaired:
            text += f"; {len(self.repaired):,} damaged or half-written, rewritten"
        return text

    def __str__(self) -> str:
        return self.summary()


def dataset(
    program: RASPExpr,
    vocab: Iterable[Any],
    max_seq_len: int,
    *,
    n: int | None = None,
    seed: int = 0,
    lengths: Iterable[int] | int | None = None,
    traces: bool | Iterable[str] = False,
    causal: bool = False,
    out: str | os.PathLike[str],
    shard_rows: int = 1_000_000,
    client: Any = None,
    progress: bool | None = None,
) -> DatasetReport:
    """Write the program's inputs and outputs on a domain to Parquet shards in ``out``.

    Columns: ``tokens`` and ``output``, lists with one value per position; with
    ``traces=True`` also one column per SOp of the program (named by its label; the
    ``tokens`` node is the ``tokens`` column), or with a list of labels one column per
    node named (a selector gives a list of rows of bools, ``[query][key]``).

    ``n=None`` writes every input of length in ``lengths`` (default ``1..max_seq_len``)
    over ``vocab``, in the documented order; ``n`` writes ``n`` random inputs (seeded by
    ``seed``, shard by shard). ``client`` (a ``dask.distributed.Client``) writes the
    shards on its workers, which must all see ``out`` (a local folder for a
    LocalCluster, a shared file system otherwise). Without it nothing imports Dask.
    ``progress`` forces the progress bar on or off (default: on a terminal).

    A program that raises on an input raises here (`rasplang.EvaluationError`, naming
    the input), whichever worker met it; shards already written stay, and a new run
    resumes. Returns a `DatasetReport`.
    """
    start_time = time.perf_counter()
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be positive, got {shard_rows}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"n must be None (every input) or a non-negative int, got {n!r}")
    vocab = tuple(vocab)
    allowed = check_lengths(lengths, max_seq_len)
    analysis = analyze(program, vocab, max_seq_len)
    if n is None:
        domain: Exhaustive | Sampled = Exhaustive(len(analysis.vocab), allowed)
    else:
        domain = Sampled(len(analysis.vocab), allowed, n, seed, shard_rows)
    columns = _columns(analysis, program, traces)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    meta = _metadata(analysis, program, columns, domain, causal, seed, shard_rows)
    n_shards = math.ceil(domain.total / shard_rows)
    job = ShardJob(program, analysis.vocab, max_seq_len, bool(causal), domain, shard_rows,
                   columns, str(folder.resolve()), n_shards, _plan_key(meta))
    done, repaired = _resume(folder, meta, job)
    todo = [k for k in range(n_shards) if k not in done]
    reused = sorted(done)
    state = _Progress(folder, meta, done, progress, domain.total,
                      sum(done[k].rows for k in done))
    try:
        if client is None:
            _write_here(job, todo, state.finished)
        else:
            from rasplang.scale import run_shards

            run_shards(client, job, todo, state.finished)
    finally:
        state.close()
        _remove_temporary(folder)  # left by workers killed while writing
    shards = [state.done[k] for k in range(n_shards)]
    return DatasetReport(folder, domain.total, [c.name for c in columns], shards, todo,
                         reused, repaired, folder / METADATA,
                         time.perf_counter() - start_time)


# ------------------------------------------------------------------------ columns


def _columns(analysis: Any, program: RASPExpr, traces: bool | Iterable[str]) -> tuple[Column, ...]:
    """``tokens``, ``output`` and the traced nodes' columns."""
    def kind(node: Any) -> str:
        if isinstance(node, Selector):
            return "selector"
        spread = any(node is other for other in analysis.spread_aggregates)
        return arrow_type(analysis.typed_values[node], spread)

    if not isinstance(program, SOp):
        raise TypeError(f"the program must be an SOp, got {type(program).__name__}")
    columns = [Column("tokens", None, arrow_type(analysis.vocab, False)),
               Column("output", analysis.labels[program], kind(program))]
    if traces is True:
        traced = [node for node in analysis.nodes if not isinstance(node, Selector)]
    elif traces is False or traces is None:
        traced = []
    else:
        if isinstance(traces, str):
            raise TypeError(f"traces must be True, False or a list of labels, got {traces!r}")
        traced = [analysis.node(label) for label in traces]
    for node in dict.fromkeys(traced):
        if isinstance(node, TokensType) or node is program:
            continue  # already the tokens and output columns
        label = analysis.labels[node]
        if label in ("tokens", "output"):
            raise ValueError(f"node {label!r} would be a column named like the dataset's own "
                             f"{label!r} column; rename it (.named(...)) to trace it")
        columns.append(Column(label, label, kind(node)))
    return tuple(columns)


# ----------------------------------------------------------------------- metadata


def node_table(analysis: Any) -> list[dict[str, Any]]:
    """One entry per node in topological order: label, type, children, encoding, number
    of values, and the node as `rasplang.format_program` shows it."""
    rows = []
    for node in analysis.nodes:
        row = {"label": analysis.labels[node], "type": type(node).__name__,
               "children": [analysis.labels[c] for c in node.children],
               "expr": repr(node)}
        if not isinstance(node, Selector):
            row["encoding"] = analysis.encodings[node].value
            row["values"] = len(analysis.typed_values[node])
        rows.append(row)
    return rows


def fingerprint(analysis: Any) -> str:
    """SHA-256 of what the program computes on the domain: the graph, each node's value
    table and each lookup array (so an edited function changes it)."""
    digest = hashlib.sha256()
    index = {node: i for i, node in enumerate(analysis.nodes)}
    for node in analysis.nodes:
        digest.update(repr((type(node).__name__, [index[c] for c in node.children],
                            node.name, getattr(node, "default", None))).encode())
        if not isinstance(node, Selector):
            digest.update(repr(analysis.typed_values[node]).encode())
            lut = analysis.luts.get(node)
            if lut is not None:
                digest.update(lut.tobytes())
        else:
            digest.update(analysis.select_table(node).tobytes()
                          if hasattr(node, "predicate") else b"")
    return digest.hexdigest()


def _plan_key(meta: dict[str, Any]) -> str:
    """What a process's cached interpreter plan must match: the program's tables, the
    vocabulary, max_seq_len and causal."""
    return hashlib.sha256(repr((meta["fingerprint"], meta["vocab"], meta["max_seq_len"],
                                meta["causal"])).encode()).hexdigest()


def _json_value(value: Any) -> Any:
    return value if value is None or type(value) in (bool, int, float, str) else repr(value)


def _metadata(analysis: Any, program: RASPExpr, columns: tuple[Column, ...], domain: Any,
              causal: bool, seed: int, shard_rows: int) -> dict[str, Any]:
    exhaustive = isinstance(domain, Exhaustive)
    return {
        "format": "rasplang-dataset/1",
        "rasplang_version": __version__,
        "program": analysis.labels[program],
        "fingerprint": fingerprint(analysis),
        "nodes": node_table(analysis),
        "vocab": [_json_value(v) for v in analysis.vocab],
        "max_seq_len": analysis.max_seq_len,
        "lengths": list(domain.lengths),
        "causal": bool(causal),
        "domain": "exhaustive" if exhaustive else "sampled",
        "order": ("row i is input number i: lengths ascending, then the token codes in "
                  "lexicographic order (codes are positions in vocab)") if exhaustive else
                 ("shard k holds rows drawn from numpy.random.default_rng([seed, k]): each "
                  "row's length uniform over lengths, then its tokens uniform over vocab"),
        "n": None if exhaustive else domain.n,
        "seed": seed,
        "rows": domain.total,
        "shard_rows": shard_rows,
        "columns": [attrs.asdict(c) for c in columns],
        "shards": [],
        "complete": False,
    }


def read_metadata(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of the dataset in folder ``out``."""
    return json.loads((Path(out) / METADATA).read_text(encoding="utf-8"))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically: a temporary file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _resume(folder: Path, meta: dict[str, Any], job: ShardJob) -> tuple[dict[int, ShardInfo],
                                                                        list[int]]:
    """The shards an earlier run finished whose files check out, and those damaged."""
    _remove_temporary(folder)
    path = folder / METADATA
    if not path.exists():
        if any(folder.glob("shard-*.parquet")):
            raise ValueError(f"{folder} holds shard files but no {METADATA}; choose an empty "
                             "folder, or delete the shards")
        return {}, []
    try:
        old = read_metadata(folder)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is damaged ({exc}); delete it to start over") from exc
    differ = [key for key in SAME if old.get(key) != meta[key]]
    if differ:
        raise ValueError(f"{folder} holds a dataset made with other arguments (they differ in "
                         f"{', '.join(differ)}); choose another folder, or delete it")
    done, repaired = {}, []
    for entry in old.get("shards", []):
        info = ShardInfo(**entry)
        if info.file != job.shard_name(info.index):
            continue
        file = folder / info.file
        if file.exists() and file.stat().st_size == info.bytes and sha256_of(file) == info.sha256:
            done[info.index] = info
        else:
            repaired.append(info.index)
    return done, repaired


def _write_here(job: ShardJob, todo: list[int], finished: Any) -> None:
    """Write the shards ``todo`` in this process, up to `LOCAL_THREADS` at a time (the
    interpreter's kernels and pyarrow release the GIL); ``finished(ShardInfo)`` in the
    calling thread. The first shard that raises stops the run."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    threads = max(1, min(LOCAL_THREADS, len(todo)))
    if threads == 1:
        for k in todo:
            finished(write_shard(job, k))
        return
    pending = iter(todo)
    with ThreadPoolExecutor(threads, thread_name_prefix="rasplang_dataset") as pool:
        running = {pool.submit(write_shard, job, k) for k in itertools.islice(pending, threads)}
        try:
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    finished(future.result())
                    running |= {pool.submit(write_shard, job, k)
                                for k in itertools.islice(pending, 1)}
        except BaseException:
            for future in running:
                future.cancel()
            raise


def _remove_temporary(folder: Path) -> None:
    """Delete unfinished shard writes (hidden temporary files of killed processes)."""
    for stale in folder.glob(".shard-*.tmp-*"):
        stale.unlink(missing_ok=True)


class _Progress:
    """Records finished shards in the metadata file and drives the progress bar."""

    def __init__(self, folder: Path, meta: dict[str, Any], done: dict[int, ShardInfo],
                 progress: bool | None, total: int, rows_done: int):
        self.path, self.meta, self.done = folder / METADATA, meta, dict(done)
        self.last = 0.0
        self.bar = _bar(total, progress)
        if self.bar is not None and rows_done:
            self.bar.update(rows_done)
        self._save(force=True)

    def finished(self, info: ShardInfo) -> None:
        self.done[info.index] = info
        if self.bar is not None:
            self.bar.update(info.rows)
        self._save()

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < METADATA_EVERY_S:
            return
        self.meta["shards"] = [self.done[k].to_json() for k in sorted(self.done)]
        n_shards = math.ceil(self.meta["rows"] / self.meta["shard_rows"])
        self.meta["complete"] = len(self.done) == n_shards
        _write_json(self.path, self.meta)
        self.last = now

    def close(self) -> None:
        self._save(force=True)
        if self.bar is not None:
            self.bar.close()


def _bar(total: int, progress: bool | None) -> Any:
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="row", unit_scale=True, delay=1.0, desc="dataset",
                file=sys.stderr)
