"""Equalization transforms leave the fp32 function unchanged (relative error < 1e-5)."""

import pytest
import torch

from conftest import tiny_model
from fptq.arch import arch_of
from fptq.calibration import capture_block_inputs, collect_stats, run_block
from fptq.granularity import GroupLayout
from fptq.primitives import Grid
from fptq.transforms import fold_scale, lae_scale, smoothquant_scale
from fptq.transforms.awq import awq_scale

FAMILIES = ["llama", "qwen2", "gemma", "opt", "bloom"]


def _fold_every_group(model, ids, make_scale):
    arch = arch_of(model)
    blocks = model.get_submodule(arch.blocks)
    batches = capture_block_inputs(model, blocks[0], ids, 4)

    for block in blocks:
        linears = {n: m for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
        stats = collect_stats(block, linears, batches)
        for g in arch.groups:
            s = make_scale(stats[g.linears[0]], [linears[m].weight for m in g.linears])
            fold_scale(block.get_submodule(g.source), [linears[m] for m in g.linears], s, g.kind)
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
