"""Saved quantized checkpoints: identical logits after a reload, for every scheme; bad input fails clearly."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from fptq.kernels.reference import FORMAT_VERSION
from fptq.models import checkpoint as ckpt
from fptq.models.checkpoint import load_quantized, save_quantized
from fptq.models.loading import ModelSpec, load_model
from fptq.models.onload import CheckpointError
from fptq.quant.pipeline import quantize_model

CONF = Path(__file__).resolve().parents[2] / "conf"
PRESETS = sorted(p.stem for p in (CONF / "quant").glob("*.yaml") if p.stem != "fp")
TINY = ModelSpec(
    name="tiny-llama", config=yaml.safe_load((CONF / "model" / "tiny-llama.yaml").read_text())["config"]
)
X = torch.randint(0, 258, (2, 48), generator=torch.Generator().manual_seed(3))


def _scheme(preset):
    from conftest import compose_config
    from fptq.study.config import to_run_spec

    return to_run_spec(compose_config([f"quant={preset}"])).quant


def _quantized(scheme, calib_ids):
    model, tok = load_model(TINY, "/nonexistent")
    report = quantize_model(model, scheme, calib_ids, progress=False)
    return model, tok, report


@pytest.mark.parametrize("preset", PRESETS + ["w4a8_fptq+kv8"])
def test_save_load_gives_identical_logits(preset, calib_ids, tmp_path):
    scheme = _scheme(preset.split("+")[0])
    if preset.endswith("kv8"):
        scheme = replace(scheme, kv=replace(scheme.kv, bits=8))
    model, tok, report = _quantized(scheme, calib_ids)
    info = save_quantized(model, tmp_path / "ck", scheme=scheme, tokenizer=tok, report=report)
    loaded = load_quantized(tmp_path / "ck")
    assert torch.equal(loaded(X).logits, model(X).logits)
    assert info["bytes"] == sum(t.numel() * t.element_size() for t in loaded.state_dict().values())
    qc = json.loads((tmp_path / "ck" / "config.json").read_text())["quantization_config"]
    assert qc["scheme"]["name"] == scheme.name and len(qc["layers"]) == len(report.layers)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "config.json",
        "model.safetensors",
        "quant_report.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def test_static_scales_and_modes_are_in_the_config(calib_ids, tmp_path):
    scheme = _scheme("w4a8_fptq")
    model, _, report = _quantized(scheme, calib_ids)
    save_quantized(model, tmp_path / "ck", scheme=scheme)
    layers = ckpt.read_quantization_config(tmp_path / "ck")["layers"]
    for rec in report.layers:
        lc = layers[rec.name]
        assert lc["act"] == rec.act and lc["act_scale"] == rec.act_scale
        # g128 on a 128-input layer is one group per output channel: 0, the one form of per channel
        assert lc["group_size"] == (0 if lc["in_features"] == 128 else 128) == rec.group_size
        assert lc["input_transform"] is None


def test_sharded_checkpoint_loads(calib_ids, tmp_path):
    scheme = _scheme("w4a16_rtn_g128")
    model, _, _ = _quantized(scheme, calib_ids)
    save_quantized(model, tmp_path / "ck", scheme=scheme, max_shard_bytes=100_000)
    files = sorted(p.name for p in (tmp_path / "ck").glob("*.safetensors"))
    assert len(files) > 2 and (tmp_path / "ck" / "model.safetensors.index.json").is_file()
    assert torch.equal(load_quantized(tmp_path / "ck")(X).logits, model(X).logits)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    scheme = _scheme("w4a8_fptq")
    model, tok, _ = _quantized(
        scheme, torch.randint(0, 258, (8, 32), generator=torch.Generator().manual_seed(0))
    )
    folder = tmp_path_factory.mktemp("saved") / "ck"
    save_quantized(model, folder, scheme=scheme, tokenizer=tok)
    return folder, scheme, model


def test_refuses_a_non_empty_folder_unless_asked(saved, tmp_path):
    folder, scheme, model = saved
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_quantized(model, dest, scheme=scheme)
    assert (dest / "notes.txt").read_text() == "mine"
    save_quantized(model, dest, scheme=scheme, overwrite=True)
    assert not (dest / "notes.txt").exists() and (dest / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["dest"]  # no temporary or old folder left


def test_a_failed_save_leaves_nothing(saved, tmp_path, monkeypatch):
    folder, scheme, model = saved

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write_tensors", boom)
    with pytest.raises(OSError, match="disk full"):
        save_quantized(model, tmp_path / "ck", scheme=scheme)
    assert list(tmp_path.iterdir()) == []


def test_scheme_mismatch_names_the_fields(saved):
    folder, scheme, _ = saved
    other = _scheme("w8a8_rtn")
    with pytest.raises(CheckpointError, match=r"weight.bits: checkpoint 4, run 8") as e:
        ckpt.check_scheme(folder, other)
    assert "'w4a8_fptq'" in str(e.value) and "'w8a8_rtn'" in str(e.value)
    assert ckpt.check_scheme(folder, replace(scheme, name="renamed"))["format_version"] == FORMAT_VERSION == 2


def _edit_config(folder, tmp_path, **changes):
    import shutil

    dest = tmp_path / "edited"
    shutil.copytree(folder, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["quantization_config"].update(changes)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def test_other_format_version_or_method_is_refused(saved, tmp_path):
    folder, _, _ = saved
    with pytest.raises(CheckpointError, match="older fptq.*Re-quantize"):
        load_quantized(_edit_config(folder, tmp_path / "v1", config_version=None))
    with pytest.raises(CheckpointError, match="format version 1.*reads version 2"):
        load_quantized(
            _edit_config(folder, tmp_path, format_version=1)
        )  # the layout before the K-contiguous one
    with pytest.raises(CheckpointError, match="'compressed-tensors' format"):
        load_quantized(_edit_config(folder, tmp_path / "b", quant_method="compressed-tensors"))


def test_float_folder_or_missing_folder_is_refused(tmp_path):
    model, _ = load_model(TINY, "/nonexistent")
    model.save_pretrained(tmp_path / "float")
    with pytest.raises(CheckpointError, match="float model"):
        load_quantized(tmp_path / "float")
    with pytest.raises(CheckpointError, match="not a saved checkpoint"):
        load_quantized(tmp_path / "nothing")


def test_truncated_or_altered_tensors_are_refused(saved, tmp_path):
    import shutil

    folder, _, _ = saved
    bad = tmp_path / "trunc"
    shutil.copytree(folder, bad)
    f = bad / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_quantized(bad)
    layers = json.loads((folder / "config.json").read_text())["quantization_config"]["layers"]
    fewer = dict(list(layers.items())[1:])
    with pytest.raises(CheckpointError, match="do not match its quantization_config"):
        load_quantized(_edit_config(folder, tmp_path / "x", layers=fewer))


def test_a_scheme_edited_away_from_its_tensors_is_refused(saved, tmp_path):
    """Editing quantization_config's scheme (bits 4 -> 8) must not relabel 4-bit tensors as 8-bit;
    editing the layers too leaves tensors of the wrong shape, also refused with a message."""
    folder, scheme, _ = saved
    qc = json.loads((folder / "config.json").read_text())["quantization_config"]
    s8 = json.loads(json.dumps(qc["scheme"]))
    s8["weight"]["bits"] = 8
    edited = _edit_config(folder, tmp_path / "s", scheme=s8)
    with pytest.raises(CheckpointError, match="stores 4-bit weights, the scheme says 8"):
        ckpt.check_scheme(edited, replace(scheme, weight=replace(scheme.weight, bits=8)))
    with pytest.raises(CheckpointError, match="contradicts its own layers"):
        load_quantized(edited)
    layers8 = {n: dict(lc, w_bits=8) for n, lc in qc["layers"].items()}
    with pytest.raises(CheckpointError, match="do not have the shapes its quantization_config implies"):
        load_quantized(_edit_config(folder, tmp_path / "l", scheme=s8, layers=layers8))


def test_a_file_at_the_destination_is_named_as_a_file(saved, tmp_path):
    folder, scheme, model = saved
    (tmp_path / "f").write_text("")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="is a file, not a folder"):
            save_quantized(model, tmp_path / "f", scheme=scheme, overwrite=overwrite)
    assert (tmp_path / "f").read_text() == ""


def test_saved_files_honour_the_umask(saved, tmp_path):
    import os
    import stat

    folder, scheme, model = saved
    old = os.umask(0o022)
    try:
        save_quantized(model, tmp_path / "ck", scheme=scheme)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "ck", *(tmp_path / "ck").iterdir()]}
    assert modes["ck"] == 0o755 and modes["model.safetensors"] == modes["config.json"] == 0o644, modes
