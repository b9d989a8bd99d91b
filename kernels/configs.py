"""Launch configurations of the GEMM: the GPU autotune set, the pruning that keeps the valid ones
for a shape (block sizes per group size, split-K to fill the GPU), the single interpreter config,
and the compile cases of the sm_90a tier (`fptq.kernels.sm90`).

Every config here compiles for sm_90a without spills; the tier (tests/kernels/test_sm90.py) checks
that, and the numbers behind each choice are in benchmarks/kernels_static.md.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import triton


def interpreting() -> bool:
    """Triton's CPU interpreter is on (read when asked: gemm.py reads it once, at its import, as
    its @triton.jit decorators do)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


H100_SMS = 132  # the target when no GPU is visible (H100 SXM)
MIN_TILES_PER_SPLIT = 2  # a split-K slice keeps at least this many K-tiles
MAX_SPLIT = 16

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, per_channel_only)
GPU_TILES = [
    # decode, M <= 16: mma.sync m16n8k32 (wgmma needs M = 64); 4 warps, deep cp.async pipelines
    (16, 64, 128, 4, 4, False),
    (16, 128, 128, 4, 4, False),
    (16, 128, 64, 4, 6, False),  # g32 (each half-tile is a group) and g64
    (16, 128, 256, 4, 3, False),  # per channel and g256
    # mid M
    (32, 128, 128, 4, 4, False),
    (64, 128, 128, 4, 4, False),
    (64, 128, 64, 4, 4, False),
    # prefill: wgmma 64xNx32 per warpgroup
    (128, 128, 128, 8, 3, False),
    (128, 128, 64, 8, 4, False),
    (128, 256, 128, 8, 3, True),  # one int32 accumulator only: the per-channel fast path
    (256, 128, 64, 8, 3, True),
]
INTERPRET_TILE = (16, 32, 64, 4, 1, False)


def _config(tile, split: int = 1) -> triton.Config:
    bm, bn, bk, w, s, _ = tile
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split}, num_warps=w, num_stages=s
    )


def gemm_configs(gpu: Optional[bool] = None) -> List[triton.Config]:
    if gpu is None:
        gpu = not interpreting()
    if not gpu:  # the interpreter cannot autotune over several configs
        return [_config(INTERPRET_TILE)]
    return [_config(t) for t in GPU_TILES]


def group_fits(group: int, block_k: int) -> bool:
    """A K-tile lies inside one group, or (g32) each of its two halves is a group."""
    return group == 0 or group % block_k == 0 or (group == 32 and block_k == 64)


def supported_group(group: int) -> bool:
    """Group sizes the kernel runs (0: per output channel)."""
    return group == 0 or any(group_fits(group, t[2]) for t in GPU_TILES)


def candidate_tiles(M: int, group: int, fuse: bool = False, qoq: bool = False) -> List[tuple]:
    """The GPU tiles that fit the group size (per-channel-only tiles need group 0, or the qoq format,
    whose one int32 accumulator runs over all of K as per channel does; qoq needs whole groups per
    K-tile) and, when fused, M = 16 tiles; of those, the ones no taller than M needs (all of them if
    none is)."""
    if qoq:
        out = [t for t in GPU_TILES if group % t[2] == 0]
    else:
        out = [t for t in GPU_TILES if group_fits(group, t[2]) and not (group and t[5])]
    if fuse:
        out = [t for t in out if t[0] == 16]
    small = [t for t in out if t[0] <= max(16, triton.next_power_of_2(M))]
    return small or out


def bucket(M: int) -> int:
    return min(triton.next_power_of_2(max(M, 1)), 4096)


def n_sms() -> int:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    except Exception:
        pass
    return H100_SMS


def split_for(M: int, N: int, K: int, block_m: int, block_n: int, block_k: int, sms: int = H100_SMS) -> int:
    """The fewest K-splits that give at least `sms` programs, keeping MIN_TILES_PER_SPLIT K-tiles
    per split (1 when the (M, N) tiles alone fill the GPU)."""
    tiles = triton.cdiv(M, block_m) * triton.cdiv(N, block_n)
    k_tiles = triton.cdiv(K, block_k)
    split = 1
    while tiles * split < sms and split < MAX_SPLIT and k_tiles // (split + 1) >= MIN_TILES_PER_SPLIT:
        split += 1
    return split


def prune(configs, named_args, **kwargs):
    """Autotune pruning: the block shapes that fit the group size and M, each with the split-K that
    fills the GPU and twice that (the autotuner times both)."""
    group = kwargs.get("GROUP", named_args.get("GROUP", 0))
    fuse = kwargs.get("FUSE", named_args.get("FUSE", False))
    qoq = kwargs.get("QOQ", named_args.get("QOQ", False))
    M, N, K = named_args["M"], named_args["N"], named_args["K"]
    keep = {t[:3] for t in candidate_tiles(M, group, fuse, qoq)}
    out = [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) in keep]
    sms = n_sms()
    res = []
    for c in out:
        k = c.kwargs
        s = split_for(M, N, K, k["BLOCK_M"], k["BLOCK_N"], k["BLOCK_K"], sms)
        for split in sorted({s, min(2 * s, MAX_SPLIT)} if s > 1 else {1}):
            res.append(triton.Config(dict(k, SPLIT_K=split), num_warps=c.num_warps, num_stages=c.num_stages))
    if not res:
        raise ValueError(f"no GEMM config fits group size {group} (kernels/configs.py GPU_TILES)")
    return res


def default_tile(M: int, group: int, qoq: bool = False) -> tuple:
    """The tile a run without autotuning takes: the tallest that M fills (at most 128 rows); among
    wgmma tiles the per-channel-only wide ones first, then the largest N x K; decode tiles in list
    order (GPU_TILES puts the one the static model prefers first)."""
    cands = candidate_tiles(M, group, qoq=qoq)
    rows = min(max(t[0] for t in cands), 128)
    same = [t for t in cands if t[0] == rows] or cands
    if rows >= 64:
        same = sorted(same, key=lambda t: (not t[5], -t[1] * t[2]))
    return same[0]


def pick(
    M: int,
    N: int,
    K: int,
    group: int,
    bits: int,
    split: Optional[int] = None,
    tile=None,
    interpret=None,
    qoq: bool = False,
) -> triton.Config:
    """One config without autotuning: the interpreter's, or (on a GPU) `default_tile` with the split
    that fills the GPU."""
    if interpret is None:
        interpret = interpreting()
    if tile is not None and not (group % tile[2] == 0 if qoq else group_fits(group, tile[2])):
        raise ValueError(f"tile {tile[:3]} does not fit group size {group}")
    if tile is None:
        tile = INTERPRET_TILE if interpret else default_tile(M, group, qoq)
    if split is None:
        split = 1 if interpret else split_for(M, N, K, tile[0], tile[1], tile[2], n_sms())
    return _config(tile, split)


def row_warps(m_pad: int, p: int) -> int:
    """Warps for one row of m_pad x p floats held in registers: 4 up to 4K elements, then one more
    per 1K, at most 32 (a 28672-wide row, padded to 32 x 1024: 32 warps, 32 floats per thread;
    16 warps spill 2.7 KB there, measured with the sm_90a tier)."""
    return max(4, min(32, (m_pad * p) // 1024))


QUANT_ACT_ONE_PASS_MAX = 32768  # widest row quant_act holds in registers


def quant_act_params(K: int, block_k: int = 1024, one_pass_max: int = QUANT_ACT_ONE_PASS_MAX):
    """quant_act's launch: (one pass?, BLOCK_K, num_warps); the whole row in one block when it fits."""
    whole = triton.next_power_of_2(K)
    one_pass = whole <= one_pass_max
    return one_pass, whole if one_pass else min(block_k, whole), max(4, min(16, whole // 2048))


# ---- the sm_90a tier's compile cases ---------------------------------------------------------------

TARGET_SHAPES = [  # LLaMA-2-7B (K, N) per linear, and LLaMA-2-70B's MLP
    (4096, 12288),  # fused q/k/v
    (4096, 4096),  # o_proj
    (4096, 11008),  # gate/up
    (11008, 4096),  # down
    (8192, 28672),  # 70B gate/up
    (28672, 8192),  # 70B down
]
ALIGNED = [
    "X",
    "B",
    "C",
    "XS",
    "WS",
    "WZ",
    "CS",
    "BIAS",
    "WSP",
    "CNT",
    "N",
    "K",
    "KB",
    "stride_xm",
    "stride_cm",
]


@dataclass
class Case:
    """One compile of the GEMM kernel for sm_90a: a tile config and a variant of the constexprs."""

    tile: tuple
    group: int = 128
    bits: int = 4
    asym: bool = False
    fuse: bool = False
    static: bool = True  # with fuse: a static per-tensor scale, else per token
    split: int = 1
    qoq: bool = False  # the qoq format: int8 group scales and zeros, a float32 scale per channel
    kernel: str = "gemm"
    x_dtype: str = "*i8"
    extra: Dict[str, object] = field(default_factory=dict)

    fn_ref = "fptq.kernels.gemm:_gemm_kernel.fn"  # resolved by fptq.kernels.sm90 (no import cycle)

    @property
    def signature(self) -> Dict[str, str]:
        sig = dict(
            X=self.x_dtype, B="*i8", C="*fp16", XS="*fp32", WS="*i8" if self.qoq else "*fp16", WZ="*i8"
        )
        sig.update(CS="*fp32", BIAS="*fp16")
        sig.update(WSP="*fp32", CNT="*i32", SS="*fp32")
        for n in ("M", "N", "K", "KB", "M_BUCKET", "stride_xm", "stride_cm"):
            sig[n] = "i32"
        return sig

    @property
    def constexprs(self) -> Dict[str, object]:
        bm, bn, bk, _, _, _ = self.tile
        return dict(
            GROUP=self.group,
            W_BITS=self.bits,
            ASYM=self.asym and not self.qoq,
            QOQ=self.qoq,
            HAS_BIAS=False,
            RAW=False,
            FUSE=self.fuse,
            STATIC=self.static,
            ASM=True,
            SPLIT_K=self.split,
            EVEN_K=True,
            EVEN_N=True,
            BLOCK_M=bm,
            BLOCK_N=bn,
            BLOCK_K=bk,
        )

    aligned = ALIGNED

    @property
    def options(self) -> Dict[str, int]:
        return {"num_warps": self.tile[3], "num_stages": self.tile[4]}

    @property
    def weight_bytes_per_iter(self) -> int:
        bn, bk = self.tile[1], self.tile[2]
        return bn * bk // 2 if self.bits == 4 else bn * bk

    @property
    def decode(self) -> bool:
        return self.tile[0] == 16

    def describe(self) -> Dict[str, object]:
        bm, bn, bk, w, s, _ = self.tile
        d = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, warps=w, stages=s, group=self.group, bits=self.bits)
        d.update(asym=self.asym, fuse=("static" if self.static else "token") if self.fuse else "none")
        d.update(split=self.split, qoq=self.qoq)
        return d


def sm90_cases() -> List[Case]:
    """Every GPU tile with every group size it serves (W4, symmetric), the decode tiles split and
    also with fused activation quantization (static and per token), plus asymmetric and 8-bit
    variants."""
    cases = []
    for t in GPU_TILES:
        groups = [g for g in (0, 32, 64, 128, 256) if group_fits(g, t[2]) and not (g and t[5])]
        decode = t[0] == 16
        for g in groups:
            cases.append(Case(t, group=g, split=2 if decode else 1))
        if decode and group_fits(128, t[2]):
            cases.append(Case(t, group=128, fuse=True, split=2, x_dtype="*fp16"))
            cases.append(Case(t, group=128, fuse=True, static=False, split=2, x_dtype="*fp16"))
    for t in GPU_TILES:  # the qoq format at g128: every tile whose K-tile holds whole groups
        if 128 % t[2] == 0:
            decode = t[0] == 16
            cases.append(Case(t, group=128, asym=True, qoq=True, split=2 if decode else 1))
            if decode:
                cases.append(Case(t, group=128, asym=True, qoq=True, fuse=True, split=2, x_dtype="*fp16"))
    cases.append(Case(GPU_TILES[0], group=128, asym=True, split=2))
    cases.append(Case(GPU_TILES[0], group=0, bits=8, split=2))
    cases.append(Case(GPU_TILES[8], group=0, bits=8))
    return cases


@dataclass
class QuantActCase:
    """The activation quantizer compiled for one row width (K), as `quant_act` launches it."""

    K: int
    static: bool = False
    kernel: str = "quant_act"
    weight_bytes_per_iter: int = 0
    aligned = ["X", "Q", "S", "K", "stride_xm", "stride_qm"]

    fn_ref = "fptq.kernels.quant_act:_quant_act_kernel"

    @property
    def signature(self) -> Dict[str, str]:
        return dict(X="*fp16", Q="*i8", S="*fp32", K="i32", stride_xm="i32", stride_qm="i32", SS="*fp32")

    @property
    def constexprs(self) -> Dict[str, object]:
        one_pass, block, _ = quant_act_params(self.K)
        return dict(QMAX=127, STATIC=self.static, ONE_PASS=one_pass, BLOCK_K=block)

    @property
    def options(self) -> Dict[str, int]:
        return {"num_warps": quant_act_params(self.K)[2], "num_stages": 1}

    def describe(self) -> Dict[str, object]:
        return dict(K=self.K, static=self.static, **self.options)


@dataclass
class FwhtQuantCase:
    """The online Hadamard fused into the activation quantizer (kernels/hadamard.py fwht_quant) for
    one row width n = m x 2^k (m: the Paley factor, 1 for a power of two), per token."""

    n: int
    m: int
    kernel: str = "fwht_quant"
    weight_bytes_per_iter: int = 0
    aligned = ["X", "Q", "S", "HM", "SS", "D", "stride_x", "stride_q"]

    fn_ref = "fptq.kernels.hadamard:_fwht_quant_kernel"

    @property
    def m_pad(self) -> int:
        return max(16, triton.next_power_of_2(self.m)) if self.m > 1 else 1

    @property
    def signature(self) -> Dict[str, str]:
        return dict(X="*fp16", Q="*i8", S="*fp32", HM="*fp32", SS="*fp32", D="*fp32", stride_x="i32",
                    stride_q="i32", norm="fp32")  # fmt: skip

    @property
    def constexprs(self) -> Dict[str, object]:
        p = self.n // self.m
        return dict(QMAX=127, STATIC=False, HAS_D=True, M=self.m, M_PAD=self.m_pad, P=p,
                    LOG_P=p.bit_length() - 1, DENSE=self.m > 1)  # fmt: skip

    @property
    def options(self) -> Dict[str, int]:
        return {"num_warps": row_warps(self.m_pad, self.n // self.m), "num_stages": 1}

    def describe(self) -> Dict[str, object]:
        return dict(K=self.n, static=False, fused="hadamard", m=self.m, **self.options)


def all_sm90_cases() -> list:
    return (
        sm90_cases()
        + [QuantActCase(K) for K in (4096, 11008, 28672)]
        # LLaMA-2-7B's hidden size and LLaMA-3-8B's intermediate (28 x 512). 70B's 28672 (28 x 1024)
        # spills 136 B even at 32 warps: left out of the no-spill tier (benchmarks/kernels_static.md)
        + [FwhtQuantCase(4096, 1), FwhtQuantCase(14336, 28)]
    )
