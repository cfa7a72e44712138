"""Datasets and sharded verification: rows per second, the engine's overhead, memory.

- ``dataset``: `rasplang.dataset` on make_sort_unique over 5 tokens, max_seq_len 16,
  ``n`` random inputs (lengths 1..16) in shards of 1,000,000 rows, Parquet writing
  included; without traces, and with ``traces=True`` (every SOp of the program).
- ``verify``: exhaustive `rasplang.verify` of make_sort_unique over 5 tokens in one
  process (which uses both cores: the interpreter and the forward pass split batches
  over threads) against a Dask LocalCluster of 2 single-threaded worker processes on
  127.0.0.1 (the cluster started before timing); the best of ``--rounds`` runs each,
  one process and cluster in turns; the counts must be equal.
- ``memory``: the peak resident memory of each worker of that cluster after sharded
  datasets of growing size (the workers restarted before each, so each peak is that
  run's own).

Run ``.venv/bin/python benchmarks/bench_dataset.py`` (about 3 minutes on 2 cores;
``--quick`` for small sizes) for a markdown table and the rows of
docs/data/performance.json's ``datasets`` dataset, or
``.venv/bin/python -m pytest benchmarks/bench_dataset.py --benchmark-only`` for small
pytest-benchmark cases.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import pytest

import rasplang as rl
from rasplang.backend import CompilerWarning
from rasplang.lib import make_sort_unique

VOCAB = (1, 2, 3, 4, 5)
MAX_SEQ_LEN = 16


def program():
    return make_sort_unique(rl.tokens, rl.tokens)


def cpu_seconds(client=None) -> float:
    """CPU seconds used so far by this process (every thread) and the client's workers."""
    used = time.process_time()
    if client is not None:
        used += sum(client.run(time.process_time).values())
    return used


def dataset_rate(n: int, traces: bool, folder: Path, client=None) -> tuple[float, float]:
    """(rows per second, rows per CPU-second) of one dataset run into an empty folder."""
    shutil.rmtree(folder, ignore_errors=True)
    cpu, start = cpu_seconds(client), time.perf_counter()
    report = rl.dataset(program(), VOCAB, MAX_SEQ_LEN, n=n, traces=traces, out=folder,
                        client=client, progress=False)
    seconds, cpu = time.perf_counter() - start, cpu_seconds(client) - cpu
    assert report.rows == n
    return n / seconds, n / cpu


def compiled(max_seq_len: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        return rl.compile(program(), VOCAB, max_seq_len)


def verify_rates(max_seq_len: int, client, rounds: int = 2
                 ) -> tuple[float, float, float, float, int]:
    """Inputs per second and per CPU-second, in one process and on the cluster (the
    best of ``rounds`` runs each, taken in turns so that a change in the machine's load
    falls on both), and the number of inputs; the counts must agree."""
    prog, model = program(), compiled(max_seq_len)
    warm_up()  # numba kernels and caches, here and in every worker
    client.run(warm_up)
    best: dict[bool, tuple[float, float]] = {}
    reports = {}
    for _ in range(rounds):
        for sharded in (False, True):
            used = client if sharded else None
            cpu, start = cpu_seconds(used), time.perf_counter()
            reports[sharded] = rl.verify(prog, VOCAB, max_seq_len, model=model,
                                         exhaustive=True, max_inputs=None, client=used)
            took = (time.perf_counter() - start, cpu_seconds(used) - cpu)
            best[sharded] = min(best.get(sharded, took), took)
    one, many = reports[False], reports[True]
    (one_s, one_cpu), (many_s, many_cpu) = best[False], best[True]
    assert (one.checked, one.skipped, one.n_mismatches) == \
        (many.checked, many.skipped, many.n_mismatches), (one.summary(), many.summary())
    n = one.total
    return n / one_s, n / one_cpu, n / many_s, n / many_cpu, n


def warm_up() -> None:
    """Load numba's kernels in this process: the first run pays for it."""
    prog = program()
    rl.verify(prog, VOCAB, 4, model=compiled(4))


def _peak_mib() -> float:
    """This process's peak resident memory in MiB: VmHWM (reset by exec, unlike
    ru_maxrss, which a spawned worker inherits from its parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_peaks(client) -> list[float]:
    """Each worker's peak resident memory in MiB."""
    return sorted(client.run(_peak_mib).values())


def local_cluster():
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    return cluster, Client(cluster)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("dataset", "verify", "memory"),
                        help="run one part")
    parser.add_argument("--verify-len", type=int, help="verify lengths 1..N (default 8)")
    parser.add_argument("--sizes", type=int, nargs="+", help="memory runs' rows")
    args = parser.parse_args(argv)
    n = 200_000 if args.quick else 4_000_000
    verify_len = args.verify_len or (6 if args.quick else 8)
    sizes = args.sizes or ((10**5, 10**6) if args.quick else (10**5, 10**6, 10**7))
    parts = {args.only} if args.only else {"dataset", "verify", "memory"}
    columns = ["run", "case", "rows", "workers", "rows/s", "rows per CPU s", "vs one process"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns), flush=True)
    rows: list[list] = []

    def row(*values) -> None:
        rows.append(list(values))
        print("| " + " | ".join("" if v is None else f"{v:,}" if isinstance(v, int) else str(v)
                                for v in values) + " |", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench_dataset_"))
    try:
        dataset_rate(10_000, True, tmp / "warm")
        for traces in (False, True) if "dataset" in parts else ():
            wall, cpu = max(dataset_rate(n, traces, tmp / "ds") for _ in range(args.rounds))
            row("dataset", "traces" if traces else "no traces", n, 1, round(wall), round(cpu),
                None)
        if "verify" in parts:
            cluster, client = local_cluster()
            try:
                one, one_cpu, many, many_cpu, total = verify_rates(verify_len, client,
                                                                   args.rounds)
            finally:
                client.close()
                cluster.close()
            case = f"exhaustive, length 1..{verify_len}"
            row("verify, one process", case, total, 1, round(one), round(one_cpu), None)
            row("verify, LocalCluster", case, total, 2, round(many), round(many_cpu),
                round(many / one, 2))
        for size in sizes if "memory" in parts else ():  # a fresh cluster per size
            cluster, client = local_cluster()
            try:
                started = worker_peaks(client)
                dataset_rate(1000, False, tmp / "mem", client)  # warm-up: imports, kernels
                base = worker_peaks(client)
                wall, cpu = dataset_rate(size, False, tmp / "mem", client)
                peaks = worker_peaks(client)
            finally:
                client.close()
                cluster.close()
            row("dataset, LocalCluster", "worker peak MiB: started {}, 1,000 rows {}, run {}"
                .format(*("/".join(f"{p:.0f}" for p in x) for x in (started, base, peaks))),
                size, 2, round(wall), round(cpu), None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"columns": columns, "rows": rows}))


# ----------------------------------------------------------------- pytest-benchmark


@pytest.mark.parametrize("traces", [False, True], ids=["no-traces", "traces"])
def test_dataset_rows(benchmark, tmp_path, traces):
    """A 200,000-row sampled dataset of sort_unique at max_seq_len 16."""
    pytest.importorskip("pyarrow")
    dataset_rate(10_000, traces, tmp_path / "warm")
    wall, _ = benchmark.pedantic(dataset_rate, args=(200_000, traces, tmp_path / "ds"),
                                 rounds=3, iterations=1)
    benchmark.extra_info["rows_per_s"] = wall


if __name__ == "__main__":
    main()
