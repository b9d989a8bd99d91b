"""Validation before any work: every problem a job's config, model config and data files show,
reported together with what to do."""

import json

import pytest
import torch

from fptq.data import CalibSpec, DataSpec, calibration_ids, local_file
from fptq.models.loading import ModelSpec, byte_tokenizer
from fptq.quant.scheme import ActSpec, QuantScheme, WeightSpec
from fptq.study.preflight import PreflightError, preflight
from fptq.study.spec import EvalSpec, RunSpec

TINY = dict(
    hidden_size=64, intermediate_size=160, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2
)


def _spec(tmp_path, wiki="ok", **kw):
    f = tmp_path / "wiki.txt"
    if wiki == "ok":
        f.write_text("some text " * 100)
    elif wiki is not None:
        f.write_bytes(wiki)
    base = dict(
        model=ModelSpec(name="t", source="random", config=TINY),
        quant=QuantScheme(
            name="w4a8", weight=WeightSpec(bits=4, group_size=32), act=ActSpec(strategy="per_token_dynamic")
        ),
        calib=CalibSpec(source="random"),
        data=DataSpec(source="local", wikitext2=str(f)),
        eval=EvalSpec(datasets=("wikitext2",)),
    )
    base.update(kw)
    return RunSpec(**base)


def _problems(spec, device="cpu"):
    with pytest.raises(PreflightError) as e:
        preflight(spec, torch.device(device))
    return e.value.problems


def test_a_good_job_passes(tmp_path):
    preflight(_spec(tmp_path), torch.device("cpu"))


def test_group_wider_than_a_layer_fails_from_the_config(tmp_path):
    q = QuantScheme(name="w4", weight=WeightSpec(bits=4, group_size=128))
    (p,) = _problems(_spec(tmp_path, quant=q))
    assert "group_size=128 is wider than model.layers.0.self_attn.q_proj (64 inputs" in p
    assert "use a group size <= 64" in p


def test_triton_without_a_gpu_and_unsupported_scheme(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q = QuantScheme(name="w4a16", weight=WeightSpec(bits=4, group_size=16))
    probs = _problems(_spec(tmp_path, quant=q, backend="triton"))
    assert any("backend=triton needs a CUDA device" in p for p in probs)
    assert any("group size 32 or a multiple of 64" in p for p in probs)
    assert any("int8 activations" in p for p in probs)


def test_unmapped_architecture_fails_before_loading(tmp_path):
    m = ModelSpec(
        name="g",
        source="random",
        config_class="GPT2Config",
        config=dict(n_embd=32, n_layer=1, n_head=2, n_positions=2048),
    )
    (p,) = _problems(_spec(tmp_path, model=m))
    assert "no architecture mapping for GPT2LMHeadModel" in p


def test_missing_and_undecodable_data_files_are_named(tmp_path):
    probs = _problems(_spec(tmp_path, wiki=b"good line\nbad \xff\xfe line\n"))
    assert probs == [
        f"{tmp_path / 'wiki.txt'}:2: not UTF-8 text (invalid start byte at byte 14); expected wikitext2 as UTF-8 text"
    ]
    spec = _spec(tmp_path, data=DataSpec(source="local", wikitext2=str(tmp_path / "nope.txt")))
    (p,) = _problems(spec)
    assert "expected the file" in p and "nope.txt" in p and "data.wikitext2=" in p


def test_c4_without_text_field_names_file_and_line(tmp_path):
    c4 = tmp_path / "c4.jsonl"
    c4.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"content": "x"}) + "\n")
    spec = _spec(
        tmp_path,
        calib=CalibSpec(source="c4"),
        data=DataSpec(source="local", wikitext2=str(tmp_path / "wiki.txt"), c4_train=str(c4)),
    )
    (p,) = _problems(spec)
    assert p == f"{c4}:2: expected a JSON object with a string field 'text', got keys ['content']"
    c4.write_text('{"text": "a"}\n{"text": "b",\n')
    (p,) = _problems(spec)
    assert p.startswith(f"{c4}:2: expected one JSON object per line")


def test_all_problems_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q = QuantScheme(name="w4a8", weight=WeightSpec(bits=4, group_size=256), act=ActSpec(strategy="fptq"))
    spec = _spec(
        tmp_path, quant=q, backend="triton", data=DataSpec(source="local", wikitext2=str(tmp_path / "x.txt"))
    )
    assert len(_problems(spec)) >= 3


def test_task_data_problems(tmp_path):
    (tmp_path / "zeroshot").mkdir()
    (tmp_path / "zeroshot" / "boolq.jsonl").write_text('{"question": "q"\n')
    spec = _spec(
        tmp_path,
        eval=EvalSpec(
            datasets=("wikitext2",), tasks=("boolq", "piqa"), task_source="local", task_data=str(tmp_path)
        ),
    )
    probs = _problems(spec)
    assert any(
        p.startswith(f"{tmp_path / 'zeroshot' / 'boolq.jsonl'}:1: expected one JSON object") for p in probs
    )
    assert any("piqa/valid.jsonl" in p and "eval.task_data" in p for p in probs)


def test_short_calibration_text_says_what_to_do(tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("only a few words here")
    with pytest.raises(ValueError, match=r"too short for crops of calib.seqlen=512; lower calib.seqlen"):
        calibration_ids(
            CalibSpec(source="wikitext2", seqlen=512),
            byte_tokenizer(),
            DataSpec(source="local", wikitext2=str(f)),
            258,
        )
    c4 = tmp_path / "c4.jsonl"
    c4.write_text('{"text": "tiny"}\n')
    with pytest.raises(ValueError, match=r"no document among 1000 drawn from the 1 in the C4 train file"):
        calibration_ids(
            CalibSpec(source="c4", seqlen=64),
            byte_tokenizer(),
            DataSpec(source="local", c4_train=str(c4)),
            258,
        )


def test_seed_drives_calibration_unless_calib_seed_is_set():
    tok, data = None, DataSpec()
    a = calibration_ids(CalibSpec(source="random", n_samples=2, seqlen=8), tok, data, 100, seed=0)
    b = calibration_ids(CalibSpec(source="random", n_samples=2, seqlen=8), tok, data, 100, seed=1)
    c = calibration_ids(CalibSpec(source="random", n_samples=2, seqlen=8, seed=0), tok, data, 100, seed=1)
    assert not torch.equal(a, b) and torch.equal(a, c)


def test_data_root_from_env_and_explicit_root(tmp_path, monkeypatch):
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "wikitext2_raw_test.txt").write_text("x")
    monkeypatch.setenv("FPTQ_DATA_DIR", str(tmp_path))
    assert local_file("wikitext2", DataSpec()) == tmp_path / "wikitext2" / "wikitext2_raw_test.txt"
    with pytest.raises(FileNotFoundError, match="data.root='/nonexistent' is not a folder"):
        local_file("wikitext2", DataSpec(root="/nonexistent"))


def test_rotations_the_model_cannot_take_are_refused_before_loading(tmp_path):
    """R1 on a LayerNorm family and a hidden size with no Hadamard and no fallback: each named, from
    the model's config, before any weight is read."""
    opt = ModelSpec(
        name="o",
        source="random",
        config_class="OPTConfig",
        config=dict(
            hidden_size=64, ffn_dim=128, num_hidden_layers=1, num_attention_heads=4, word_embed_proj_dim=64
        ),
    )
    rot = QuantScheme(name="rot", transforms=("quarot",))
    (p,) = _problems(_spec(tmp_path, model=opt, quant=rot))
    assert "transform 'quarot' on OPTForCausalLM" in p and "RMSNorm" in p and "r1=none" in p
    odd = ModelSpec(name="h", source="random", config=dict(TINY, hidden_size=172, head_dim=16))
    (p,) = _problems(_spec(tmp_path, model=odd, quant=rot))
    assert "no Hadamard matrix of order 172" in p and "fallback=random" in p
    ok = QuantScheme(name="rot", transforms=("quarot",), transform_args={"quarot": {"fallback": "random"}})
    preflight(_spec(tmp_path, model=odd, quant=ok), torch.device("cpu"))


def test_a_torn_or_short_calibration_file_fails_before_loading(tmp_path):
    """Found after the model load and the fp baseline before: a torn line anywhere in the C4 train
    file, and calibration text that cannot hold one crop."""
    c4 = tmp_path / "c4_train.jsonl"
    c4.write_text("".join('{"text": "%s"}\n' % ("word " * 400) for _ in range(20)) + '{"text": "torn')
    calib = dict(quant=QuantScheme(name="w4a16", weight=WeightSpec(bits=4, group_size=32)))
    spec = _spec(tmp_path, calib=CalibSpec(source="c4", seqlen=64), **calib)
    spec = RunSpec(
        **{**spec.__dict__, "data": DataSpec(source="local", wikitext2=spec.data.wikitext2, c4_train=str(c4))}
    )
    assert any("c4_train.jsonl:21" in p for p in _problems(spec))  # past the first records
    c4.write_text('{"text": "short doc"}\n' * 10)
    assert any("no document is longer than calib.seqlen=64" in p for p in _problems(spec))
    wt = tmp_path / "wt_train.txt"
    wt.write_text("too short")
    spec = RunSpec(
        **{
            **spec.__dict__,
            "calib": CalibSpec(source="wikitext2_train", seqlen=64),
            "data": DataSpec(source="local", wikitext2=spec.data.wikitext2, wikitext2_train=str(wt)),
        }
    )
    assert any("too short for calibration crops of calib.seqlen=64" in p for p in _problems(spec))


def test_windows_beyond_the_model_positions_are_refused(tmp_path):
    spec = _spec(
        tmp_path, model=ModelSpec(name="t", source="random", config=dict(TINY, max_position_embeddings=256))
    )
    spec = RunSpec(**{**spec.__dict__, "eval": EvalSpec(datasets=("wikitext2",), seqlen=512)})
    assert any("eval.seqlen=512 is beyond the 256 positions" in p for p in _problems(spec))
