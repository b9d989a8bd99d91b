"""`spinquant`: learned rotations (Liu et al. 2024, SpinQuant, arXiv 2405.16406).

R1 (residual, hidden x hidden) and R2 (per layer, head_dim x head_dim) are optimised on the
orthogonal manifold (Cayley SGD, Li et al. 2020, arXiv 2002.01113) to minimise the next-token loss
of the W4A8 fake-quantized model on calibration rows, starting from QuaRot's randomized Hadamard.
R3 and R4 stay fixed Hadamards (as in the paper). The learned matrices are then fused exactly as
QuaRot's (`fptq.quant.transforms.quarot.rotate`), and the scheme's own quantizers follow.

Training forward (the model's residual stays unrotated; each linear sees its rotated operands):
- a norm-fed linear computes Q_a(x R1) Q_w(W R1)^T (v_proj: rows per head by R2^T as well);
- o_proj reads v's R2-rotated heads: Q_a(x) Q_w(R1^T W blockdiag(R2))^T, then R1^T back to the
  residual; down_proj reads H4 x: Q_a(x H4) Q_w(R1^T W H4)^T, then R1^T. Sandwich post-norm
  families (Gemma-2/3) keep their writers unrotated on the output side (their R1 runs after the norm);
- Q_w: round to nearest on the scheme's weight grid; Q_a: per-token dynamic at the scheme's
  activation bits; both with the straight-through estimator.
In float every product equals the original layer's, so the start is the Hadamard-rotated model.

Sized for a CPU by default (20 steps of 2 x 256 tokens: a few minutes on SmolLM2); the paper's
settings (100 steps, 8 x 2048 tokens, lr 1.5) run unchanged with steps=100 batch=8 seqlen=2048.
Departures: no KV quantization in the training forward; weights RTN inside the loss (the paper
trains with RTN too and applies GPTQ afterwards, which `weight=..._gptq` reproduces).
"""

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from fptq.quant.hadamard import fwht
from fptq.quant.kv import head_dim
from fptq.quant.methods import TRANSFORMS, check, one_of
from fptq.quant.online import Orthogonal
from fptq.quant.primitives import fake_quant_act_per_token, fake_quant_weight
from fptq.quant.rotation import FALLBACKS, erased_channels, fuse_norms, make_rotation, untie
from fptq.quant.transforms.quarot import RotationTransform, qk_op, residual_rotation, rotate


@dataclass(frozen=True)
class SpinQuantSettings:
    steps: int = 20
    lr: float = 1.5  # the paper's Cayley SGD learning rate
    batch: int = 2  # calibration sequences per step
    seqlen: int = 256  # tokens per sequence (the first seqlen of each calibration row)
    learn_r2: bool = True
    r3: bool = True
    r4: bool = True
    fallback: str = "none"
    seed: int = 0
    keep_erased: bool = False  # channels a norm erases stay out of R1, also while learning it

    def __post_init__(self):
        check(self.steps >= 0, f"spinquant.steps must be >= 0, got {self.steps}")
        check(self.lr > 0, f"spinquant.lr must be > 0, got {self.lr}")
        check(self.batch >= 1 and self.seqlen >= 2, "spinquant.batch >= 1 and spinquant.seqlen >= 2")
        one_of(self.fallback, FALLBACKS, "spinquant.fallback")


def ste(x: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    """Straight-through: the value of xq, the gradient of x."""
    return x + (xq - x).detach()


def cayley_step(R: torch.Tensor, G: torch.Tensor, lr: float) -> torch.Tensor:
    """One Cayley SGD step on the orthogonal manifold (Li et al. 2020, Eq. 4; SpinQuant Sec. 3.2):
    A = G R^T - R G^T (skew), R' = (I + lr/2 A)^-1 (I - lr/2 A) R. R' is exactly orthogonal."""
    R64, G64 = R.double(), G.double()
    A = G64 @ R64.T - R64 @ G64.T
    eye = torch.eye(R.shape[0], dtype=torch.float64, device=R.device)
    return torch.linalg.solve(eye + (lr / 2) * A, (eye - (lr / 2) * A) @ R64).to(R.dtype)


class _Rotated(nn.Module):
    """A linear during training: its operands rotated by the current R1/R2 (see module docstring)."""

    def __init__(self, lin: nn.Linear, role: str, spin: "_Spin", layer: int, v_rows: Optional[slice]):
        super().__init__()
        self.lin, self.role, self.layer, self.v_rows = lin, role, layer, v_rows
        self.__dict__["spin"] = spin  # not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spin
        W, b = self.lin.weight, self.lin.bias
        R1 = s.R1
        back = False
        if self.role == "reader":
            x, W = x @ R1, W @ R1
            if self.v_rows is not None and s.R2 is not None:
                W, b = s.rotate_v(W, b, self.v_rows, self.layer)
        elif self.role in ("o_proj", "down"):
            if self.role == "o_proj" and s.R2 is not None:
                R2 = s.R2[self.layer]
                W = (W.reshape(W.shape[0], -1, R2.shape[0]) @ R2).reshape(W.shape)
            if self.role == "down" and s.r4:
                x, W = fwht(x), fwht(W)
            if not s.post_norms:
                W, b, back = R1.T @ W, (None if b is None else b @ R1), True
        if s.a_bits:
            x = ste(x, fake_quant_act_per_token(x, s.a_bits, s.a_rule))
        if s.w_spec is not None:
            w = s.w_spec
            W = ste(W, fake_quant_weight(W, w.grid, w.layout(W.shape[1])))
        y = F.linear(x, W, b)
        return y @ R1.T if back else y


class _Spin:
    """The trainable rotations and what the training forward needs to know."""

    def __init__(self, R1, R2, scheme, config, post_norms: bool, r4: bool):
        self.R1, self.R2 = R1, R2
        self.w_spec = scheme.weight
        self.a_bits = scheme.act.bits if scheme.act is not None else 0
        self.a_rule = scheme.act.scale_rule if scheme.act is not None else "max"
        self.hd = head_dim(config)
        self.post_norms, self.r4 = post_norms, r4

    def rotate_v(self, W, b, rows: slice, layer: int):
        R2 = self.R2[layer]
        Wv = W[rows].reshape(-1, self.hd, W.shape[1])
        Wv = torch.einsum("ji,hjk->hik", R2, Wv).reshape(-1, W.shape[1])
        W = torch.cat([W[: rows.start], Wv, W[rows.stop :]], 0)
        if b is not None:
            bv = (b[rows].reshape(-1, self.hd) @ R2).reshape(-1)
            b = torch.cat([b[: rows.start], bv, b[rows.stop :]], 0)
        return W, b


def _v_rows(arch, config, name: str) -> Optional[slice]:
    hd = head_dim(config)
    nh = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or nh
    if arch.qkv_proj and name == arch.qkv_proj:
        return slice((nh + kv) * hd, (nh + 2 * kv) * hd)
    if name == arch.v_proj:
        return slice(0, kv * hd)
    return None


def _wrap(model, arch, spin: _Spin) -> List[tuple]:
    """Swap every decoder linear for its training-time rotated form; returns what to restore."""
    swapped = []
    for li, block in enumerate(model.get_submodule(arch.blocks)):
        readers = {n for g in arch.norm_groups() for n in g.linears}
        for name, role in [
            *((n, "reader") for n in readers),
            (arch.o_proj, "o_proj"),
            (arch.down_proj, "down"),
        ]:
            lin = block.get_submodule(name)
            v = _v_rows(arch, model.config, name) if role == "reader" else None
            block.set_submodule(name, _Rotated(lin, role, spin, li, v))
            swapped.append((block, name, lin))
    return swapped


def _loss(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids, use_cache=False).loss


@TRANSFORMS.register
class SpinQuant(RotationTransform):
    name = "spinquant"
    Settings = SpinQuantSettings

    def rotations(self, settings: SpinQuantSettings) -> tuple:
        return "hadamard", "hadamard"  # learned from Hadamards; R3/R4 stay fixed ones

    def apply_model(self, model, arch, settings: SpinQuantSettings, ctx) -> Dict[str, Any]:
        s = settings
        if ctx.calib_ids is None:
            raise ValueError("spinquant learns its rotations on calibration rows; it needs calibration ids")
        built = self.check_model(model.config, arch, s)
        keep = erased_channels(model, arch) if s.keep_erased else []
        r1_op, built["r1"] = residual_rotation(
            model, arch, "hadamard", s.fallback, s.seed, s.keep_erased, "spinquant.r1"
        )
        untied = untie(model)
        fuse_norms(model, arch)
        n_layers = len(model.get_submodule(arch.blocks))
        dev = next(model.parameters()).device
        R1 = r1_op.matrix()
        mask = torch.ones_like(R1)  # the learned part: every channel but the erased ones
        mask[keep, :] = 0
        mask[:, keep] = 0
        R2 = [
            make_rotation(
                head_dim(model.config), "hadamard", s.fallback, s.seed, f"spinquant.r2.{i}"
            ).matrix()
            for i in range(n_layers)
        ]
        R1 = R1.float().to(dev).requires_grad_(s.steps > 0)
        R2 = [r.float().to(dev).requires_grad_(s.steps > 0 and s.learn_r2) for r in R2]
        spin = _Spin(R1, R2, ctx.scheme, model.config, bool(arch.post_norms), s.r4)
        ids = ctx.calib_ids[:, : s.seqlen].to(dev)
        held = ids[-s.batch :]  # the same rows measure the loss before and after
        train = ids[: -s.batch] if ids.shape[0] > s.batch else ids
        frozen = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in frozen:
            p.requires_grad_(False)
        swapped = _wrap(model, arch, spin)
        t0 = time.perf_counter()
        try:
            with torch.enable_grad():
                with torch.no_grad():
                    loss_start = _loss(model, held).item()
                bar = tqdm(range(s.steps), desc="spinquant (Cayley SGD)", disable=not ctx.progress)
                for step in bar:
                    rows = torch.arange(step * s.batch, (step + 1) * s.batch) % train.shape[0]
                    loss = _loss(model, train[rows])
                    params = [spin.R1, *(spin.R2 if s.learn_r2 else [])]
                    grads = torch.autograd.grad(loss, params)
                    with torch.no_grad():
                        g1 = grads[0] * mask.to(grads[0].dtype)  # A stays zero on the kept channels
                        spin.R1 = cayley_step(spin.R1, g1, s.lr).requires_grad_(True)
                        if s.learn_r2:
                            spin.R2 = [
                                cayley_step(r, g, s.lr).requires_grad_(True)
                                for r, g in zip(spin.R2, grads[1:], strict=True)
                            ]
                    bar.set_postfix(loss=f"{loss.item():.3f}")
                with torch.no_grad():
                    loss_end = _loss(model, held).item()
        finally:
            for block, name, lin in swapped:
                block.set_submodule(name, lin)
            for p, req in frozen:
                p.requires_grad_(req)
        seconds = time.perf_counter() - t0
        r1_op = Orthogonal(spin.R1.detach().double())
        r2_ops = [Orthogonal(r.detach().double()) for r in spin.R2]
        info = rotate(model, arch, r1_op, r2_ops, qk_op(model.config, s.r3, s.fallback, s.seed))
        orth = (
            (r1_op.Q.double() @ r1_op.Q.double().T - torch.eye(r1_op.Q.shape[0], dtype=torch.float64))
            .abs()
            .max()
        )
        return {
            **built,
            **info,
            "untied_bytes": untied,
            "r1": "learned from " + built["r1"],
            "r2": ("learned from " if s.learn_r2 else "") + built["r2"],
            "steps": s.steps,
            "tokens_per_step": s.batch * ids.shape[1],
            "loss_start": loss_start,
            "loss_end": loss_end,
            "train_seconds": seconds,
            "r1_orthogonality_error": orth.item(),
        }
