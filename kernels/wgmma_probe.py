"""A probe of the compiler, not of our kernels: does Triton keep wgmma asynchronous across K-tiles?

The canonical Hopper matmul (both operands through TMA tensor descriptors, one `tl.dot` per K-tile,
the accumulator carried) compiled for sm_90a in fp16 and in int8. Triton 3.9.0 keeps one wgmma group
in flight in fp16 (`WARPGROUP.DEPBAR.LE gsb0, 0x1` in the loop) but waits for every group in int8
(`0x0`): integer wgmma is not pipelined by the compiler, whatever the kernel does. That caps the
prefill loops of kernels/gemm.py (benchmarks/kernels_static.md, lower bound). `python -m
fptq.kernels.sm90 --probe` (sm90.wgmma_waits) prints the waits; tests/kernels/test_sm90.py records them, so a Triton that
lifts the limit shows up as a failing test.
"""

import triton
import triton.language as tl


@triton.jit
def _probe_matmul(X, B, C, M, N, K, stride_xm, stride_bn, stride_cm,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    pid_m = pid // tl.cdiv(N, BLOCK_N)
    pid_n = pid % tl.cdiv(N, BLOCK_N)
    if X.dtype.element_ty == tl.float16:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    xd = tl.make_tensor_descriptor(X, shape=[M, K], strides=[stride_xm, 1], block_shape=[BLOCK_M, BLOCK_K])
    bd = tl.make_tensor_descriptor(B, shape=[N, K], strides=[stride_bn, 1], block_shape=[BLOCK_N, BLOCK_K])
    for k0 in range(0, K, BLOCK_K):
        acc = tl.dot(xd.load([pid_m * BLOCK_M, k0]), tl.trans(bd.load([pid_n * BLOCK_N, k0])), acc)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(C + rm[:, None] * stride_cm + rn[None, :], acc.to(tl.float32).to(C.dtype.element_ty))
