"""Refusals that follow from value sets come before any large allocation.

A program `compile` refuses for its size or for values no discretisation separates is
refused before any block is built (the lower bound counts conversions and layers; the
conversions' margins are checked from the value sets), and the analysis stops a table
at its first value past `MAX_VALUE_SET_SIZE`. The subprocess tests run `compile` under
a 4 GiB address-space limit (``RLIMIT_AS``) and check that it refuses, never raising
MemoryError.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import rasplang as rl
from rasplang import rasp
from rasplang.backend import ModelTooLarge
from rasplang.backend import compiler as compiler_module
from rasplang.backend.build import build_blocks
from rasplang.backend.derived import conversion_problems
from rasplang.backend.fusion import Fusion
from rasplang.inference import MAX_VALUE_SET_SIZE, ValueSetTooLarge
from rasplang.tables import TooManyValues, pairs_table

N = rasp.numerical
ROOT = Path(__file__).resolve().parents[2]

#: The programs of the three refusals, as source the child process runs too.
PROGRAMS = textwrap.dedent("""
    from rasplang import rasp
    N = rasp.numerical

    def wide_mean():
        # the mean of the indices a token's smaller tokens hold: thousands of values
        return N(rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT),
                                N(rasp.indices), default=0)).named("mean")

    def converted_mean():
        # a table over the mean's values needs its one-hot conversion: 9,549 values at 32
        return rasp.SequenceMap(lambda x, y: x < y, rasp.indices, wide_mean()).named("less")

    def ulp_close_pair():
        # means of tenths that round an ulp apart (0.01875 and 0.018750000000000003)
        small = N(rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LEQ),
                                 N(rasp.Map(lambda x: x / 10, rasp.tokens)),
                                 default=0)).named("small")
        return rasp.SequenceMap(lambda x, y: x < y, small, wide_mean()).named("pair")

    def many_pairs(calls=None):
        # 4,141 x 720 pairs, each its own value
        def f(x, y):
            if calls is not None:
                calls.append(1)
            return (x, y)
        ti = rasp.SequenceMap(lambda a, b: a * 100 + b, rasp.tokens, rasp.indices)
        return rasp.SequenceMap(f, wide_mean(), ti).named("pairs")

    def wide_select():
        # a Select over a 443,162-value sum of means: a 183 GiB table of predicates
        tenths = N(rasp.Map(lambda x: x * 0.1, rasp.tokens))
        either = (rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LEQ)
                  | rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.GEQ))
        mean = N(rasp.Aggregate(either, tenths, default=0))
        both = N(rasp.LinearSequenceMap(mean, mean, 3, 1))
        return rasp.SelectorWidth(rasp.Select(both, both, rasp.Comparison.EQ).named("same"))

    CASES = {  # name: (program, vocab, max_seq_len)
        "converted_mean": (converted_mean, list(range(10)), 32),
        "ulp_close_pair": (ulp_close_pair, list(range(5)), 16),
        "many_pairs": (many_pairs, list(range(30)), 24),
        "wide_select": (wide_select, list(range(6)), 24),
    }
""")
_namespace: dict = {}
exec(PROGRAMS, _namespace)  # the same source as the child runs
CASES = _namespace["CASES"]

#: The child: limit the address space, compile, report the outcome as JSON.
CHILD = PROGRAMS + textwrap.dedent("""
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))
    import rasplang as rl
    start = time.perf_counter()
    outcome = {"error": None, "message": ""}
    try:
        if sys.argv[1] == "small":
            model = rl.compile(rl.lib.make_hist(), ["a", "b"], 8)
            outcome["output"] = model.run([["a", "b", "a"]])[0]
        else:
            build, vocab, n = CASES[sys.argv[1]]
            rl.compile(build(), vocab, n)
    except BaseException as exc:
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    outcome["seconds"] = time.perf_counter() - start
    outcome["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(outcome))
""")


def _limited(case: str) -> dict:
    """Run the child on ``case`` under RLIMIT_AS = 4 GiB; its JSON report."""
    done = subprocess.run([sys.executable, "-c", CHILD, case], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any block building in `compile` fail the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("compile built blocks before refusing")
    monkeypatch.setattr(compiler_module, "build_blocks", refuse)


def _compile(name: str, **options):
    build, vocab, n = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rl.compile(build(), vocab, n, **options)


def test_four_gib_is_enough_for_a_small_program():
    """Under RLIMIT_AS = 4 GiB, rasplang imports, compiles hist and runs it (numba too)."""
    report = _limited("small")
    assert report["error"] is None, report
    assert report["output"] == [2, 1, 2]


@pytest.mark.parametrize("optimize", [True, False])
def test_a_conversion_too_large_is_refused_before_any_block(monkeypatch, optimize):
    """The one-hot conversion of a 9,549-value mean (2 layers of a 19,097-unit MLP) is
    in the lower bound: ModelTooLarge names it before any block is built."""
    _no_build(monkeypatch)
    with pytest.raises(ModelTooLarge, match=r"at least 2 layers.*\n  - mean:categorical: "
                                            r".*19,097 hidden units") as info:
        _compile("converted_mean", optimize=optimize)
    assert not info.value.size.exact


@pytest.mark.parametrize("optimize", [True, False])
def test_values_no_conversion_separates_are_refused_before_any_block(monkeypatch, optimize):
    """Two means an ulp apart, read through a table: refused naming the reader and the
    values, before any block is built (the other input's conversion is large)."""
    _no_build(monkeypatch)
    with pytest.raises(rl.UnsupportedProgramError,
                       match=r"- pair: input 'small': values 0\.01875 and 0\.01875\d+ are "):
        _compile("ulp_close_pair", optimize=optimize)


def test_conversion_problems_are_refused_by_the_build_too():
    """Each conversion the margin check refuses from the value sets, the build refuses
    too, under the same reader (differential, over every kind of reader)."""
    small = CASES["ulp_close_pair"][0]().fst
    cat = rasp.Map(lambda x: x % 2, rasp.tokens)
    readers = [
        rasp.SequenceMap(lambda x, y: x < y / 10, small, rasp.tokens),
        rasp.SequenceMap(lambda x, y: x < 0.2, small, small),
        rasp.Aggregate(rasp.Select(small, rasp.tokens, lambda k, q: k < q / 10), cat),
        N(rasp.Aggregate(rasp.Select(rasp.indices, small, lambda k, q: k < q * 10),
                         N(rasp.Map(lambda t: t, rasp.tokens)), default=0)),
        rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.EQ), small),
        rasp.LinearSequenceMap(small, rasp.indices, 1, 1),
    ]
    for reader in readers:
        analysis = rl.analyze(reader, list(range(5)), 4)
        early = conversion_problems(analysis, Fusion(), 100.0)
        assert early, analysis.labels[reader]
        built = build_blocks(analysis, causal=False, bos="BOS", mlp_exactness=100)
        assert {label for label, _ in early} <= {label for label, _ in built.problems}


def test_a_table_stops_at_its_first_value_past_the_limit():
    """`pairs_table` raises TooManyValues at the first value past ``limit``, before
    calling ``f`` on the other pairs."""
    calls = []

    def f(x, y):
        calls.append((x, y))
        return x * 10 + y
    with pytest.raises(TooManyValues, match="more than 5 distinct values"):
        pairs_table(f, range(10), range(10), [], limit=5)
    assert len(calls) == 6
    table, codes = pairs_table(lambda x, y: x < y, range(10), range(10), [], limit=2)
    assert len(table) == 2 and codes.shape == (10, 10)


def test_a_value_set_too_large_is_refused_early():
    """A SequenceMap of 2,981,520 pairs with as many values: ValueSetTooLarge names it
    after f has made 100,001 values, not after all the pairs."""
    calls: list = []
    with pytest.raises(ValueSetTooLarge, match=r"'pairs': its value set would have 100001 or "
                                               r"more values"):
        rl.analyze(_namespace["many_pairs"](calls), list(range(30)), 24)
    assert len(calls) == MAX_VALUE_SET_SIZE + 1


@pytest.mark.parametrize(("case", "error", "label"), [
    ("converted_mean", "ModelTooLarge", "mean:categorical"),
    ("ulp_close_pair", "UnsupportedProgramError", "pair"),
    ("many_pairs", "ValueSetTooLarge", "'pairs'"),
    ("wide_select", "UnsupportedProgramError", "'same'"),  # past MAX_SELECT_ENTRIES
])
def test_refused_under_a_four_gib_address_space(case, error, label):
    """Under RLIMIT_AS = 4 GiB, compile refuses each case naming the node, never with
    MemoryError (the conversion case took 4.7 GB before its refusal moved earlier)."""
    report = _limited(case)
    assert report["error"] == error, report
    assert label in report["message"]
