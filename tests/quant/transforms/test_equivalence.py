"""Equalization transforms leave the fp32 function unchanged (relative error < 1e-5)."""

import pytest
import torch

from conftest import tiny_model
from fptq.models.arch import arch_of
from fptq.quant.calibration import (
    block_output,
    capture_block_inputs,
    capture_block_kwargs,
    collect_stats,
    mixed_layer_types,
    run_block,
    with_block_kwargs,
)
from fptq.quant.folding import BlockFolder
from fptq.quant.kv import head_dim
from fptq.quant.scheme import ActSpec, QuantScheme, WeightSpec
from fptq.quant.transforms import fold_scale

FAMILIES = ["llama", "qwen2", "gemma", "gemma2", "gemma3", "phi3", "opt", "bloom"]


# a scheme carrying the settings of all three scale transforms (the folder reads them from it)
SCHEME = QuantScheme(
    "t",
    WeightSpec(4, 32),
    ActSpec(equalizer="smoothquant"),
    transforms=("lae", "awq"),
    transform_args={"awq": {"grid": 4}},
)


def _fold_every_group(model, ids, transform):
    """Fold `transform` into every group of the mapping the pipeline could use it on (AWQ skips
    attention groups; LAE and SmoothQuant go through v_proj -> o_proj in kv space)."""
    arch = arch_of(model)
    blocks = model.get_submodule(arch.blocks)
    batches = capture_block_inputs(model, blocks[0], ids, 4)
    kwargs = capture_block_kwargs(model, blocks, ids, 4)

    for i, block in enumerate(blocks):
        batches = with_block_kwargs(batches, kwargs, i)
        linears = {n: m for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
        stats = collect_stats(block, linears, batches)
        folder = BlockFolder(block, arch, True, linears, stats, SCHEME, head_dim(model.config))
        for g in arch.groups:
            if not (transform == "awq" and g.kind == "attention"):
                folder.fold(g, transform)
        batches = run_block(block, batches)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("transform", ["lae", "smoothquant", "awq"])
def test_transform_preserves_logits(family, transform, calib_ids):
    model = tiny_model(family)
    with torch.no_grad():
        ref = model(calib_ids).logits
    _fold_every_group(model, calib_ids, transform)
    with torch.no_grad():
        out = model(calib_ids).logits
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 1e-5, rel


@pytest.mark.parametrize("family", FAMILIES)
def test_lae_fold_changes_weights(family, calib_ids):
    model = tiny_model(family)
    arch = arch_of(model)
    g = arch.norm_groups()[0]
    block = model.get_submodule(arch.blocks)[0]
    before = block.get_submodule(g.linears[0]).weight.clone()
    _fold_every_group(model, calib_ids, "lae")
    after = block.get_submodule(g.linears[0]).weight
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gemma3"])
def test_block_by_block_matches_the_model(family, calib_ids):
    """Running the blocks one at a time (calibration, block-wise evaluation) reproduces each block's
    output in the whole model, also where sliding-window and global layers get different masks."""
    model = tiny_model(family)
    assert mixed_layer_types(model) == (family != "llama")
    blocks = model.get_submodule(arch_of(model).blocks)
    ref = {}
    handles = [
        b.register_forward_hook(lambda m, a, out, i=i: ref.setdefault(i, block_output(out)))
        for i, b in enumerate(blocks)
    ]
    with torch.no_grad():
        model(calib_ids)
        for h in handles:
            h.remove()
        batches = capture_block_inputs(model, blocks[0], calib_ids, 8)
        kwargs = capture_block_kwargs(model, blocks, calib_ids, 8)
        for i, block in enumerate(blocks):
            batches = run_block(block, with_block_kwargs(batches, kwargs, i))
            torch.testing.assert_close(batches[0][0], ref[i])


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_v_to_o_fold_with_grouped_query_attention(family, calib_ids):
    """4 query heads read 2 kv heads (n_rep = 2): dividing v_proj's row (c, d) by s_(c, d) and
    multiplying o_proj's column (h, d) by s_(h // 2, d) preserves the function; a scale that differs
    between the query heads of one kv head cannot be folded (it would need two v_proj rows), so the
    scale is one per kv-head channel, computed from the max over the heads that share it."""
    from fptq.quant.transforms.fold import heads_from_kv

    model = tiny_model(family)
    cfg = model.config
    assert cfg.num_attention_heads == 2 * cfg.num_key_value_heads
    hd = head_dim(cfg)
    attn = model.get_submodule(arch_of(model).blocks)[0].self_attn
    with torch.no_grad():
        ref = model(calib_ids).logits
        s = torch.rand(cfg.num_key_value_heads * hd, generator=torch.Generator().manual_seed(0)) * 4 + 0.25
        fold_scale(attn.v_proj, [attn.o_proj], s, "attention", head_dim=hd)
        out = model(calib_ids).logits
        assert float((out - ref).norm() / ref.norm()) < 1e-5
        # expansion order: query head h uses kv head h // n_rep (transformers' repeat_kv)
        e = heads_from_kv(torch.tensor([1.0, 2.0]), 2, 1)
        assert e.tolist() == [1.0, 1.0, 2.0, 2.0]
        # the other head order (query head h on kv head h % n_kv) is not the function
        wrong = tiny_model(family)
        wattn = wrong.get_submodule(arch_of(wrong).blocks)[0].self_attn
        wattn.v_proj.weight.div_(s.unsqueeze(1))
        wattn.o_proj.weight.mul_(s.reshape(-1, hd).repeat(2, 1).reshape(-1))
        broken = wrong(calib_ids).logits
        assert float((broken - ref).norm() / ref.norm()) > 1e-2
