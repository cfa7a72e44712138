"""Forward throughput of compiled models with xp=cupy beside xp=numpy (run by run.sh).

Prints a markdown table: program, max_seq_len, batch, dtype, sequences/s on the GPU and
on the CPU (numpy), for sort, hist and reverse at max_seq_len 10 and 64.
"""

from __future__ import annotations

import time
import warnings

import cupy
import numpy as np

import rasplang as rl
from rasplang import lib
from rasplang.backend import CompilerWarning

PROGRAMS = {
    "sort": (lambda n: lib.make_sort(rl.tokens, rl.tokens, max_seq_len=n, min_key=1),
             (1, 2, 3, 4, 5)),
    "hist": (lambda n: lib.make_hist(), tuple("abcd")),
    "reverse": (lambda n: lib.make_reverse(rl.tokens), tuple("abcd")),
}


def best_of(repeat, fn, *args, **kwargs):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args, **kwargs)
        cupy.cuda.Device().synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    print("| program | max_seq_len | batch | dtype | GPU sequences/s | CPU sequences/s |")
    print("|---|---|---|---|---|---|")
    for name, (build, vocab) in PROGRAMS.items():
        for n in (10, 64):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CompilerWarning)
                model = rl.compile(build(n), vocab, n)
            rng = np.random.default_rng(0)
            for batch in (256, 4096):
                xs = [[vocab[i] for i in rng.integers(0, len(vocab), n)] for _ in range(batch)]
                for dt in (np.float32, np.float64):
                    model.run(xs[:2], dtype=dt, xp=cupy)
                    model.run(xs[:2], dtype=dt)
                    gpu = best_of(3, model.run, xs, dtype=dt, xp=cupy)
                    cpu = best_of(1, model.run, xs, dtype=dt)
                    print(f"| {name} | {n} | {batch} | {np.dtype(dt).name} | {batch / gpu:,.0f} "
                          f"| {batch / cpu:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
