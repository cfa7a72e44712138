"""An adversarial fuzzer for the compiler's promise: a compiled model is exact or refused.

`rasplang.fuzz_cases` generates the cases (ulp-close floats read categorically, type
twins, tuples, wide vocabularies, partial functions, numbers at the edge of floating
point, causal), each as runnable source. `check_case` classifies one case
(`OUTCOMES`); `run_campaign` runs cases in worker processes with a per-case time budget
and memory limit, so a hang or a memory blow-up is recorded rather than taking the
campaign down.
"""

from __future__ import annotations

import math
import multiprocessing
import signal
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from multiprocessing.connection import wait
from typing import Any

import attrs
import numpy as np

from rasplang.fuzz_cases import CASE_MAX_BYTES, THEMES, Case, generate_case

__all__ = ["BAD_OUTCOMES", "EXHAUSTIVE_LIMIT", "NUMERICAL_TOLERANCE", "OUTCOMES", "SAMPLES",
           "THEMES", "Case", "CaseResult", "check_case", "generate_case", "run_campaign"]

#: How a case ended, in report order.
OUTCOMES = ("exact", "refused", "warned-wrong", "WRONG", "crash", "slow", "memory",
            "generator-error")
#: Outcomes that break the promise (``generator-error`` is a bug in `rasplang.fuzz_cases`).
BAD_OUTCOMES = frozenset({"WRONG", "crash", "slow", "memory", "generator-error"})
#: Check every input when the domain has at most this many, else `SAMPLES` of them.
EXHAUSTIVE_LIMIT = 2000
SAMPLES = 300
#: Numerical outputs agree when ``|got - expected| <= tol * max(1, |expected|)``.
NUMERICAL_TOLERANCE = 1e-9

# ---------------------------------------------------------------------------- checking


@attrs.define
class CaseResult:
    """What checking one case found."""

    case: Case
    outcome: str
    detail: str = ""
    positions: tuple[int, ...] | None = None  # the first mismatching input, as vocab indices
    checked: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def report(self) -> str:
        """The outcome as comments, then the reproducer."""
        header = f"{self.case.name}, max_seq_len {self.case.max_seq_len}, causal " \
                 f"{self.case.causal}: {self.outcome}: {self.detail}".rstrip()
        return "\n".join(["# " + line for line in header.splitlines()]
                         + [self.case.reproducer(self.positions)])


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def _labels(program: Any) -> set[str]:
    from rasplang.graph import topological_order, unique_labels

    return set(unique_labels(topological_order(program)).values())


def _classify_error(exc: BaseException, labels: set[str]) -> tuple[str, str]:
    from rasplang.analysis import AnalysisError, UnsupportedProgramError

    text = f"{type(exc).__name__}: {exc}"
    where = "\n" + "".join(traceback.format_exception(exc)[-4:])
    if isinstance(exc, MemoryError):
        return "memory", text + where
    if isinstance(exc, UnsupportedProgramError):
        # Problems may name a node's derived part, e.g. ``aggregate_5:categorical``, or
        # a primitive the model always embeds (ModelTooLarge lists ``tokens``).
        known = labels | {"tokens", "indices", "length"}
        named = any(str(label).split(":")[0] in known for label, _ in exc.problems)
        return ("refused" if named else "crash"), text
    if isinstance(exc, (AnalysisError, ValueError, TypeError)):
        # A clear refusal names the node it cannot build, or the vocabulary it rejects.
        named = any(label in str(exc) for label in labels) or "vocab" in str(exc)
        return ("refused" if named else "crash"), text + ("" if named else " (names no node)")
    return "crash", text + where


def _inputs(case: Case, n_vocab: int) -> Iterator[tuple[int, ...]]:
    domain = sum(n_vocab**n for n in range(1, case.max_seq_len + 1))
    if domain <= EXHAUSTIVE_LIMIT:
        for n in range(1, case.max_seq_len + 1):
            yield from np.ndindex(*(n_vocab,) * n)
        return
    rng = np.random.default_rng([case.seed, case.index, 1])
    for _ in range(SAMPLES):
        n = int(rng.integers(1, case.max_seq_len + 1))
        yield tuple(rng.integers(0, n_vocab, size=n).tolist())


def _strictly_equal(got: Any, expected: Any) -> bool:
    """Same type and value, recursively; NaN equals NaN (categorical outputs are exact)."""
    if type(got) is not type(expected):
        return False
    if isinstance(expected, (tuple, list)):
        return len(got) == len(expected) and all(map(_strictly_equal, got, expected))
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(got)
    try:
        return bool(got == expected)
    except Exception:
        return False


def _loosely_equal(got: Any, expected: Any) -> bool:
    """Equal by ``==`` (so 1, 1.0 and True agree), recursively; NaN equals NaN."""
    if isinstance(expected, (tuple, list)) and isinstance(got, (tuple, list)):
        return len(got) == len(expected) and all(map(_loosely_equal, got, expected))
    try:
        return bool(got == expected) or (got != got and expected != expected)
    except Exception:
        return False


def _numerically_equal(got: Any, expected: Any) -> bool:
    if got is None or expected is None:
        return got is expected
    try:
        g, e = float(got), float(expected)
    except (TypeError, ValueError, OverflowError):
        return _strictly_equal(got, expected)
    if math.isnan(e) or math.isinf(e):
        return _strictly_equal(g, e)
    return abs(g - e) <= NUMERICAL_TOLERANCE * max(1.0, abs(e))


def check_case(case: Case, *, compile_budget: float = 30.0, check_budget: float = 60.0,
               ) -> CaseResult:
    """Compile ``case`` and compare the model with `rasplang.evaluate` (see `OUTCOMES`)."""
    start = time.perf_counter()
    result = _check(case, compile_budget, check_budget)
    result.seconds = time.perf_counter() - start
    return result


def _check(case: Case, compile_budget: float, check_budget: float) -> CaseResult:
    import rasplang as rl
    from rasplang.backend import CompilerWarning

    try:
        program, vocab = case.build()
    except Exception as exc:
        return CaseResult(case, "generator-error", f"{type(exc).__name__}: {exc}")
    labels = _labels(program)
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, compile_budget)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = rl.compile(program, vocab, case.max_seq_len, causal=case.causal,
                               max_bytes=CASE_MAX_BYTES)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return CaseResult(case, "slow", f"compile took over {compile_budget:g} s")
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        outcome, detail = _classify_error(exc, labels)
        return CaseResult(case, outcome, detail)
    finally:
        signal.signal(signal.SIGALRM, previous)
    warned = [str(w.message) for w in caught if issubclass(w.category, CompilerWarning)]
    same = _numerically_equal if rl.is_numerical(program) else _strictly_equal
    result = CaseResult(case, "exact")
    batch: list[tuple[tuple[int, ...], list[Any]]] = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, check_budget)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for positions in _inputs(case, len(vocab)):
                xs = [vocab[i] for i in positions]
                try:
                    batch.append((positions, rl.evaluate(program, xs, causal=case.causal)))
                except Exception:
                    result.skipped += 1
            got = model.run([[vocab[i] for i in p] for p, _ in batch]) if batch else []
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        result.outcome, result.detail = "slow", f"checking took over {check_budget:g} s"
        return result
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        result.outcome, detail = _classify_error(exc, set())
        result.detail = "model.run raised " + detail
        return result
    finally:
        signal.signal(signal.SIGALRM, previous)
    result.checked = len(batch)
    for (positions, expected), out in zip(batch, got):
        if not all(same(g, e) for g, e in zip(out, expected)) or len(out) != len(expected):
            result.outcome = "warned-wrong" if warned else "WRONG"
            result.positions = positions
            twins = len(out) == len(expected) and all(map(_loosely_equal, out, expected))
            result.detail = f"evaluate gives {expected!r}, model gives {out!r}" + (
                " (equal values of different types)" if twins else "") + (
                f" (after CompilerWarning: {warned[0]})" if warned else "")
            break
    return result


# ---------------------------------------------------------------------------- campaigns


def _worker(conn: Any, memory_limit: int, budgets: tuple[float, float]) -> None:
    import resource

    import rasplang.backend  # noqa: F401  (import before limiting the address space)

    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    while True:
        case = conn.recv()
        if case is None:
            return
        conn.send(check_case(case, compile_budget=budgets[0], check_budget=budgets[1]))


@attrs.define
class _Slot:
    process: Any
    conn: Any
    case: Case | None = None
    started: float = 0.0


def run_campaign(cases: Sequence[Case], *, workers: int = 1, compile_budget: float = 30.0,
                 check_budget: float = 60.0, memory_limit: int = 4 << 30,
                 ) -> Iterator[CaseResult]:
    """Check ``cases`` in ``workers`` processes; yield each result as it arrives.

    Each worker has an address-space limit of ``memory_limit`` bytes (so a blow-up is a
    MemoryError) and each case a time budget; a worker that does not answer within the
    budgets plus a grace period is killed and its case recorded as ``slow`` (or
    ``memory``/``crash`` when the worker died).
    """
    context = multiprocessing.get_context("spawn")
    hard_limit = compile_budget + check_budget + 30.0
    todo = list(reversed(cases))
    slots: list[_Slot] = []

    def start() -> _Slot:
        parent, child = context.Pipe()
        process = context.Process(target=_worker, daemon=True,
                                  args=(child, memory_limit, (compile_budget, check_budget)))
        process.start()
        child.close()
        return _Slot(process, parent)

    def feed(slot: _Slot) -> None:
        if todo:
            slot.case, slot.started = todo.pop(), time.monotonic()
            slot.conn.send(slot.case)
        else:
            slot.case = None

    try:
        for _ in range(min(workers, len(cases))):
            slots.append(start())
            feed(slots[-1])
        while any(slot.case is not None for slot in slots):
            busy = [slot for slot in slots if slot.case is not None]
            ready = wait([slot.conn for slot in busy], timeout=5.0)
            for i, slot in enumerate(slots):
                if slot.case is None:
                    continue
                if slot.conn in ready:
                    try:
                        yield slot.conn.recv()
                        feed(slot)
                        continue
                    except EOFError:
                        slot.process.join(5)
                        code = slot.process.exitcode
                        outcome = "memory" if code == -signal.SIGKILL else "crash"
                        yield CaseResult(slot.case, outcome, f"worker died (exit code {code})")
                elif time.monotonic() - slot.started > hard_limit:
                    slot.process.kill()
                    slot.process.join()
                    yield CaseResult(slot.case, "slow", f"no answer within {hard_limit:g} s",
                                     seconds=hard_limit)
                else:
                    continue
                slots[i] = start()
                feed(slots[i])
    finally:
        for slot in slots:
            if slot.process.is_alive():
                slot.process.kill()
            slot.process.join()
