"""Forward-pass throughput: the dense reference forward against the structured forward.

Every tracr library program at max_seq_len 10, 20 and 40, a batch of 256 full-length
random sequences as an id array (arrays in, logits out), float32:

- ``dense``: `rasplang.backend.forward.forward` on the TransformerLens-layout weights
  with padding dropped (what ``model.run`` ran before the structured forward);
- ``structured``: ``model.forward(ids)`` (`rasplang.backend.structured`);
- ``transformer_lens``: the exported ``HookedTransformer`` on CPU torch (only where
  ``transformer-lens`` is installed, as in ``make test-interop``).

Each case is compiled, its structure built and its numba kernels compiled (or loaded
from the cache) by an explicit warm-up call before timing; ``extra_info`` holds the
batch and the sequences per second at the fastest round.

Run: ``.venv/bin/python -m pytest benchmarks/bench_forward.py --benchmark-only``, or
``.venv/bin/python benchmarks/bench_forward.py`` for a markdown table (best of a few
rounds; ``--lengths 10 20``, ``--programs hist sort`` to narrow it).
"""

from __future__ import annotations

import argparse
import functools
import time
import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang import lib
from rasplang.backend import CompilerWarning
from rasplang.backend.forward import forward as dense_forward

#: The library programs that come from tracr's ``lib.py``.
TRACR = ("length", "reverse", "hist", "sort_unique", "sort", "sort_freq", "frac_prevs",
         "pair_balance", "shuffle_dyck", "shuffle_dyck2", "shift_by", "detect_pattern",
         "count_less_freq", "count", "nary_sequencemap")
LENGTHS = (10, 20, 40)
BATCH = 256
DTYPE = np.float32
#: Seconds of timed rounds each case aims for (at least 3 rounds, at most 50).
TARGET_SECONDS = 1.0


@functools.cache
def model_and_ids(name: str, n: int) -> tuple[rl.backend.CompiledModel, np.ndarray]:
    """The compiled program and a ``[BATCH, 1 + n]`` id array of full-length inputs."""
    entry = lib.PROGRAMS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        model = rl.compile(entry.build(n), entry.vocab, n)
    ids = np.empty((BATCH, n + 1), dtype=np.int64)
    ids[:, 0] = model.input_encoder.bos_id
    ids[:, 1:] = np.random.default_rng(0).integers(0, len(entry.vocab), (BATCH, n))
    return model, ids


def _dense(model, ids):
    return dense_forward(model._weights_for(np, DTYPE, trim=True), model.config, ids, np)[0]


def _structured(model, ids):
    return model.forward(ids, dtype=DTYPE)


@functools.cache
def _hooked(model):
    return model.to_transformer_lens()


def _transformer_lens(model, ids):
    import torch

    with torch.inference_mode():
        return _hooked(model)(torch.as_tensor(ids))


IMPLEMENTATIONS = {"dense": _dense, "structured": _structured,
                   "transformer_lens": _transformer_lens}


def _available(impl: str) -> bool:
    if impl != "transformer_lens":
        return True
    try:
        import torch  # noqa: F401
        import transformer_lens  # noqa: F401
    except ImportError:
        return False
    return True


def _rounds(run, *args) -> int:
    """Rounds that take about `TARGET_SECONDS` (3 to 50), from one timed call."""
    start = time.perf_counter()
    run(*args)
    return int(np.clip(TARGET_SECONDS / max(time.perf_counter() - start, 1e-6), 3, 50))


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("name", TRACR)
def test_forward(benchmark, name, n, impl):
    """One forward pass over 256 sequences of length ``n`` (float32)."""
    if not _available(impl):
        pytest.skip("needs the transformer-lens extra (make test-interop)")
    model, ids = model_and_ids(name, n)
    run = IMPLEMENTATIONS[impl]
    run(model, ids)  # warm-up: compiles kernels, builds and caches the structure
    benchmark.pedantic(run, args=(model, ids), rounds=_rounds(run, model, ids), iterations=1)
    benchmark.extra_info["batch"] = BATCH
    benchmark.extra_info["sequences_per_s"] = round(BATCH / benchmark.stats.stats.min)


def best_of(run, *args, rounds: int) -> float:
    """The fastest of ``rounds`` calls, in seconds."""
    best = np.inf
    for _ in range(rounds):
        start = time.perf_counter()
        run(*args)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    """Print a markdown table: sequences per second per implementation, and the speedup
    of the structured forward over the dense one."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--programs", nargs="+", default=list(TRACR))
    args = parser.parse_args(argv)
    impls = [i for i in IMPLEMENTATIONS if _available(i)]
    print(f"| program | max_seq_len | {' | '.join(f'{i} seq/s' for i in impls)} | speedup |")
    print("|---|---|" + "---|" * len(impls) + "---|")
    for name in args.programs:
        for n in args.lengths:
            model, ids = model_and_ids(name, n)
            rate = {}
            for impl in impls:
                run = IMPLEMENTATIONS[impl]
                run(model, ids)  # warm-up
                rate[impl] = BATCH / best_of(run, model, ids, rounds=_rounds(run, model, ids))
            cells = " | ".join(f"{rate[i]:,.0f}" for i in impls)
            print(f"| {name} | {n} | {cells} | {rate['structured'] / rate['dense']:.1f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
