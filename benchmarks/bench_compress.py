"""Compression of the library programs (`rasplang.compress`): a report, not timed tests.

    python benchmarks/bench_compress.py [--programs frac_prevs,hist] [--seeds 2]
        [--steps N] [--no-search] [--out docs/data/compression.json]
        [--figures docs/tutorials]

For each program at max_seq_len 5: its d_model, the accuracy at half of it (seed 0), and
the smallest d exact on every input (`rasplang.smallest_compression`; not with
``--no-search``), with every trial's accuracy and training time. Results merge into
``--out`` (one entry per program, with the machine and the command); ``--figures``
draws accuracy against d per program and W W^T of frac_prevs at its smallest exact d
(matplotlib). Under pytest-benchmark
(``make bench``) one tiny compression is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import rasplang as rl
from rasplang.compression.search import check
from rasplang.lib import PROGRAMS

MAX_SEQ_LEN = 5


def measure(name: str, seeds: int, steps: int | None, search: bool = True) -> dict:
    """One program's row: d_model, half-width accuracy, smallest exact d (None without
    ``search``), trials."""
    entry = PROGRAMS[name]
    program = entry.build(MAX_SEQ_LEN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rl.compile(program, entry.vocab, MAX_SEQ_LEN)
    d_model = model.config.d_model
    options = {} if steps is None else {"steps": steps}
    half = rl.compress(model, max(1, d_model // 2), seed=0, progress=False, **options)
    half_accuracy, half_exact = check(program, half)
    row = {"d_model": d_model, "half": d_model // 2, "half_accuracy": half_accuracy,
           "half_exact": half_exact, "half_seconds": half.seconds,
           "smallest_exact_d": None, "trials": []}
    if search:
        found = rl.smallest_compression(model, program, seeds=seeds, **options)
        row["smallest_exact_d"] = found.d
        row["trials"] = [[t.d, t.seed, t.accuracy, t.exact, t.seconds] for t in found.trials]
    return row


def figures(results: dict, folder: Path) -> None:
    """accuracy-vs-d.png for every program measured, and overlaps.png for frac_prevs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, row in sorted(results.items()):
        best: dict[int, float] = {row["d_model"]: 1.0, row["half"]: row["half_accuracy"]}
        for d, _, accuracy, _, _ in row["trials"]:
            best[d] = max(best.get(d, 0.0), accuracy)
        ds = sorted(best)
        ax.plot([d / row["d_model"] for d in ds], [best[d] for d in ds], marker="o", label=name)
    ax.set_xlabel("d / d_model")
    ax.set_ylabel("fraction of inputs right")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(folder / "compression-accuracy.png", dpi=120)
    if (results.get("frac_prevs") or {}).get("smallest_exact_d") is not None:
        entry = PROGRAMS["frac_prevs"]
        model = rl.compile(entry.build(MAX_SEQ_LEN), entry.vocab, MAX_SEQ_LEN)
        small = rl.compress(model, results["frac_prevs"]["smallest_exact_d"], progress=False)
        fig, ax = plt.subplots(figsize=(5.5, 5))
        overlaps = small.overlaps()
        image = ax.imshow(overlaps, cmap="RdBu", vmin=-1, vmax=1)
        ax.set_xticks(range(len(small.features)), small.features, rotation=90, fontsize=7)
        ax.set_yticks(range(len(small.features)), small.features, fontsize=7)
        ax.set_title(f"frac_prevs: W W^T at d = {small.config.d_model}")
        fig.colorbar(image, ax=ax, shrink=0.8)
        fig.tight_layout()
        fig.savefig(folder / "compression-overlaps.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None,
                        help="Adam steps per restart (default: compress's own)")
    parser.add_argument("--no-search", dest="search", action="store_false",
                        help="only the half-width compression, no smallest exact d")
    parser.add_argument("--out", type=Path, default=Path("docs/data/compression.json"))
    parser.add_argument("--figures", type=Path, default=None)
    args = parser.parse_args(argv)
    data = json.loads(args.out.read_text()) if args.out.exists() else {"programs": {}}
    for name in filter(None, args.programs.split(",")):   # --programs "": figures only
        start = time.perf_counter()
        row = measure(name, args.seeds, args.steps, args.search)
        row["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
        row["date"] = time.strftime("%Y-%m-%d")
        row["command"] = " ".join(["python", *sys.argv])
        data["programs"][name] = row
        print(f"{name:20s} d_model {row['d_model']:3d}  half {row['half']:3d}: "
              f"{row['half_accuracy']:.4f}  smallest exact d {row['smallest_exact_d']}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1) + "\n")
    if args.figures is not None:
        figures(data["programs"], args.figures)
    return 0


def test_compress_tiny(benchmark):
    """Time one compression of frac_prevs at max_seq_len 3 (100 Adam steps)."""
    import pytest

    pytest.importorskip("torch")
    entry = PROGRAMS["frac_prevs"]
    model = rl.compile(entry.build(3), entry.vocab, 3)
    small = benchmark(lambda: rl.compress(model, 6, steps=100, progress=False, polish=0))
    assert np.isfinite(small.history[-1])


if __name__ == "__main__":
    sys.exit(main())
