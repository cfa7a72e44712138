"""rasplang.dataset: Parquet shards of inputs, outputs and traces; domains by index; resume."""

import hashlib
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import rasplang as rl
from rasplang.domain import Exhaustive, Sampled, check_lengths
from rasplang.lib import make_hist, make_sort_unique

pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.filterwarnings("ignore::rasplang.backend.compiler.CompilerWarning")


def rows_of(folder):
    """Every row of a dataset folder, in shard order, as dicts (read with pyarrow alone)."""
    files = sorted(p for p in os.listdir(folder) if p.endswith(".parquet"))
    return [row for f in files for row in pq.read_table(os.path.join(folder, f)).to_pylist()]


def every_input(vocab, lengths):
    """Every input in the documented order, built with itertools (not the code under test)."""
    return [list(p) for n in lengths for p in itertools.product(vocab, repeat=n)]


# ------------------------------------------------------------------------- domains


def test_exhaustive_order_is_lengths_then_lexicographic():
    """Batches list every input once, lengths ascending, each length as itertools.product."""
    domain = Exhaustive(3, (1, 2, 3))
    rows = [tuple(r) for codes, _ in domain.batches(0, domain.total, 5) for r in codes.tolist()]
    assert rows == [tuple(x) for x in every_input(range(3), (1, 2, 3))]
    assert domain.total == 3 + 9 + 27


def test_unrank_and_ranges_match_the_enumeration():
    """Input i, and any range [start, stop), are those of the full enumeration."""
    domain = Exhaustive(4, (2, 3, 5))
    expected = every_input(range(4), (2, 3, 5))
    for i in (0, 1, 15, 16, 17, 79, 80, 81, len(expected) - 1):
        assert domain.unrank(i) == expected[i]
    for start, stop in ((0, 7), (10, 100), (78, 82), (len(expected) - 3, len(expected))):
        got = [r for codes, _ in domain.batches(start, stop, 3) for r in codes.tolist()]
        assert got == expected[start:stop]
    with pytest.raises(IndexError, match="outside the domain"):
        domain.unrank(len(expected))


def test_exhaustive_refuses_domains_past_64_bit_indices():
    """Lengths whose inputs cannot be numbered in int64 are refused with the sizes."""
    with pytest.raises(ValueError, match=r"10\^20 inputs of one length"):
        Exhaustive(10, (20,))


def test_check_lengths():
    """None means 1..max_seq_len; bad lengths are named."""
    assert check_lengths(None, 3) == (1, 2, 3)
    assert check_lengths([3, 1, 3], 4) == (1, 3)
    assert check_lengths(2, 4) == (2,)
    with pytest.raises(ValueError, match=r"lengths \[0, 9\] are not in 1..max_seq_len \(4\)"):
        check_lengths([0, 2, 9], 4)


def test_sampled_blocks_depend_on_seed_and_block_only():
    """Block k is the same whichever range asks for it; other seeds give other rows."""
    domain = Sampled(5, (1, 2, 3, 4), n=2500, seed=7, block=1000)

    def rows(d, start, stop):
        out = []
        for codes, lengths in d.batches(start, stop, 300):
            out += [tuple(c[:n]) for c, n in zip(codes.tolist(), lengths.tolist())]
        return out

    whole = rows(domain, 0, 2500)
    assert len(whole) == 2500
    assert rows(domain, 900, 2100) == whole[900:2100]
    assert rows(domain, 2000, 2500) == whole[2000:]
    other = Sampled(5, (1, 2, 3, 4), n=2500, seed=8, block=1000)
    assert rows(other, 0, 2500) != whole
    assert {len(r) for r in whole} == {1, 2, 3, 4}
    assert all(0 <= t < 5 for r in whole for t in r)
    grouped = [tuple(r) for codes, lengths in domain.batches(0, 2500, 300, one_length=True)
               for r in codes.tolist() if len(set(lengths.tolist())) == 1]
    assert sorted(grouped) == sorted(whole)


# ------------------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def hist():
    return make_hist()


def test_exhaustive_dataset_rows_are_the_programs_outputs(tmp_path, hist):
    """Row i holds input i of the documented order and evaluate's output on it."""
    vocab = ["a", "b", "c"]
    report = rl.dataset(hist, vocab, 4, out=tmp_path, shard_rows=25)
    inputs = every_input(vocab, range(1, 5))
    rows = rows_of(tmp_path)
    assert report.rows == len(rows) == len(inputs) and len(report.shards) == 5
    assert [r["tokens"] for r in rows] == inputs
    assert [r["output"] for r in rows] == [rl.evaluate(hist, xs) for xs in inputs]
    assert report.columns == ["tokens", "output"]


def test_exhaustive_dataset_of_chosen_lengths(tmp_path, hist):
    """lengths=[...] restricts every input to those lengths, in the same order."""
    rl.dataset(hist, "ab", 5, lengths=[4, 2], out=tmp_path, shard_rows=7)
    rows = rows_of(tmp_path)
    assert [r["tokens"] for r in rows] == every_input("ab", (2, 4))
    assert all(r["output"] == rl.evaluate(hist, r["tokens"]) for r in rows)


def test_traces_hold_every_nodes_values(tmp_path):
    """traces=True: one column per SOp, equal to evaluate_all; selectors when named."""
    program = make_sort_unique(rl.tokens, rl.tokens)
    vocab = [1, 2, 3]
    report = rl.dataset(program, vocab, 3, traces=True, out=tmp_path / "all")
    analysis = rl.analyze(program, vocab, 3)
    sops = [n for n in analysis.nodes if not isinstance(n, rl.Selector)
            and not isinstance(n, rl.TokensType) and n is not program]
    assert report.columns == ["tokens", "output", *(analysis.labels[n] for n in sops)]
    for row in rows_of(tmp_path / "all"):
        values = rl.evaluate_all(program, row["tokens"])
        for node in sops:
            assert row[analysis.labels[node]] == values[node]
        assert row["output"] == values[program]
    select = next(n for n in analysis.nodes if isinstance(n, rl.Select))
    label = analysis.labels[select]
    rl.dataset(program, vocab, 3, traces=[label], out=tmp_path / "sel")
    for row in rows_of(tmp_path / "sel"):
        matrix = rl.evaluate_all(program, row["tokens"])[select]
        assert row[label] == [[bool(v) for v in q] for q in matrix]


def test_causal_dataset_masks_the_selectors(tmp_path):
    """causal=True: outputs are evaluate's with causal masking, which differ here."""
    program = make_sort_unique(rl.tokens, rl.tokens)
    rl.dataset(program, [1, 2, 3], 3, causal=True, out=tmp_path)
    rows = rows_of(tmp_path)
    assert all(r["output"] == rl.evaluate(program, r["tokens"], causal=True) for r in rows)
    assert any(r["output"] != rl.evaluate(program, r["tokens"]) for r in rows)


def test_datasets_of_one_program_for_other_domains(tmp_path):
    """The same program for another length, or causal, in one process: each its own."""
    succ = rl.tokens + 1
    rl.dataset(succ, [1, 2], 3, out=tmp_path / "3")
    rows = rows_of(rl.dataset(succ, [1, 2], 4, out=tmp_path / "4").out)
    assert [r["tokens"] for r in rows] == every_input([1, 2], range(1, 5))
    program = make_sort_unique(rl.tokens, rl.tokens)
    plain = rows_of(rl.dataset(program, [1, 2], 2, out=tmp_path / "plain").out)
    causal = rows_of(rl.dataset(program, [1, 2], 2, causal=True, out=tmp_path / "causal").out)
    assert [r["output"] for r in plain] == [rl.evaluate(program, r["tokens"]) for r in plain]
    assert [r["output"] for r in causal] == [
        rl.evaluate(program, r["tokens"], causal=True) for r in causal]


def test_column_types_follow_the_value_tables(tmp_path):
    """Strings, bools, None as null, floats, and other values as their repr."""
    program = rl.SequenceMap(lambda t, i: (t, i) if i else None, rl.tokens, rl.indices)
    flag = rl.Map(lambda t: t == "x", rl.tokens).named("flag")
    half = rl.numerical(rl.Map(lambda t: 0.5 if t == "x" else 1, rl.tokens)).named("half")
    both = rl.SequenceMap(lambda p, f: p, program, flag + half)
    rl.dataset(both, ["x", "y"], 2, traces=["flag", "half"], out=tmp_path)
    table = pq.read_table(tmp_path / "shard-00000-of-00001.parquet")
    types = {f.name: str(f.type.value_type) for f in table.schema}
    assert types == {"tokens": "string", "output": "string", "flag": "bool", "half": "double"}
    row = table.to_pylist()[-1]  # ["y", "y"]
    assert row == {"tokens": ["y", "y"], "output": [None, repr(("y", 1))],
                   "flag": [False, False], "half": [1.0, 1.0]}


def test_sampled_dataset_is_seeded_and_exact(tmp_path, hist):
    """n random inputs: the same seed gives the same rows, outputs are evaluate's."""
    a = rl.dataset(hist, "abcd", 8, n=3000, seed=3, lengths=[2, 8], out=tmp_path / "a",
                   shard_rows=1000)
    rl.dataset(hist, "abcd", 8, n=3000, seed=3, lengths=[2, 8], out=tmp_path / "b",
               shard_rows=1000)
    rows = rows_of(tmp_path / "a")
    assert len(rows) == a.rows == 3000
    assert {len(r["tokens"]) for r in rows} == {2, 8}
    assert all(r["output"] == rl.evaluate(hist, r["tokens"]) for r in rows)
    for f in a.files:
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()
    c = rl.dataset(hist, "abcd", 8, n=3000, seed=4, lengths=[2, 8], out=tmp_path / "c",
                   shard_rows=1000)
    assert c.files[0].read_bytes() != a.files[0].read_bytes()


def test_metadata_records_the_program_and_checksums(tmp_path, hist):
    """The metadata file: node table, vocab, lengths, seed, version, each shard's SHA-256."""
    report = rl.dataset(hist, ["a", "b"], 3, out=tmp_path, shard_rows=4)
    meta = json.loads((tmp_path / ".rasplang-dataset.json").read_text())
    assert meta["vocab"] == ["a", "b"] and meta["max_seq_len"] == 3
    assert meta["lengths"] == [1, 2, 3] and meta["seed"] == 0 and meta["complete"]
    assert meta["rasplang_version"] == rl.__version__
    analysis = rl.analyze(hist, ["a", "b"], 3)
    assert [n["label"] for n in meta["nodes"]] == [analysis.labels[n] for n in analysis.nodes]
    assert meta["rows"] == 14 and len(meta["shards"]) == 4
    for shard, path in zip(meta["shards"], report.files):
        assert shard["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert shard["file"] == path.name


def test_resume_skips_good_shards_and_rewrites_damaged_ones(tmp_path, hist):
    """A rerun keeps checked shards, rewrites a damaged and a missing one, drops temp files."""
    first = rl.dataset(hist, "abc", 4, out=tmp_path, shard_rows=20)
    original = {f.name: f.read_bytes() for f in first.files}
    damaged, missing = first.files[1], first.files[3]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    missing.unlink()
    stale = tmp_path / f".{first.files[0].name}.tmp-123-456"
    stale.write_bytes(b"half a file")
    again = rl.dataset(hist, "abc", 4, out=tmp_path, shard_rows=20)
    assert sorted(again.written) == [1, 3] and again.repaired == [1, 3]
    assert len(again.reused) == len(first.shards) - 2
    assert {f.name: f.read_bytes() for f in again.files} == original
    assert not stale.exists()
    third = rl.dataset(hist, "abc", 4, out=tmp_path, shard_rows=20)
    assert third.written == [] and third.repaired == []


def test_other_arguments_in_the_same_folder_are_refused(tmp_path, hist):
    """A folder holding a dataset of other arguments is not mixed with a new one."""
    rl.dataset(hist, "abc", 3, out=tmp_path)
    with pytest.raises(ValueError, match=r"differ in .*max_seq_len"):
        rl.dataset(hist, "abc", 4, out=tmp_path)
    other = rl.Map(lambda t: t + "!", rl.tokens)
    with pytest.raises(ValueError, match="differ in fingerprint"):
        rl.dataset(other, "abc", 3, out=tmp_path)


def test_a_program_that_raises_is_reported(tmp_path):
    """An input on which the program raises stops the run with evaluate's error."""
    inverse = rl.numerical(rl.Map(lambda t: 1 / t, rl.tokens))
    with pytest.raises(rl.EvaluationError, match=r"ZeroDivisionError.*\[0\]"):
        rl.dataset(inverse, [0, 1, 2], 2, out=tmp_path)


def test_bad_arguments_are_named(tmp_path, hist):
    """Bad n, shard_rows, traces and lengths raise with the argument's name."""
    with pytest.raises(ValueError, match="shard_rows must be positive"):
        rl.dataset(hist, "ab", 2, out=tmp_path, shard_rows=0)
    with pytest.raises(ValueError, match="n must be None"):
        rl.dataset(hist, "ab", 2, out=tmp_path, n=-1)
    with pytest.raises(KeyError, match="no node labelled 'nope'"):
        rl.dataset(hist, "ab", 2, out=tmp_path, traces=["nope"])
    with pytest.raises(ValueError, match=r"lengths \[3\]"):
        rl.dataset(hist, "ab", 2, out=tmp_path, lengths=[3])


def test_no_dask_without_a_client(tmp_path):
    """dataset and verify without a client never import Dask."""
    code = (
        "import sys, rasplang as rl\n"
        f"rl.dataset(rl.tokens + 1, [1, 2], 3, out={str(tmp_path)!r}, traces=True)\n"
        "rl.verify(rl.tokens + 1, [1, 2], 3)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_loaders_read_the_folder(tmp_path, hist):
    """datasets, pandas and polars each load the folder with every row and column."""
    report = rl.dataset(hist, "abc", 3, n=500, traces=True, out=tmp_path, shard_rows=200)
    expected = rows_of(tmp_path)
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(tmp_path)
    assert list(frame.columns) == report.columns and len(frame) == 500
    assert [list(x) for x in frame["output"]] == [r["output"] for r in expected]
    pl = pytest.importorskip("polars")
    frame = pl.read_parquet(str(tmp_path / "*.parquet"))
    assert frame.columns == report.columns
    assert frame["tokens"].to_list() == [r["tokens"] for r in expected]
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path), split="train",
                               cache_dir=str(tmp_path.parent / "hf_cache"))
    assert ds.column_names == report.columns and len(ds) == 500
    assert ds["output"] == [r["output"] for r in expected]


def test_cli_dataset(tmp_path, capsys):
    """rasplang dataset writes the shards and resumes; bad lengths are one line, exit 2."""
    from rasplang.cli import main

    out = tmp_path / "ds"
    assert main(["dataset", "hist", "--max-seq-len", "3", "-o", str(out), "--traces"]) == 0
    assert "wrote 1 of 1 shards (84 rows" in capsys.readouterr().out
    assert main(["dataset", "hist", "--max-seq-len", "3", "-o", str(out), "--traces"]) == 0
    assert "1 kept from an earlier run" in capsys.readouterr().out
    rows = rows_of(out)
    assert rows[0]["tokens"] == ["a"] and len(rows) == 4 + 16 + 64
    assert main(["dataset", "hist", "-o", str(tmp_path / "x"), "--lengths", "2-x"]) == 2
    assert "malformed --lengths '2-x'" in capsys.readouterr().err
    assert main(["dataset", "hist", "-o", str(tmp_path / "y"), "--samples", "50",
                 "--lengths", "7"]) == 0
    assert {len(r["tokens"]) for r in rows_of(tmp_path / "y")} == {7}
    assert np.all([len(r["output"]) == 7 for r in rows_of(tmp_path / "y")])
