"""compressed-tensors export, verified by the package's own decompression, bit for bit."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

from conftest import TINY_CFG
from fptq.models.loading import ModelSpec, load_model
from fptq.quant.modes import ActQuant
from fptq.quant.pipeline import quantize_model
from fptq.quant.qlinear import QuantLinear
from fptq.quant.scheme import ActSpec, QuantScheme, WeightSpec

pytest.importorskip("compressed_tensors")
from fptq.models.export import export_compressed_tensors, load_decompressed  # noqa: E402

# tiny LLaMA with widths that whole groups of 64 divide (compressed-tensors packs whole groups)
TINY = ModelSpec(name="tiny-llama", config=dict(TINY_CFG, hidden_size=128, intermediate_size=256))
SCHEMES = {
    # FPTQ's mixed per-layer activations: static per-tensor and dynamic per-token groups
    "w4a8_fptq_g64": QuantScheme(
        name="w4a8_fptq", weight=WeightSpec(group_size=64), act=ActSpec(settings=dict(v0=0.3, v1=0.6))
    ),
    "w4a16_asym_g64": QuantScheme(name="w4a16", weight=WeightSpec(group_size=64, symmetric=False)),
    "w8a8_channel_dynamic": QuantScheme(
        name="w8a8",
        weight=WeightSpec(bits=8, group_size=0),
        act=ActSpec(strategy="per_token_dynamic"),
    ),
    "w8a8_asym_static": QuantScheme(
        name="w8a8s",
        weight=WeightSpec(bits=8, group_size=0, symmetric=False),
        act=ActSpec(strategy="per_tensor_static"),
    ),
}


def _quantized(scheme):
    model, tok = load_model(TINY, "/nonexistent")
    ids = torch.randint(0, 258, (8, 32), generator=torch.Generator().manual_seed(0))
    quantize_model(model, scheme, ids, progress=False)
    return model, tok


@pytest.mark.parametrize("name", list(SCHEMES))
def test_export_round_trips_through_compressed_tensors(name, tmp_path):
    model, tok = _quantized(SCHEMES[name])
    info = export_compressed_tensors(model, tmp_path / "ct", tokenizer=tok)
    dense = load_decompressed(tmp_path / "ct")
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    for n, m in layers.items():
        assert torch.equal(dense.get_submodule(n).weight, m.dequantized_weight(torch.float32)), n
    cfg = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == info["format"]
    targets = {t: g for g in cfg["config_groups"].values() for t in g["targets"]}
    assert set(targets) == set(layers)
    with safe_open(str(tmp_path / "ct" / "model.safetensors"), "pt") as f:
        for n, m in layers.items():
            acts = targets[n]["input_activations"]
            if m.act_mode == ActQuant.STATIC:
                assert acts["strategy"] == "tensor" and not acts["dynamic"]
                assert f.get_tensor(f"{n}.input_scale").item() == m.act_scale.item()
            elif m.act_mode == ActQuant.DYNAMIC:
                assert acts["strategy"] == "token" and acts["dynamic"]
            else:
                assert acts is None
    if name.startswith("w4a8_fptq"):  # both activation modes really occur, in two groups
        assert {m.act_mode for m in layers.values()} == {ActQuant.STATIC, ActQuant.DYNAMIC}
        assert info["groups"] == 2


def test_unexpressible_layers_are_refused(tmp_path):
    ragged, _ = _quantized(QuantScheme(name="r", weight=WeightSpec(group_size=96)))
    with pytest.raises(ValueError, match="ragged last group"):
        export_compressed_tensors(ragged, tmp_path / "a")
    kv, _ = _quantized(replace(SCHEMES["w4a16_asym_g64"], kv=replace(SCHEMES["w4a16_asym_g64"].kv, bits=8)))
    with pytest.raises(ValueError, match="KV-cache"):
        export_compressed_tensors(kv, tmp_path / "b")
    act_only, _ = _quantized(QuantScheme(name="a", act=ActSpec(strategy="per_token_dynamic")))
    with pytest.raises(ValueError, match="float weights"):
        export_compressed_tensors(act_only, tmp_path / "c")
    assert list(tmp_path.iterdir()) == []
