"""Compiler speed and model size, and forward throughput of compiled models.

Run: ``.venv/bin/python -m pytest benchmarks/bench_compiler.py --benchmark-only``.
``python benchmarks/bench_compiler.py`` prints the tables of docs/performance.md
(compile time, n_layers, d_model, d_mlp, parameters; throughput in sequences/s with the
achieved FLOP/s beside a plain numpy matmul's); ``... compiler FILE`` and
``... optimizer FILE`` re-measure those datasets of docs/data/performance.json;
``... overapproximation [N]`` prints each analysis value table's size beside the values
every input of the domain reaches (library programs at N, default 5);
``... analysis [N ...]`` prints each library program's ``rasplang.analyze`` time (best
of 3; default max_seq_len 40 and 64).
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pytest

import rasplang as rl
from rasplang import lib
from rasplang.backend import CompilerWarning, compile

#: The programs and vocabularies of the tracr reference table (docs/performance.md).
PROGRAMS = {
    "length": (lib.make_length, tuple("abcd")),
    "reverse": (lambda n: lib.make_reverse(rl.tokens), tuple("abcd")),
    "hist": (lambda n: lib.make_hist(), tuple("abcd")),
    "sort": (lambda n: lib.make_sort(rl.tokens, rl.tokens, max_seq_len=n, min_key=1),
             (1, 2, 3, 4, 5)),
    "sort_freq": (lambda n: lib.make_sort_freq(max_seq_len=n), (1, 2, 3)),
    "frac_prevs": (lambda n: lib.make_frac_prevs(rl.tokens == "x"), ("x", "y", "z")),
    "shuffle_dyck2": (lambda n: lib.make_shuffle_dyck2(), tuple("(){}a")),
}
PROGRAMS["length"] = (lambda n: lib.make_length(), tuple("abcd"))
SIZES = (5, 10, 20, 40, 64)


def _compile(name: str, n: int):
    build, vocab = PROGRAMS[name]
    program = build(n)
    vocab = vocab if not (name == "shuffle_dyck2" and n >= 40) else tuple("(){}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        # the largest models measured pass compile's default 4 GiB limit
        return program, vocab, compile(program, vocab, n, max_bytes=2**34)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_compile_time(benchmark, name, n):
    """Wall time of rasplang.compile (analysis included)."""
    program, vocab, model = _compile(name, n)
    benchmark.extra_info.update(d_model=model.config.d_model, n_layers=model.config.n_layers,
                                params=model.n_params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompilerWarning)
        benchmark.pedantic(compile, args=(program, vocab, n), rounds=1, iterations=1)


#: Library programs whose analysis time is benchmarked: the slowest ones (cell rules of
#: Selects and SequenceMaps over token-dependent SOps) and two position-only ones.
ANALYSIS_PROGRAMS = ("reverse", "sort_freq", "pair_balance", "shuffle_dyck2", "dyck2",
                     "above_mean")


@pytest.mark.parametrize("n", [40, 64])
@pytest.mark.parametrize("name", ANALYSIS_PROGRAMS)
def test_analysis_time(benchmark, name, n):
    """Wall time of rasplang.analyze alone (value tables and per-cell sets)."""
    entry = lib.PROGRAMS[name]
    program = entry.build(n)
    analysis = benchmark.pedantic(rl.analyze, args=(program, entry.vocab, n), rounds=3,
                                  iterations=1)
    benchmark.extra_info["values"] = sum(len(t) for t in analysis.tables.values())


def analysis_times(sizes=(40, 64), repeat: int = 3) -> None:
    """Print each library program's analysis time (best of ``repeat``) at ``sizes``."""
    print("| program | " + " | ".join(f"analyze s at {n}" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    totals = dict.fromkeys(sizes, 0.0)
    for name, entry in lib.PROGRAMS.items():
        cells = []
        for n in sizes:
            program = entry.build(n)
            seconds = _time(lambda program=program, vocab=entry.vocab, n=n: rl.analyze(
                program, vocab, n), repeat)
            totals[n] += seconds
            cells.append(f"{seconds:.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print("| total | " + " | ".join(f"{totals[n]:.3f}" for n in sizes) + " |")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch", [256, 4096])
@pytest.mark.parametrize("n", [10, 64])
@pytest.mark.parametrize("name", ["sort", "hist", "reverse"])
def test_run_throughput(benchmark, name, n, batch, dtype):
    """model.run on full-length random inputs; extra_info has sequences/s."""
    _, vocab, model = _compile(name, n)
    rng = np.random.default_rng(0)
    xs = [[vocab[i] for i in rng.integers(0, len(vocab), n)] for _ in range(batch)]
    model.run(xs[:2], dtype=dtype)  # weights converted and trimmed once
    benchmark.extra_info["batch"] = batch
    benchmark.pedantic(model.run, args=(xs,), kwargs={"dtype": dtype}, rounds=3, iterations=1)


# ------------------------------------------------------------------ tables for the docs


def forward_flops(model, batch: int, t: int) -> float:
    """Multiply-adds x 2 of one trimmed forward pass on [batch, t] (what run executes)."""
    from rasplang.backend.forward import trimmed

    w = trimmed(model.weights, model.config.n_layers)
    rows = batch * t
    flops = 0.0
    for i in range(model.config.n_layers):
        p = f"blocks.{i}."
        h, d, e_qk = w[p + "attn.W_Q"].shape
        e_ov = w[p + "attn.W_V"].shape[2]
        flops += 2 * rows * d * h * (2 * e_qk + 2 * e_ov)  # Q, K, V, O projections
        flops += 2 * batch * h * t * t * (e_qk + e_ov)     # scores and pattern @ V
        flops += 4 * rows * d * w[p + "mlp.W_in"].shape[1]
    return flops + 2 * rows * d * w["unembed.W_U"].shape[1]


def _time(fn, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    """Print the markdown tables."""
    print("| program | max_seq_len | compile s | n_layers | d_model | d_mlp | n_heads x d_head "
          "| parameters | unpadded parameters |")
    print("|---|---|---|---|---|---|---|---|---|")
    sizes = [int(a) for a in sys.argv[1:]] or SIZES
    for name in PROGRAMS:
        for n in sizes:
            t = time.perf_counter()
            _, _, m = _compile(name, n)
            dt = time.perf_counter() - t
            c = m.config
            print(f"| {name} | {n} | {dt:.3f} | {c.n_layers} | {c.d_model} | {c.d_mlp} | "
                  f"{c.n_heads} x {c.d_head} | {m.n_params:,} | {unpadded(m):,} |", flush=True)
    a = np.random.default_rng(0).random((4096, 512))
    b = np.random.default_rng(1).random((512, 512))
    peak = {dt: 2 * 4096 * 512 * 512 / _time(lambda dt=dt: a.astype(dt) @ b.astype(dt))
            for dt in (np.float32, np.float64)}
    print("\n| program | max_seq_len | batch | dtype | sequences/s | GFLOP/s | numpy matmul "
          "GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for name in ("sort", "hist", "reverse"):
        for n in (10, 64):
            _, vocab, m = _compile(name, n)
            rng = np.random.default_rng(0)
            for batch in (256, 4096):
                xs = [[vocab[i] for i in rng.integers(0, len(vocab), n)] for _ in range(batch)]
                for dt in (np.float32, np.float64):
                    m.run(xs[:2], dtype=dt)
                    sec = _time(lambda xs=xs, dt=dt, m=m: m.run(xs, dtype=dt))
                    gf = forward_flops(m, batch, n + 1) / sec / 1e9
                    print(f"| {name} | {n} | {batch} | {np.dtype(dt).name} | {batch / sec:,.0f} "
                          f"| {gf:.1f} | {peak[dt] / 1e9:.1f} |", flush=True)


def unpadded(model) -> int:
    """Parameters without padding: each head and MLP unit at its own size."""
    from rasplang.backend.forward import trimmed

    return int(sum(v.size for v in trimmed(model.weights, model.config.n_layers).values()))


# ------------------------------------------------------------------ the optimizing compiler

#: tracr's layers at max_seq_len 16, and at 40 its parameters (``model.params`` and the
#: unembedding) and their nonzero entries (the unembedding's: one per output dimension,
#: as in rasplang's ``unembed.W_U``): tracr commit 9ce2b8c,
#: ``compile_rasp_to_model(..., mlp_exactness=100)`` on the same programs and vocabularies,
#: on a 2-core machine of the same kind (jax 0.10.2, dm-haiku 0.0.17).
TRACR = {
    "length": (1, 24_842, 442), "hist": (1, 24_842, 430), "count": (1, 24_121, 426),
    "reverse": (4, 3_673_767, 7_215), "sort_unique": (2, 68_911, 496),
    "sort": (3, 1_088_903, 21_381), "sort_freq": (5, 89_461_216, 1_353_068),
    "frac_prevs": (2, 19_022, 917), "pair_balance": (2, 37_412, 1_789),
    "shuffle_dyck": (6, 10_888_549, 16_421), "shuffle_dyck2": (8, 32_461_024, 30_519),
    "shift_by": (1, 11_500, 145), "detect_pattern": (3, 66_654, 268),
    "count_less_freq": (2, 100_506, 923), "nary_sequencemap": (3, 1_042_101, 1_950),
}


def optimizer_rows() -> list[list]:
    """Per library program: layers at 16 with optimize=False / True (and tracr's), and
    at 40 the three size counts of the optimized model beside the unoptimized n_params."""
    rows = []
    for name in sorted(lib.PROGRAMS):
        entry = lib.PROGRAMS[name]
        row: list = [name]
        for n in (16, 40):
            program = entry.build(n)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CompilerWarning)
                try:
                    plain = compile(program, entry.vocab, n, optimize=False)
                    fused = compile(program, entry.vocab, n)
                except rl.UnsupportedProgramError:
                    plain = fused = None
            tracr = TRACR.get(name, (None, None, None))
            if n == 16:
                row += [plain.config.n_layers, fused.config.n_layers, tracr[0]]
            elif fused is None:
                row += [None] * 6
            else:
                row += [plain.n_params, fused.n_params, fused.n_params_used, fused.n_nonzero,
                        tracr[1], tracr[2]]
        rows.append(row)
    return rows


def compiler_rows(sizes=SIZES) -> list[list]:
    """The "compiler" dataset's rows: compile time (best of 3) and shape per program and
    max_seq_len."""
    rows = []
    for name in PROGRAMS:
        for n in sizes:
            program, vocab, m = _compile(name, n)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CompilerWarning)
                seconds = _time(lambda program=program, vocab=vocab, n=n: compile(
                    program, vocab, n, max_bytes=2**34), repeat=1 if n >= 40 else 3)
            c = m.config
            rows.append([name, n, round(seconds, 3), c.n_layers, c.d_model, c.d_mlp,
                         c.n_heads, c.d_head, m.n_params, unpadded(m)])
    return rows


def _write(path: str, name: str, fields: dict) -> None:
    """Replace dataset ``name`` of the JSON file at ``path`` (dated today)."""
    import datetime
    import json
    from pathlib import Path

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    old = data["datasets"].get(name, {})
    data["datasets"][name] = {**old, **fields, "date": datetime.date.today().isoformat()}
    Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def write_compiler(path: str) -> None:
    """Re-measure the "compiler" dataset of docs/data/performance.json."""
    _write(path, "compiler", {
        "command": "python benchmarks/bench_compiler.py compiler docs/data/performance.json",
        "rows": compiler_rows()})


def write_optimizer(path: str) -> None:
    """Write the "optimizer" dataset of docs/data/performance.json."""
    _write(path, "optimizer", {
        "title": "The optimizing compiler: layers and size",
        "machine": "cpu2",
        "command": "python benchmarks/bench_compiler.py optimizer docs/data/performance.json",
        "note": ("Every library program over its registered vocabulary. Layers at "
                 "max_seq_len 16 with optimize=False, with optimize=True (the default) and "
                 "tracr's; sizes at 40: n_params (the padded TransformerLens layout) with "
                 "both settings, and the optimized model's n_params_used (each head and MLP "
                 "at its own size) and n_nonzero, beside tracr's parameter count where it "
                 "was measured (tracr commit 9ce2b8c, model.params and the unembedding, "
                 "counted the same way for nonzeros). n_params_used counts each head and MLP "
                 "on the residual dimensions it reads and writes. Empty: not a tracr "
                 "program."),
        "columns": ["program", "layers, one block per node", "layers", "tracr layers",
                    "n_params, one block per node", "n_params", "n_params_used",
                    "n_nonzero", "tracr n_params", "tracr nonzero"],
        "views": [["program", "layers, one block per node", "layers", "tracr layers"],
                  ["program", "n_params, one block per node", "n_params", "n_params_used",
                   "tracr n_params", "n_nonzero", "tracr nonzero"]],
        "rows": optimizer_rows(),
    })


# ------------------------------------------------------ over-approximation report


def reached_values(program, vocab, max_seq_len: int) -> dict:
    """Each SOp's typed values on every input of the domain, causal and not."""
    import itertools

    from rasplang.evaluator import evaluate_all
    from rasplang.values import typed_key

    out: dict = {}
    for n in range(1, max_seq_len + 1):
        for xs in itertools.product(vocab, repeat=n):
            for causal in (False, True):
                try:
                    values = evaluate_all(program, list(xs), causal)
                except (ValueError, ArithmeticError):
                    continue
                for node, vals in values.items():
                    if isinstance(node, rl.SOp):
                        seen = out.setdefault(node, set())
                        seen.update(typed_key(v) for v in vals)
    return out


#: Position-only programs of the over-approximation report, with their lengths.
POSITIONAL = {
    "mean_ge": (lambda: rl.numerical(rl.Aggregate(
        rl.Select(rl.indices, rl.indices, rl.Comparison.GEQ), rl.indices)), 8),
    "mean_ge/4": (lambda: rl.numerical(rl.Aggregate(
        rl.Select(rl.indices, rl.indices, rl.Comparison.GEQ), rl.indices)) / 4, 28),
    "mean_len": (lambda: rl.numerical(rl.Aggregate(
        rl.Select(rl.indices, rl.indices, rl.Comparison.LEQ), rl.length)), 8),
}


def overapproximation(max_seq_len: int = 5) -> None:
    """Print, per node kind, the analysis's typed value-table size over the size of the
    set of values reached on every input (library programs at ``max_seq_len``, the
    position-only programs above at theirs), and each program's worst node."""
    kinds: dict[str, list[int]] = {}
    cases = [(name, e.build(max_seq_len), e.vocab, max_seq_len)
             for name, e in lib.PROGRAMS.items()]
    cases += [(name, make(), ("a",), n) for name, (make, n) in POSITIONAL.items()]
    print("| program | N | worst node | analysis | reached |")
    print("|---|---|---|---|---|")
    for name, program, vocab, n in cases:
        analysis = rl.analyze(program, vocab, n)
        reached = reached_values(program, vocab, n)
        worst = (0.0, "", 0, 0)
        for node in analysis.nodes:
            if node not in analysis.tables:
                continue
            size, got = len(analysis.tables[node]), len(reached.get(node, ()))
            total = kinds.setdefault(type(node).__name__, [0, 0])
            total[0] += size
            total[1] += got
            worst = max(worst, (size / max(got, 1), analysis.labels[node], size, got))
        print(f"| {name} | {n} | {worst[1]} | {worst[2]} | {worst[3]} |")
    print()
    print("| node kind | analysis | reached | ratio |")
    print("|---|---|---|---|")
    for kind, (size, got) in sorted(kinds.items()):
        print(f"| {kind} | {size} | {got} | {size / max(got, 1):.2f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["overapproximation"]:
        overapproximation(*map(int, sys.argv[2:3]))
    elif sys.argv[1:2] == ["optimizer"]:
        write_optimizer(sys.argv[2])
    elif sys.argv[1:2] == ["analysis"]:
        analysis_times(tuple(map(int, sys.argv[2:])) or (40, 64))
    elif sys.argv[1:2] == ["compiler"]:
        write_compiler(sys.argv[2])
    else:
        main()
