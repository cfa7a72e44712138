"""verify and dataset on a real Dask LocalCluster (2 worker processes on 127.0.0.1):
the same reports and bytes as one process, program errors, and a worker killed mid-run."""

import os
import signal
import threading
import time

import attrs
import pytest

import rasplang as rl
from rasplang.backend import CompilerWarning
from rasplang.lib import make_hist, make_sort_unique

distributed = pytest.importorskip("dask.distributed")
pytest.importorskip("pyarrow")

pytestmark = pytest.mark.filterwarnings(
    "ignore::rasplang.backend.compiler.CompilerWarning",
    # distributed's own notices while a worker is killed and restarted
    "ignore::UserWarning:distributed", "ignore::DeprecationWarning",
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning",
)

VOCAB = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def broken():
    """sort_unique with the unembedding's columns of 1 and 2 swapped: some inputs (those
    whose output holds 1 or 2) mismatch, others do not."""
    program = make_sort_unique(rl.tokens, rl.tokens)
    with pytest.warns(CompilerWarning):
        model = rl.compile(program, VOCAB, 7)
    values = list(model.output_encoder.values)
    i, j = values.index(1), values.index(2)
    weights = dict(model.weights)
    w = weights["unembed.W_U"].copy()
    w[:, [i, j]] = w[:, [j, i]]
    weights["unembed.W_U"] = w
    return program, attrs.evolve(model, weights=weights, cache={})


def same_report(a, b):
    """Counts, counterexamples (inputs, outputs) and skipped inputs agree."""
    assert (a.total, a.checked, a.skipped, a.n_mismatches) == \
        (b.total, b.checked, b.skipped, b.n_mismatches)
    assert [(m.input, m.expected, m.got) for m in a.mismatches] == \
        [(m.input, m.expected, m.got) for m in b.mismatches]
    assert a.undefined == b.undefined


def test_sharded_verify_equals_one_process(client, broken):
    """Exhaustive and sampled verify on the cluster give one process's report."""
    program, model = broken
    for kwargs in ({"exhaustive": True}, {"exhaustive": False, "samples": 70_000, "seed": 3}):
        serial = rl.verify(program, VOCAB, 5, model=model, **kwargs)
        sharded = rl.verify(program, VOCAB, 5, model=model, client=client, **kwargs)
        assert 0 < serial.n_mismatches < serial.checked
        same_report(sharded, serial)


def test_progress_bar_covers_sharded_runs(client, capsys, monkeypatch):
    """With progress=True the bar counts every input of a sharded run, shard by shard."""
    from rasplang import verification

    monkeypatch.setattr(verification, "PROGRESS_DELAY_S", 0.0)
    report = rl.verify(make_hist(), "abcd", 4, client=client, progress=True)
    err = capsys.readouterr().err
    assert report.ok and report.total == 340
    assert "340/340" in err and "100%" in err


def test_program_errors_are_reported_not_swallowed(client, tmp_path):
    """Inputs on which the program raises: skipped and listed by verify, raised by dataset."""
    inverse = rl.numerical(rl.Map(lambda t: 1 / t, rl.tokens))
    vocab = [0, 1, 2]
    serial = rl.verify(inverse, vocab, 4)
    sharded = rl.verify(inverse, vocab, 4, client=client)
    without_zero = sum(2**n for n in range(1, 5))
    assert sharded.skipped == sharded.total - without_zero == 90
    same_report(sharded, serial)
    assert "ZeroDivisionError" in sharded.undefined[0][1]
    with pytest.raises(rl.EvaluationError, match="ZeroDivisionError"):
        rl.dataset(inverse, vocab, 4, out=tmp_path, shard_rows=10, client=client)


def test_sharded_dataset_writes_the_same_bytes(client, tmp_path):
    """Shards written by the workers are byte for byte those of one process."""
    hist = make_hist()
    here = rl.dataset(hist, "abcd", 5, traces=True, out=tmp_path / "here", shard_rows=300)
    there = rl.dataset(hist, "abcd", 5, traces=True, out=tmp_path / "there", shard_rows=300,
                       client=client)
    assert len(there.written) == len(here.shards) > 2
    for a, b in zip(here.files, there.files):
        assert a.read_bytes() == b.read_bytes()


def run_and_kill(client, run, prefix):
    """``run()`` in a thread; SIGKILL the worker process running a task named ``prefix``
    while the run is under way. Returns (result, killed pid)."""
    pids = client.run(os.getpid)  # {worker address: pid}
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=run()), daemon=True)
    thread.start()
    victim, deadline = None, time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and thread.is_alive():
        for address, keys in client.processing().items():
            if any(str(k).startswith(prefix) and "-job-" not in str(k) for k in keys):
                victim = address
        time.sleep(0.01)
    assert victim is not None, "no shard task was seen running"
    os.kill(pids[victim], signal.SIGKILL)
    assert thread.is_alive(), "the run ended before the worker was killed"
    thread.join(180)
    assert not thread.is_alive() and "value" in result
    with pytest.raises(ProcessLookupError):
        os.kill(pids[victim], 0)  # that process is gone (its nanny started a new one)
    return result["value"], pids[victim]


def test_killed_worker_loses_nothing_in_verify(client, broken):
    """A worker process killed mid-run: its shards are recomputed, every input is counted
    exactly once (the mismatch count equals one process's), nothing is lost."""
    program, model = broken
    serial = rl.verify(program, VOCAB, 7, model=model)
    report, _ = run_and_kill(
        client, lambda: rl.verify(program, VOCAB, 7, model=model, client=client),
        "rasplang-verify-")
    assert report.total == report.checked == sum(5**n for n in range(1, 8))
    same_report(report, serial)


def test_killed_worker_loses_nothing_in_dataset(client, tmp_path):
    """A worker killed while writing shards: every shard is there, whole, and the same."""
    program = make_sort_unique(rl.tokens, rl.tokens)
    args = dict(n=400_000, traces=True, shard_rows=20_000)
    serial = rl.dataset(program, VOCAB, 12, out=tmp_path / "serial", **args)
    report, _ = run_and_kill(
        client, lambda: rl.dataset(program, VOCAB, 12, out=tmp_path / "cluster",
                                   client=client, **args),
        "rasplang-dataset-")
    assert report.rows == 400_000 and len(report.written) == len(serial.shards)
    for a, b in zip(serial.files, report.files):
        assert a.read_bytes() == b.read_bytes()
    assert not [p for p in os.listdir(tmp_path / "cluster") if ".tmp-" in p]


def test_cli_runs_on_a_scheduler(client, tmp_path, capsys, monkeypatch):
    """rasplang verify and dataset --scheduler ADDRESS run on that cluster; an address
    where no scheduler listens is one line, exit 2."""
    from rasplang import cli_scale
    from rasplang.cli import main

    monkeypatch.setattr(cli_scale, "SCHEDULER_TIMEOUT", "1s")
    address = client.scheduler.address
    assert main(["verify", "hist", "--max-seq-len", "4", "--scheduler", address]) == 0
    assert "on 340 of 340 inputs" in capsys.readouterr().out
    out = tmp_path / "ds"
    assert main(["dataset", "hist", "--max-seq-len", "4", "-o", str(out), "--shard-rows", "100",
                 "--scheduler", address]) == 0
    assert "wrote 4 of 4 shards (340 rows" in capsys.readouterr().out
    assert main(["verify", "hist", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in capsys.readouterr().err


def _shard_settings():
    """On a worker: the threads of the interpreter backend of each cached checker."""
    from rasplang import scale

    return [checker.plan.backend.threads for checker in scale._CHECKERS.values()]


def test_shards_split_the_cpus_between_the_workers_of_a_host(client):
    """A worker's shards run the interpreter on the host's CPUs divided by the worker
    threads there (one thread each on 2 CPUs), not on every CPU each; outside a worker
    the plan keeps its default."""
    from rasplang import scale

    hosts = scale.host_threads(client)
    assert hosts == (("127.0.0.1", 2),)
    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    assert client.submit(scale.task_threads, hosts, pure=False).result() == expected
    assert scale.task_threads(hosts) is None  # not on a worker
    assert scale.task_threads((("10.0.0.9", 2),)) is None
    report = rl.verify(make_hist(), "abcd", 5, client=client, exhaustive=True)
    assert report.ok
    used = [n for threads in client.run(_shard_settings).values() for n in threads]
    assert used and set(used) == {expected}


def _fixed_env():
    """On a worker: its MALLOC_TRIM_THRESHOLD_, and the thresholds shards restore."""
    from rasplang import scale

    fixed = scale._fixed_thresholds.__wrapped__()
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), None if fixed is None else fixed[1:]


def test_workers_keep_freed_memory_while_shards_run(monkeypatch):
    """Where glibc's thresholds were fixed by environment variables (Dask's nanny sets
    MALLOC_TRIM_THRESHOLD_), shards raise them once while any runs, and the last one to
    end restores them and trims; without those variables nothing is changed."""
    from rasplang import scale

    fixed = scale._fixed_thresholds.__wrapped__  # uncached
    calls = []

    class Libc:
        def mallopt(self, param, value):
            calls.append(("mallopt", param, value))

        def malloc_trim(self, pad):
            calls.append(("trim", pad))

    monkeypatch.setattr(scale, "_fixed_thresholds", lambda: (Libc(), 131072, 65536))
    with scale.keep_freed_memory():
        with scale.keep_freed_memory():  # a second shard on another thread of the worker
            pass
        assert calls == [("mallopt", scale._M_MMAP_THRESHOLD, scale.SHARD_MMAP_THRESHOLD),
                         ("mallopt", scale._M_TRIM_THRESHOLD, scale.SHARD_TRIM_THRESHOLD)]
    assert calls[2:] == [("mallopt", scale._M_MMAP_THRESHOLD, 131072),
                         ("mallopt", scale._M_TRIM_THRESHOLD, 65536), ("trim", 0)]
    calls.clear()
    with pytest.raises(ZeroDivisionError), scale.keep_freed_memory():
        raise ZeroDivisionError
    assert [c[0] for c in calls] == ["mallopt"] * 4 + ["trim"]  # restored on errors too

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert fixed() is None
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "not a number")
    assert fixed() is None


def test_dask_workers_have_fixed_thresholds(client):
    """The LocalCluster's workers are started with MALLOC_TRIM_THRESHOLD_ (so shards do
    change the thresholds there), and on glibc the thresholds are read from it."""
    import platform

    from rasplang import scale

    found = set(client.run(_fixed_env).values())
    assert len(found) == 1
    env, fixed = found.pop()
    if env is None:
        pytest.skip("this Dask does not set MALLOC_TRIM_THRESHOLD_ on its workers")
    if platform.libc_ver()[0] != "glibc":
        assert fixed is None
    else:
        assert fixed == (scale._GLIBC_MMAP_THRESHOLD, int(env))


def test_shards_run_the_model_in_the_dtype_asked():
    """A shard's checker runs the model in the dtype verify was asked for (float32 here),
    not in float64."""
    import numpy as np

    from rasplang import scale
    from rasplang.domain import Exhaustive

    program = make_hist()
    model = rl.compile(program, VOCAB, 3)
    job = scale.VerifyJob(program, tuple(VOCAB), 3, False, model, Exhaustive(5, (1, 2, 3)),
                          64, dtype="float32")
    part = scale.verify_range(job, 0, 155)
    assert scale._CHECKERS[job.key].dtype == np.float32
    assert part.checked == 155 and part.n_mismatches == 0
