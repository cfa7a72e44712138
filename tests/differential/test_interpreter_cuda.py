"""The CUDA source of `kernels_cupy`, compiled for the CPU, against numba and evaluate.

There is no GPU in the default suite (tests/gpu/ needs one), yet `CupyBackend(fused=True)`
runs its own semantics, a CUDA C string. Here a stand-in for the ``cupy`` module gives the
backend numpy arrays, and its `RawKernel` compiles that same source with the system's C++
compiler: a prelude defines ``__global__``, ``__device__`` and the thread indices, the
``-D`` options (`kernels_cupy.DEFINES`, from `interpreter.codes`) become ``#define``s, and
a launcher runs the kernel once per CUDA thread, in order. So the tests below compare the
CUDA kernel's semantics with the numba kernels' (node by node) and with `evaluate`.
Skipped without ``g++``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import itertools
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest

import rasplang as rl
from rasplang.analysis import AnalysisError, typed_key
from rasplang.interpreter import Plan, backends, codes, evaluate_batch
from rasplang.lib import PROGRAMS
from rasplang.testing import (
    assert_batch_matches_oracle,
    oracle_outputs,
    random_program,
    same_output,
)

CXX = shutil.which("g++")
pytestmark = pytest.mark.skipif(CXX is None, reason="needs g++ to compile the CUDA source")

#: What nvcc/NVRTC provide and plain C++ lacks.
_PRELUDE = r"""
#include <cstddef>
#include <utility>
#define __global__
#define __device__ static
struct rasplang_dim3 { unsigned int x, y, z; };
static rasplang_dim3 blockIdx, blockDim, threadIdx;
"""

#: ``launch(grid, block, args)``: every (block, thread) in order; ``args`` points at each
#: argument, as in ``cudaLaunchKernel``.
_LAUNCHER = r"""
template <typename... A, std::size_t... I>
static void rasplang_call(void (*f)(A...), void** args, std::index_sequence<I...>)
{ f(*static_cast<A*>(args[I])...); }

template <typename... A>
static void rasplang_launch(void (*f)(A...), unsigned grid, unsigned block, void** args)
{
    blockDim.x = block;
    for (unsigned g = 0; g < grid; ++g)
        for (unsigned t = 0; t < block; ++t) {
            blockIdx.x = g;
            threadIdx.x = t;
            rasplang_call(f, args, std::index_sequence_for<A...>{});
        }
}

extern "C" void launch(unsigned grid, unsigned block, void** args)
{ rasplang_launch(KERNEL, grid, block, args); }
"""


@functools.cache
def _compile(source: str, name: str, options: tuple[str, ...]) -> ctypes.CDLL:
    """The shared library of ``source`` with ``options`` (``-DNAME=VALUE`` only)."""
    defines = []
    for option in options:
        match = re.fullmatch(r"-D(\w+)=(-?\w+)", option)
        assert match, f"unexpected compile option {option!r}"
        defines.append(f"#define {match[1]} {match[2]}")
    text = "\n".join([_PRELUDE, *defines, source, f"#define KERNEL {name}", _LAUNCHER])
    folder = Path(tempfile.gettempdir()) / "rasplang-cuda-on-cpu"
    folder.mkdir(exist_ok=True)
    stem = folder / hashlib.sha256(text.encode()).hexdigest()[:16]
    library = stem.with_suffix(".so")
    if not library.exists():
        stem.with_suffix(".cpp").write_text(text)
        partial = stem.with_suffix(f".{id(text)}.tmp")
        subprocess.run([CXX, "-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-o",
                        str(partial), str(stem.with_suffix(".cpp"))], check=True,
                       capture_output=True, text=True)
        partial.rename(library)  # atomic: concurrent test runs never load half a file
    return ctypes.CDLL(str(library))


def _argument(value: object) -> ctypes._SimpleCData:
    """A kernel argument as CUDA receives it: arrays by device pointer, scalars by value."""
    if isinstance(value, np.ndarray):
        assert value.flags.c_contiguous, "a kernel argument must be C-contiguous"
        return ctypes.c_void_p(value.ctypes.data)
    scalar = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64}
    return scalar[np.asarray(value).dtype](int(value))


class _CpuRawKernel:
    """`cupy.RawKernel` that compiles the CUDA source for the CPU (see module docstring)."""

    def __init__(self, source: str, name: str, options: tuple[str, ...] = ()):
        self.launch = _compile(source, name, tuple(options)).launch
        self.calls = 0

    def __call__(self, grid: tuple[int], block: tuple[int], args: tuple) -> None:
        values = [_argument(a) for a in args]
        pointers = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
        self.launch(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), pointers)
        self.calls += 1


class _CpuCupy(types.ModuleType):
    """A ``cupy`` whose arrays are numpy's and whose kernels run on the CPU."""

    def __init__(self) -> None:
        super().__init__("cupy")
        self.RawKernel = _CpuRawKernel
        self.asnumpy = np.asarray
        self.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
            getDeviceCount=lambda: 1))

    def __getattr__(self, name: str) -> object:
        return getattr(np, name)


@pytest.fixture(scope="module")
def cuda():
    """`CupyBackend(fused=True)` whose CUDA kernel runs on the CPU."""
    from rasplang.interpreter.kernels_cupy import CupyBackend

    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = _CpuCupy()
    try:
        backend = CupyBackend(fused=True)
    finally:
        if saved is None:
            del sys.modules["cupy"]
        else:
            sys.modules["cupy"] = saved
    return backend


def test_every_code_comes_from_python():
    """The source defines no code or marker: without `DEFINES` it does not compile, and
    `DEFINES` holds the values of `interpreter.codes`."""
    from rasplang.interpreter.kernels_cupy import _SOURCE, DEFINES, MAX_OPS

    assert "#define" not in _SOURCE
    assert DEFINES == {**{n: getattr(codes, n) for n in DEFINES if n != "MAX_OPS"},
                       "MAX_OPS": MAX_OPS}
    with pytest.raises(subprocess.CalledProcessError):
        _compile(_SOURCE, "fused_select", ())
    assert _compile(_SOURCE, "fused_select", tuple(f"-D{n}={v}" for n, v in DEFINES.items()))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_library_programs_match_evaluate(name, causal, cuda):
    """Every library program on 200 random inputs up to length 12 equals evaluate, and
    the CUDA kernel ran."""
    entry = PROGRAMS[name]
    program = entry.build(12)
    rng = np.random.default_rng(len(name))
    inputs = [[entry.vocab[i] for i in rng.integers(len(entry.vocab), size=rng.integers(0, 13))]
              for _ in range(200)]
    expected = oracle_outputs(program, inputs, causal)
    calls = cuda._kernel.calls

    def run(xs):
        return evaluate_batch(program, xs, vocab=entry.vocab, max_seq_len=12, causal=causal,
                              backend=cuda)

    assert_batch_matches_oracle(run, inputs, expected)
    assert cuda._kernel.calls > calls or not _has_heads(program)


def _has_heads(program: rl.RASPExpr) -> bool:
    """Whether an Aggregate or a SelectorWidth (the CUDA kernel's nodes) is in ``program``."""
    stack = [program]
    while stack:
        node = stack.pop()
        if isinstance(node, (rl.Aggregate, rl.SelectorWidth)):
            return True
        stack.extend(node.children)
    return False


def _nodes(plan: Plan, batch: list, backend: object) -> dict:
    """Per node label: its codes (or selector matrices) and its table's values, typed."""
    codes_, lengths = plan.encode(batch)
    arrays = plan.run_arrays(codes_, lengths, outputs="all", backend=backend)
    return {label: (node.codes.tolist() if node.matrix is None else node.matrix.tolist(),
                    None if node.table is None else [typed_key(v) for v in node.table.values])
            for label, node in arrays.nodes.items()}


@pytest.mark.parametrize("seed", range(60))
def test_random_programs_equal_numba_node_by_node(seed, cuda, monkeypatch):
    """Random programs (selector And/Or/Not, constant selectors, predicates that raise,
    None values, means): the CUDA kernel and numba's generic kernel give the same codes
    and tables for every node, and the output is evaluate's (or its first error)."""
    monkeypatch.setattr(backends, "counting_pays", lambda *a: False)
    rng = np.random.default_rng(seed)
    vocab = [("a", "b", "c"), (1, 2, 3), (0, 1, 2, 3)][seed % 3]
    program = random_program(rng, vocab=vocab, max_depth=int(rng.integers(2, 9)),
                             compilable=seed % 4 == 0)
    causal = bool(seed % 2)
    inputs = [[vocab[i] for i in rng.integers(len(vocab), size=rng.integers(0, 7))]
              for _ in range(60)]
    expected = oracle_outputs(program, inputs, causal)
    try:
        plan = Plan(program, vocab, 6, causal)
    except AnalysisError:
        return
    fine = [x for x, e in zip(inputs, expected) if not isinstance(e, Exception)]
    if fine:
        assert _nodes(plan, fine, cuda) == _nodes(plan, fine, "numba")

    def run(xs):
        return evaluate_batch(program, xs, vocab=vocab, max_seq_len=6, causal=causal,
                              backend=cuda)

    with contextlib.suppress(AnalysisError):
        assert_batch_matches_oracle(run, inputs, expected)


VALUES = {
    "ints": rl.tokens,
    "thirds": rl.Map(lambda x: x / 3, rl.tokens),
    "wide": rl.Map(lambda x: 2.0**600 if x == 3 else x * 2.0**-600, rl.tokens),  # no limbs
    "bools": rl.Map(lambda x: x > 0, rl.tokens),
    "strings": rl.Map(lambda x: "ab"[x % 2], rl.tokens),  # several selected: same or error
    "mixed": rl.Map(lambda x: "a" if x == 3 else x, rl.tokens),
}
PREDICATES = {
    "LEQ": rl.Comparison.LEQ,
    "mod3": lambda k, q: (k + q) % 3 == 0,
    "raises": lambda k, q: 1 // (k - 1) > q,  # an error where a key is 1
}
EXHAUSTIVE = [list(x) for n in range(5) for x in itertools.product((0, 1, 3), repeat=n)]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("pred", sorted(PREDICATES))
@pytest.mark.parametrize("values", sorted(VALUES))
def test_one_select_matches_evaluate(values, pred, causal, cuda):
    """Aggregate (numbers, numbers too wide for exact sums, bools, strings, mixes) and
    SelectorWidth of one Select, every input up to length 4: evaluate's outputs, or its
    first error."""
    select = rl.Select(rl.indices, rl.tokens, PREDICATES[pred])
    for program in (rl.Aggregate(select, VALUES[values], default=-1),
                    rl.SelectorWidth(select) + rl.Aggregate(select, rl.tokens, default=0)):
        expected = oracle_outputs(program, EXHAUSTIVE, causal)

        def run(xs, program=program):
            return evaluate_batch(program, xs, vocab=(0, 1, 3), max_seq_len=4, causal=causal,
                                  backend=cuda)

        assert_batch_matches_oracle(run, EXHAUSTIVE, expected)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_values_equal_only_to_themselves(causal, cuda):
    """Several selected copies of a tuple holding NaN (`UNCOMPARABLE`) are left to evaluate
    (`REEVALUATE`): one NaN object gives evaluate's values (compared by repr, as a NaN is
    not equal to itself); a new NaN per call gives evaluate's error."""
    nan = float("nan")
    select = rl.Select(rl.indices, rl.tokens, rl.Comparison.LEQ)
    same = rl.Aggregate(select, rl.Map(lambda x: (nan,) if x == 3 else x, rl.tokens))
    inputs = [[3] * n for n in range(5)]
    got = evaluate_batch(same, inputs, vocab=(0, 3), max_seq_len=4, causal=causal,
                         backend=cuda)
    assert [repr(g) for g in got] == [repr(rl.evaluate(same, xs, causal)) for xs in inputs]
    fresh = rl.Aggregate(select, rl.Map(lambda x: (float("nan"),) if x == 3 else x,
                                        rl.tokens))
    with pytest.raises(rl.EvaluationError, match="several different non-numeric values"):
        evaluate_batch(fresh, [[3], [3, 3]], vocab=(0, 3), max_seq_len=4, causal=False,
                       backend=cuda)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_means_bit_for_bit(causal, cuda):
    """Means, means of thirds and spread categorical means equal evaluate's floats bit for
    bit (the kernel leaves each mean to the plan as exact integer sums)."""
    spread = rl.Aggregate(rl.Select(rl.tokens, rl.tokens, rl.Comparison.LEQ), rl.tokens,
                          default=0)
    thirds = rl.numerical(rl.Aggregate(rl.Select(rl.tokens, rl.tokens, rl.Comparison.LT),
                                       rl.numerical(rl.Map(lambda x: x / 3, rl.tokens)),
                                       default=0))
    programs = [rl.numerical(rl.Aggregate(rl.Select(rl.indices, rl.indices,
                                                    rl.Comparison.LEQ), spread, default=0)),
                rl.numerical(rl.Aggregate(rl.Select(rl.tokens, rl.indices, rl.Comparison.NEQ),
                                          thirds, default=0))]
    inputs = [list(x) for n in range(6) for x in itertools.product((0, 1, 2), repeat=n)]
    for program in programs:
        got = evaluate_batch(program, inputs, vocab=(0, 1, 2), max_seq_len=5, causal=causal,
                             backend=cuda)
        for xs, out in zip(inputs, got):
            assert same_output(out, rl.evaluate(program, xs, causal=causal), tol=0.0), xs
