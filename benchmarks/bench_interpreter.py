"""Interpreter throughput, plan builds, first-call overhead and peak memory
(pytest-benchmark).

Run: ``.venv/bin/python -m pytest benchmarks/bench_interpreter.py --benchmark-only``.
``test_plan_build`` times `Plan` from scratch (the analysis included) at length 64;
``test_library_speedup`` times one `evaluate_batch` call on 10,000 random inputs of
length 64 for every library program, plan build included, and stores its speedup over
`rasplang.evaluate` in a loop (``extra_info["speedup"]``, from the loop's rate on a
sample).
Each case stores ``extra_info["batch"]``; throughput is ``batch / mean time``
(docs/performance.md lists it in sequences per second). `evaluate` in a loop runs on a
smaller batch (it is 2-4 orders of magnitude slower), which does not change its
per-sequence rate. numba kernels are compiled (or loaded from the cache) by an explicit
warm-up call before timing.

``python benchmarks/bench_interpreter.py summarize bench.json`` prints the results as
markdown tables; ``... update-data bench.json docs/data/performance.json`` writes the
throughput rows into the ``interpreter_cpu`` dataset the Performance page draws.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import rasplang as rl
from rasplang import lib
from rasplang.interpreter import Plan, evaluate_batch
from rasplang.interpreter.kernels_cupy import cupy_available

BATCH = 10_000
EVALUATE_BATCH = {16: 300, 64: 40}
LENGTHS = (16, 64)


def _program(name: str, n: int):
    """(program, vocab, input generator) for a benchmark program at length ``n``."""
    if name == "sort_unique":
        vocab = tuple(range(n))
        return lib.make_sort_unique(rl.tokens, rl.tokens), vocab, "permutation"
    if name == "hist":
        return lib.make_hist(), tuple("abcd"), "uniform"
    if name == "reverse":
        return lib.make_reverse(rl.tokens), tuple("abcd"), "uniform"
    if name == "shuffle_dyck2":
        return lib.make_shuffle_dyck2(), tuple("(){}"), "uniform"
    if name == "frac_prevs":
        return lib.make_frac_prevs(rl.tokens == "x"), tuple("xyz"), "uniform"
    raise KeyError(name)


def _inputs(vocab, kind: str, n: int, batch: int, seed: int = 0) -> list[list]:
    rng = np.random.default_rng(seed)
    if kind == "permutation":
        return [list(rng.permutation(n)[: n].tolist()) for _ in range(batch)]
    codes = rng.integers(len(vocab), size=(batch, n))
    return [[vocab[c] for c in row] for row in codes.tolist()]


PROGRAMS = ("sort_unique", "hist", "reverse", "shuffle_dyck2", "frac_prevs")
BACKENDS = [
    "numpy",
    "numba",
    pytest.param("cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not cupy_available(), reason="needs CuPy and a CUDA GPU")]),
]
_PLANS: dict = {}


def _plan(name: str, n: int):
    key = (name, n)
    if key not in _PLANS:
        program, vocab, kind = _program(name, n)
        plan = Plan(program, vocab, n)
        _PLANS[key] = (plan, _inputs(vocab, kind, n, BATCH))
    return _PLANS[key]


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("name", PROGRAMS)
def test_evaluate_loop(benchmark, name, n):
    """Baseline: rasplang.evaluate in a Python loop."""
    plan, inputs = _plan(name, n)
    batch = inputs[: EVALUATE_BATCH[n]]
    benchmark.extra_info.update(batch=len(batch), program=name, n=n, backend="evaluate")
    benchmark.pedantic(lambda: [rl.evaluate(plan.program, x) for x in batch], rounds=1,
                       iterations=1)


@pytest.mark.parametrize("mode", ["lists", "arrays"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("name", PROGRAMS)
def test_interpreter(benchmark, name, n, backend, mode):
    """Plan.run on lists (encode + kernels + decode) or Plan.run_arrays on codes."""
    plan, inputs = _plan(name, n)
    codes, lengths = plan.encode(inputs)
    if mode == "lists":
        def fn():
            return plan.run(inputs, backend=backend)
    else:
        def fn():
            return plan.run_arrays(codes, lengths, backend=backend)
    out = plan.run(inputs[:50], backend=backend)  # warm-up: compile or load kernels
    assert out == [rl.evaluate(plan.program, x) for x in inputs[:50]]
    benchmark.extra_info.update(batch=BATCH, program=name, n=n, backend=backend, mode=mode)
    rounds = 1 if backend == "numpy" and n == 64 else 3
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)


@pytest.mark.parametrize("name", ["shuffle_dyck2", "sort_freq", "shuffle_dyck",
                                  "pair_balance", "dyck2"])
def test_plan_build(benchmark, name):
    """Plan(program, vocab, 64) from scratch: the analysis, its tables, the plan's state."""
    entry = lib.PROGRAMS[name]
    program = entry.build(64)
    benchmark.extra_info.update(plan_build=name, n=64)
    benchmark.pedantic(lambda: Plan(program, entry.vocab, 64), rounds=3, iterations=1,
                       warmup_rounds=0)


#: Inputs the evaluate loop runs to measure its rate (it takes ~1-50 ms per input).
LOOP_SAMPLE = 20


@pytest.mark.parametrize("name", sorted(lib.PROGRAMS))
def test_library_speedup(benchmark, name):
    """evaluate_batch on BATCH random inputs of length 64, plan build included, against
    rasplang.evaluate in a loop (its rate measured on LOOP_SAMPLE inputs)."""
    entry = lib.PROGRAMS[name]
    program, vocab = entry.build(64), tuple(entry.vocab)
    inputs = _inputs(vocab, "uniform", 64, BATCH)
    evaluate_batch(program, inputs[:500], vocab=vocab, max_seq_len=64)  # JIT warm-up
    start = time.perf_counter()
    want = [rl.evaluate(program, x) for x in inputs[:LOOP_SAMPLE]]
    loop_s = (time.perf_counter() - start) * BATCH / LOOP_SAMPLE
    seconds = []

    def run():
        start = time.perf_counter()
        out = evaluate_batch(program, inputs, vocab=vocab, max_seq_len=64)
        seconds.append(time.perf_counter() - start)
        return out

    out = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    assert out[:LOOP_SAMPLE] == want
    benchmark.extra_info.update(speedup_program=name, n=64, batch=BATCH,
                                evaluate_loop_s=loop_s, evaluate_batch_s=seconds[-1],
                                speedup=loop_s / seconds[-1])


_FIRST_CALL = textwrap.dedent("""
    import json, time
    t0 = time.perf_counter()
    import rasplang as rl
    from rasplang import lib
    from rasplang.interpreter import evaluate_batch
    t1 = time.perf_counter()
    prog = lib.make_sort_unique(rl.tokens, rl.tokens)
    evaluate_batch(prog, [[3, 1, 2]], vocab=[1, 2, 3], max_seq_len=3)
    t2 = time.perf_counter()
    evaluate_batch(prog, [[3, 1, 2]], vocab=[1, 2, 3], max_seq_len=3)
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1, "second_call_s": t3 - t2}))
""")


def test_first_call_overhead(benchmark):
    """A fresh process: import, then the first numba evaluate_batch (kernel load/compile)."""
    def fresh():
        out = subprocess.run([sys.executable, "-c", _FIRST_CALL], capture_output=True,
                             text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    cold_or_warm = fresh()  # fills numba's cache if it was empty
    benchmark.extra_info.update({f"first_process_{k}": v for k, v in cold_or_warm.items()})
    result = benchmark.pedantic(fresh, rounds=1, iterations=1)
    benchmark.extra_info.update({f"warm_cache_{k}": v for k, v in result.items()})


_MEMORY = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import rasplang as rl
    from rasplang import lib
    from rasplang.interpreter import Plan
    backend, batch, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    plan = Plan(lib.make_sort_unique(rl.tokens, rl.tokens), range(n), n, backend=backend)
    def vm_hwm_mib():  # this process's peak RSS (ru_maxrss would include the parent's)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    plan.run([[2, 1, 0]])
    base = vm_hwm_mib()
    rng = np.random.default_rng(0)
    inputs = [rng.permutation(n).tolist() for _ in range(batch)]
    t0 = time.perf_counter()
    out = plan.run(inputs)
    t1 = time.perf_counter()
    assert len(out) == batch
    peak = vm_hwm_mib()
    print(json.dumps({"baseline_mib": base, "peak_mib": peak, "seconds": t1 - t0}))
""")


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_peak_memory_batch_100k(benchmark, backend):
    """Peak RSS of a process running make_sort_unique on 100,000 sequences of length 64."""
    def run():
        out = subprocess.run([sys.executable, "-c", _MEMORY, backend, "100000", "64"],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result, backend=backend, batch=100_000, n=64)
    assert result["peak_mib"] > 0


def summarize(path: str) -> str:
    """A markdown table of sequences per second from a ``--benchmark-json`` file."""
    with open(path) as fh:
        data = json.load(fh)
    rates: dict[tuple, float] = {}
    extras = []
    speedups = ["| program | evaluate loop (s) | evaluate_batch (s) | speedup |",
                "|---|---|---|---|"]
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if "speedup" in info:
            speedups.append(f"| {info['speedup_program']} | {info['evaluate_loop_s']:.1f} | "
                            f"{info['evaluate_batch_s']:.3f} | {info['speedup']:,.0f}x |")
        elif "plan_build" in info:
            extras.append(f"- Plan({info['plan_build']}, n={info['n']}): "
                          f"{bench['stats']['mean']:.3f} s")
        elif "program" in info:
            key = (info["program"], info["n"], info["backend"], info.get("mode", "lists"))
            rates[key] = info["batch"] / bench["stats"]["mean"]
        else:
            extras.append(f"- {bench['name']}: " + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()))
    columns = sorted({(b, m) for (_, _, b, m) in rates}, key=lambda c: (c[0] != "evaluate", c))
    lines = ["| program | T | " + " | ".join(f"{b} ({m})" if b != "evaluate" else "evaluate"
                                              for b, m in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for program, n in sorted({(p, n) for (p, n, _, _) in rates}):
        cells = [f"{rates[(program, n, b, m)]:,.0f}" if (program, n, b, m) in rates else "-"
                 for b, m in columns]
        lines.append(f"| {program} | {n} | " + " | ".join(cells) + " |")
    if not rates:
        lines = []
    if len(speedups) > 2:
        lines += ["", *speedups] if lines else speedups
    return "\n".join([*lines, "", *extras]) + "\n"


def interpreter_rows(path: str) -> list[list]:
    """The rows of docs/data/performance.json's ``interpreter_cpu`` dataset (program, T,
    then sequences per second of each column of `DATA_COLUMNS`) from a
    ``--benchmark-json`` file; a cell the file lacks is None."""
    with open(path) as fh:
        data = json.load(fh)
    rates: dict[tuple, int] = {}
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if "program" in info and "speedup" not in info:
            column = (info["backend"] if info["backend"] == "evaluate"
                      else f"{info['backend']} ({info.get('mode', 'lists')})")
            rates[info["program"], info["n"], column] = round(
                info["batch"] / bench["stats"]["mean"])
    keys = sorted({(p, n) for p, n, _ in rates})
    return [[p, n, *(rates.get((p, n, c)) for c in DATA_COLUMNS)] for p, n in keys]


#: The columns of the ``interpreter_cpu`` dataset after program and T.
DATA_COLUMNS = ("evaluate", "numba (arrays)", "numba (lists)", "numpy (arrays)",
                "numpy (lists)")


def update_data(bench_path: str, data_path: str) -> None:
    """Write `interpreter_rows` and today's date into the ``interpreter_cpu`` dataset of
    ``data_path`` (docs/data/performance.json), leaving every other dataset as it is."""
    import datetime

    with open(data_path) as fh:
        data = json.load(fh)
    dataset = data["datasets"]["interpreter_cpu"]
    assert dataset["columns"] == ["program", "T", *DATA_COLUMNS], dataset["columns"]
    dataset["rows"] = interpreter_rows(bench_path)
    dataset["date"] = datetime.date.today().isoformat()
    dataset["command"] = ("python -m pytest benchmarks/bench_interpreter.py --benchmark-only "
                          "--benchmark-json=bench.json && python benchmarks/bench_interpreter.py "
                          "update-data bench.json docs/data/performance.json")
    with open(data_path, "w") as fh:
        fh.write(json.dumps(data, indent=1))


if __name__ == "__main__":
    # python benchmarks/bench_interpreter.py summarize BENCH.json
    # python benchmarks/bench_interpreter.py update-data BENCH.json docs/data/performance.json
    if len(sys.argv) == 3 and sys.argv[1] == "summarize":
        print(summarize(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "update-data":
        update_data(sys.argv[2], sys.argv[3])
    else:
        print("usage: python benchmarks/bench_interpreter.py summarize BENCH.json\n"
              "       python benchmarks/bench_interpreter.py update-data BENCH.json DATA.json")
