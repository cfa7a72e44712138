"""The command line: library listing, running programs, and one-line user errors."""

import pytest

from rasplang.cli import main, parse_input, parse_vocab


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_lib_lists_programs(capsys):
    """`rasplang lib` lists every library program with its description."""
    from rasplang.lib import PROGRAMS

    code, out, _ = run(capsys, "lib")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == len(PROGRAMS)
    assert any(line.startswith("sort_unique ") for line in lines)


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
