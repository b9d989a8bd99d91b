"""QuantLinear's input-transform slot, proved with the `online_rotation` test transform: a random
orthogonal Q per targeted layer, W' = W Q fused offline, x -> x Q online."""

import json

import pytest
import torch

from conftest import TINY_CFG, tiny_model
from fptq.models.checkpoint import load_quantized, save_quantized
from fptq.models.loading import ModelSpec, load_model
from fptq.quant.online import Orthogonal, random_orthogonal
from fptq.quant.pipeline import quantize_model
from fptq.quant.qlinear import QuantLinear
from fptq.quant.scheme import ActSpec, QuantScheme, WeightSpec

FAMILIES = ["llama", "qwen2", "gemma", "gemma2", "gemma3", "phi3", "opt", "bloom"]
ROTATE_ALL = {"online_rotation": {"targets": ["*"]}}


@pytest.mark.parametrize("n", [1, 7, 64, 576])
def test_random_orthogonal_is_orthogonal_and_seeded(n):
    Q = random_orthogonal(n, 0, "a")
    assert torch.allclose(Q @ Q.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    assert torch.equal(Q, random_orthogonal(n, 0, "a")) and (
        n == 1 or not torch.equal(Q, random_orthogonal(n, 0, "b"))
    )


def test_fused_weight_times_op_is_the_linear():
    W, x = torch.randn(8, 16, dtype=torch.float64), torch.randn(5, 16, dtype=torch.float64)
    op = Orthogonal(random_orthogonal(16, 1))
    assert torch.allclose(op(x.float()).double() @ op.fuse_weight(W).T, x @ W.T, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_online_rotation_preserves_fp32_logits(family, calib_ids):
    """Every linear of every block rotated online, nothing quantized: the same function."""
    model = tiny_model(family)
    with torch.no_grad():
        ref = model(calib_ids).logits
    scheme = QuantScheme(name="rot", transforms=("online_rotation",), transform_args=ROTATE_ALL)
    report = quantize_model(model, scheme, calib_ids, progress=False)
    slots = [m for m in model.modules() if isinstance(m, QuantLinear) and m.input_transform is not None]
    assert slots and len(slots) == len(report.layers)
    assert all(r.input_transform == "orthogonal" for r in report.layers)
    with torch.no_grad():
        out = model(calib_ids).logits
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 1e-5, rel  # observed 2.0e-7 (bloom) .. 1.3e-6 (qwen2)


def test_rotation_changes_what_is_quantized(calib_ids):
    """Quantized, the rotated down_proj inputs give other logits than the unrotated ones (the op
    runs before the activation quantizer), and the report names the slot."""
    outs = {}
    for rot in (False, True):
        model = tiny_model("llama")
        scheme = QuantScheme(
            name="q",
            weight=WeightSpec(4, 32),
            act=ActSpec(strategy="per_tensor_static"),
            transforms=("online_rotation",) if rot else (),
        )
        report = quantize_model(model, scheme, calib_ids, progress=False)
        down = [r for r in report.layers if r.name.endswith("down_proj")]
        assert all(r.input_transform == ("orthogonal" if rot else "none") for r in down)
        with torch.no_grad():
            outs[rot] = model(calib_ids).logits
    assert not torch.allclose(outs[False], outs[True])


def test_rotated_checkpoint_reloads_with_identical_logits(calib_ids, tmp_path):
    spec = ModelSpec(name="tiny-llama", config=TINY_CFG)
    model, tok = load_model(spec, "/nonexistent")
    scheme = QuantScheme(
        name="w4a8_rot", weight=WeightSpec(4, 32), act=ActSpec(), transforms=("online_rotation",)
    )
    report = quantize_model(model, scheme, calib_ids, progress=False)
    save_quantized(model, tmp_path / "ck", scheme=scheme, tokenizer=tok, report=report)
    qc = json.loads((tmp_path / "ck" / "config.json").read_text())["quantization_config"]
    slots = {n: lc["input_transform"] for n, lc in qc["layers"].items() if lc["input_transform"]}
    assert sorted(slots) == [f"model.layers.{i}.mlp.down_proj" for i in range(2)]
    assert all(s["kind"] == "orthogonal" and s["n"] > 0 for s in slots.values())
    loaded = load_quantized(tmp_path / "ck")
    x = calib_ids[:2]
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


def test_export_records_the_slot(calib_ids, tmp_path):
    pytest.importorskip("compressed_tensors")
    from fptq.models.export import INPUT_TRANSFORMS, export_compressed_tensors, load_decompressed

    spec = ModelSpec(name="tiny-llama", config=dict(TINY_CFG, hidden_size=128, intermediate_size=256))
    model, tok = load_model(spec, "/nonexistent")
    scheme = QuantScheme(
        name="w4a8_rot",
        weight=WeightSpec(4, 64),
        act=ActSpec(strategy="per_token_dynamic"),
        transforms=("online_rotation",),
    )
    quantize_model(model, scheme, calib_ids, progress=False)
    info = export_compressed_tensors(model, tmp_path / "ct", tokenizer=tok)
    assert info["input_transforms"] == 2
    qc = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert sorted(qc[INPUT_TRANSFORMS]) == [f"model.layers.{i}.mlp.down_proj" for i in range(2)]
    dense = load_decompressed(tmp_path / "ct")
    x = calib_ids[:2]
    with torch.no_grad():  # the package's dequantized weights with the recorded op put back
        ref = torch.nn.functional.linear(
            model.model.layers[0].mlp.down_proj.input_transform(torch.ones(1, 256)),
            model.model.layers[0].mlp.down_proj.dequantized_weight(torch.float32),
        )
        got = dense.model.layers[0].mlp.down_proj(torch.ones(1, 256))
    assert torch.allclose(got, ref, atol=1e-5)
    assert dense(x).logits.shape == model(x).logits.shape
