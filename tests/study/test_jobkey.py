"""The job key: what a job computes, not where its files are or how it is shown."""

import os
from dataclasses import replace

import fptq.study.jobkey as jobkey
from fptq.data import CalibSpec, DataSpec
from fptq.models.loading import ModelSpec
from fptq.quant.scheme import ActSpec, QuantScheme, WeightSpec
from fptq.study.runlog import LoggerSpec
from fptq.study.spec import EvalSpec, PathsSpec, RunSpec


def _spec(f, **kw):
    base = dict(
        model=ModelSpec(name="t", source="random", config={"hidden_size": 64}),
        quant=QuantScheme(name="w4a8", weight=WeightSpec(bits=4, group_size=32), act=ActSpec()),
        calib=CalibSpec(source="random"),
        data=DataSpec(source="local", wikitext2=str(f)),
        eval=EvalSpec(datasets=("wikitext2",)),
    )
    base.update(kw)
    return RunSpec(**base)


def test_key_ignores_paths_loggers_and_progress(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "sub" / "b.txt"
    b.parent.mkdir()
    a.write_text("same words " * 50)
    b.write_text("same words " * 50)
    k, parts = jobkey.job_key(_spec(a), "cpu")
    moved = _spec(
        b,
        paths=PathsSpec(cache_dir="/elsewhere", results_dir="/r"),
        logger=LoggerSpec(name="wandb"),
        eval=EvalSpec(datasets=("wikitext2",), progress=False),
        resume=False,
    )
    assert jobkey.job_key(moved, "cpu")[0] == k and len(k) == 16 and parts["code_version"]


def test_key_follows_content_config_device_and_code(tmp_path, monkeypatch):
    f = tmp_path / "a.txt"
    f.write_text("some words " * 50)
    spec = _spec(f)
    k = jobkey.job_key(spec, "cpu")[0]
    assert jobkey.job_key(replace(spec, seed=1), "cpu")[0] != k
    assert jobkey.job_key(spec, "cuda")[0] != k
    assert jobkey.job_key(replace(spec, experiment_name="other"), "cpu")[0] != k
    f.write_text("other words " * 50)  # same path, other content
    k2, parts2 = jobkey.job_key(spec, "cpu")
    assert k2 != k
    monkeypatch.setattr(jobkey, "code_version", lambda: "changed")
    k3, parts3 = jobkey.job_key(spec, "cpu")
    assert k3 != k2 and parts3["config_key"] == parts2["config_key"]  # same job, other code


def test_key_follows_the_weight_bytes_of_a_same_size_file(tmp_path):
    """Swapping one tensor for another of the same shape keeps every file name and size: the key
    must still change (header plus a sampled digest of every tensor's bytes)."""

    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    g = torch.Generator().manual_seed(0)
    tensors = {f"layers.{i}.w": torch.randn(64, 300, generator=g) for i in range(4)}
    save_file(tensors, str(folder / "model.safetensors"))
    spec = _spec(tmp_path / "w.txt", model=ModelSpec(name="m", source="hf", path=str(folder)))
    (tmp_path / "w.txt").write_text("words " * 50)
    k = jobkey.job_key(spec, "cpu")[0]
    size = (folder / "model.safetensors").stat().st_size
    for name in tensors:  # each tensor in turn, anywhere in the file
        swapped = dict(tensors, **{name: torch.randn(64, 300, generator=g)})
        save_file(swapped, str(folder / "model.safetensors"))
        assert (folder / "model.safetensors").stat().st_size == size
        assert jobkey.job_key(spec, "cpu")[0] != k, name
    save_file(tensors, str(folder / "model.safetensors"))
    os.utime(folder / "model.safetensors", ns=(1, 1))  # same bytes, other mtime: same key
    assert jobkey.job_key(spec, "cpu")[0] == k


def test_non_safetensors_weights_are_sampled(tmp_path):
    from fptq.study.identity import weights_digest

    f = tmp_path / "w.bin"
    data = bytearray(os.urandom(1 << 20))
    f.write_bytes(bytes(data))
    d = weights_digest(f)
    data[-1] ^= 1  # the tail is always read
    f.write_bytes(bytes(data))
    assert weights_digest(f) != d
