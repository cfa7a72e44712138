"""The ``rasplang`` command line.

User errors (an unknown program, a malformed vocabulary, a vocabulary holding the
compiler's BOS or PAD token, a missing or broken program file, an empty input, a token
outside the vocabulary, too many inputs to verify) print one line to stderr and exit
with status 2, without a traceback. A program the compiler refuses, or one too large to
build, prints its reason and exits with status 1.

A library program is built for the length it is run, compiled or verified at
(`rasplang.lib.LibraryProgram.build`): some depend on it.
"""

from __future__ import annotations

import argparse
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
from rasplang.verification import MAX_INPUTS


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit 2."""


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
    if ":" not in spec:
        raise UsageError(
            f"unknown program {spec!r}: expected a library name ({', '.join(PROGRAMS)}), "
            "module:attr or path/to/file.py:attr"
        )
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
        raise UsageError(f"{target} has no attribute {attr!r}")
    return _as_program(getattr(module, attr), spec), None


def _cmd_lib(args: argparse.Namespace) -> int:
    from rasplang.lib import PROGRAMS

    width = max(len(name) for name in PROGRAMS)
    for name, entry in PROGRAMS.items():
        print(f"{name:<{width}}  {entry.description}")
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


def _domain(args: argparse.Namespace, entry: Any, spec: str) -> tuple[tuple[Any, ...], int]:
    """``--vocab`` and ``--max-seq-len``, defaulting to the library entry's."""
    vocab = parse_vocab(args.vocab) if args.vocab else (entry.vocab if entry else None)
    max_seq_len = args.max_seq_len if args.max_seq_len is not None else (
        entry.max_seq_len if entry else None)
    if vocab is None or max_seq_len is None:
        raise UsageError(f"{spec} is not a library program: give --vocab and --max-seq-len")
    if args.vocab:
        check_compilable_vocab(vocab, "--vocab")
    if max_seq_len < 1:
        raise UsageError(f"--max-seq-len must be at least 1, got {max_seq_len}")
    return vocab, max_seq_len


def _show(values: Sequence[Any]) -> str:
    """Values separated by spaces; floats with 6 significant digits."""
    return " ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values)


def _compile(program: Any, vocab: Sequence[Any], max_seq_len: int, causal: bool,
             command: str) -> tuple[Any, float]:
    """Compile, printing each CompilerWarning as one stderr line; returns (model, seconds)."""
    from rasplang.backend import CompilerWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompilerWarning)
        start = time.perf_counter()
        model = rasplang.compile(program, vocab, max_seq_len, causal=causal)
        seconds = time.perf_counter() - start
    for w in caught:
        print(f"rasplang {command}: warning: {w.message}", file=sys.stderr)
    return model, seconds


def _cmd_run(args: argparse.Namespace) -> int:
    if _is_model_file(args.target):
        model = load_model(args.target)
        xs = parse_input(args.input, model.config.vocab)
        if len(xs) > model.config.max_seq_len:
            raise UsageError(f"input has {len(xs)} tokens; the model takes at most "
                             f"{model.config.max_seq_len}")
        if args.program is None:
            print(_show(model.run([xs])[0]))
            return 0
        program, _ = load_program(args.program, model.config.max_seq_len)
        return _print_both(model.run([xs])[0], rasplang.evaluate(
            program, xs, causal=model.config.causal))
    entry = library_entry(args.target)
    vocab = parse_vocab(args.vocab) if args.vocab else (entry.vocab if entry else None)
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
    return _print_both(model.run([xs])[0], output)


def _print_both(got: Sequence[Any], expected: Sequence[Any]) -> int:
    """The model's output above the program's; status 1 when they differ."""
    from rasplang.verification import _same

    print(f"model:   {_show(got)}")
    print(f"program: {_show(expected)}")
    numerical = any(isinstance(v, float) for v in got)
    same = len(got) == len(expected) and all(
        _same(g, e, numerical and isinstance(g, float)) for g, e in zip(got, expected))
    return 0 if same else 1


def _program_and_domain(args: argparse.Namespace,
                        spec: str) -> tuple[rasplang.SOp, tuple[Any, ...], int]:
    """SPEC's program, vocabulary and length; a library program built for that length."""
    entry = library_entry(spec)
    if entry is None:
        program, _ = load_program(spec)
        vocab, max_seq_len = _domain(args, None, spec)
    else:
        vocab, max_seq_len = _domain(args, entry, spec)
        program = entry.build(max_seq_len)
    return program, vocab, max_seq_len


def _cmd_compile(args: argparse.Namespace) -> int:
    program, vocab, max_seq_len = _program_and_domain(args, args.spec)
    model, seconds = _compile(program, vocab, max_seq_len, args.causal, "compile")
    cfg = model.config
    print(f"compiled {args.spec}: {cfg.n_layers} layers, d_model {cfg.d_model}, "
          f"{cfg.n_heads} heads of width {cfg.d_head}, d_mlp {cfg.d_mlp}, "
          f"{model.n_params:,} parameters in {seconds * 1000:.1f} ms")
    if args.output:
        try:
            path = model.save(args.output)
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
        print(f"wrote {path}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from rasplang.verification import TooManyInputsError, check_input_count

    program, vocab, max_seq_len = _program_and_domain(args, args.spec)
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
    if args.model:
        model, seconds = load_model(args.model), None
    else:
        model, seconds = _compile(program, vocab, max_seq_len, args.causal, "verify")
    try:
        report = rasplang.verify(program, vocab, max_seq_len, model=model, causal=args.causal,
                                 exhaustive=exhaustive, samples=samples, seed=args.seed,
                                 max_inputs=max_inputs)
    except ValueError as exc:  # the model file does not fit the request
        raise UsageError(str(exc)) from exc
    if seconds is not None:
        report.compile_seconds = seconds
    print(report.summary())
    if report.interrupted:
        return 130
    return 0 if report.ok else 1


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


def _add_domain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vocab", help="comma-separated vocabulary (default: the library's)")
    p.add_argument("--max-seq-len", type=_positive_int,
                   help="longest input (default: the library's)")
    p.add_argument("--causal", action="store_true", help="compile with causal attention")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per job."""
    parser = argparse.ArgumentParser(
        prog="rasplang", description="RASP programs: run, analyse, compile, verify."
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
    p.add_argument("-o", "--output", help="write the model to this .safetensors file")
    p.set_defaults(fn=_cmd_compile)

    p = sub.add_parser("verify", help="check a compiled model against its program")
    p.add_argument("spec", help="library name, module:attr or path/to/file.py:attr")
    _add_domain(p)
    p.add_argument("--model", help="verify this model file (default: compile SPEC)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--exhaustive", action="store_true", help="check every input")
    how.add_argument("--samples", type=_positive_int, help="check this many random inputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--max-inputs", type=_non_negative_int, default=MAX_INPUTS, metavar="N",
                   help="refuse to check more than N inputs, 0 for no limit "
                        f"(default {MAX_INPUTS:,})")
    p.set_defaults(fn=_cmd_verify)

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
