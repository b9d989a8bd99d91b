import json
import multiprocessing as mp

import pytest

from fptq.files import read_jsonl, read_text, write_json_atomic
from fptq.study.row import ROW_VERSION, Row
from fptq.study.store import ResultStore, write_jsonl


def _row(i, **metrics):
    return Row("e", "m", f"s{i}", finished_at=f"2026-01-01T00:00:{i:02d}", metrics=metrics)


def test_put_get_read(tmp_path):
    store = ResultStore(str(tmp_path / "r"))
    store.put("k1", _row(1, ppl=float("nan")), layers={"layers": []})
    store.put("k2", _row(2))
    assert store.get("k1")["ppl"] is None and store.get("k1")["job_key"] == "k1"
    assert store.get("nope") is None
    assert [r["scheme"] for r in store.read()] == ["s1", "s2"]
    assert store.layers(store.get("k1")) == {"layers": []} and store.layers(store.get("k2")) is None


def test_rerun_replaces_the_row(tmp_path):
    store = ResultStore(str(tmp_path))
    store.put("k", _row(1, ppl=2.0))
    store.put("k", _row(2, ppl=3.0))
    assert [r["ppl"] for r in store.read()] == [3.0]


def test_torn_legacy_line_is_reported_and_later_rows_survive(tmp_path):
    """The old failure: a torn last line swallowed the next row. Rows are files now; the legacy
    JSONL's bad line is skipped and reported with its line number."""
    store = ResultStore(str(tmp_path))
    store.path.write_text(
        json.dumps(_row(1).to_dict()) + "\n" + '{"experiment": "e", "sch'
    )  # torn, no newline
    store.put("k2", _row(2))
    problems = []
    rows = store.read(problems)
    assert [r["scheme"] for r in rows] == ["s1", "s2"]
    assert len(problems) == 1 and problems[0].startswith(f"{store.path}:2: not a complete JSON row")


def test_unreadable_row_file_reruns_the_job(tmp_path):
    store = ResultStore(str(tmp_path))
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "k.json").write_text('{"experiment": ')
    assert store.get("k") is None
    problems = []
    assert store.read(problems) == [] and "k.json" in problems[0]


def test_a_directory_or_unreadable_entry_is_skipped_and_reported(tmp_path):
    store = ResultStore(str(tmp_path))
    store.put("k1", _row(1))
    (tmp_path / "rows" / "x.json").mkdir()
    problems = []
    assert [r.scheme for r in store.read(problems)] == ["s1"]
    assert len(problems) == 1 and "x.json: not a regular file" in problems[0]


def test_rows_are_typed_and_versioned(tmp_path):
    store = ResultStore(str(tmp_path))
    store.put("k", Row("e", "m", "s", settings={"weight.bits": 4}, metrics={"ppl_wikitext2": 9.5}))
    d = json.loads((tmp_path / "rows" / "k.json").read_text())
    assert d["version"] == ROW_VERSION and d["settings"] == {"weight.bits": 4}
    r = store.get("k")
    assert isinstance(r, Row) and r.get("weight.bits") == 4 and r["ppl_wikitext2"] == 9.5 and r.job_key == "k"
    # a version-1 flat row reads through the migration
    old = dict(
        experiment="e",
        model="m",
        scheme="w4a8_fptq",
        w_bits=4,
        group_size=None,
        act_strategy="fptq",
        v0=15.0,
        gptq_damp=None,
        kv_bits=16,
        ppl_wikitext2=9.0,
        n_per_tensor_static=3,
        device="cpu",
    )
    r = Row.from_dict(old)
    assert r.settings == {
        "weight.bits": 4,
        "weight.group_size": 0,
        "act.strategy": "fptq",
        "act.fptq.v0": 15.0,
        "kv.bits": 0,
    }
    assert r.metrics == {"ppl_wikitext2": 9.0} and r.quant == {"n_per_tensor_static": 3}
    assert r.run["device"] == "cpu" and Row.from_dict(r.to_dict()) == r


def _writer(args):
    d, w = args
    store = ResultStore(d)
    for i in range(20):
        store.put(f"w{w}-{i}", _row(i, writer=w, pad="x" * 5000))


def test_concurrent_writers_lose_nothing(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_writer, [(str(tmp_path), w) for w in range(8)])
    problems = []
    rows = ResultStore(str(tmp_path)).read(problems)
    assert len(rows) == 160 and not problems
    assert not [p for p in (tmp_path / "rows").iterdir() if not p.name.endswith(".json")]  # no temp files


def test_write_jsonl_snapshot(tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", [_row(1), _row(2)])
    assert [r["scheme"] for r in read_jsonl(tmp_path / "rows.jsonl")] == ["s1", "s2"]


def test_write_json_atomic_leaves_no_temp(tmp_path):
    write_json_atomic(tmp_path / "x" / "result.json", {"v": 1.5})
    assert json.loads((tmp_path / "x" / "result.json").read_text()) == {"v": 1.5}
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["result.json"]


def test_read_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text('{"text": "a"}\n\n{"text": \n')
    with pytest.raises(ValueError, match=r"docs.jsonl:3: expected one JSON object per line"):
        read_jsonl(f)


def test_read_jsonl_field_and_encoding_errors_name_the_line(tmp_path):
    f = tmp_path / "c4.jsonl"
    f.write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(
        ValueError,
        match=r"c4.jsonl:2: expected a JSON object with a string field 'text', got keys \['body'\]",
    ):
        read_jsonl(f, field="text")
    f.write_bytes(b'{"text": "a"}\n{"text": "\xff"}\n')
    with pytest.raises(ValueError, match=r"c4.jsonl:2: not UTF-8 text"):
        read_jsonl(f)


def test_read_text_names_file_and_line(tmp_path):
    f = tmp_path / "wiki.txt"
    f.write_bytes(b"fine\nstill fine\nbad \xe9 here\n")
    with pytest.raises(ValueError, match=r"wiki.txt:3: not UTF-8 text .* expected raw text"):
        read_text(f, "raw text")
    assert read_text(f, limit=8) == "fine\nsti"
