"""The ``rasplang`` command line.

User errors (an unknown program, with the closest library names, a malformed
vocabulary, a vocabulary holding the compiler's BOS or PAD token, a missing or broken
program file, an empty input, a token outside the vocabulary, too many inputs to verify,
a ``--vocab`` or ``--max-seq-len`` that contradicts the model file) print one line to
stderr and exit with status 2, without a traceback. A program the compiler refuses, or
one too large to build, prints its reason and exits with status 1. ``verify`` has its
own statuses for its verdicts (`VERIFY_STATUSES`).

A library program is built for the length it is run, compiled or verified at
(`rasplang.lib.LibraryProgram.build`): some depend on it. ``verify`` and ``dataset``,
which can run on a Dask cluster, are in `rasplang.cli_scale`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import inspect
import pathlib
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import rasplang
from rasplang.verification import plural


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit 2."""


#: ``rasplang verify``'s exit statuses, as its ``--help`` lists them.
VERIFY_STATUSES = {
    0: "the model agrees with the program on every input checked, and none was skipped",
    1: "the model disagrees with the program on some input (or the compiler refuses it)",
    2: "a usage error: bad arguments, a missing or damaged file, too many inputs",
    3: "the model agrees on every input checked, but some inputs were skipped because "
       "the program raises on them (e.g. a Map 1/t with 0 in the vocabulary)",
    130: "interrupted (Ctrl-C): the report covers the inputs checked so far",
}


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    """``"; did you mean sort_unique or sort?"`` for the closest ``choices``, else ``""``."""
    close = difflib.get_close_matches(name, choices, n=3)
    if not close:
        return ""
    return "; did you mean " + (close[0] if len(close) == 1
                                else ", ".join(close[:-1]) + " or " + close[-1]) + "?"


def _parse_token(text: str) -> Any:
    """A token from the command line: an int if it looks like one, else the string."""
    try:
        return int(text)
    except ValueError:
        return text


def _compiler_tokens() -> dict[str, Any]:
    """The tokens `rasplang.compile` reserves by default: ``{"BOS": "BOS", "PAD": "PAD"}``."""
    from rasplang.backend.compiler import compile as compile_program

    params = inspect.signature(compile_program).parameters
    return {kind: params[f"compiler_{kind.lower()}"].default for kind in ("BOS", "PAD")}


def parse_vocab(text: str) -> tuple[Any, ...]:
    """``"a,b,c"`` -> ('a', 'b', 'c'); ``"1,2,3"`` -> (1, 2, 3)."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise UsageError(f"malformed --vocab {text!r}: expected comma-separated tokens, e.g. a,b,c")
    vocab = tuple(_parse_token(p) for p in parts)
    if len(set(vocab)) != len(vocab):
        raise UsageError(f"malformed --vocab {text!r}: a token is listed twice")
    return vocab


def check_compilable_vocab(vocab: Sequence[Any], where: str) -> None:
    """Refuse a vocabulary holding a token the compiler reserves (BOS, PAD)."""
    for kind, token in _compiler_tokens().items():
        if token in vocab:
            raise UsageError(f"{where} contains {token!r}, the compiler's {kind} token; "
                             "rename that token")


def parse_input(text: str, vocab: Sequence[Any] | None) -> list[Any]:
    """``"a b c"`` -> tokens, matched against ``vocab`` by their text when given."""
    words = text.split()
    if not words:
        raise UsageError("empty --input: give at least one token, e.g. --input \"a b c\"")
    if vocab is None:
        return [_parse_token(w) for w in words]
    by_text = {str(v): v for v in vocab}
    tokens = []
    for pos, word in enumerate(words):
        if word not in by_text:
            raise UsageError(
                f"token {word!r} at position {pos} is not in the vocabulary "
                f"{','.join(map(str, vocab))}"
            )
        tokens.append(by_text[word])
    return tokens


def _as_program(obj: Any, spec: str) -> rasplang.SOp:
    if callable(obj) and not isinstance(obj, rasplang.RASPExpr):
        try:
            obj = obj()
        except Exception as exc:
            raise UsageError(f"{spec}: calling it without arguments raised "
                             f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, rasplang.SOp):
        raise UsageError(f"{spec} is a {type(obj).__name__}, not an SOp or a function "
                         "returning one")
    return obj


def library_entry(spec: str) -> Any:
    """The `rasplang.lib.PROGRAMS` entry SPEC names (``sort`` or ``make_sort``), or None."""
    from rasplang.lib import PROGRAMS

    return PROGRAMS.get(spec.removeprefix("make_"))


def _import_error(target: str, exc: BaseException) -> UsageError:
    """One line for a program file or module that fails to import: where and why."""
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename or target}, line {exc.lineno}" if exc.lineno else target
        return UsageError(f"syntax error in {where}: {exc.msg}")
    # The deepest line of the traceback inside the user's file, if any.
    frames = [f for f in _traceback_frames(exc) if f[0] == str(target)]
    where = f"{target}, line {frames[-1][1]}" if frames else target
    return UsageError(f"importing {where} raised {type(exc).__name__}: {exc}")


def _traceback_frames(exc: BaseException) -> list[tuple[str, int]]:
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    return frames


def load_program(spec: str, max_seq_len: int | None = None) -> tuple[rasplang.SOp, Any]:
    """Resolve SPEC: a library name, ``module:attr`` or ``path/to/file.py:attr``.

    Returns the program and its library entry (None when SPEC is not a library name). A
    library program is built for inputs up to ``max_seq_len`` (default: the entry's).
    """
    from rasplang.lib import PROGRAMS

    entry = library_entry(spec)
    if entry is not None:
        return entry.build(max_seq_len), entry
    if ":" not in spec and spec.endswith(".py"):
        raise UsageError(f"{spec} is a file: name the program in it as {spec}:NAME, a "
                         "variable holding an SOp or a function returning one")
    if ":" not in spec:
        hint = _did_you_mean(spec.removeprefix("make_"), list(PROGRAMS))
        raise UsageError(f"unknown program {spec!r}" + (hint or (
            ": expected a library name (`rasplang lib` lists them), module:attr or "
            "path/to/file.py:attr")))
    target, attr = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = pathlib.Path(target)
        if not path.is_file():
            raise UsageError(f"no such file: {target}")
        module_spec = importlib.util.spec_from_file_location(f"_rasplang_user_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise UsageError(f"cannot load {target} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise _import_error(str(path), exc) from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"cannot import module {target!r}: {exc}") from exc
        except Exception as exc:
            raise _import_error(target, exc) from exc
    if not hasattr(module, attr):
        public = [name for name in dir(module) if not name.startswith("_")]
        raise UsageError(f"{target} has no attribute {attr!r}{_did_you_mean(attr, public)}")
    return _as_program(getattr(module, attr), spec), None


def program_name(spec: str) -> str:
    """How messages name SPEC: the library entry's name, else SPEC as given."""
    entry = library_entry(spec)
    return entry.name if entry is not None else spec


def _cmd_lib(args: argparse.Namespace) -> int:
    """One line per library program: name, vocabulary, default length, description."""
    from rasplang.lib import PROGRAMS

    rows = [(name, " ".join(map(str, entry.vocab)),
             f"{entry.max_seq_len}{'*' if entry.length_dependent else ''}", entry.description)
            for name, entry in PROGRAMS.items()]
    headers = ("program", "vocabulary", "max_seq_len", "description")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers[:-1])]
    for row in (headers, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    if any(entry.length_dependent for entry in PROGRAMS.values()):
        print("\n* length-dependent: built for the length used (--max-seq-len, or the "
              "input's length for run)")
    return 0


def _is_model_file(target: str) -> bool:
    """Whether ``run``'s target names a model file rather than a program SPEC."""
    return target.endswith(".safetensors") or (
        pathlib.Path(target).is_file() and not target.endswith(".py"))


def load_model(path: str) -> Any:
    """Load a model file, turning a missing or damaged file into a UsageError."""
    from rasplang.backend.io import ModelFileError

    if not pathlib.Path(path).is_file():
        raise UsageError(f"no such file: {path}")
    try:
        return rasplang.load(path)
    except ModelFileError as exc:
        raise UsageError(str(exc)) from exc


def _domain(args: argparse.Namespace, entry: Any, spec: str,
            model: Any = None) -> tuple[tuple[Any, ...], int]:
    """``--vocab`` and ``--max-seq-len``, defaulting to the model file's, else the entry's.

    A model file stores both: giving a different one is refused (the model was compiled
    for its own domain).
    """
    if model is not None:
        return _model_domain(args, model)
    given = args.vocab is not None
    vocab = parse_vocab(args.vocab) if given else (entry.vocab if entry else None)
    max_seq_len = args.max_seq_len if args.max_seq_len is not None else (
        entry.max_seq_len if entry else None)
    if vocab is None or max_seq_len is None:
        raise UsageError(f"{spec} is not a library program: give --vocab and --max-seq-len")
    if given:
        check_compilable_vocab(vocab, "--vocab")
    if max_seq_len < 1:
        raise UsageError(f"--max-seq-len must be at least 1, got {max_seq_len}")
    return vocab, max_seq_len


def _model_domain(args: argparse.Namespace, model: Any) -> tuple[tuple[Any, ...], int]:
    """The model file's vocabulary and length; a different ``--vocab``/``--max-seq-len`` is
    refused, naming both."""
    cfg = model.config
    if args.vocab is not None and set(parse_vocab(args.vocab)) != set(cfg.vocab):
        raise UsageError(f"--vocab {args.vocab} differs from the vocabulary of {args.model}, "
                         f"{','.join(map(str, cfg.vocab))}; omit --vocab to use the file's")
    if args.max_seq_len is not None and args.max_seq_len != cfg.max_seq_len:
        raise UsageError(f"--max-seq-len {args.max_seq_len} differs from the max_seq_len of "
                         f"{args.model}, {cfg.max_seq_len}; omit --max-seq-len to use the "
                         "file's")
    if args.causal and not cfg.causal:
        raise UsageError(f"--causal, but {args.model} was compiled without causal attention")
    return tuple(cfg.vocab), cfg.max_seq_len


def _show(value: Any) -> str:
    """One value: floats with 6 significant digits."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _compile(program: Any, vocab: Sequence[Any], max_seq_len: int, causal: bool,
             command: str, **options: Any) -> tuple[Any, float]:
    """Compile, printing each CompilerWarning as one stderr line; returns (model, seconds)."""
    from rasplang.backend import CompilerWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompilerWarning)
        start = time.perf_counter()
        model = rasplang.compile(program, vocab, max_seq_len, causal=causal, **options)
        seconds = time.perf_counter() - start
    for w in caught:
        print(f"rasplang {command}: warning: {w.message}", file=sys.stderr)
    return model, seconds


def _cmd_run(args: argparse.Namespace) -> int:
    if _is_model_file(args.target):
        model = load_model(args.target)
        xs = parse_input(args.input, model.config.vocab)
        if len(xs) > model.config.max_seq_len:
            raise UsageError(f"input has {plural(len(xs), 'token')}; the model takes at most "
                             f"{model.config.max_seq_len}")
        if args.program is None:
            print(" ".join(map(_show, model.run([xs])[0])))
            return 0
        program, _ = load_program(args.program, model.config.max_seq_len)
        return _print_both(model, xs, rasplang.evaluate(program, xs, causal=model.config.causal))
    entry = library_entry(args.target)
    vocab = parse_vocab(args.vocab) if args.vocab is not None else (
        entry.vocab if entry else None)
    xs = parse_input(args.input, vocab)
    # Long enough for the input, and for the library's domain when compared.
    max_seq_len = max(len(xs), entry.max_seq_len if entry else 1)
    program, entry = load_program(args.target, max_seq_len)
    output = rasplang.evaluate(program, xs, causal=args.causal)
    if not args.compare:
        print(" ".join(str(v) for v in output))
        return 0
    if vocab is None:
        vocab = tuple(dict.fromkeys(xs))
        check_compilable_vocab(vocab, "--input (the vocabulary when --vocab is not given)")
    else:
        check_compilable_vocab(vocab, "--vocab")
    model, _ = _compile(program, vocab, max_seq_len, args.causal, "run")
    return _print_both(model, xs, output)


def _print_both(model: Any, xs: Sequence[Any], expected: Sequence[Any]) -> int:
    """The model's output on ``xs`` above the program's, column by column; 1 if they differ.

    Positions are compared as `rasplang.verify` compares them (one value for ``1``,
    ``1.0`` and ``True``; numbers within its tolerance). Where the model agrees, both rows
    show the program's value, so ``1`` decoded for ``True`` or ``0.6666667`` for ``2/3``
    do not look like a difference; where it does not, the model's row shows its own value
    and a last line lists the positions.
    """
    from rasplang.verification import _same

    got = model.run([list(xs)])[0]
    numerical = model.config.output_encoding == "numerical"
    agree = [i < len(got) and i < len(expected) and _same(got[i], expected[i], numerical)
             for i in range(max(len(got), len(expected)))]
    top = [_show(expected[i] if ok else got[i]) if i < len(got) else ""
           for i, ok in enumerate(agree)]
    bottom = [_show(expected[i]) if i < len(expected) else "" for i in range(len(agree))]
    widths = [max(len(a), len(b)) for a, b in zip(top, bottom)]
    print("model:   " + " ".join(c.ljust(w) for c, w in zip(top, widths)).rstrip())
    print("program: " + " ".join(c.ljust(w) for c, w in zip(bottom, widths)).rstrip())
    differ = [i for i, ok in enumerate(agree) if not ok]
    if differ:
        print(f"differ at {plural(len(differ), 'position')}: {', '.join(map(str, differ))}")
    return 1 if differ else 0


def _program_and_domain(args: argparse.Namespace, spec: str,
                        model: Any = None) -> tuple[rasplang.SOp, tuple[Any, ...], int]:
    """SPEC's program, vocabulary and length; a library program built for that length.

    With ``model`` (a loaded model file), the vocabulary and length are the file's.
    """
    entry = library_entry(spec)
    if entry is None:
        program, _ = load_program(spec)
        vocab, max_seq_len = _domain(args, None, spec, model)
    else:
        vocab, max_seq_len = _domain(args, entry, spec, model)
        program = entry.build(max_seq_len)
    return program, vocab, max_seq_len


def _cmd_compile(args: argparse.Namespace) -> int:
    program, vocab, max_seq_len = _program_and_domain(args, args.spec)
    hf = args.format == "hf"
    if hf and not args.out:
        raise UsageError("--format hf writes a directory: give it with --out DIR")
    if args.out and not hf:
        raise UsageError(f"--out {args.out} is the directory --format hf writes: add --format "
                         "hf, or give -o FILE.safetensors for a model file")
    if args.out and pathlib.Path(args.out).exists() and not pathlib.Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is an existing file, not a directory")
    if args.output and pathlib.Path(args.output).is_dir():
        raise UsageError(f"-o {args.output} is a directory: give a .safetensors file name")
    model, seconds = _compile(program, vocab, max_seq_len, args.causal, "compile",
                              norm=args.norm or ("layernorm" if hf else None),
                              activation=args.activation)
    cfg = model.config
    print(f"compiled {program_name(args.spec)}: {plural(cfg.n_layers, 'layer')}, "
          f"d_model {cfg.d_model}, {plural(cfg.n_heads, 'head')} of width {cfg.d_head}, "
          f"d_mlp {cfg.d_mlp}, {plural(model.n_params, 'parameter')} ({model.n_params_used:,} "
          f"at their own sizes, {model.n_nonzero:,} nonzero) in {seconds * 1000:.1f} ms")
    if args.output:
        try:
            path = model.save(args.output)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
        print(f"wrote {path}")
    if hf:
        from rasplang.backend.hf import write_directory

        print(f"wrote {write_directory(model, args.out, UsageError)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from rasplang.demo import main as demo_main

    return demo_main([])


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _add_domain(p: argparse.ArgumentParser, model_file: bool = False,
                causal_help: str = "compile with causal attention") -> None:
    default = "the model file's, else the library's" if model_file else "the library's"
    p.add_argument("--vocab", help=f"comma-separated vocabulary (default: {default})")
    p.add_argument("--max-seq-len", type=_positive_int,
                   help=f"longest input (default: {default})")
    p.add_argument("--causal", action="store_true",
                   help=causal_help + (" (default: as the model file was)" if model_file else ""))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per job."""
    parser = argparse.ArgumentParser(
        prog="rasplang", description="RASP programs: run, analyse, compile, verify, write datasets."
    )
    parser.add_argument("--version", action="version", version=rasplang.__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lib", help="list the library programs")
    p.set_defaults(fn=_cmd_lib)

    p = sub.add_parser("run", help="run a program, or a model file, on one input")
    p.add_argument("target", metavar="SPEC_OR_MODEL_FILE",
                   help="library name, module:attr, path/to/file.py:attr, or model.safetensors")
    p.add_argument("--input", required=True, help='tokens separated by spaces, e.g. "a b c"')
    p.add_argument("--vocab", help="comma-separated vocabulary, e.g. a,b,c")
    p.add_argument("--causal", action="store_true", help="mask selectors causally")
    p.add_argument("--compare", action="store_true",
                   help="for a SPEC: also compile it and print the model's output above")
    p.add_argument("--program", metavar="SPEC",
                   help="for a model file: also print this program's output below")
    p.set_defaults(fn=_cmd_run)

    p = sub.add_parser("compile", help="compile a program into a model file")
    p.add_argument("spec", help="library name, module:attr or path/to/file.py:attr")
    _add_domain(p)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the model to this .safetensors file")
    p.add_argument("--format", choices=("rasplang", "hf"), default="rasplang",
                   help="hf: also write a Hugging Face model directory (--out DIR)")
    p.add_argument("--out", metavar="DIR", help="the directory --format hf writes")
    p.add_argument("--norm", choices=("layernorm", "rmsnorm"),
                   help="exact normalisation layers (default: none; layernorm for hf)")
    p.add_argument("--activation", choices=("relu", "gelu"), default="relu",
                   help="the MLPs' activation: relu (default), or gelu with every unit scaled "
                        "so that GELU computes what ReLU does, exactly")
    p.set_defaults(fn=_cmd_compile)

    from rasplang.cli_scale import add_dataset_parser, add_verify_parser

    add_verify_parser(sub)
    add_dataset_parser(sub)

    p = sub.add_parser("demo", help="compile, run and verify library programs; one table")
    p.set_defaults(fn=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rasplang`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except UsageError as exc:
        print(f"rasplang {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (rasplang.EvaluationError, rasplang.AnalysisError) as exc:
        print(f"rasplang {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except rasplang.UnsupportedProgramError as exc:
        print(f"rasplang {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError as exc:  # a model or a batch too large for this machine
        print(f"rasplang {args.command}: error: out of memory: "
              f"{exc or 'the model or a batch of inputs does not fit'}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
