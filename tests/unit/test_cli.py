"""The command line: library listing, running programs, and one-line user errors."""

import pytest

from rasplang.cli import main, parse_input, parse_vocab


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_lib_lists_programs(capsys):
    """`rasplang lib`: one line per program with vocabulary, length and description."""
    from rasplang.lib import PROGRAMS

    code, out, _ = run(capsys, "lib")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["program", "vocabulary", "max_seq_len", "description"]
    rows = {line.split()[0]: line for line in lines[1:len(PROGRAMS) + 1]}
    assert list(rows) == list(PROGRAMS)
    assert rows["sort_unique"].split()[:7] == ["sort_unique", "1", "2", "3", "4", "5", "5"]
    assert rows["sort"].split()[6] == "5*"  # length-dependent, marked and explained
    assert rows["detect_pattern"].split()[1:5] == ["a", "b", "c", "6"]
    assert rows["hist"].endswith("how often each position's token occurs")
    assert lines[-1].startswith("* length-dependent: built for the length used")


def test_run_library_program(capsys):
    """`rasplang run sort_unique --input "3 1 2"` prints the sorted tokens."""
    assert run(capsys, "run", "sort_unique", "--input", "3 1 2") == (0, "1 2 3\n", "")
    assert run(capsys, "run", "make_reverse", "--input", "a b c")[1] == "c b a\n"


def test_run_module_and_file_specs(capsys, tmp_path):
    """SPEC may be module:attr (a function) or path/to/file.py:attr (an SOp)."""
    assert run(capsys, "run", "rasplang.lib:make_hist", "--input", "a a b",
               "--vocab", "a,b")[1] == "2 2 1\n"
    prog = tmp_path / "prog.py"
    prog.write_text("import rasplang as rl\nsucc = rl.tokens + 1\n")
    assert run(capsys, "run", f"{prog}:succ", "--input", "1 2")[1] == "2 3\n"


def test_run_causal(capsys):
    """--causal masks selectors: make_length counts the prefix."""
    assert run(capsys, "run", "length", "--input", "a b c", "--causal")[1] == "1 2 3\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "nope", "--input", "a"], "unknown program 'nope'"),
        (["run", "reverse", "--input", "a q"], "token 'q' at position 1 is not in the vocab"),
        (["run", "missing.py:p", "--input", "a"], "no such file: missing.py"),
        (["run", "rasplang.nope:p", "--input", "a"], "cannot import module 'rasplang.nope'"),
        (["run", "rasplang.lib:nothing", "--input", "a"], "has no attribute 'nothing'"),
        (["run", "rasplang.lib:PROGRAMS", "--input", "a"], "is a dict, not an SOp"),
        (["run", "hist", "--input", "a", "--vocab", "a,,b"], "malformed --vocab 'a,,b'"),
    ],
)
def test_user_errors_are_one_line_exit_2(capsys, argv, message):
    """Bad arguments print one line to stderr and exit with status 2."""
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_parse_helpers():
    """Vocabularies parse ints as ints; inputs match vocabulary tokens by text."""
    assert parse_vocab("1,2, 3") == (1, 2, 3)
    assert parse_vocab("a,b") == ("a", "b")
    assert parse_input("1 2", (1, 2)) == [1, 2]
    assert parse_input("x 3", None) == ["x", 3]


# ------------------------------------------------- compile, run a model, verify, demo


@pytest.fixture
def model_file(tmp_path, capsys):
    path = tmp_path / "sort.safetensors"
    assert run(capsys, "compile", "sort_unique", "-o", str(path))[0] == 0
    assert path.is_file()
    return path


def test_compile_prints_shape_and_writes_file(capsys, tmp_path):
    """`rasplang compile` prints layers, width, parameters and time, and writes the file."""
    path = tmp_path / "hist.safetensors"
    code, out, err = run(capsys, "compile", "rasplang.lib:make_hist", "--vocab", "a,b",
                         "--max-seq-len", "4", "-o", str(path))
    assert code == 0 and err == ""
    assert "1 layer, d_model" in out and "1 head of width" in out
    assert f"wrote {path}" in out
    import rasplang as rl

    model = rl.load(path)
    assert model.run([["a", "b", "a"]]) == [[2, 1, 2]]
    assert (f"{model.n_params:,} parameters ({model.n_params_used:,} at their own sizes, "
            f"{model.n_nonzero:,} nonzero) in ") in out  # the three size counts


def test_compile_warnings_are_one_line(capsys, tmp_path):
    """A CompilerWarning is one stderr line; compilation goes on."""
    code, out, err = run(capsys, "compile", "sort_unique")
    assert code == 0 and "compiled sort_unique" in out
    assert err.startswith("rasplang compile: warning: sort: categorical Aggregate")
    assert err.count("\n") == 1


def test_run_model_file(capsys, model_file):
    """`rasplang run model.safetensors` prints the model's decoded output."""
    assert run(capsys, "run", str(model_file), "--input", "3 1 2")[:2] == (0, "1 2 3\n")


def test_run_model_file_beside_program(capsys, model_file):
    """--program prints the program's output below the model's; both agree."""
    code, out, _ = run(capsys, "run", str(model_file), "--input", "5 4", "--program",
                       "sort_unique")
    assert code == 0 and out == "model:   4 5\nprogram: 4 5\n"


def test_run_compare_compiles_the_program(capsys):
    """--compare: where the model agrees, both rows show the program's value and type."""
    code, out, _ = run(capsys, "run", "frac_prevs", "--input", "x y x", "--compare")
    assert code == 0
    assert out == "model:   True 0.5 0.666667\nprogram: True 0.5 0.666667\n"


def test_run_model_beside_program_shows_differences(capsys, tmp_path):
    """Within verify's tolerance a model value prints as the program's; beyond, its own."""
    import rasplang as rl

    model = rl.compile(rl.lib.PROGRAMS["frac_prevs"].build(), ("x", "y"), 3)
    weights = dict(model.weights)
    close, far = tmp_path / "close.safetensors", tmp_path / "far.safetensors"
    model.weights["unembed.W_U"] = weights["unembed.W_U"] * (1 + 3e-7)
    model.save(close)
    model.weights["unembed.W_U"] = weights["unembed.W_U"] * 1.5
    model.save(far)
    argv = ["--input", "x y x", "--program", "frac_prevs"]
    code, out, _ = run(capsys, "run", str(close), *argv)
    assert code == 0 and out == "model:   True 0.5 0.666667\nprogram: True 0.5 0.666667\n"
    code, out, _ = run(capsys, "run", str(far), *argv)
    assert code == 1 and out == ("model:   1.5  0.75 1\n"
                                 "program: True 0.5  0.666667\n"
                                 "differ at 3 positions: 0, 1, 2\n")


def test_verify_library_program(capsys):
    """`rasplang verify` prints the report and exits 0 when the model is exact."""
    code, out, _ = run(capsys, "verify", "hist", "--exhaustive")
    assert code == 0 and "1,364 of 1,364 inputs" in out and out.rstrip().endswith("OK")
    code, out, _ = run(capsys, "verify", "sort_unique", "--vocab", "1,2,3,4,5",
                       "--max-seq-len", "7", "--samples", "500", "--seed", "3")
    assert code == 0 and "500 of 500 inputs (random inputs" in out


def test_verify_names_the_library_program(capsys):
    """verify reports the library entry's name, not its output node's label."""
    for spec in ("sort_unique", "make_sort_unique"):
        code, out, _ = run(capsys, "verify", spec, "--samples", "20")
        assert code == 0 and out.startswith("verified 'sort_unique' on 20 of 20"), out


INVERSE = "import rasplang as rl\ninv = rl.numerical(rl.Map(lambda t: 1 / t, rl.tokens))\n"


def test_verify_skipped_inputs_exit_3(capsys, tmp_path):
    """Inputs the program raises on are counted in the verdict, and the exit status is 3."""
    prog = tmp_path / "inv.py"
    prog.write_text(INVERSE)
    code, out, _ = run(capsys, "verify", f"{prog}:inv", "--vocab", "0,1,2",
                       "--max-seq-len", "3")
    assert code == 3
    assert out.startswith(f"verified '{prog}:inv' on 14 of 39 inputs")
    assert out.splitlines()[1] == "OK on 14 inputs; 25 raise in the program"
    code, out, _ = run(capsys, "verify", f"{prog}:inv", "--vocab", "0", "--max-seq-len", "2")
    assert code == 3 and out.splitlines()[1] == "nothing checked: all 2 inputs raise in the program"
    code, out, _ = run(capsys, "verify", f"{prog}:inv", "--vocab", "1,2", "--max-seq-len", "3")
    assert code == 0 and out.splitlines()[1] == "OK"


def test_verify_help_lists_exit_statuses(capsys):
    """`rasplang verify --help` documents every exit status verify returns."""
    from rasplang.cli import VERIFY_STATUSES

    with pytest.raises(SystemExit) as exit_info:
        main(["verify", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0 and "exit status:" in out
    for code, text in VERIFY_STATUSES.items():
        assert f"{code} {text}" in out


def test_verify_mismatch_exits_1(capsys, tmp_path, monkeypatch):
    """A model file that disagrees with the program: the report, then exit status 1."""
    import rasplang as rl

    model = rl.compile(rl.tokens + 1, [1, 2], 3)
    model.weights["unembed.W_U"] = model.weights["unembed.W_U"][:, ::-1].copy()
    path = tmp_path / "wrong.safetensors"
    model.save(path)
    prog = tmp_path / "prog.py"
    prog.write_text("import rasplang as rl\nsucc = rl.tokens + 1\n")
    code, out, _ = run(capsys, "verify", f"{prog}:succ", "--vocab", "1,2", "--max-seq-len",
                       "3", "--model", str(path))
    assert code == 1 and "14 mismatches" in out and "MISMATCH" in out
    assert "input [1]: expected [2], got [3]" in out


def test_verify_refused_program_exits_1(capsys, tmp_path):
    """A program the compiler refuses: its problems on stderr, exit status 1."""
    prog = tmp_path / "whole.py"
    prog.write_text("import rasplang as rl\nwhole = rl.length + 1\n")
    code, out, err = run(capsys, "verify", f"{prog}:whole", "--vocab", "a,b",
                         "--max-seq-len", "3", "--causal")
    assert code == 1 and out == ""
    assert "cannot compile 1 node(s)" in err and "length" in err


def test_demo_leaves_no_progress_bar(capsys, monkeypatch):
    """The demo's verify draws no progress bar, even on a terminal and after no delay."""
    import sys

    from rasplang import demo, verification

    monkeypatch.setattr(verification, "PROGRESS_DELAY_S", 0.0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    row = demo.run_one("hist")
    out, err = capsys.readouterr()
    assert row[0] == "hist" and out == "" and err == ""


def test_demo_prints_one_table(capsys):
    """`rasplang demo` compiles, runs and verifies library programs with zero mismatches."""
    code, out, _ = run(capsys, "demo")
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("program"))
    for column in ("layers", "d_model", "params", "compile ms", "inputs verified",
                   "mismatches"):
        assert column in header
    row = next(line for line in out.splitlines() if line.startswith("sort_unique "))
    assert "[1 2 3 5]" in row and "3,905 all" in row and row.endswith(" 0")
    assert "not compiled" not in out and ", 0 mismatches" in out  # every program compiles
    assert "1 models" not in out and "1 mismatches" not in out


def test_demo_legend_explains_its_columns_and_symbols(capsys, tmp_path, monkeypatch):
    """Below the table the demo explains the size columns and every output symbol that is
    neither one of the program's tokens nor a number, bool or None; the commands it
    suggests run (verify on a sample here, for time)."""
    import re
    import shlex

    from rasplang.demo import LEGEND
    from rasplang.lib import PROGRAMS

    code, out, _ = run(capsys, "demo")
    assert code == 0 and out.rstrip().endswith(LEGEND.strip())
    words = set(LEGEND.replace(",", " ").replace(";", " ").split())
    for column in ("params:", "used:", "nonzero:", "verified:"):
        assert column in words, column
    unexplained = {}
    for line in out.splitlines():
        name = line.split(" ", 1)[0]
        if name not in PROGRAMS:
            continue
        shown = re.findall(r"\[([^]]*)\]", line)[1].split()  # the model output column
        vocab = {str(t) for t in PROGRAMS[name].vocab}
        for value in shown:
            if value in vocab or value in ("True", "False", "None"):
                continue
            try:
                float(value)
            except ValueError:
                if value not in words:
                    unexplained.setdefault(name, []).append(value)
    assert unexplained == {}
    text = " ".join(LEGEND.split())
    commands = re.findall(r"rasplang (\w+ .*?)(?=, then |; |$)", text)
    assert [c.split()[0] for c in commands] == ["compile", "run", "verify"]
    monkeypatch.chdir(tmp_path)
    for command in commands:
        argv = shlex.split(command) + (["--samples", "100"] if command.startswith("verify")
                                       else [])
        assert run(capsys, *argv)[0] == 0, command


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "missing.safetensors", "--input", "a"], "no such file: missing.safetensors"),
        (["compile", "rasplang.lib:make_hist"], "give --vocab and --max-seq-len"),
        (["compile", "nope"], "unknown program 'nope'"),
        (["compile", "hist", "--vocab", "a,a"], "a token is listed twice"),
        (["verify", "hist", "--model", "absent.safetensors"], "no such file"),
        (["compile", "hist", "-o", "/nonexistent-dir/m.safetensors"], "cannot write"),
    ],
)
def test_new_commands_user_errors(capsys, argv, message):
    """Bad arguments to compile/run/verify: one line on stderr, exit status 2."""
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_model_file_user_errors(capsys, model_file, tmp_path):
    """A damaged model file, a token outside its vocabulary, an input too long: exit 2."""
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(model_file.read_bytes()[:100])
    for argv, message in [
        (["run", str(damaged), "--input", "1"], "damaged.safetensors: "),
        (["run", str(model_file), "--input", "1 9"], "token '9' at position 1"),
        (["run", str(model_file), "--input", "1 2 3 4 5 1"], "the model takes at most 5"),
        (["verify", "sort_unique", "--model", str(model_file), "--max-seq-len", "6"],
         f"--max-seq-len 6 differs from the max_seq_len of {model_file}, 5; omit"),
    ]:
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)


# -------------------------------------------- library programs at another length


def test_run_builds_library_program_for_the_input_length(capsys):
    """`run sort` on 7 tokens (library length 5) sorts them; --compare agrees."""
    assert run(capsys, "run", "sort", "--input", "2 1 1 1 1 1 1") == (0, "1 1 1 1 1 1 2\n", "")
    code, out, _ = run(capsys, "run", "sort", "--input", "2 1 1 1 1 1 1", "--compare")
    assert code == 0 and out == "model:   1 1 1 1 1 1 2\nprogram: 1 1 1 1 1 1 2\n"


def test_verify_library_program_at_another_length(capsys):
    """`verify sort --max-seq-len 7` builds sort for 7 and finds no mismatch."""
    code, out, _ = run(capsys, "verify", "sort", "--max-seq-len", "7", "--samples", "300")
    assert code == 0 and "0 mismatches" in out and out.rstrip().endswith("OK")


# ------------------------------------------------------ one-line errors, exit 2


def assert_one_line_exit_2(result, message):
    code, out, err = result
    assert code == 2 and out == "", (code, out, err)
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("command", ["compile", "verify"])
def test_vocab_with_compiler_bos(capsys, command):
    """--vocab holding the compiler's BOS token is refused, naming the token."""
    assert_one_line_exit_2(run(capsys, command, "hist", "--vocab", "BOS,a"),
                           "--vocab contains 'BOS', the compiler's BOS token")


def test_empty_input_compare(capsys):
    """run --input "" --compare is refused: the input is empty."""
    assert_one_line_exit_2(run(capsys, "run", "hist", "--input", "", "--compare"),
                           "empty --input")


def test_empty_input(capsys):
    """run --input "" (blank) is refused rather than printing an empty line."""
    assert_one_line_exit_2(run(capsys, "run", "hist", "--input", "  "), "empty --input")


def test_input_bos_compare(capsys):
    """--input BOS --compare, the vocabulary taken from the input, names the BOS token."""
    assert_one_line_exit_2(
        run(capsys, "run", "rasplang.lib:make_length", "--input", "a BOS", "--compare"),
        "--input (the vocabulary when --vocab is not given) contains 'BOS'")


def test_program_file_with_syntax_error(capsys, tmp_path):
    """A program file with a syntax error: the file, the line and the error."""
    prog = tmp_path / "broken.py"
    prog.write_text("import rasplang as rl\nsucc = (rl.tokens + 1\n")
    assert_one_line_exit_2(run(capsys, "run", f"{prog}:succ", "--input", "1"),
                           f"syntax error in {prog}, line 2: '(' was never closed")


def test_program_file_raising_on_import(capsys, tmp_path):
    """A program file that raises on import: the file, the line and the exception."""
    prog = tmp_path / "raises.py"
    prog.write_text("import rasplang as rl\n\nsucc = rl.tokens + 1 / 0\n")
    assert_one_line_exit_2(run(capsys, "verify", f"{prog}:succ", "--vocab", "1,2",
                               "--max-seq-len", "2"),
                           f"importing {prog}, line 3 raised ZeroDivisionError: division by zero")


def test_program_function_raising(capsys):
    """A SPEC naming a function that raises when called: the spec and the exception."""
    assert_one_line_exit_2(run(capsys, "run", "rasplang.lib:make_sort_freq", "--input", "1"),
                           "rasplang.lib:make_sort_freq: calling it without arguments raised "
                           "TypeError")


def test_verify_too_many_inputs(capsys):
    """verify --exhaustive over 4^20 inputs is refused with the count and the way on."""
    assert_one_line_exit_2(
        run(capsys, "verify", "hist", "--max-seq-len", "20", "--exhaustive"),
        "would check 1,466,015,503,700 inputs (every input of length 1..20 over 4 tokens), "
        "more than the limit of 10,000,000; pass --max-inputs 1466015503700")


def test_verify_max_inputs(capsys):
    """--max-inputs lowers or lifts the limit; the default choice samples a large domain."""
    argv = ["verify", "hist", "--vocab", "a,b", "--max-seq-len", "3", "--exhaustive"]
    assert_one_line_exit_2(run(capsys, *argv, "--max-inputs", "13"),
                           "would check 14 inputs")
    assert run(capsys, *argv, "--max-inputs", "14")[0] == 0
    assert run(capsys, *argv, "--max-inputs", "0")[0] == 0
    code, out, _ = run(capsys, "verify", "hist", "--max-seq-len", "20", "--samples", "50")
    assert code == 0 and "50 of 50 inputs (random inputs" in out


def test_out_of_memory_is_one_line_exit_1(capsys, monkeypatch):
    """A MemoryError from the compiler is one stderr line with its message, exit 1."""
    import rasplang

    def too_big(*args, **kwargs):
        raise MemoryError("the model needs 3.2 TiB")

    monkeypatch.setattr(rasplang, "compile", too_big)
    code, out, err = run(capsys, "compile", "hist")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "error: out of memory: the model needs 3.2 TiB" in err


# ------------------------------------------- the model file's domain, did you mean


def test_verify_model_file_takes_its_domain(capsys, tmp_path):
    """verify FILE.py:x --model M needs no --vocab or --max-seq-len: the file has them."""
    import rasplang as rl

    path = tmp_path / "succ.safetensors"
    rl.compile(rl.tokens + 1, [1, 2], 3, causal=True).save(path)
    prog = tmp_path / "prog.py"
    prog.write_text("import rasplang as rl\nsucc = rl.tokens + 1\n")
    code, out, err = run(capsys, "verify", f"{prog}:succ", "--model", str(path))
    assert (code, err) == (0, "")
    assert out.startswith(f"verified '{prog}:succ' on 14 of 14 inputs (every input of "
                          "length 1..3 over 2 tokens, causal)")
    code, _, _ = run(capsys, "verify", f"{prog}:succ", "--model", str(path), "--vocab", "2,1",
                     "--max-seq-len", "3", "--causal")
    assert code == 0  # the file's own domain, given again in another order


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--vocab", "1,2,3"], "--vocab 1,2,3 differs from the vocabulary of {path}, 1,2; "
                               "omit --vocab to use the file's"),
        (["--max-seq-len", "2"], "--max-seq-len 2 differs from the max_seq_len of {path}, 3; "
                                 "omit --max-seq-len to use the file's"),
        (["--causal"], "--causal, but {path} was compiled without causal attention"),
    ],
)
def test_verify_model_file_refuses_another_domain(capsys, tmp_path, argv, message):
    """--vocab, --max-seq-len or --causal that contradict the model file are refused."""
    import rasplang as rl

    path = tmp_path / "succ.safetensors"
    rl.compile(rl.tokens + 1, [1, 2], 3).save(path)
    prog = tmp_path / "prog.py"
    prog.write_text("import rasplang as rl\nsucc = rl.tokens + 1\n")
    assert_one_line_exit_2(run(capsys, "verify", f"{prog}:succ", "--model", str(path), *argv),
                           message.format(path=path))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "sort_uniqe", "--input", "1"],
         "unknown program 'sort_uniqe'; did you mean sort_unique"),
        (["compile", "make_revrse"], "unknown program 'make_revrse'; did you mean reverse?"),
        (["verify", "dyk1"], "did you mean dyck1"),
        (["run", "rasplang.lib:make_hsit", "--input", "a"],
         "rasplang.lib has no attribute 'make_hsit'; did you mean make_hist"),
        (["run", "xyzzy", "--input", "a"],
         "unknown program 'xyzzy': expected a library name (`rasplang lib` lists them)"),
    ],
)
def test_misspelt_program_suggests_names(capsys, argv, message):
    """A misspelt program name suggests the closest library names; exit status 2."""
    assert_one_line_exit_2(run(capsys, *argv), message)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compile", "hist", "--out", "{tmp}/hfdir"], "add --format hf, or give -o FILE"),
        (["compile", "hist", "--format", "hf", "--out", "{tmp}/afile"],
         "is an existing file, not a directory"),
        (["compile", "hist", "-o", "{tmp}"], "is a directory: give a .safetensors file"),
        (["compile", "hist", "--vocab", ""], "malformed --vocab ''"),
        (["verify", "hist", "--vocab", ""], "malformed --vocab ''"),
        (["verify", "hist", "--scheduler", "bogus"], "cannot reach the Dask scheduler at bogus"),
        (["dataset", "hist", "-o", "{tmp}/afile"], "is an existing file: the dataset is a folder"),
        (["dataset", "hist", "-o", "/proc/nope"], "cannot write the dataset to /proc/nope"),
        (["run", "shift.py", "--input", "a b"], "name the program in it as shift.py:NAME"),
    ],
)
def test_no_silent_success_and_no_traceback(capsys, tmp_path, argv, message):
    """Arguments that would write nothing, or crash, are one-line usage errors (exit 2),
    and nothing is written."""
    (tmp_path / "afile").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert (tmp_path / "afile").read_text() == ""


def test_verify_refuses_a_model_of_another_program(capsys, tmp_path):
    """A model file records its program's fingerprint: verifying it against another
    program says so (exit 2) instead of listing mismatches; its own program passes."""
    path = tmp_path / "dyck2.safetensors"
    assert run(capsys, "compile", "dyck2", "-o", str(path))[0] == 0
    code, _, err = run(capsys, "verify", "hist", "--model", str(path))
    assert code == 2 and "compiled from another program than 'hist'" in err
    assert run(capsys, "verify", "dyck2", "--model", str(path))[0] == 0


@pytest.mark.parametrize("name", ["sort_stable", "sort_by_most_freq"])
def test_library_sorts_compile_without_warnings(capsys, name):
    """The paper's stable sorts select one key per query (a lexicographic rank), so they
    compile without a CompilerWarning."""
    code, _, err = run(capsys, "compile", name)
    assert code == 0 and err == ""


def test_help_explains_every_option(capsys):
    """--activation has help; dataset's --causal speaks of masking, not compiling."""
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    out = capsys.readouterr().out
    assert "so that GELU computes what ReLU" in " ".join(out.split())
    assert "-o FILE, --output FILE" in out
    with pytest.raises(SystemExit):
        main(["dataset", "--help"])
    out = capsys.readouterr().out
    assert "mask every selector causally" in " ".join(out.split())
    assert "compile with causal" not in out
