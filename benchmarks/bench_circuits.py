"""Circuit-discovery methods scored against exact ground truth (`rasplang.circuits`).

Every method (activation patching, ACDC, EAP, EAP-IG) scores the edges of every library
program (`rasplang.lib.PROGRAMS`) at max_seq_len 5, compiled with ``optimize=True`` and
``optimize=False``, and of InterpBench's programs (`benchmarks/third_party.py` loads
them); each is scored (ROC AUC, `rasplang.circuits.score`) against the ground-truth
circuit under the same ablation, on the same domain. The ground truth is timed too.

    python benchmarks/bench_circuits.py library [--ablations resample,zero,mean]
    python benchmarks/bench_circuits.py interpbench INTERPBENCH_DIR [--samples 1000] [--part 0:40]
    python benchmarks/bench_circuits.py report
    python benchmarks/bench_circuits.py truth [INTERPBENCH_DIR]

``library`` and ``interpbench`` add their rows to `RESULTS` (replacing rows of the same
program, setting and ablation), so a run can be split; ``report`` prints the markdown
tables of docs/circuits.md (also written to `TABLES`) and draws the ROC figures
(docs/circuits-roc-*.png) from it.
``interpbench`` times the ground truth of every case at its own domain (every input up
to 50,000, else 10,000 samples), then scores the methods on ``--samples`` inputs (the
ground truth recomputed on those). ``truth`` times the ground truths alone: every library
program under every ablation (both optimize settings), then, given a checkout, every
InterpBench case at its own domain under resample ablation; it replaces the ground-truth
times (``truth_s``, ``full_truth_s``) of the rows of `RESULTS` it measured again, so
that ``report`` shows them beside the methods' scores.
Under pytest (``make bench``) a fast subset runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rasplang as rl
from rasplang import circuits

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "data" / "circuits.json"
#: The tables for docs/circuits.md (outside docs/: a page there would need a nav entry).
TABLES = ROOT / "build" / "circuits-tables.md"
MAX_SEQ_LEN = 5
#: EAP-IG's interpolation steps.
IG_STEPS = 10
#: Each method: how to call it on (model, ablation, domain keywords).
METHODS = {
    "activation patching": lambda m, a, **d: circuits.activation_patching(m, a, **d),
    "ACDC": lambda m, a, **d: circuits.acdc(m, a, **d).scores,
    "EAP": lambda m, a, **d: circuits.edge_attribution_patching(m, a, **d),
    "EAP-IG": lambda m, a, **d: circuits.edge_attribution_patching(m, a, steps=IG_STEPS, **d),
}


def _timed(f, *args, **kw):
    start = time.perf_counter()
    out = f(*args, **kw)
    return out, time.perf_counter() - start


def score_model(model: Any, ablation: str, methods=METHODS, **domain: Any) -> dict:
    """One row: the ground truth (size, timing) and every method's AUROC, time and ROC
    curve; a method's AUROC is None where the circuit is empty or holds every edge."""
    truth, seconds = _timed(model.ground_truth, ablation, **domain)
    row = {"edges": len(truth.graph), "structural": len(truth.graph.structural),
           "truth": len(truth), "sufficient": truth.sufficient, "inputs": truth.n_inputs,
           "exhaustive": truth.exhaustive, "truth_s": round(seconds, 4),
           "layers": model.config.n_layers, "heads": model.config.n_heads, "methods": {}}
    for name, method in methods.items():
        scores, seconds = _timed(method, model, ablation, **domain)
        entry = {"s": round(seconds, 3)}
        if 0 < len(truth) < len(truth.graph):
            s = circuits.score(scores, truth)
            entry.update(auroc=round(s.auroc, 4), fpr=np.round(s.fpr, 4).tolist(),
                         tpr=np.round(s.tpr, 4).tolist())
        else:
            entry["auroc"] = None
        row["methods"][name] = entry
    return row


def _compile(program, vocab, n, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rl.compile(program, vocab, n, **kw)


def _merge(rows: list[dict]) -> None:
    """Add rows to `RESULTS`, replacing those of the same suite, program, setting and
    ablation."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    key = lambda r: (r["suite"], r["program"], r["optimize"], r["ablation"])
    new = {key(r) for r in rows}
    commit = _commit()
    for r in rows:
        r.setdefault("commit", commit)
    data["rows"] = [r for r in data["rows"] if key(r) not in new] + rows
    data["machine"] = (f"{platform.machine()}, {_cores()} CPU cores (shared), "
                       f"Python {platform.python_version()}, numpy {np.__version__}")
    data["date"] = date.today().isoformat()
    data["ig_steps"] = IG_STEPS
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")


def _commit() -> str:
    """The checkout's commit (``+`` when the tree has changes), or "" outside git."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return head + ("+" if dirty else "")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _warm_up() -> None:
    """One small ground truth, so that no timing pays for numba's compilation."""
    _compile(rl.lib.PROGRAMS["shift_by"].build(3), ["a", "b"], 3).ground_truth("resample")


def library(ablations: list[str], names: list[str] | None = None) -> list[dict]:
    """Score every method on the library programs (both optimize settings)."""
    _warm_up()
    rows = []
    for name in names or list(rl.lib.PROGRAMS):
        entry = rl.lib.PROGRAMS[name]
        for optimize in (True, False):
            model = _compile(entry.build(MAX_SEQ_LEN), entry.vocab, MAX_SEQ_LEN,
                             optimize=optimize)
            for ablation in ablations:
                row = {"suite": "library", "program": name, "optimize": optimize,
                       "ablation": ablation, **score_model(model, ablation)}
                rows.append(row)
                print(_line(row), flush=True)
    return rows


def interpbench(root: str, samples: int, ablation: str = "resample",
                part: slice = slice(None)) -> list[dict]:
    """Time the ground truth of every InterpBench case (or the ``part`` of them), then
    score the methods on ``samples`` inputs of each."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import third_party

    third_party._stand_ins(False)
    _warm_up()
    rows = []
    for name, case in list(third_party._cases(Path(root)))[part]:
        n, causal = case.get_max_seq_len() - 1, case.supports_causal_masking()
        row = {"suite": "interpbench", "program": name, "optimize": True,
               "ablation": ablation, "max_seq_len": n}
        try:
            model = _compile(case.get_program(), case.get_vocab(), n, causal=causal)
        except rl.UnsupportedProgramError as exc:
            row["refused"] = str(exc).splitlines()[0][:200]
            rows.append(row)
            continue
        truth, seconds = _timed(model.ground_truth, ablation)
        row.update(full_truth_s=round(seconds, 4), full_inputs=truth.n_inputs,
                   full_exhaustive=truth.exhaustive)
        row.update(score_model(model, ablation, exhaustive=False, samples=samples))
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def truth_times(root: str | None) -> None:
    """Print the time of every ground truth (first call on a freshly compiled model, so
    it includes checking the model over the domain) and the totals."""
    print(f"{platform.machine()}, {_cores()} CPU cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    _warm_up()
    lib, timed = [], {}
    for name, entry in rl.lib.PROGRAMS.items():
        for optimize in (True, False):
            for ablation in ("resample", "zero", "mean"):
                model = _compile(entry.build(MAX_SEQ_LEN), entry.vocab, MAX_SEQ_LEN,
                                 optimize=optimize)
                truth, seconds = _timed(model.ground_truth, ablation)
                lib.append((f"{name} optimize={optimize} {ablation}", seconds))
                timed[("library", name, optimize, ablation)] = {"truth_s": round(seconds, 4)}
                print(f"{lib[-1][0]:45s} {seconds:7.3f} s  {truth!r}", flush=True)
    ib = []
    if root is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import third_party

        third_party._stand_ins(False)
        for name, case in third_party._cases(Path(root)):
            n, causal = case.get_max_seq_len() - 1, case.supports_causal_masking()
            try:
                model = _compile(case.get_program(), case.get_vocab(), n, causal=causal)
            except rl.UnsupportedProgramError:
                continue
            truth, seconds = _timed(model.ground_truth, "resample")
            ib.append((name, seconds))
            timed[("interpbench", name, True, "resample")] = {
                "full_truth_s": round(seconds, 4)}
            print(f"{name:45s} {seconds:7.3f} s  {truth!r}, {truth.n_inputs} inputs",
                  flush=True)
    for suite, rows in (("library", lib), ("InterpBench", ib)):
        if rows:
            worst = max(rows, key=lambda r: r[1])
            print(f"{suite}: {len(rows)} ground truths in {sum(s for _, s in rows):.1f} s, "
                  f"the longest {worst[0]} ({worst[1]:.2f} s)")
    if RESULTS.exists():
        data = json.loads(RESULTS.read_text())
        for r in data["rows"]:
            got = timed.get((r["suite"], r["program"], r["optimize"], r["ablation"]))
            if got is not None and all(k in r for k in got):
                r.update(got, truth_commit=_commit(), truth_date=date.today().isoformat())
        RESULTS.write_text(json.dumps(data, indent=1) + "\n")


def _line(row: dict) -> str:
    aurocs = " ".join(f"{k} {v['auroc'] if v['auroc'] is None else format(v['auroc'], '.3f')}"
                      for k, v in row["methods"].items())
    return (f"{row['program']:18s} optimize={row['optimize']!s:5s} {row['ablation']:8s} "
            f"truth {row['truth']}/{row['structural']} in {row['truth_s']:.3f}s  {aurocs}")


# -- the report ---------------------------------------------------------------------------

def _cell(entry: dict) -> str:
    return "–" if entry["auroc"] is None else f"{entry['auroc']:.2f}"


def report() -> None:
    """Write `TABLES` and the ROC figures from `RESULTS`."""
    data = json.loads(RESULTS.read_text())
    rows = data["rows"]
    names = list(METHODS)
    out = [f"Measured {data['date']} on {data['machine']}; EAP-IG with "
           f"{data['ig_steps']} steps.", ""]
    retimed = sorted({r["truth_date"] for r in rows if "truth_date" in r})
    if retimed:
        out[0] += (f" Ground-truth times measured again on {retimed[-1]} "
                   "(`bench_circuits.py truth`).")
    for ablation in ("resample", "mean", "zero"):
        lib = [r for r in rows if r["suite"] == "library" and r["ablation"] == ablation]
        if not lib:
            continue
        out += [f"### Library programs, {ablation} ablation", "",
                "| program | optimize | layers | circuit / structural edges | ground truth (s) | "
                + " | ".join(names) + " |",
                "| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + " |"]
        for r in lib:
            out.append(f"| {r['program']} | {'yes' if r['optimize'] else 'no'} | {r['layers']} "
                       f"| {r['truth']} / {r['structural']} | {r['truth_s']:.2f} | "
                       + " | ".join(_cell(r["methods"][m]) for m in names) + " |")
        out += ["", _summary(lib, names), ""]
    ib = [r for r in rows if r["suite"] == "interpbench" and "methods" in r]
    if ib:
        total = sum(r["full_truth_s"] for r in ib)
        worst = max(ib, key=lambda r: r["full_truth_s"])
        out += [f"### InterpBench ({len(ib)} programs, optimized, {ib[0]['ablation']} "
                f"ablation)", "",
                f"Ground truth over each program's own domain: {total:.0f} s in total, "
                f"the longest {worst['program']} ({worst['full_truth_s']:.1f} s). Methods "
                f"scored on {ib[0]['inputs']} sampled inputs per program:", "",
                "| method | mean AUROC | AUROC 1 | programs scored | time (s, total) |",
                "| --- | ---: | ---: | ---: | ---: |"]
        for m in names:
            a = [r["methods"][m]["auroc"] for r in ib if r["methods"][m]["auroc"] is not None]
            t = sum(r["methods"][m]["s"] for r in ib)
            out.append(f"| {m} | {np.mean(a):.3f} | {sum(x == 1 for x in a)} | {len(a)} | "
                       f"{t:.0f} |")
        out.append("")
    TABLES.parent.mkdir(parents=True, exist_ok=True)
    TABLES.write_text("\n".join(out))
    print("\n".join(out))
    for ablation in ("resample", "mean", "zero"):
        lib = [r for r in rows if r["suite"] == "library" and r["ablation"] == ablation]
        if lib:
            _figure(lib, names, ROOT / "docs" / f"circuits-roc-{ablation}.png", ablation)


def _summary(rows: list[dict], names: list[str]) -> str:
    parts = []
    for m in names:
        a = [r["methods"][m]["auroc"] for r in rows if r["methods"][m]["auroc"] is not None]
        parts.append(f"{m} {np.mean(a):.3f} (AUROC 1 on {sum(x == 1 for x in a)} of {len(a)})")
    return "Mean AUROC: " + "; ".join(parts) + "."


def _figure(rows: list[dict], names: list[str], path: Path, ablation: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 3.4), sharey=True)
    for ax, m in zip(axes, names):
        scored = [r for r in rows if r["methods"][m]["auroc"] is not None]
        for r in scored:
            e = r["methods"][m]
            ax.plot(e["fpr"], e["tpr"], lw=1, alpha=0.5,
                    color="tab:blue" if r["optimize"] else "tab:orange")
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        mean = np.mean([r["methods"][m]["auroc"] for r in scored])
        ax.set_title(f"{m}\nmean AUROC {mean:.2f}", fontsize=10)
        ax.set_xlabel("false positive rate")
    axes[0].set_ylabel("true positive rate")
    handles = [plt.Line2D([], [], color="tab:blue", label="optimize=True"),
               plt.Line2D([], [], color="tab:orange", label="optimize=False")]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"Edge ROC curves, library programs at max_seq_len {MAX_SEQ_LEN}, "
                 f"{ablation} ablation", fontsize=11)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.27, top=0.76, wspace=0.12)
    fig.savefig(path, dpi=100, facecolor="white", metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lib = sub.add_parser("library")
    lib.add_argument("--ablations", default="resample")
    lib.add_argument("--programs", default="")
    ib = sub.add_parser("interpbench")
    ib.add_argument("root")
    ib.add_argument("--samples", type=int, default=1000)
    ib.add_argument("--part", default=":", help="a slice of the cases, e.g. 0:40")
    sub.add_parser("report")
    truth = sub.add_parser("truth")
    truth.add_argument("root", nargs="?")
    args = parser.parse_args(argv)
    if args.command == "library":
        _merge(library(args.ablations.split(","), [p for p in args.programs.split(",") if p]))
    elif args.command == "interpbench":
        part = slice(*(int(x) if x else None for x in args.part.split(":")))
        _merge(interpbench(args.root, args.samples, part=part))
    elif args.command == "truth":
        truth_times(args.root)
    else:
        report()


# -- pytest-benchmark (make bench): a fast subset -------------------------------------------

FAST = ["shift_by", "frac_prevs", "sort", "dyck1"]


@pytest.fixture(scope="module", params=[True, False], ids=["optimized", "plain"])
def optimize(request):
    return request.param


@pytest.mark.parametrize("name", FAST)
def test_ground_truth(benchmark, name, optimize):
    """The resample ground truth of a library program at max_seq_len 5 (target: < 1 s)."""
    entry = rl.lib.PROGRAMS[name]
    model = _compile(entry.build(MAX_SEQ_LEN), entry.vocab, MAX_SEQ_LEN, optimize=optimize)
    model.ground_truth("resample")  # warm-up
    truth = benchmark.pedantic(model.ground_truth, args=("resample",), rounds=3,
                               iterations=1)
    benchmark.extra_info.update(edges=len(truth), inputs=truth.n_inputs)


@pytest.mark.parametrize("method", ["activation patching", "ACDC", "EAP"])
@pytest.mark.parametrize("name", ["sort", "dyck1"])
def test_method(benchmark, name, method):
    """One method on one optimized library program; its AUROC goes into extra_info."""
    pytest.importorskip("sklearn")
    if method.startswith("EAP"):
        pytest.importorskip("torch")
    entry = rl.lib.PROGRAMS[name]
    model = _compile(entry.build(MAX_SEQ_LEN), entry.vocab, MAX_SEQ_LEN)
    truth = model.ground_truth("resample")
    scores = benchmark.pedantic(METHODS[method], args=(model, "resample"), rounds=1,
                                iterations=1)
    benchmark.extra_info["auroc"] = circuits.score(scores, truth).auroc


if __name__ == "__main__":
    main()
