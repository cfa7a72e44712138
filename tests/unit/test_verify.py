"""rasplang.verify: interpreter versus compiled model, inputs, counterexamples, Ctrl-C."""

import itertools

import attrs
import numpy as np
import pytest

import rasplang as rl
from rasplang import verification as verify_module
from rasplang import verify_inputs
from rasplang.backend import CompilerWarning
from rasplang.lib import PROGRAMS, make_frac_prevs, make_sort_unique
from rasplang.verification import _all_inputs, _random_inputs, first_divergence

pytestmark = pytest.mark.filterwarnings("ignore::rasplang.backend.compiler.CompilerWarning")


def domain(n_vocab, max_seq_len):
    return sum(n_vocab**n for n in range(1, max_seq_len + 1))


def tampered(model, name, change):
    """A copy of ``model`` whose weight ``name`` is ``change(copy of it)``."""
    weights = dict(model.weights)
    weights[name] = change(weights[name].copy())
    return attrs.evolve(model, weights=weights, cache={})


@pytest.fixture(scope="module")
def sort_unique():
    program = make_sort_unique(rl.tokens, rl.tokens)
    with pytest.warns(CompilerWarning):
        model = rl.compile(program, [1, 2, 3], 4)
    return program, model


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_library_programs_verify_exhaustively(name):
    """Every library program the compiler accepts verifies on every input of its domain."""
    entry = PROGRAMS[name]
    program = entry.build(entry.max_seq_len)
    try:
        report = rl.verify(program, entry.vocab, entry.max_seq_len)
    except NotImplementedError as exc:
        assert isinstance(exc, rl.UnsupportedProgramError)
        pytest.skip(f"compiler refuses {name}: {exc}")
    assert report.ok, report.summary()
    assert report.exhaustive and report.checked + report.skipped == report.total
    assert report.total == domain(len(entry.vocab), entry.max_seq_len)


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_library_programs_verify_at_another_length(name):
    """Every library program built for a longer length than its default verifies there."""
    entry = PROGRAMS[name]
    max_len = entry.max_seq_len + 2
    try:
        report = rl.verify(entry.build(max_len), entry.vocab, max_len, exhaustive=False,
                           samples=300, seed=1)
    except NotImplementedError as exc:
        assert isinstance(exc, rl.UnsupportedProgramError)
        pytest.skip(f"compiler refuses {name}: {exc}")
    assert report.ok and report.n_mismatches == 0, report.summary()


def test_all_inputs_enumerates_every_sequence_once():
    """The exhaustive generator yields each sequence of each length exactly once."""
    rows = [tuple(r) for batch in _all_inputs(3, 3, batch_size=5) for r in batch.tolist()]
    expected = [p for n in (1, 2, 3) for p in itertools.product(range(3), repeat=n)]
    assert rows == expected


def test_random_inputs_are_seeded_and_spread_over_lengths():
    """Random inputs: `samples` of them, same for the same seed, every length present."""
    def draw(seed):
        return [tuple(r) for b in _random_inputs(4, 6, 3000, seed, 128) for r in b.tolist()]

    first = draw(1)
    assert len(first) == 3000 and first == draw(1) and first != draw(2)
    counts = np.bincount([len(r) for r in first], minlength=7)[1:]
    assert counts.min() > 3000 / 6 * 0.8
    assert all(0 <= t < 4 for r in first for t in r)


def test_exhaustive_none_samples_large_domains(monkeypatch):
    """Over the exhaustive limit, exhaustive=None checks `samples` random inputs."""
    monkeypatch.setattr(verify_inputs, "EXHAUSTIVE_LIMIT", 100)
    report = rl.verify(rl.tokens + 1, [1, 2, 3], 5, samples=250)
    assert not report.exhaustive and report.total == report.checked == 250 and report.ok
    small = rl.verify(rl.tokens + 1, [1, 2, 3], 3)
    assert small.exhaustive and small.checked == domain(3, 3)


def test_broken_mlp_is_located(sort_unique):
    """A zeroed MLP is reported with counterexamples and the node and layer it computes."""
    program, model = sort_unique
    broken = tampered(model, "blocks.0.mlp.W_out", lambda w: w * 0)
    report = rl.verify(program, [1, 2, 3], 4, model=broken)
    assert not report.ok and report.n_mismatches == domain(3, 4)
    assert len(report.mismatches) == verify_module.MAX_REPORTED
    first = report.mismatches[0]
    assert first.expected == rl.evaluate(program, first.input)
    assert first.got == broken.run([first.input])[0] != first.expected
    div = first.divergence
    assert (div.label, div.layer, div.sublayer) == ("target_pos", 0, "mlp")
    assert "target_pos" in report.summary() and "MISMATCH" in report.summary()


def test_broken_unembedding_has_no_divergence(sort_unique):
    """When only the unembedding is wrong, every node in the residual stream agrees."""
    program, model = sort_unique
    broken = tampered(model, "unembed.W_U", lambda w: w[:, ::-1])
    report = rl.verify(program, [1, 2, 3], 4, model=broken)
    assert report.n_mismatches > 0
    assert all(m.divergence is None for m in report.mismatches)
    assert first_divergence(model, program, [3, 1, 2]) is None


def test_numerical_outputs_compare_within_tolerance():
    """A numerical output off by 1e-3 is a mismatch; off by 1e-9 it is not."""
    program = make_frac_prevs(rl.tokens == "x")
    model = rl.compile(program, ["x", "y"], 4)
    assert rl.verify(program, ["x", "y"], 4, model=model).ok
    close = tampered(model, "unembed.b_U", lambda b: b + 1e-9)
    assert rl.verify(program, ["x", "y"], 4, model=close).ok
    off = tampered(model, "unembed.b_U", lambda b: b + 1e-3)
    report = rl.verify(program, ["x", "y"], 4, model=off)
    assert report.n_mismatches == domain(2, 4)
    assert report.mismatches[0].divergence is None


def test_ctrl_c_raises_with_partial_report(monkeypatch):
    """KeyboardInterrupt inside the batch loop stops verify and the caller, with what was
    checked on the exception."""
    calls = []
    original = verify_module._Checker.check

    def interrupted_on_third(checker, codes):
        calls.append(len(codes))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(checker, codes)

    monkeypatch.setattr(verify_module._Checker, "check", interrupted_on_third)
    with pytest.raises(KeyboardInterrupt, match="after 12 inputs checked of 120") as stop:
        rl.verify(rl.tokens + 1, [1, 2, 3], 4, batch_size=10, exhaustive=True)
    assert isinstance(stop.value, verify_module.VerifyInterrupted)
    report = stop.value.report
    assert report.interrupted and not report.ok
    assert report.checked == sum(calls[:2]) == 3 + 9  # batches of length 1, then 2
    assert report.n_mismatches == 0 and "interrupted" in report.summary()


def test_progress_bar_on_request_only(capsys, monkeypatch):
    """The progress bar is drawn when asked (after the delay), never on a non-terminal."""
    monkeypatch.setattr(verify_module, "PROGRESS_DELAY_S", 0.0)
    rl.verify(rl.tokens + 1, [1, 2, 3], 4, progress=True)
    assert "verify" in capsys.readouterr().err
    rl.verify(rl.tokens + 1, [1, 2, 3], 4)  # stderr is captured: not a terminal
    assert capsys.readouterr().err == ""


def test_inputs_where_evaluate_raises_are_skipped():
    """Inputs outside the program's domain (evaluate raises) are counted as skipped."""
    report = rl.verify(rl.Map(lambda x: 10 // x, rl.tokens), [0, 1, 2], 3)
    without_zero = domain(2, 3)
    assert (report.checked, report.skipped) == (without_zero, domain(3, 3) - without_zero)
    assert report.ok and "skipped" in report.summary()
    # the first ones are listed with evaluate's error
    assert len(report.undefined) == verify_module.MAX_REPORTED
    xs, error = report.undefined[0]
    assert xs == [0] and "ZeroDivisionError" in error
    assert all(0 in xs for xs, _ in report.undefined)
    assert "inputs where evaluate raises" in report.summary()


def test_a_program_raising_on_every_input_is_not_ok():
    """Nothing checked proves nothing: ``ok`` is False though the model ``agrees`` wherever
    the program is defined (nowhere), and the verdict says that nothing was checked."""
    report = rl.verify(rl.Map(lambda t: 1 / 0, rl.tokens), [1, 2], 2)
    assert (report.checked, report.skipped, report.n_mismatches) == (0, domain(2, 2), 0)
    assert report.agrees and not report.ok
    assert report.summary().splitlines()[1] == "nothing checked: all 6 inputs raise in the program"
    empty = rl.verify(rl.tokens, [1, 2], 2, exhaustive=False, samples=0)
    assert empty.total == 0 and not empty.ok
    assert empty.summary().splitlines()[1] == "nothing checked: no input was planned"


def test_model_must_match_the_request(sort_unique):
    """A model compiled for another vocabulary, length or masking is refused by name."""
    program, model = sort_unique
    with pytest.raises(ValueError, match=r"tokens \[4\] are not in the model's vocabulary"):
        rl.verify(program, [1, 2, 3, 4], 4, model=model)
    with pytest.raises(ValueError, match="max_seq_len 5 exceeds the model's max_seq_len 4"):
        rl.verify(program, [1, 2, 3], 5, model=model)
    with pytest.raises(ValueError, match="compiled with causal=False"):
        rl.verify(program, [1, 2, 3], 4, model=model, causal=True)
    assert rl.verify(program, [1, 2], 3, model=model).ok  # a sub-domain is fine


def test_causal_models_verify():
    """Causal compilation is verified with causal evaluation."""
    program = make_frac_prevs(rl.tokens == "x")
    report = rl.verify(program, ["x", "y"], 5, causal=True)
    assert report.ok and report.causal and report.model.config.causal


def test_rasplang_verify_is_the_function():
    """`rasplang.verify` is the function of rasplang.verification, after imports too."""
    assert rl.verify is verify_module.verify
    report = rl.verify(rl.tokens, ["a"], 2)
    assert report.ok and report.compile_seconds is not None and report.seconds >= 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_seq_len": 0}, "max_seq_len must be at least 1, got 0"),
    ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ({"samples": -1}, "samples must be non-negative, got -1"),
])
def test_bad_arguments(kwargs, message):
    """Out-of-range arguments are refused before any compilation, naming the argument."""
    args = {"max_seq_len": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        rl.verify(rl.tokens, ["a"], **args)


# -------------------------------------------------------------- how many inputs


def test_count_inputs():
    """count_inputs is the number of sequences of length 1..n, one token included."""
    assert verify_module.count_inputs(3, 4) == domain(3, 4)
    assert verify_module.count_inputs(1, 7) == 7
    assert verify_module.count_inputs(4, 20) == domain(4, 20) == 1_466_015_503_700


def test_exhaustive_beyond_the_limit_is_refused_before_compiling(monkeypatch):
    """exhaustive=True over 4^20 inputs raises at once, with the count and how to go on."""
    def no_compile(*args, **kwargs):
        raise AssertionError("compiled before refusing")

    monkeypatch.setattr("rasplang.backend.compile", no_compile)
    with pytest.raises(verify_module.TooManyInputsError,
                       match=r"would check 1,466,015,503,700 inputs \(every input of length "
                             r"1\.\.20 over 4 tokens\), more than the limit of 10,000,000; "
                             r"pass max_inputs=1466015503700 \(or None for no limit\)"):
        rl.verify(rl.tokens, list("abcd"), 20, exhaustive=True)


def test_max_inputs_can_be_raised():
    """Just over max_inputs is refused; max_inputs at the count, or None, runs it."""
    program = rl.tokens + 1
    with pytest.raises(ValueError, match=r"would check 14 inputs .* more than the limit of 13"):
        rl.verify(program, [1, 2], 3, exhaustive=True, max_inputs=13)
    assert rl.verify(program, [1, 2], 3, exhaustive=True, max_inputs=14).checked == 14
    assert rl.verify(program, [1, 2], 3, exhaustive=True, max_inputs=None).checked == 14


def test_too_many_samples_are_refused():
    """samples beyond max_inputs are refused too, naming the count."""
    with pytest.raises(verify_module.TooManyInputsError,
                       match="would check 20,000,000 random inputs, more than the limit"):
        rl.verify(rl.tokens, ["a", "b"], 3, exhaustive=False, samples=20_000_000)


def test_default_never_enumerates_a_huge_domain():
    """exhaustive=None samples when the domain is over EXHAUSTIVE_LIMIT or max_inputs."""
    assert verify_module.EXHAUSTIVE_LIMIT <= verify_module.MAX_INPUTS
    report = rl.verify(rl.tokens + 1, [1, 2, 3, 4], 20, samples=50)
    assert not report.exhaustive and report.total == report.checked == 50
    small = rl.verify(rl.tokens + 1, [1, 2], 3, samples=5, max_inputs=10)
    assert not small.exhaustive and small.checked == 5


def test_unenumerable_domain_is_refused_even_without_limit():
    """Past 2^63 inputs of one length, exhaustive=True is refused even with no limit."""
    with pytest.raises(ValueError, match=r"about 1\.6e\+24 inputs .* too many to enumerate"):
        rl.verify(rl.tokens, list("abcd"), 40, exhaustive=True, max_inputs=None)


def test_bad_max_inputs():
    """max_inputs must be positive or None."""
    with pytest.raises(ValueError, match="max_inputs must be a positive int or None, got 0"):
        rl.verify(rl.tokens, ["a"], 2, max_inputs=0)


def test_compile_errors_propagate():
    """A program the compiler refuses raises its UnsupportedProgramError through verify."""
    with pytest.raises(rl.UnsupportedProgramError, match=r"cannot compile 1 node\(s\)"):
        rl.verify(rl.length + 1, ["a", "b"], 3, causal=True)
