"""``rasplang verify`` and ``rasplang dataset``: the commands that can run on a cluster.

Both take ``--workers N`` (a Dask LocalCluster of N single-threaded worker processes on
127.0.0.1, closed when the command ends) or ``--scheduler ADDRESS`` (an existing Dask
cluster). Workers receive the program with cloudpickle: use only trusted clusters.
The rest of the command line is in `rasplang.cli`.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import textwrap
from collections.abc import Iterator
from typing import Any

import rasplang
from rasplang.cli import (
    VERIFY_STATUSES,
    UsageError,
    _add_domain,
    _compile,
    _non_negative_int,
    _positive_int,
    _program_and_domain,
    load_model,
    program_name,
)
from rasplang.verification import MAX_INPUTS

#: How long ``--scheduler`` waits to connect before it gives up.
SCHEDULER_TIMEOUT = "10s"

# ------------------------------------------------------------------------- cluster


def _add_cluster(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="run on a local Dask cluster of N worker processes (127.0.0.1)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on the Dask cluster at ADDRESS, e.g. tcp://10.0.0.5:8786 "
                            "(its workers run the program: use only trusted clusters)")


@contextlib.contextmanager
def cluster(args: argparse.Namespace) -> Iterator[Any]:
    """A ``dask.distributed.Client`` for ``--workers``/``--scheduler``, else None."""
    if not args.workers and not args.scheduler:
        yield None
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise UsageError("--workers and --scheduler need Dask: pip install "
                         "'rasplang[distributed]'") from exc
    if args.scheduler:
        try:
            client = Client(args.scheduler, timeout=SCHEDULER_TIMEOUT)
        except (OSError, ValueError, TypeError) as exc:  # unreachable, or a bad address
            raise UsageError(f"cannot reach the Dask scheduler at {args.scheduler}: "
                             f"{exc}") from exc
        with client:
            yield client
        return
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as local, Client(local) as client:
        yield client


# -------------------------------------------------------------------------- verify


def _cmd_verify(args: argparse.Namespace) -> int:
    from rasplang.verification import TooManyInputsError, VerifyInterrupted, check_input_count

    model = load_model(args.model) if args.model else None
    program, vocab, max_seq_len = _program_and_domain(args, args.spec, model)
    causal = model.config.causal if model is not None else args.causal
    exhaustive = True if args.exhaustive else (False if args.samples is not None else None)
    samples = args.samples or 10_000
    max_inputs = None if args.max_inputs == 0 else args.max_inputs
    try:  # refuse too many inputs before compiling
        check_input_count(len(vocab), max_seq_len, exhaustive, samples, max_inputs)
    except TooManyInputsError as exc:
        raise_to = f"{exc.count} (or 0 for no limit)" if exc.count < 10**15 else "0 (no limit)"
        raise UsageError(f"{exc.what}; pass --max-inputs {raise_to} to run it anyway"
                         + (", or --samples N to check N random inputs"
                            if exc.exhaustive else "")) from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    seconds = None
    if model is None:
        model, seconds = _compile(program, vocab, max_seq_len, causal, "verify")
    with cluster(args) as client:
        try:
            report = rasplang.verify(program, vocab, max_seq_len, model=model, causal=causal,
                                     exhaustive=exhaustive, samples=args.samples,
                                     seed=args.seed, max_inputs=max_inputs, client=client)
        except VerifyInterrupted as stop:  # Ctrl-C: report what was checked, exit 130
            report = stop.report
        except ValueError as exc:  # the model file does not fit the request
            raise UsageError(str(exc)) from exc
    if seconds is not None:
        report.compile_seconds = seconds
    report.program = program_name(args.spec)  # not the output node's label
    print(report.summary())
    if report.interrupted:
        return 130
    if not report.agrees:  # not `ok`: a program that raises everywhere is status 3
        return 1
    return 3 if report.skipped else 0


def add_verify_parser(sub: Any) -> None:
    """The ``verify`` subcommand."""
    statuses = "\n".join(textwrap.fill(text, 79, initial_indent=f"  {code:<3}  ",
                                       subsequent_indent=" " * 7)
                         for code, text in VERIFY_STATUSES.items())
    p = sub.add_parser("verify", help="check a compiled model against its program",
                       description="Check a compiled model against its program on every "
                                   "input, or on random ones.",
                       epilog=f"exit status:\n{statuses}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="library name, module:attr or path/to/file.py:attr")
    _add_domain(p, model_file=True)
    p.add_argument("--model", help="verify this model file (default: compile SPEC)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--exhaustive", action="store_true", help="check every input")
    how.add_argument("--samples", type=_positive_int, help="check this many random inputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--max-inputs", type=_non_negative_int, default=MAX_INPUTS, metavar="N",
                   help="refuse to check more than N inputs, 0 for no limit "
                        f"(default {MAX_INPUTS:,})")
    _add_cluster(p)
    p.set_defaults(fn=_cmd_verify)


# ------------------------------------------------------------------------- dataset


def parse_lengths(text: str) -> list[int]:
    """``"8"`` -> [8]; ``"1,2,5"`` -> [1, 2, 5]; ``"4-8"`` -> [4, 5, 6, 7, 8]."""
    lengths: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            lengths += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        lengths = []
    if not lengths or min(lengths) < 1:
        raise UsageError(f"malformed --lengths {text!r}: expected positive lengths such as "
                         "8, 1,2,5 or 4-8")
    return lengths


def _cmd_dataset(args: argparse.Namespace) -> int:
    program, vocab, max_seq_len = _program_and_domain(args, args.spec)
    lengths = parse_lengths(args.lengths) if args.lengths else None
    if lengths and max(lengths) > max_seq_len:
        if args.max_seq_len is not None:
            raise UsageError(f"--lengths {args.lengths} goes past --max-seq-len {max_seq_len}")
        max_seq_len = max(lengths)  # a library program, built for the longest length
        program, vocab, max_seq_len = _program_and_domain(
            argparse.Namespace(**{**vars(args), "max_seq_len": max_seq_len}), args.spec)
    traces: Any = False
    if args.traces == "all":
        traces = True
    elif args.traces:
        traces = [label.strip() for label in args.traces.split(",") if label.strip()]
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise UsageError("rasplang dataset needs pyarrow: pip install "
                         "'rasplang[datasets]'") from exc
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {args.out} is an existing file: the dataset is a folder")
    with cluster(args) as client:
        try:
            report = rasplang.dataset(program, vocab, max_seq_len, n=args.samples,
                                      seed=args.seed, lengths=lengths, traces=traces,
                                      causal=args.causal, out=args.out,
                                      shard_rows=args.shard_rows, client=client)
        except (KeyError, ValueError) as exc:  # an unknown label, a folder of another dataset
            if isinstance(exc, rasplang.EvaluationError):
                raise
            raise UsageError(exc.args[0] if exc.args else str(exc)) from exc
        except OSError as exc:  # a folder that cannot be created or written
            raise UsageError(f"cannot write the dataset to {args.out}: "
                             f"{exc.strerror or exc}") from exc
    print(report.summary())
    return 0


def add_dataset_parser(sub: Any) -> None:
    """The ``dataset`` subcommand."""
    p = sub.add_parser("dataset", help="write a program's inputs, outputs and traces to Parquet",
                       description="Write every input (or random ones) with the program's "
                                   "output, and traced nodes, as Parquet shards.")
    p.add_argument("spec", help="library name, module:attr or path/to/file.py:attr")
    _add_domain(p, causal_help="mask every selector causally (keys at or before the query)")
    p.add_argument("-o", "--out", required=True, metavar="DIR",
                   help="the dataset's folder (created; a run with the same arguments resumes)")
    p.add_argument("--samples", type=_non_negative_int, metavar="N",
                   help="N random inputs (default: every input)")
    p.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the random inputs")
    p.add_argument("--lengths", help="input lengths, e.g. 8, 1,2,5 or 4-8 "
                                     "(default: 1..max-seq-len)")
    p.add_argument("--traces", nargs="?", const="all", metavar="LABELS",
                   help="add a column per node: every SOp, or the comma-separated labels")
    p.add_argument("--shard-rows", type=_positive_int, default=1_000_000, metavar="N",
                   help="rows per Parquet file (default 1,000,000)")
    _add_cluster(p)
    p.set_defaults(fn=_cmd_dataset)
