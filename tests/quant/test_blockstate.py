"""Block-by-block resume (fptq.quant.blockstate): a quantization stopped after block k and run again
with the same state folder starts at block k + 1 and ends bit-identical; damaged state is redone."""

import pytest
import torch

from conftest import compose_config
from fptq.models.loading import ModelSpec, load_model
from fptq.quant.blockstate import BlockState
from fptq.quant.pipeline import quantize_model
from fptq.study.config import to_run_spec

CALIB = torch.randint(0, 258, (6, 48), generator=torch.Generator().manual_seed(0))
CFG = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2
)


class Stop(Exception):
    pass


def _run(preset, state=None, stop_after=None, calib=CALIB):
    scheme = to_run_spec(compose_config([f"quant={preset}"])).quant
    model, _ = load_model(ModelSpec(name="t", source="random", config=CFG), "/nonexistent")
    if stop_after is not None:
        original = state.save

        def save(bi, *a, **k):
            original(bi, *a, **k)
            if bi == stop_after:
                raise Stop

        state.save = save
    try:
        report = quantize_model(model, scheme, calib, progress=False, state=state)
    except Stop:
        return None, None
    with torch.no_grad():
        return model(CALIB[:2]).logits, report


@pytest.mark.parametrize(
    "preset, stop_after", [("w4a8_fptq", 0), ("w4a8_fptq_gptq", 1), ("w4a8_quarot_rtn", 1)]
)
def test_resume_after_block_k_is_bit_identical(tmp_path, preset, stop_after):
    ref, ref_report = _run(preset)
    assert _run(preset, BlockState(tmp_path, "job"), stop_after=stop_after) == (None, None)
    state = BlockState(tmp_path, "job")
    logits, report = _run(preset, state)
    assert state.resumed_at == stop_after + 1
    assert torch.equal(logits, ref)
    assert report.rows() == ref_report.rows() and report.memory == ref_report.memory


def test_state_files_and_what_is_kept(tmp_path):
    _run("w4a8_fptq", BlockState(tmp_path, "job"), stop_after=1)
    names = sorted(p.name for p in tmp_path.iterdir())
    # blocks 0 and 1 packed, the inputs of blocks 1 and 2 (the older ones dropped), the manifest
    assert names == ["block-0000.pt", "block-0001.pt", "inputs-0001.pt", "inputs-0002.pt", "manifest.json"]
    state = BlockState(tmp_path, "job")
    assert state.bytes() == sum(p.stat().st_size for p in tmp_path.iterdir())
    state.clear()
    assert not tmp_path.exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_inputs", "manifest"])
def test_damaged_state_is_never_trusted(tmp_path, damage):
    ref, _ = _run("w4a8_fptq")
    _run("w4a8_fptq", BlockState(tmp_path, "job"), stop_after=1)
    f = tmp_path / "block-0001.pt"
    if damage == "flip":
        data = bytearray(f.read_bytes())
        data[-10] ^= 1
        f.write_bytes(bytes(data))
    elif damage == "truncate":
        f.write_bytes(f.read_bytes()[:-100])
    elif damage == "delete_inputs":
        (tmp_path / "inputs-0002.pt").unlink()
    else:
        (tmp_path / "manifest.json").write_text('{"version": 1, "job": "job", "n_')  # torn
    state = BlockState(tmp_path, "job")
    logits, _ = _run("w4a8_fptq", state)
    assert torch.equal(logits, ref)
    # a damaged last block is redone from its kept inputs; no manifest: from the beginning
    assert state.resumed_at == {"flip": 1, "truncate": 1, "delete_inputs": 1, "manifest": 0}[damage]


def test_state_of_another_job_is_ignored(tmp_path):
    _run("w4a8_fptq", BlockState(tmp_path, "job"), stop_after=0)
    state = BlockState(tmp_path, "other-job")
    _run("w4a8_fptq", state)
    assert state.resumed_at == 0


def test_data_free_scheme_resumes(tmp_path):
    ref, _ = _run("w4a16_rtn_g128", calib=None)
    _run("w4a16_rtn_g128", BlockState(tmp_path, "job"), stop_after=0, calib=None)
    state = BlockState(tmp_path, "job")
    logits, _ = _run("w4a16_rtn_g128", state, calib=None)
    assert torch.equal(logits, ref)
