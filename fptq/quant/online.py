"""Online ops: what `QuantLinear` applies to its input before quantizing it (its input-transform slot).

An op R is function-preserving with its linear's weight fused offline: y = x W^T = R(x) W'^T,
so W' = `fuse_weight(W)`. For an orthogonal matrix Q (R(x) = x Q) that is W' = W Q. The slot is how
rotations that cannot be folded into a neighbour (QuaRot's R4 Hadamard before down_proj, arXiv
2404.00456) reach the quantizer: the activation is rotated at run time, then quantized.

Each op kind is registered in `ONLINE_OPS`; an op records itself (`to_config`) in a saved
checkpoint's layer config and its tensors are buffers of the QuantLinear (saved with it), so a
reloaded model computes the same logits.
"""

import zlib
from typing import Any, Dict

import torch
import torch.nn as nn

from fptq.quant.hadamard import factor, fwht, hadamard_matrix
from fptq.registry import Registry

ONLINE_OPS: Registry = Registry("online op")


class OnlineOp(nn.Module):
    kind = ""

    def fuse_weight(self, W: torch.Tensor) -> torch.Tensor:
        """W' with F.linear(self(x), W') == F.linear(x, W) (in exact arithmetic)."""
        raise NotImplementedError

    def matrix(self) -> torch.Tensor:
        """The op as a dense float64 (n, n) matrix Q: op(x) = x Q (offline fusion, tests)."""
        raise NotImplementedError

    def to_config(self) -> Dict[str, Any]:
        return {"kind": self.kind}

    @classmethod
    def skeleton(cls, cfg: Dict[str, Any], in_features: int, device=None) -> "OnlineOp":
        """An op of this kind with empty buffers of the right shapes (load_state_dict fills them)."""
        raise NotImplementedError


def op_from_config(cfg: Dict[str, Any], in_features: int, device=None) -> OnlineOp:
    return ONLINE_OPS.get(cfg["kind"]).skeleton(cfg, in_features, device)


@ONLINE_OPS.register("orthogonal")
class Orthogonal(OnlineOp):
    """x -> x Q with a stored orthogonal Q (in, in), float32."""

    kind = "orthogonal"

    def __init__(self, Q: torch.Tensor):
        super().__init__()
        self.register_buffer("Q", Q.float().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.Q.dtype) @ self.Q).to(x.dtype)

    def fuse_weight(self, W: torch.Tensor) -> torch.Tensor:
        return (W.double() @ self.Q.double()).to(W.dtype)

    def matrix(self) -> torch.Tensor:
        return self.Q.double()

    def to_config(self) -> Dict[str, Any]:
        return {"kind": self.kind, "n": self.Q.shape[0]}

    @classmethod
    def skeleton(cls, cfg, in_features, device=None):
        n = cfg.get("n", in_features)
        return cls(torch.empty(n, n, device=device))

    def extra_repr(self) -> str:
        return f"n={self.Q.shape[0]}"


@ONLINE_OPS.register("hadamard")
class Hadamard(OnlineOp):
    """x -> fwht(x * D) = x diag(D) H_n^T / sqrt(n): a (randomized) Hadamard rotation in O(n log n)
    (`fptq.quant.hadamard.fwht`; QuaRot's online Hadamard, arXiv 2404.00456 Sec. 4). D is a +-1
    sign vector (QuaRot's randomized Hadamard) or absent (all ones). Nothing dense is stored."""

    kind = "hadamard"

    def __init__(self, n: int, signs: torch.Tensor = None):
        super().__init__()
        self.n = n
        if factor(n) is None:
            raise ValueError(f"no Hadamard matrix of order {n} is known here (fptq.quant.hadamard)")
        if signs is not None:
            self.register_buffer("D", signs.float().contiguous())
        else:
            self.D = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fwht(x if self.D is None else x * self.D.to(x.dtype))

    def fuse_weight(self, W: torch.Tensor) -> torch.Tensor:
        return (W.double() @ self.matrix()).to(W.dtype)

    def matrix(self) -> torch.Tensor:
        H = hadamard_matrix(self.n).T
        return H if self.D is None else self.D.double().unsqueeze(1) * H

    def to_config(self) -> Dict[str, Any]:
        return {"kind": self.kind, "n": self.n, "signs": self.D is not None}

    @classmethod
    def skeleton(cls, cfg, in_features, device=None):
        n = cfg.get("n", in_features)
        return cls(n, torch.empty(n, device=device) if cfg.get("signs") else None)

    def extra_repr(self) -> str:
        return f"n={self.n}, signs={self.D is not None}"


def random_signs(n: int, seed: int, name: str = "") -> torch.Tensor:
    """A deterministic +-1 vector from (seed, name): the D of a randomized Hadamard."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()) + 7)
    return torch.randint(0, 2, (n,), generator=gen, dtype=torch.float64) * 2 - 1


def random_orthogonal(n: int, seed: int, name: str = "") -> torch.Tensor:
    """A Haar-random orthogonal (n, n) matrix, float64, from (seed, name): QR of a Gaussian with the
    signs of R's diagonal moved into Q (Mezzadri 2007), so each layer gets its own deterministic one."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    A = torch.randn(n, n, generator=gen, dtype=torch.float64)
    Q, R = torch.linalg.qr(A)
    return Q * torch.sign(torch.diagonal(R)).unsqueeze(0)


def install(linear: nn.Linear, op: OnlineOp):
    """Fuse `op` into a float linear and apply it to the linear's input from now on (a forward
    pre-hook, registered before any calibration hook, so statistics see the transformed input).
    Returns the hook handle; the QuantLinear that replaces the linear carries `op` in its slot."""
    with torch.no_grad():
        linear.weight.copy_(op.fuse_weight(linear.weight))
    op.to(linear.weight.device)
    return linear.register_forward_pre_hook(lambda m, args: (op(args[0]), *args[1:]))
