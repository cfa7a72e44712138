"""Dask as the engine: shards of `rasplang.dataset` and `rasplang.verify` on a cluster.

Only imported when a ``dask.distributed.Client`` is given. Workers receive small
descriptions, not data: the job (program, domain, and for verify the compiled model)
is sent once as a task of its own, pickled with cloudpickle as Dask does, and each
shard task names only its range. Unpickling a program runs its code on the worker, so
use only clusters whose workers you trust, and which trust you.

On a worker, a verify shard keeps freed memory for reuse while it runs
(`keep_freed_memory`: under Dask's allocator setting a worker used twice the CPU time
per input), and runs the interpreter on its share of the host's CPUs (the CPUs
divided by the worker threads on that host, `task_threads`: 2 single-threaded workers
on 2 cores each splitting batches over 2 threads cost about a fifth more CPU time).

Faults: a worker that dies mid-run loses nothing. The scheduler recomputes the tasks
it held (the job itself included, as it is a task), and results are keyed by shard,
so each shard is counted exactly once whichever attempt finishes. A shard task that
raises (the program raising on an input, a dataset shard that cannot be written)
cancels the run and raises here with the worker's exception.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

#: Shard tasks in flight per worker thread (more are submitted as these finish).
IN_FLIGHT_PER_THREAD = 3
#: verify's shards: at most this many inputs, and at least `batch_size`.
MAX_VERIFY_SHARD = 1 << 22


def _threads(client: Any) -> int:
    return max(1, sum(client.nthreads().values()))


def _load(blob: bytes) -> Any:
    import cloudpickle

    return cloudpickle.loads(blob)


def _job_future(client: Any, job: Any, name: str) -> Any:
    """The job as a task of its own: recomputed, not lost, when its worker dies."""
    import cloudpickle

    return client.submit(_load, cloudpickle.dumps(job), key=f"{name}-job-{uuid.uuid4().hex}",
                         pure=False)


def map_shards(client: Any, fn: Callable[..., Any], job: Any, shards: Iterable[Any],
               done: Callable[[Any, Any], None], name: str) -> None:
    """``done(shard, fn(job, *shard))`` for each shard, computed on ``client``'s workers.

    At most `IN_FLIGHT_PER_THREAD` tasks per worker thread are queued at once, so the
    scheduler's memory does not grow with the number of shards. The first task that
    raises cancels the others and its exception is raised.
    """
    from dask.distributed import as_completed

    job_future = _job_future(client, job, name)
    run = uuid.uuid4().hex[:8]
    pending = iter(list(shards))
    limit = IN_FLIGHT_PER_THREAD * _threads(client)
    which: dict[str, Any] = {}

    def submit(shard: Any) -> Any:
        args = shard if isinstance(shard, tuple) else (shard,)
        future = client.submit(fn, job_future, *args, pure=False,
                               key=f"{name}-{run}-{'-'.join(map(str, args))}")
        which[future.key] = shard
        return future

    first = [submit(s) for s in _take(pending, limit)]
    if not first:
        return
    queue = as_completed(first)
    try:
        for future in queue:
            shard = which.pop(future.key)
            if future.status == "error":
                raise future.exception().with_traceback(future.traceback())
            done(shard, future.result())
            future.release()
            for more in _take(pending, 1):
                queue.add(submit(more))
    except BaseException:
        for future in list(queue.futures):
            future.cancel()
        raise
    finally:
        job_future.release()


def _take(items: Any, count: int) -> list[Any]:
    out = []
    for item in items:
        out.append(item)
        if len(out) == count:
            break
    return out


# ------------------------------------------------------------ the worker's allocator

#: glibc's `mallopt` parameters, and the thresholds a shard runs with: those glibc's own
#: dynamic thresholds reach on 64-bit systems (arrays up to 32 MiB come from the heap
#: and are reused; free memory at the top of the heap is kept up to 64 MiB).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
SHARD_MMAP_THRESHOLD = 32 << 20
SHARD_TRIM_THRESHOLD = 64 << 20
#: glibc's defaults where its environment variables fix only one of the two.
_GLIBC_MMAP_THRESHOLD = _GLIBC_TRIM_THRESHOLD = 128 << 10

_alloc_lock = threading.Lock()
_alloc_users = 0


@functools.cache
def _fixed_thresholds() -> tuple[Any, int, int] | None:
    """(libc, mmap threshold, trim threshold) when glibc's thresholds were fixed by its
    environment variables (Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_``), else None:
    glibc then adapts them itself, and nothing is changed. glibc reads the variables
    when the process starts, so the answer is kept."""
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    mmap = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if trim is None and mmap is None:
        return None
    try:
        import ctypes
        import platform

        if platform.libc_ver()[0] != "glibc":
            return None
        libc = ctypes.CDLL("libc.so.6")
        return (libc, int(mmap) if mmap is not None else _GLIBC_MMAP_THRESHOLD,
                int(trim) if trim is not None else _GLIBC_TRIM_THRESHOLD)
    except (OSError, AttributeError, ValueError):
        return None


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[None]:
    """While verify shards run in this process, glibc keeps freed memory for reuse; when
    the last one ends, its thresholds are restored and free memory is handed back with
    ``malloc_trim`` (which leaves the top of a thread's own arena: a worker may keep up
    to `SHARD_TRIM_THRESHOLD` there until later frees trim it).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also fixes
    glibc's mmap threshold at 128 KiB: every array over 128 KiB (a batch's interpreter
    and forward-pass arrays) is then mapped, zero-filled page by page and unmapped
    again, which doubled a worker's CPU time per input (twice the page faults, and
    system time close to the computation's own). Without such a variable, or on
    another C library, this does nothing.
    """
    global _alloc_users
    fixed = _fixed_thresholds()
    if fixed is None:
        yield
        return
    libc, mmap, trim = fixed
    with _alloc_lock:
        if _alloc_users == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, SHARD_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, SHARD_TRIM_THRESHOLD)
        _alloc_users += 1
    try:
        yield
    finally:
        with _alloc_lock:
            _alloc_users -= 1
            if _alloc_users == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, mmap)
                libc.mallopt(_M_TRIM_THRESHOLD, trim)
                libc.malloc_trim(0)


# ------------------------------------------------------------------------ dataset


def run_shards(client: Any, job: Any, shards: list[int],
               finished: Callable[[Any], None]) -> None:
    """Write the dataset ``job``'s ``shards`` on the workers; ``finished(ShardInfo)``."""
    from rasplang.shards import write_shard

    map_shards(client, write_shard, job, shards, lambda k, info: finished(info),
               "rasplang-dataset")


# ------------------------------------------------------------------------- verify


@attrs.frozen
class VerifyJob:
    """What a worker needs to verify any range of inputs of one run."""

    program: Any
    vocab: tuple[Any, ...]
    max_seq_len: int
    causal: bool
    model: Any
    domain: Any
    batch_size: int
    #: (host, threads of the cluster's workers on it): a shard's interpreter runs on the
    #: host's CPUs divided by that count (one thread on a host with a worker thread per
    #: CPU), so the workers of one host do not split their kernels over more threads
    #: than the host has CPUs.
    host_threads: tuple[tuple[str, int], ...] = ()
    #: The float type the model runs in on the workers, as in the calling process.
    dtype: str = "float64"
    key: str = attrs.field(factory=lambda: uuid.uuid4().hex)  # one checker per run


_CHECKERS: dict[str, Any] = {}


def host_threads(client: Any) -> tuple[tuple[str, int], ...]:
    """(host, worker threads on it) for each host of ``client``'s cluster."""
    from distributed.comm import get_address_host

    hosts: dict[str, int] = {}
    for address, n in client.nthreads().items():
        host = get_address_host(address)
        hosts[host] = hosts.get(host, 0) + int(n)
    return tuple(sorted(hosts.items()))


def task_threads(hosts: tuple[tuple[str, int], ...]) -> int | None:
    """The threads one task of this worker may use: its CPUs divided by the worker
    threads of its host (at least 1); None outside a worker or on a host not listed."""
    try:
        from distributed import get_worker
        from distributed.comm import get_address_host

        host = get_address_host(get_worker().address)
    except (ImportError, ValueError):
        return None
    share = dict(hosts).get(host)
    if not share:
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // share)


@functools.cache
def _backend(threads: int) -> Any:
    """The numba interpreter backend with ``threads`` threads (one per count, kept)."""
    from rasplang.interpreter.backends import NumbaBackend

    return NumbaBackend(threads=threads)


def verify_range(job: VerifyJob, start: int, stop: int) -> Any:
    """A `VerifyReport` of inputs ``start..stop-1`` of ``job``'s domain (no model kept)."""
    from rasplang.interpreter import Plan
    from rasplang.verification import VerifyReport, _Checker, tally

    checker = _CHECKERS.get(job.key)
    if checker is None:  # once per worker: the job object stays in the worker's memory
        threads = task_threads(job.host_threads)
        plan = Plan(job.program, job.vocab, job.max_seq_len, job.causal,
                    backend="numba" if threads is None else _backend(threads))
        checker = _Checker(plan, job.model, job.dtype)
        _CHECKERS.clear()
        _CHECKERS[job.key] = checker
    part = VerifyReport("", job.vocab, job.max_seq_len, job.causal, True, stop - start)
    with keep_freed_memory():
        for codes, _ in job.domain.batches(start, stop, job.batch_size, one_length=True):
            tally(checker, codes, part)
    return part


def verify_sharded(client: Any, checker: Any, report: Any, domain: Any, batch_size: int,
                   bar: Any) -> None:
    """Fill ``report`` with the counts of every shard of ``domain``, checked on the
    workers; counterexamples are kept in input order, as one process would keep them."""
    from rasplang.verification import MAX_REPORTED

    plan = checker.plan
    job = VerifyJob(plan.program, plan.vocab, plan.max_seq_len, plan.causal, checker.model,
                    domain, batch_size, host_threads(client), str(checker.dtype))
    total = domain.total
    size = max(batch_size, min(MAX_VERIFY_SHARD, math.ceil(total / (8 * _threads(client)))))
    block = getattr(domain, "block", None)
    if block is not None:  # a sampled domain: whole blocks per shard
        size = math.ceil(size / block) * block
    ranges = [(at, min(total, at + size)) for at in range(0, total, size)]
    parts: dict[tuple[int, int], Any] = {}

    def done(shard: tuple[int, int], part: Any) -> None:
        if shard in parts:  # a retried task: counted once
            return
        parts[shard] = part
        report.checked += part.checked
        report.skipped += part.skipped
        report.n_mismatches += part.n_mismatches
        if bar is not None:
            bar.update(part.checked + part.skipped)

    try:
        map_shards(client, verify_range, job, ranges, done, "rasplang-verify")
    finally:  # counterexamples in input order, as far as the shards went
        for shard in sorted(parts):
            part = parts[shard]
            report.mismatches += part.mismatches[: MAX_REPORTED - len(report.mismatches)]
            report.undefined += part.undefined[: MAX_REPORTED - len(report.undefined)]
