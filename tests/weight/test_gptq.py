import logging

import pytest
import torch

from fptq.granularity import GroupLayout
from fptq.primitives import dequantize_weight
from fptq.weight import gptq_quantize, rtn_quantize
from fptq.weight.gptq import hessian_inverse_cholesky


def _correlated(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d // 4, generator=g)
    return base.repeat_interleave(4, 1) + 0.1 * torch.randn(n, d, generator=g)


def _out_err(X, W, q, s, z, layout):
    return float((X @ W.T - X @ dequantize_weight(q, s, z, layout).T).pow(2).mean())


@pytest.mark.parametrize(
    "shape, group, act_order",
    [((6, 8), None, False), ((32, 64), 16, False), ((32, 64), 16, True), ((32, 60), 16, False)],
)
def test_gptq_output_error_not_worse_than_rtn(shape, group, act_order):
    out, inp = shape
    X = _correlated(512, inp)
    W = torch.randn(out, inp, generator=torch.Generator().manual_seed(1))
    H = 2 * X.T @ X / X.shape[0]
    layout = GroupLayout(inp, group or inp)  # None: per output channel
    q, s, z = gptq_quantize(W, H, 4, layout, True, act_order=act_order, block_size=16)
    rq, rs, rz = rtn_quantize(W, 4, layout, True)
    assert q.shape == W.shape and s.shape == rs.shape == (out, layout.n_groups)
    assert q.min() >= -8 and q.max() <= 7
    assert _out_err(X, W, q, s, z, layout) <= _out_err(X, W, rq, rs, rz, layout)


def test_identity_hessian_is_rtn():
    W = torch.randn(8, 16, generator=torch.Generator().manual_seed(2))
    q, s, z = gptq_quantize(W, torch.eye(16), 4, GroupLayout(16, 16), False)
    rq, rs, rz = rtn_quantize(W, 4, GroupLayout(16, 16), False)
    assert torch.equal(q, rq) and torch.allclose(s, rs)


def test_cholesky_failure_retries_with_more_damping(caplog):
    H = -torch.eye(4)  # indefinite: damp 0.01 and 0.1 of mean(diag) = 1.75 are not enough, 1.0 is
    H[0, 0] = 10.0
    with caplog.at_level(logging.WARNING):
        U = hessian_inverse_cholesky(H, 0.01, name="layer.x")
    assert torch.isfinite(U).all()
    assert sum("retrying" in r.message for r in caplog.records) == 2


def test_cholesky_gives_up_naming_the_layer():
    with pytest.raises(RuntimeError, match="layer.y"):
        hessian_inverse_cholesky(-100 * torch.eye(4), 0.01, retries=1, name="layer.y")
