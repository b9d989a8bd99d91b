"""W4A8 and W8A8 GEMM: C = (A_q * a_scale) @ dequant(W)^T, int8 x int8 -> int32 on the tensor cores.

Weights are read in the packed format of kernels/reference.py (K-contiguous; int4 in 64-wide
chunks whose halves share bytes). A K-tile of BLOCK_K loads one contiguous (BLOCK_N, BLOCK_K/2)
byte slice per row; the high nibbles are `b & 0xF0` and the low ones `b << 4`, both 16 x the code,
and the 1/16 is folded into the scale (on a GPU each is one 32-bit op on four bytes, inline PTX
behind the ASM constexpr that the interpreter leaves off). The two halves multiply A's columns
{64c + j} and {64c + 32 + j}, j < 32: contiguous 32-byte runs, so A needs no byte gathers.

Accumulation: one int32 accumulator chained through the dots of a K-tile. Per output channel
(GROUP = 0) it runs over all of K and is scaled once in the epilogue (the prefill fast path: no
float accumulator in the loop). Per group it is scaled into a float32 accumulator once per tile
(GROUP a multiple of BLOCK_K), or per half-tile for GROUP = 32 (BLOCK_K = 64: each half is a group).
Asymmetric weights subtract z * rowsum(A) per group; zero points are int8, codes centred.

Activations: int8 codes with one float32 scale per row (`gemm`), or (FUSE, decode-sized M) float
activations quantized inside the K loop (`gemm_fused`): one launch per linear. With a static
per-tensor scale the loop multiplies by its reciprocal; per token, a prologue takes each row's
absmax over all of K with the same tile shape and pointers as the loop's A tiles. That keeps the
quantization in the load's layout: a row vector of scales made elsewhere let the compiler move it
after the conversion to the MMA operand layout, where the 4 warps repeat the A tile (2.3x the
loop's instructions, measured with the sm_90a tier).

Split-K (decode shapes give too few (M, N) tiles to fill the GPU): SPLIT_K programs per tile each
add a partial result into a float32 workspace with relaxed atomics, then count themselves on a
per-tile semaphore; the last one reads the sum, adds the bias, casts, stores, and leaves the
workspace and the semaphore zeroed for the next call (one launch, one reduce-and-cast).

On CPU set TRITON_INTERPRET=1 before importing this module (one config, no autotuning).
"""

import torch
import triton
import triton.language as tl

from . import configs as _cfg
from .reference import PackedWeight, storage_bits

INTERPRET = _cfg.interpreting()  # fixed at import, as the decorators below are
FUSE_MAX_M = 16  # a static activation scale is applied inside the GEMM up to this many rows
# per-token quantization inside the GEMM re-reads each row in every program: worth one launch at
# M = 1 only (benchmarks/kernels_static.md: 3.9x over bf16 at M = 1, 1.9x at M = 4 on o_proj)
FUSE_TOKEN_MAX_M = 1
MAX_K_PER_CHANNEL = (2**31 - 1) // 2**14  # |a| <= 128, |16 q| <= 128: K terms must fit int32
_FIXED = False  # use_fixed_configs(): configs.pick instead of the autotuner


def use_fixed_configs(on: bool = True) -> None:
    """Launch every GEMM with `configs.pick` (one compile per config, no autotune timing), as the
    GPU check does to fit its time budget; off again with on=False."""
    global _FIXED
    _FIXED = bool(on)


@triton.jit
def _unpack_lo(b, ASM: tl.constexpr):
    """Low nibbles of int8 bytes as int8 16 x code."""
    if ASM:
        return tl.inline_asm_elementwise(
            "{ .reg .b32 t; shl.b32 t, $1, 4; and.b32 $0, t, 0xF0F0F0F0; }",
            "=r,r",
            [b],
            dtype=tl.int8,
            is_pure=True,
            pack=4,
        )
    else:
        return (b << 4).to(tl.int8)


@triton.jit
def _unpack_hi(b, ASM: tl.constexpr):
    """High nibbles of int8 bytes as int8 16 x code."""
    if ASM:
        return tl.inline_asm_elementwise(
            "and.b32 $0, $1, 0xF0F0F0F0;", "=r,r", [b], dtype=tl.int8, is_pure=True, pack=4
        )
    else:
        return b & -16


# the qoq second level on four weights per 32-bit register (see _qoq_level2): the nibbles to bytes,
# q = nibble ^ 8, p = q * s_g (one multiply, no carries), then p - z s_g bytewise (SWAR)
_QOQ_SCALE_SUB = (
    " xor.b32 q, q, 0x08080808; and.b32 t, $2, 0xFF; mul.lo.u32 p, q, t; or.b32 t, p, 0x80808080; "
    "and.b32 u, $3, 0x7F7F7F7F; sub.u32 t, t, u; xor.b32 u, p, $3; not.b32 u, u; and.b32 u, u, 0x80808080; "
    "xor.b32 $0, t, u; }"
)
_QOQ_LO = tl.constexpr("{ .reg .b32 q, p, t, u; and.b32 q, $1, 0x0F0F0F0F;" + _QOQ_SCALE_SUB)
_QOQ_HI = tl.constexpr("{ .reg .b32 q, p, t, u; shr.b32 q, $1, 4; and.b32 q, q, 0x0F0F0F0F;" + _QOQ_SCALE_SUB)


@triton.jit
def _qoq_level2(b, sg, zs, HIGH: tl.constexpr, ASM: tl.constexpr):
    """The qoq format's integer second level on packed bytes: int8 w8 = (q - z) s_g for the low (or
    HIGH) nibbles of `b`, with sg = s_g and zs = z s_g broadcast per output channel (row).

    Codes are stored centred (c = q - 8, two's complement), so q = nibble ^ 8. On a GPU (ASM) four
    weights per 32-bit register (QServe's register-level parallelism, arXiv 2405.04532 Sec. 5.2):
    q s_g <= 240 fits a byte, so one 32-bit multiply scales four codes without carries, and the
    zero is subtracted bytewise (SWAR: ((p | H) - (zs & ~H)) ^ ((p ^ ~zs) & H), H = 0x80808080);
    the result is the int8 (q - z) s_g, which the format keeps in [-127, 127]. The interpreter takes
    the portable int16 path (the GPU check tests the asm, benchmarks/gpu/check.py)."""
    if ASM:
        if HIGH:
            return tl.inline_asm_elementwise(
                _QOQ_HI, "=r,r,r,r", [b, sg, zs], dtype=tl.int8, is_pure=True, pack=4
            )
        else:
            return tl.inline_asm_elementwise(
                _QOQ_LO, "=r,r,r,r", [b, sg, zs], dtype=tl.int8, is_pure=True, pack=4
            )
    else:
        if HIGH:
            c = b >> 4
        else:
            c = (b << 4).to(tl.int8) >> 4
        q = c.to(tl.int16) + 8
        return (q * sg.to(tl.int16) - zs.to(tl.uint8).to(tl.int16)).to(tl.int8)


@triton.jit
def _round_half_even(x, ASM: tl.constexpr):
    if ASM:
        return tl.inline_asm_elementwise(
            "cvt.rni.f32.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1
        )
    else:
        # floor(x + 0.5), minus one where x sat exactly on a tie and the result is odd (portable)
        q = tl.floor(x + 0.5)
        odd = (q - 2.0 * tl.floor(q * 0.5)) != 0.0
        return tl.where(((q - x) == 0.5) & odd, q - 1.0, q)


@triton.jit
def _act_tile(X, rm, cols, m_ok, k_ok, stride_xm, inv, FUSE: tl.constexpr, ASM: tl.constexpr):
    """An int8 (BLOCK_M, len(cols)) tile of A: loaded, or (FUSE) loaded as float and quantized
    with the reciprocal of the static scale (round half to even, clamp to [-128, 127])."""
    ptrs = X + rm[:, None] * stride_xm + cols[None, :]
    if FUSE:
        x = tl.load(ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)
        q = _round_half_even(x * inv, ASM)
        return tl.minimum(tl.maximum(q, -128.0), 127.0).to(tl.int8)
    else:
        return tl.load(ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0)


@triton.heuristics(
    {"EVEN_K": lambda a: a["K"] % a["BLOCK_K"] == 0, "EVEN_N": lambda a: a["N"] % a["BLOCK_N"] == 0}
)
@triton.jit
def _gemm_kernel(
    X,  # (M, K) int8 codes, or float activations if FUSE
    B,  # packed codes: (N, KB) int8
    C,  # (M, N) out
    XS,  # (M,) float32 activation scales (not FUSE)
    WS,  # (n_groups, N) scales
    WZ,  # (n_groups, N) int8 centred zero points (ASYM)
    CS,  # (N,) float32 per-channel scales (QOQ: WS then holds int8 group scales)
    BIAS,
    WSP,  # (M, N) float32 split-K workspace, zero between calls
    CNT,  # (tiles,) int32 split-K semaphores, zero between calls
    M,
    N,
    K,
    KB,  # bytes per packed row
    M_BUCKET,  # the autotuning key's bucket of M (unused in the body)
    stride_xm,
    stride_cm,
    SS,  # FUSE and STATIC: (1,) float32, the per-tensor activation scale (a device tensor: no host sync)
    GROUP: tl.constexpr,  # 0: per output channel
    W_BITS: tl.constexpr,  # stored bits: 4 or 8
    ASYM: tl.constexpr,
    QOQ: tl.constexpr,  # QServe's progressive weights: w8 = (q - z) s_g in integers, per-channel int8 GEMM
    HAS_BIAS: tl.constexpr,
    RAW: tl.constexpr,  # store the exact int32 accumulators sum a (q - z) (per channel only)
    FUSE: tl.constexpr,
    STATIC: tl.constexpr,
    ASM: tl.constexpr,
    SPLIT_K: tl.constexpr,
    EVEN_K: tl.constexpr,
    EVEN_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    n_tiles_n = tl.cdiv(N, BLOCK_N)
    pid_m = pid // n_tiles_n
    pid_n = pid % n_tiles_n
    HALF: tl.constexpr = BLOCK_K // 2
    MUL: tl.constexpr = 16 if (W_BITS == 4 and not QOQ) else 1  # unpacked int4 codes are 16 x code
    HALF_GROUPS: tl.constexpr = GROUP > 0 and GROUP < BLOCK_K  # GROUP = 32, BLOCK_K = 64
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < N
    # loads use the columns wrapped into range (no masks in the K loop; the wrapped columns of a
    # ragged last block are computed and never stored), stores the mask. No contiguity hint on the
    # wrapped indices: a vector load of the scales would read past N.
    if EVEN_N:
        rn_ld = rn
    else:
        rn_ld = rn % N
    j = tl.arange(0, HALF)
    klo = (j // 32) * 64 + j % 32  # A's columns under the low nibbles (the high ones: + 32)
    # this program's K range: whole tiles, split evenly
    tiles = tl.cdiv(K, BLOCK_K)
    per = tl.cdiv(tiles, SPLIT_K)
    k_begin = pid_k * per * BLOCK_K
    k_end = tl.minimum(k_begin + per * BLOCK_K, K)

    # per-row activation scales: given, or (FUSE) the static per-tensor scale
    if FUSE:
        if STATIC:
            static_scale = tl.load(SS)
            xs = tl.zeros((BLOCK_M,), tl.float32) + static_scale
            inv = 1.0 / static_scale
        else:
            # each valid row's absmax in 1-D chunks, then written into a (BLOCK_M, HALF) tile that
            # has the layout of the K loop's A tiles (a load with their pointers, masked off at run
            # time), so the row scales are a slice of that layout
            tile_ptrs = X + rm[:, None] * stride_xm + j[None, :]
            amax = tl.load(tile_ptrs, mask=(rm[:, None] + M) < 0, other=0.0).to(tl.float32)
            QB: tl.constexpr = 1024
            for r in range(0, tl.minimum(BLOCK_M, M - pid_m * BLOCK_M)):
                row = pid_m * BLOCK_M + r
                m_r = tl.zeros((QB,), tl.float32)
                for q0 in range(0, K, QB):
                    cq = q0 + tl.arange(0, QB)
                    xq = tl.load(X + row * stride_xm + cq, mask=cq < K, other=0.0)
                    m_r = tl.maximum(m_r, tl.abs(xq.to(tl.float32)))
                amax = tl.where(rm[:, None] == row, tl.max(m_r, axis=0), amax)
            xs = tl.maximum(tl.max(amax, axis=1), 1e-8) / 127.0
            inv = (1.0 / xs)[:, None]
    else:
        xs = tl.load(XS + rm, mask=m_ok, other=0.0)
        inv = 1.0  # unused

    acc_i = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    acc_f = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    rowsum = tl.zeros((BLOCK_M,), dtype=tl.int32)
    # group scales (and zeros) one K-tile ahead in the short mma.sync loops (BLOCK_M < 64), where a
    # load issued and used in the same iteration would stall it; the wgmma tiles' asynchronous MMA
    # covers that latency, and prefetching there costs 4% more instructions (measured)
    PREFETCH: tl.constexpr = GROUP > 0 and not HALF_GROUPS and BLOCK_M < 64 and not QOQ
    if PREFETCH:
        first = rn * 0 + k_begin < k_end
        s_next = tl.load(WS + (k_begin // GROUP) * N + rn_ld, mask=first, other=0.0)
        if ASYM:
            z_next = tl.load(WZ + (k_begin // GROUP) * N + rn_ld, mask=first, other=0)
    for k0 in range(k_begin, k_end, BLOCK_K):
        if PREFETCH:
            s_cur = s_next.to(tl.float32)
            k1 = k0 + BLOCK_K
            more = rn * 0 + k1 < k_end
            s_next = tl.load(WS + (k1 // GROUP) * N + rn_ld, mask=more, other=0.0)
            if ASYM:
                z_cur = z_next.to(tl.int32)
                z_next = tl.load(WZ + (k1 // GROUP) * N + rn_ld, mask=more, other=0)
        c_lo = k0 + klo
        c_hi = c_lo + 32
        if EVEN_K:
            lo_ok = c_lo >= 0
            hi_ok = lo_ok
        else:
            lo_ok = c_lo < K
            hi_ok = c_hi < K
        a_lo = _act_tile(X, rm, c_lo, m_ok, lo_ok, stride_xm, inv, FUSE, ASM)
        a_hi = _act_tile(X, rm, c_hi, m_ok, hi_ok, stride_xm, inv, FUSE, ASM)
        if W_BITS == 4:
            cb = k0 // 2 + j
            b_ptrs = B + rn_ld[:, None] * KB + cb[None, :]
            if EVEN_K:
                b = tl.load(b_ptrs)
            else:
                b = tl.load(b_ptrs, mask=(cb < KB)[None, :], other=0)
            if QOQ:  # integer-only second level: (q - z) s_g in [-127, 127] (the protective range)
                g = k0 // GROUP
                sg = tl.load(WS + g * N + rn_ld)
                # z s_g as a byte (<= 240; zeros are stored centred, z = zc + 8)
                zs = ((tl.load(WZ + g * N + rn_ld).to(tl.int16) + 8) * sg.to(tl.int16)).to(tl.uint8)
                sgb = tl.broadcast_to(sg[:, None], (BLOCK_N, HALF))
                zsb = tl.broadcast_to(zs[:, None], (BLOCK_N, HALF)).to(tl.int8, bitcast=True)
                w_lo = _qoq_level2(b, sgb, zsb, False, ASM)
                w_hi = _qoq_level2(b, sgb, zsb, True, ASM)
            else:
                w_lo = _unpack_lo(b, ASM)
                w_hi = _unpack_hi(b, ASM)
        else:
            if EVEN_K:
                w_lo = tl.load(B + rn_ld[:, None] * KB + c_lo[None, :])
                w_hi = tl.load(B + rn_ld[:, None] * KB + c_hi[None, :])
            else:
                w_lo = tl.load(B + rn_ld[:, None] * KB + c_lo[None, :], mask=lo_ok[None, :], other=0)
                w_hi = tl.load(B + rn_ld[:, None] * KB + c_hi[None, :], mask=hi_ok[None, :], other=0)
        if HALF_GROUPS:
            d_lo = tl.dot(a_lo, tl.trans(w_lo), out_dtype=tl.int32)
            d_hi = tl.dot(a_hi, tl.trans(w_hi), out_dtype=tl.int32)
            g = k0 // GROUP
            s_lo = tl.load(WS + g * N + rn_ld).to(tl.float32)
            # a ragged K may end inside the first half: no group g + 1 then
            h_ok = (rn * 0 + k0 + 32 < K) | EVEN_K
            s_hi = tl.load(WS + (g + 1) * N + rn_ld, mask=h_ok, other=0.0).to(tl.float32)
            if ASYM:
                z_lo = tl.load(WZ + g * N + rn_ld).to(tl.int32)
                z_hi = tl.load(WZ + (g + 1) * N + rn_ld, mask=h_ok, other=0).to(tl.int32)
                r_lo = tl.sum(a_lo.to(tl.int32), axis=1)
                r_hi = tl.sum(a_hi.to(tl.int32), axis=1)
                d_lo -= MUL * r_lo[:, None] * z_lo[None, :]
                d_hi -= MUL * r_hi[:, None] * z_hi[None, :]
            acc_f += d_lo.to(tl.float32) * s_lo[None, :] + d_hi.to(tl.float32) * s_hi[None, :]
        elif QOQ:  # one int32 accumulator over all of K, as per channel
            acc_i = tl.dot(a_lo, tl.trans(w_lo), acc_i, out_dtype=tl.int32)
            acc_i = tl.dot(a_hi, tl.trans(w_hi), acc_i, out_dtype=tl.int32)
        else:
            if GROUP > 0:
                acc_i = tl.dot(a_lo, tl.trans(w_lo), out_dtype=tl.int32)
            else:
                acc_i = tl.dot(a_lo, tl.trans(w_lo), acc_i, out_dtype=tl.int32)
            acc_i = tl.dot(a_hi, tl.trans(w_hi), acc_i, out_dtype=tl.int32)
            if ASYM:
                rs = tl.sum(a_lo.to(tl.int32), axis=1) + tl.sum(a_hi.to(tl.int32), axis=1)
            if GROUP > 0:
                if not PREFETCH:
                    g = k0 // GROUP
                    s_cur = tl.load(WS + g * N + rn_ld).to(tl.float32)
                    if ASYM:
                        z_cur = tl.load(WZ + g * N + rn_ld).to(tl.int32)
                if ASYM:
                    acc_i -= MUL * rs[:, None] * z_cur[None, :]
                acc_f += acc_i.to(tl.float32) * s_cur[None, :]
            elif ASYM:
                rowsum += rs

    # epilogue
    c_mask = m_ok[:, None] & n_ok[None, :]
    c_ptrs = C + rm[:, None] * stride_cm + rn[None, :]
    if QOQ:
        acc_f = acc_i.to(tl.float32) * tl.load(CS + rn_ld)[None, :]
    elif GROUP == 0:
        if ASYM:
            z = tl.load(WZ + rn_ld).to(tl.int32)
            acc_i -= MUL * rowsum[:, None] * z[None, :]
        if RAW:
            tl.store(c_ptrs, acc_i // MUL, mask=c_mask)
        else:
            acc_f = acc_i.to(tl.float32) * tl.load(WS + rn_ld).to(tl.float32)[None, :]
    if not RAW:
        out = acc_f * (xs * (1.0 / MUL))[:, None]
        if SPLIT_K == 1:
            if HAS_BIAS:
                out += tl.load(BIAS + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
            tl.store(c_ptrs, out.to(C.dtype.element_ty), mask=c_mask)
        else:
            w_ptrs = WSP + rm[:, None] * N + rn[None, :]
            tl.atomic_add(w_ptrs, out, mask=c_mask, sem="relaxed")
            tl.debug_barrier()  # every thread's partial is issued before the count (CTA order)
            done = tl.atomic_add(CNT + pid, 1, sem="acq_rel")
            if done == SPLIT_K - 1:  # the last program of this tile reduces and casts
                total = tl.load(w_ptrs, mask=c_mask, other=0.0, cache_modifier=".cg")
                if HAS_BIAS:
                    total += tl.load(BIAS + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
                tl.store(c_ptrs, total.to(C.dtype.element_ty), mask=c_mask)
                tl.store(w_ptrs, tl.zeros((BLOCK_M, BLOCK_N), tl.float32), mask=c_mask)
                tl.atomic_xchg(CNT + pid, 0, sem="relaxed")


_gemm = triton.autotune(
    configs=_cfg.gemm_configs(gpu=not INTERPRET),
    key=["M_BUCKET", "N", "K", "GROUP", "W_BITS", "FUSE", "ASYM", "QOQ"],
    prune_configs_by={"early_config_prune": _cfg.prune},
)(_gemm_kernel)


class _Scratch:
    """Split-K workspace and semaphores per device: zeroed once, left zeroed by every call (so a
    CUDA graph can capture the GEMM). One per device: split-K GEMMs on concurrent streams of one
    device would share it (run them on one stream, or with split_k=1)."""

    def __init__(self):
        self.bufs = {}

    def get(self, device, n_out: int, n_tiles: int):
        key = str(device)
        ws, cnt = self.bufs.get(key, (None, None))
        if ws is None or ws.numel() < n_out:
            ws = torch.zeros(max(n_out, 1 << 16), dtype=torch.float32, device=device)
        if cnt is None or cnt.numel() < n_tiles:
            cnt = torch.zeros(max(n_tiles, 1 << 12), dtype=torch.int32, device=device)
        self.bufs[key] = (ws, cnt)
        return ws, cnt


_SCRATCH = _Scratch()


def _check(x: torch.Tensor, w: PackedWeight, raw: bool) -> None:
    if x.dim() != 2:
        raise ValueError(f"activations must be 2-D (M, K), got {tuple(x.shape)}")
    if x.shape[1] != w.in_features:
        raise ValueError(f"K mismatch: activations have {x.shape[1]}, weight has {w.in_features}")
    if raw and not w.per_channel:
        raise ValueError("raw int32 accumulators are defined for per-channel weights only")
    if not w.per_channel and not _cfg.supported_group(w.group_size):
        raise ValueError(f"kernel group size must be 32 or a multiple of 64, got {w.group_size}")
    if w.float_zero:
        raise ValueError("float zero points run on the reference only (kernels/reference.py gemm_ref)")
    if w.format == "qoq":
        if raw:
            raise ValueError("raw int32 accumulators are defined for the plain format only")
        if w.group_size % 64:
            raise ValueError(
                f"the qoq kernels need whole 64-column groups per K-tile, got group {w.group_size}"
            )
        if w.in_features > MAX_K_PER_CHANNEL:
            raise ValueError(
                f"qoq K = {w.in_features} could overflow the int32 accumulator (K <= {MAX_K_PER_CHANNEL})"
            )
    if w.per_channel and w.in_features > MAX_K_PER_CHANNEL:
        raise ValueError(
            f"per-channel K = {w.in_features} could overflow the int32 accumulator (|a q| <= 2^14 per "
            f"term, K <= {MAX_K_PER_CHANNEL}); use groups"
        )


def _scale_tensor(scale, device, dummy):
    """A per-tensor scale as a (1,) float32 tensor on `device`, read by the kernel (a Python float is
    copied once; a device tensor is used as is: the forward pass never reads a scale back to the host)."""
    if scale is None:
        return dummy
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise ValueError(f"a per-tensor activation scale has one element, got shape {tuple(scale.shape)}")
        return scale.reshape(1).to(device=device, dtype=torch.float32)
    return torch.full((1,), float(scale), dtype=torch.float32, device=device)


def _launch(x, x_scale, w: PackedWeight, bias, out_dtype, raw, split_k, fuse, static_scale, tile=None):
    M, K = x.shape
    N = w.out_features
    x = x if x.stride(1) == 1 else x.contiguous()
    out = torch.empty((M, N), dtype=torch.int32 if raw else out_dtype, device=x.device)
    qoq = w.format == "qoq"
    group = w.group_size if qoq else (0 if w.per_channel else w.group_size)
    bits = storage_bits(w.bits)
    forced = None if split_k is None else int(split_k)
    if raw:
        forced = 1
    max_tiles = triton.cdiv(M, 16) * triton.cdiv(N, 16)
    wsp, cnt = _SCRATCH.get(x.device, M * N, max_tiles)
    zero = w.zero if w.zero is not None else w.scale  # dummy pointer when symmetric
    kwargs = {}
    if INTERPRET or _FIXED or forced is not None or tile is not None:
        cfg = _cfg.pick(M, N, K, group, bits, forced, tile, interpret=INTERPRET, qoq=qoq)
        kwargs = dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        kernel = _gemm_kernel
    else:
        kernel = _gemm

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]), meta["SPLIT_K"])

    kernel[grid](
        x,
        w.data,
        out,
        x_scale if x_scale is not None else w.scale,
        w.scale,
        zero,
        w.channel_scale if w.channel_scale is not None else w.scale,
        bias if bias is not None else w.scale,
        wsp,
        cnt,
        M,
        N,
        K,
        w.data.shape[1],
        _cfg.bucket(M),
        x.stride(0),
        out.stride(0),
        _scale_tensor(static_scale, x.device, w.scale),
        GROUP=group,
        W_BITS=bits,
        ASYM=w.zero is not None and w.format != "qoq",
        QOQ=w.format == "qoq",
        HAS_BIAS=bias is not None,
        RAW=raw,
        FUSE=fuse,
        STATIC=static_scale is not None,
        ASM=not INTERPRET,
        **kwargs,
    )
    return out


def gemm(
    a_q: torch.Tensor,
    a_scale: torch.Tensor,
    w: PackedWeight,
    bias=None,
    out_dtype=torch.float16,
    raw: bool = False,
    split_k=None,
    tile=None,
):
    """a_q: (M, K) int8, a_scale: (M,) float32 -> (M, N) out_dtype, or int32 accumulators if raw.

    raw=True (per-channel weights only) returns the exact int32 accumulators sum_k a * (q - z).
    split_k: programs along K (None: autotuned on a GPU, fptq.kernels.configs.pick otherwise).
    tile: a fptq.kernels.configs.GPU_TILES entry to run instead (tests run each under the interpreter).
    """
    if a_q.dtype != torch.int8:
        raise ValueError("a_q must be int8")
    _check(a_q, w, raw)
    return _launch(a_q, a_scale.float().contiguous(), w, bias, out_dtype, raw, split_k, False, None, tile)


def gemm_fused(
    x: torch.Tensor, w: PackedWeight, static_scale=None, bias=None, out_dtype=None, split_k=None, tile=None
):
    """Quantize x (M, K) float to int8 inside the GEMM (per tensor with `static_scale`, a float or a
    one-element tensor, else per token, as `quant_act` does) and multiply: one launch. Meant for decode-sized M (<= FUSE_MAX_M):
    every program re-reads its rows of x whole for the per-token absmax."""
    if not x.is_floating_point():
        raise ValueError("gemm_fused takes float activations")
    _check(x, w, False)
    return _launch(x, None, w, bias, out_dtype or x.dtype, False, split_k, True, static_scale, tile)
