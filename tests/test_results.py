import json

import pytest

from fptq.files import read_jsonl, write_json_atomic
from fptq.results import ResultStore


def test_append_and_read(tmp_path):
    store = ResultStore(str(tmp_path / "r"))
    store.append({"a": 1, "ppl": float("nan")})
    store.append({"a": 2})
    rows = store.read()
    assert [r["a"] for r in rows] == [1, 2] and rows[0]["ppl"] is None


def test_torn_last_line_is_skipped(tmp_path):
    store = ResultStore(str(tmp_path))
    store.append({"a": 1})
    with open(store.path, "a") as f:
        f.write('{"a": 2, "b"')  # a crash mid-write of some other tool
    assert [r["a"] for r in store.read()] == [1]


def test_write_json_atomic_leaves_no_temp(tmp_path):
    write_json_atomic(tmp_path / "x" / "result.json", {"v": 1.5})
    assert json.loads((tmp_path / "x" / "result.json").read_text()) == {"v": 1.5}
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["result.json"]


def test_read_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text('{"text": "a"}\n\n{"text": \n')
    with pytest.raises(ValueError, match=r"docs.jsonl:3: not a JSON object per line"):
        read_jsonl(f)
