import pytest
import torch

from fptq.data import CalibSpec, DataSpec, calibration_ids, eval_tokens, local_file
from fptq.models.loading import byte_tokenizer


def test_local_wikitext2_from_shared(shared_data):
    tok = byte_tokenizer()
    ids = eval_tokens("wikitext2", tok, DataSpec(source="local", root=str(shared_data)), 2048)
    assert ids.numel() > 1_000_000  # bytes of the GPTQ-form test text


def test_explicit_file_and_missing_file_message(tmp_path):
    f = tmp_path / "w.txt"
    f.write_text("hello world")
    tok = byte_tokenizer()
    assert eval_tokens("wikitext2", tok, DataSpec(source="local", wikitext2=str(f)), 4).tolist() == list(
        tok("hello world").input_ids
    )
    with pytest.raises(FileNotFoundError, match="data.ptb"):
        local_file("ptb", DataSpec(source="local", ptb=str(tmp_path / "nope.txt")))


def test_hub_source_offline_fails_clearly():
    with pytest.raises(RuntimeError, match="unreachable"):
        eval_tokens("wikitext2", byte_tokenizer(), DataSpec(source="hub"), 16)


def test_unknown_set():
    with pytest.raises(ValueError, match="known"):
        eval_tokens("lambada", byte_tokenizer(), DataSpec(), 16)


def test_random_calibration_seeded():
    spec = CalibSpec(source="random", n_samples=4, seqlen=16, seed=3)
    a = calibration_ids(spec, None, DataSpec(), 100)
    b = calibration_ids(spec, None, DataSpec(), 100)
    assert a.shape == (4, 16) and torch.equal(a, b) and a.max() < 100


def test_c4_calibration_crops(shared_data):
    spec = CalibSpec(source="c4", n_samples=3, seqlen=64, seed=0)
    tok = byte_tokenizer()
    a = calibration_ids(spec, tok, DataSpec(source="local", root=str(shared_data)), 258)
    b = calibration_ids(spec, tok, DataSpec(source="local", root=str(shared_data)), 258)
    assert a.shape == (3, 64) and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])
