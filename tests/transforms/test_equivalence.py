"""Equalization transforms leave the fp32 function unchanged (relative error < 1e-5)."""

import pytest
import torch

from conftest import tiny_model
from fptq.arch import arch_of
from fptq.calibration import (
    block_output,
    capture_block_inputs,
    capture_block_kwargs,
    collect_stats,
    mixed_layer_types,
    run_block,
    with_block_kwargs,
)
from fptq.granularity import GroupLayout
from fptq.primitives import Grid
from fptq.transforms import fold_scale, lae_scale, smoothquant_scale
from fptq.transforms.awq import awq_scale

FAMILIES = ["llama", "qwen2", "gemma", "gemma2", "gemma3", "phi3", "opt", "bloom"]


def _fold_every_group(model, ids, make_scale):
    arch = arch_of(model)
    blocks = model.get_submodule(arch.blocks)
    batches = capture_block_inputs(model, blocks[0], ids, 4)
    kwargs = capture_block_kwargs(model, blocks, ids, 4)

    for i, block in enumerate(blocks):
        batches = with_block_kwargs(batches, kwargs, i)
        linears = {n: m for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
        stats = collect_stats(block, linears, batches)
        for g in arch.groups:
            s = make_scale(stats[g.linears[0]], [linears[m].weight for m in g.linears])
            fold_scale(block.get_submodule(g.source), [linears[m] for m in g.linears], s, g.kind, g.part)
        batches = run_block(block, batches)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("transform", ["lae", "smoothquant", "awq"])
def test_transform_preserves_logits(family, transform, calib_ids):
    model = tiny_model(family)
    with torch.no_grad():
        ref = model(calib_ids).logits
    make = {
        "lae": lambda st, ws: lae_scale(st.absmax),
        "smoothquant": lambda st, ws: smoothquant_scale(st.absmax, ws, 0.5),
        "awq": lambda st, ws: awq_scale(st.sample_tensor(), ws, Grid(4), GroupLayout(ws[0].shape[1], 32), 4),
    }[transform]
    _fold_every_group(model, calib_ids, make)
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
    _fold_every_group(model, calib_ids, lambda st, ws: lae_scale(st.absmax))
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
