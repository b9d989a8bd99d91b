"""Hadamard matrices of the sizes LLMs have, and a fast Walsh-Hadamard transform.

QuaRot (Ashkboos et al. 2024, arXiv 2404.00456, Sec. 3 and its `hadamard_utils`) rotates with
H_n / sqrt(n) where n = m * 2^k: a known Hadamard of small order m Kronecker a Sylvester one,
H_n = H_m (x) H_{2^k}. Applied to x (..., n) viewed as (..., m, 2^k), that is a butterfly transform
over the last axis (k stages, O(n log n)) and a dense (m, m) product over the other.

Base orders here (m = 1 is Sylvester alone), built, not stored:
- Paley I: q prime, q = 3 (mod 4): order q + 1 (4, 8, 12, 20, 24, 32, 44, 48, 60, 68, 72, 80, 84...)
- Paley II: q prime, q = 1 (mod 4): order 2 (q + 1) (12, 28, 36, 60, 76, 84, 108, 124...)
(Paley 1933; the Jacobsthal matrix Q_ij = chi(j - i), chi the quadratic character mod q.)
Every order is checked to satisfy H H^T = n I before it is used.

Sizes met: SmolLM2-135M hidden 576 = 36 x 16 (Paley II, q = 17), FFN 1536 = 12 x 128 (Paley I,
q = 11), heads 64; Gemma-3-270m hidden 640 = 20 x 32 (Paley I, q = 19), FFN 2048, heads 256.
"""

import functools
import math
from typing import Optional, Tuple

import torch

MAX_BASE = 256  # the largest small order searched for (a dense (m, m) product per row)


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, int(math.isqrt(q)) + 1))


def _jacobsthal(q: int) -> torch.Tensor:
    squares = {(i * i) % q for i in range(1, q)}
    chi = torch.tensor([0] + [1 if a in squares else -1 for a in range(1, q)], dtype=torch.float64)
    idx = (torch.arange(q).unsqueeze(0) - torch.arange(q).unsqueeze(1)) % q  # j - i
    return chi[idx]


def _paley1(q: int) -> torch.Tensor:
    """Order q + 1 for a prime q = 3 (mod 4): H = I + S, S = [[0, 1^T], [-1, Q]] (skew)."""
    n = q + 1
    S = torch.zeros(n, n, dtype=torch.float64)
    S[0, 1:] = 1
    S[1:, 0] = -1
    S[1:, 1:] = _jacobsthal(q)
    return torch.eye(n, dtype=torch.float64) + S


def _paley2(q: int) -> torch.Tensor:
    """Order 2 (q + 1) for a prime q = 1 (mod 4): C = [[0, 1^T], [1, Q]] (symmetric conference
    matrix); H = C (x) [[1, 1], [1, -1]] + I (x) [[1, -1], [-1, -1]]."""
    n = q + 1
    C = torch.zeros(n, n, dtype=torch.float64)
    C[0, 1:] = 1
    C[1:, 0] = 1
    C[1:, 1:] = _jacobsthal(q)
    A = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    B = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    return torch.kron(C, A) + torch.kron(torch.eye(n, dtype=torch.float64), B)


def _sylvester(n: int) -> torch.Tensor:
    H = torch.ones(1, 1, dtype=torch.float64)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H


@functools.cache
def base_hadamard(m: int) -> Optional[torch.Tensor]:
    """A (+-1) Hadamard matrix of order m from the constructions above, or None."""
    if m >= 1 and m & (m - 1) == 0:
        H = _sylvester(m)
    elif m % 4 == 0 and _is_prime(m - 1) and (m - 1) % 4 == 3:
        H = _paley1(m - 1)
    elif m % 4 == 0 and m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        H = _paley2(m // 2 - 1)
    else:
        return None
    if not torch.equal(H @ H.T, m * torch.eye(m, dtype=torch.float64)):
        raise AssertionError(f"the Hadamard construction of order {m} is not orthogonal")
    return H


def factor(n: int) -> Optional[Tuple[int, int]]:
    """(m, 2^k) with n = m * 2^k, H_m known and m smallest, or None if no construction here fits."""
    two = n & -n  # the largest power of two dividing n
    odd = n // two
    p = 1
    while odd * p <= min(n, MAX_BASE):
        m = odd * p
        if base_hadamard(m) is not None:
            return m, n // m
        p *= 2
    return None


def hadamard_matrix(n: int, dtype=torch.float64) -> torch.Tensor:
    """The orthonormal H_n / sqrt(n) = (H_m (x) H_{2^k}) / sqrt(n); an error if none is known."""
    f = factor(n)
    if f is None:
        raise ValueError(
            f"no Hadamard matrix of order {n} is known here (n = m * 2^k with m a Sylvester or "
            f"Paley order <= {MAX_BASE}); choose the random orthogonal fallback for this size"
        )
    m, p = f
    return (torch.kron(base_hadamard(m), _sylvester(p)) / math.sqrt(n)).to(dtype)


def fwht(x: torch.Tensor) -> torch.Tensor:
    """x (..., n) -> x H_n^T / sqrt(n) (= x H_n / sqrt(n): H_m (x) H_2^k with the Paley orders is
    not symmetric, so this is the transpose's product), in O(n log n): butterflies over the 2^k
    axis, one dense (m, m) product over the m axis. Float32 accumulation for half inputs."""
    n = x.shape[-1]
    f = factor(n)
    if f is None:
        raise ValueError(f"no Hadamard matrix of order {n} is known here")
    m, p = f
    shape, dtype = x.shape, x.dtype
    y = x.reshape(-1, m, p).to(torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype)
    h = 1
    while h < p:  # Sylvester butterflies: pairs (j, j + h) within blocks of 2h
        y = y.reshape(-1, m, p // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        y = torch.stack([a + b, a - b], dim=-2)
        h *= 2
    y = y.reshape(-1, m, p)
    if m > 1:
        Hm = base_hadamard(m).to(y.dtype)
        y = torch.einsum("ij,bjp->bip", Hm, y)
    return (y.reshape(shape) / math.sqrt(n)).to(dtype)


def _kernel_base(n: int):
    """(m, the m x m base matrix or None) of order n, for the Triton kernels."""
    f = factor(n)
    if f is None:
        raise ValueError(f"no Hadamard matrix of order {n} is known here")
    return f[0], (base_hadamard(f[0]) if f[0] > 1 else None)


def fwht_triton(x: torch.Tensor) -> torch.Tensor:
    """`fwht` by the Triton kernel (`fptq.kernels.hadamard`; on CPU under TRITON_INTERPRET=1)."""
    from fptq.kernels.hadamard import fwht as kernel

    return kernel(x, *_kernel_base(x.shape[-1]))


def fwht_quant_triton(x: torch.Tensor, static_scale=None, bits: int = 8, signs: torch.Tensor = None):
    """int8 codes and scales of `fwht(x * signs)` in one Triton launch (`fptq.kernels.hadamard.fwht_quant`)."""
    from fptq.kernels.hadamard import fwht_quant

    m, hm = _kernel_base(x.shape[-1])
    return fwht_quant(x, m, hm, static_scale, bits, signs=signs)
