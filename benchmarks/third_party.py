"""Third-party programs: InterpBench's tracr programs compiled by rasplang and by tracr.

InterpBench (https://github.com/FlyingPumba/InterpBench) keeps 129 RASP programs
written against tracr's API, each a ``TracrBenchmarkCase`` with its vocabulary,
``get_max_seq_len()`` (BOS included) and whether it is compiled causally. This script
loads them from a checkout without InterpBench's own dependencies: it stands in small
modules for the ones the cases import (``tracr.rasp`` becomes `rasplang.rasp` when
measuring rasplang) and compiles each program at ``get_max_seq_len() - 1``, as
InterpBench does.

    python benchmarks/third_party.py measure rasplang INTERPBENCH_DIR out_rasplang.jsonl
    TRACR_PYTHON benchmarks/third_party.py measure tracr INTERPBENCH_DIR out_tracr.jsonl
    python benchmarks/third_party.py summarize out_rasplang.jsonl out_tracr.jsonl

``measure rasplang`` compiles each program with ``optimize=True`` and ``optimize=False``
and verifies the optimized model on 300 random inputs (``rasplang.verify``);
``measure tracr`` needs a Python with tracr installed (and not rasplang); its parameter
count is ``model.params`` plus the unembedding, as rasplang's ``n_params`` counts it.
``summarize`` prints the totals over the programs both compile.
"""

from __future__ import annotations

import importlib
import json
import signal
import statistics
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

#: Seconds one compile may take before the program is recorded as a timeout.
BUDGET = 300


def _stand_ins(tracr: bool) -> None:
    """Modules the cases import, reduced to what building a program needs."""
    def module(name: str, **attrs) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    class BenchmarkCase:
        pass

    class TracrBenchmarkCase(BenchmarkCase):
        def supports_causal_masking(self) -> bool:
            return True

        def get_max_seq_len(self) -> int:
            return 10

    module("circuits_benchmark.benchmark.benchmark_case", BenchmarkCase=BenchmarkCase)
    module("circuits_benchmark.benchmark.tracr_benchmark_case",
           TracrBenchmarkCase=TracrBenchmarkCase)
    module("circuits_benchmark.transformers")
    module("circuits_benchmark.transformers.hooked_tracr_transformer",
           HookedTracrTransformerBatchInput=list, HookedTracrTransformerReturnType=object,
           HookedTracrTransformer=object)
    if not tracr:
        import rasplang.rasp

        module("tracr")
        module("tracr.rasp", rasp=rasplang.rasp)
        sys.modules["tracr.rasp.rasp"] = rasplang.rasp


def _cases(root: Path):
    """(name, case) for every TracrBenchmarkCase of the checkout at ``root``."""
    package = root / "circuits_benchmark" / "benchmark"
    work = Path(tempfile.mkdtemp())
    target = work / "circuits_benchmark" / "benchmark"
    (target / "cases").mkdir(parents=True)
    for name in ("vocabs.py", "common_programs.py", "program_evaluation_type.py"):
        (target / name).write_text((package / name).read_text())
    for path in (package / "cases").glob("case_*.py"):
        if "ioi" not in path.name:
            (target / "cases" / path.name).write_text(path.read_text())
    for folder in (work / "circuits_benchmark", target, target / "cases"):
        (folder / "__init__.py").write_text("")
    sys.path.insert(0, str(work))
    base = sys.modules["circuits_benchmark.benchmark.tracr_benchmark_case"].TracrBenchmarkCase
    for path in sorted((target / "cases").glob("case_*.py"),
                       key=lambda p: int(p.stem.split("_")[1])):
        mod = importlib.import_module(f"circuits_benchmark.benchmark.cases.{path.stem}")
        found = [c for c in vars(mod).values()
                 if isinstance(c, type) and issubclass(c, base) and c is not base]
        if found:
            yield path.stem, found[0]()


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout


def _rasplang(program, vocab, n: int, causal: bool) -> dict:
    import rasplang as rl
    from rasplang.verify_inputs import EXHAUSTIVE_LIMIT, count_inputs

    row = {}
    for optimize in (True, False):
        key = "optimized" if optimize else "plain"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = rl.compile(program, vocab, n, causal=causal, optimize=optimize)
        except rl.UnsupportedProgramError as exc:
            row[key] = {"refused": str(exc).splitlines()[1].strip()}
            continue
        row[key] = {"layers": model.config.n_layers, "d_model": model.config.d_model,
                    "n_params": model.n_params, "n_params_used": model.n_params_used,
                    "n_nonzero": model.n_nonzero}
        if optimize:
            small = count_inputs(len(vocab), n) <= EXHAUSTIVE_LIMIT  # every input, else 300
            report = rl.verify(program, vocab, n, model=model, causal=causal,
                               samples=None if small else 300, progress=False)
            row[key].update(verified=report.checked, ok=report.ok)
    return row


def _tracr(program, vocab, n: int, causal: bool) -> dict:
    import jax
    import numpy as np
    from tracr.compiler import compiling

    model = compiling.compile_rasp_to_model(program, vocab=vocab, max_seq_len=n,
                                            compiler_bos="BOS", compiler_pad="PAD",
                                            causal=causal)
    leaves = jax.tree_util.tree_leaves(model.params)
    d_model = len(model.residual_labels)
    # the unembedding (residual -> output space) is outside model.params; rasplang's
    # n_params counts it (unembed.W_U), so it is added here
    outputs = getattr(model.output_encoder, "encoding_map", None)
    return {"tracr": {"layers": model.model_config.num_layers, "d_model": d_model,
                      "params": int(sum(np.size(x) for x in leaves))
                      + d_model * (len(outputs) if outputs else 1)}}


def measure(engine: str, root: str, out: str) -> None:
    _stand_ins(engine == "tracr")
    compile_one = _tracr if engine == "tracr" else _rasplang
    signal.signal(signal.SIGALRM, _alarm)
    with open(out, "w") as f:
        for name, case in _cases(Path(root)):
            n, causal = case.get_max_seq_len() - 1, case.supports_causal_masking()
            row = {"case": name, "max_seq_len": n, "causal": causal}
            start = time.perf_counter()
            signal.alarm(BUDGET)
            try:
                row.update(compile_one(case.get_program(), case.get_vocab(), n, causal))
            except _Timeout:
                row["error"] = f"over {BUDGET} s"
            except Exception as exc:  # recorded, the campaign goes on
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                signal.alarm(0)
            row["seconds"] = round(time.perf_counter() - start, 2)
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(name, {k: v for k, v in row.items() if k != "case"}, flush=True)


def summarize(ours: str, theirs: str) -> None:
    rows = {r["case"]: r for r in map(json.loads, Path(ours).read_text().splitlines())}
    tracr = {r["case"]: r for r in map(json.loads, Path(theirs).read_text().splitlines())}
    compiled = [c for c, r in rows.items() if "layers" in r.get("optimized", {})]
    refused = {c: r["optimized"]["refused"] for c, r in rows.items()
               if "refused" in r.get("optimized", {})}
    both = [c for c in compiled if "tracr" in tracr.get(c, {})]
    wrong = [c for c in compiled if not rows[c]["optimized"]["ok"]]

    def total(key: str, side: str) -> int:
        return sum(rows[c][side][key] for c in both)

    ratios = [rows[c]["optimized"]["n_params"] / tracr[c]["tracr"]["params"] for c in both]
    print(f"programs: {len(rows)}; rasplang compiles {len(compiled)} "
          f"({sum(rows[c]['optimized']['verified'] for c in compiled):,} inputs verified, "
          f"{len(wrong)} with a mismatch), tracr {sum('tracr' in r for r in tracr.values())}")
    for case, why in refused.items():
        print(f"  refused {case}: {why}")
    print(f"on the {len(both)} both compile:")
    print(f"  layers: optimized {total('layers', 'optimized')}, one block per node "
          f"{total('layers', 'plain')}, tracr {sum(tracr[c]['tracr']['layers'] for c in both)}")
    print(f"  d_model: optimized {total('d_model', 'optimized'):,}, "
          f"tracr {sum(tracr[c]['tracr']['d_model'] for c in both):,}")
    print(f"  n_params / tracr's: median {statistics.median(ratios):.3f}, "
          f"{sum(r > 1 for r in ratios)} above 1")
    deeper = [c for c in both
              if rows[c]["optimized"]["layers"] > tracr[c]["tracr"]["layers"]]
    print(f"  deeper than tracr: {len(deeper)} {deeper}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["measure"] and len(sys.argv) == 5:
        measure(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1:2] == ["summarize"] and len(sys.argv) == 4:
        summarize(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
