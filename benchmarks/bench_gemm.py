"""GEMM benchmark on a GPU: bf16 cuBLAS vs torch._int_mm W8A8 vs our Triton W8A8 / W4A8.

    PYTHONPATH=. python benchmarks/bench_gemm.py --out benchmarks/results/gemm_<device>.csv
    PYTHONPATH=. TRITON_INTERPRET=1 python benchmarks/bench_gemm.py --smoke   # CPU wiring check

Variants per shape and M: bf16 cuBLAS; `torch._int_mm` W8A8 alone (int8 in, int32 out) and with
its per-token quantization and dequantizing epilogue; ours (W8A8, W4A8 per channel, W4A8 g128)
as the GEMM alone (activations already int8) and with per-token quantization (`quant_act` +
GEMM), and W4A8 with a static activation scale fused into the GEMM at M <= 16 (one launch).
Each shape is checked against the torch reference before it is timed. Writes a CSV and a plot,
and names the device in both. The static model of the same kernels on an H100 (no GPU needed):
benchmarks/kernels_static.py.
"""

import argparse
import csv
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fptq.kernels.reference import gemm_ref, pack_weight  # noqa: E402
from fptq.quant.granularity import GroupLayout  # noqa: E402
from fptq.quant.primitives import Grid, quantize_act_per_token, quantize_weight  # noqa: E402

LLAMA2_7B = [(12288, 4096), (4096, 4096), (11008, 4096), (4096, 11008)]  # (N, K); 12288: fused q/k/v
LLAMA2_70B = [(28672, 8192), (8192, 28672)]
MS = [1, 4, 16, 64, 256, 1024, 2048, 4096]


def timeit(fn, interpret: bool) -> float:
    """Median milliseconds."""
    if interpret:
        import time

        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def torch_act_quant(x):
    q, s = quantize_act_per_token(x)
    return q.to(torch.int8), s


def run(ms, shapes, device, interpret, check=True):
    from fptq.kernels.gemm import FUSE_MAX_M, gemm, gemm_fused
    from fptq.kernels.quant_act import quant_act

    dt = torch.float32 if interpret else torch.bfloat16
    rows = []
    for N, K in shapes:
        W = torch.randn(N, K, device=device, dtype=torch.float32) * 0.02
        packs = {}
        for name, bits, group in [("w8a8", 8, K), ("w4a8_ch", 4, K), ("w4a8_g128", 4, 128)]:
            layout = GroupLayout(K, group)  # group K: per output channel
            q, s, z = quantize_weight(W, Grid(bits, True), layout)
            packs[name] = pack_weight(q, s, z, bits, layout.group_size, scale_dtype=torch.float16)
        Wb = W.to(dt)
        w8 = packs["w8a8"].data  # (N, K) int8: torch._int_mm takes its (K, N) transpose view
        for M in ms:
            x = torch.randn(M, K, device=device, dtype=dt)
            a_q, a_s = quant_act(x)
            static = float(x.abs().max()) / 127
            flops = 2 * M * N * K
            res = {"bf16_cublas": lambda x=x, Wb=Wb: x @ Wb.T}
            Mp = max(M, 17)  # torch._int_mm needs M > 16
            a_pad = torch.nn.functional.pad(a_q, (0, 0, 0, Mp - M)) if Mp != M else a_q

            def int_mm_alone(a_pad=a_pad, w8=w8):
                return torch._int_mm(a_pad, w8.T)

            def int_mm(x=x, M=M, Mp=Mp, w8=w8, packs=packs):
                a, s = torch_act_quant(x)
                if Mp != M:
                    a = torch.nn.functional.pad(a, (0, 0, 0, Mp - M))
                return torch._int_mm(a, w8.T)[:M].float() * s * packs["w8a8"].scale.float()

            if not interpret:
                res["torch_int_mm_w8a8_alone"] = int_mm_alone
                res["torch_int_mm_w8a8_quant"] = int_mm
            for name, pw in packs.items():
                if check:
                    out = gemm(a_q, a_s, pw, out_dtype=torch.float32)
                    ref = gemm_ref(a_q, a_s, pw)
                    rel = float((out - ref).norm() / ref.norm().clamp(min=1e-12))
                    if rel > 1e-3:
                        raise AssertionError(f"{name} M={M} N={N} K={K}: relative error {rel:.2e}")
                res[f"triton_{name}_alone"] = lambda pw=pw, a_q=a_q, a_s=a_s: gemm(a_q, a_s, pw, out_dtype=dt)
                res[f"triton_{name}_quant"] = lambda pw=pw, x=x: gemm(*quant_act(x), pw, out_dtype=dt)
                if M <= FUSE_MAX_M and name.startswith("w4a8"):
                    res[f"triton_{name}_fused_static"] = lambda pw=pw, x=x, s=static: gemm_fused(x, pw, s)
            base = None
            for name, fn in res.items():
                ms_ = timeit(fn, interpret)
                base = ms_ if name == "bf16_cublas" else base
                rows.append(
                    {
                        "M": M,
                        "N": N,
                        "K": K,
                        "kernel": name,
                        "ms": round(ms_, 5),
                        "tflops": round(flops / ms_ / 1e9, 2),
                        "speedup_vs_bf16": round(base / ms_, 3),
                    }
                )
                print(
                    f"M={M:5d} N={N:5d} K={K:5d} {name:34s} {ms_:9.4f} ms {flops / ms_ / 1e9:8.1f} TFLOP/s "
                    f"x{base / ms_:.2f}",
                    flush=True,
                )
    return rows


def plot(rows, path, device_name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = sorted({(r["N"], r["K"]) for r in rows})
    fig, axes = plt.subplots(1, len(shapes), figsize=(4.5 * len(shapes), 3.6), squeeze=False)
    for ax, (N, K) in zip(axes[0], shapes, strict=True):
        for kern in sorted({r["kernel"] for r in rows}):
            pts = sorted(
                (r["M"], r["speedup_vs_bf16"])
                for r in rows
                if (r["N"], r["K"]) == (N, K) and r["kernel"] == kern
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=kern)
        ax.set_xscale("log", base=2)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_title(f"N={N} K={K}")
        ax.set_xlabel("M (tokens)")
    axes[0][0].set_ylabel("speedup vs bf16 cuBLAS")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(device_name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (TRITON_INTERPRET=1)")
    args = ap.parse_args()
    if args.smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("--smoke needs TRITON_INTERPRET=1")
        rows = run([1, 16], [(64, 128)], "cpu", True)
        print(f"smoke ok: {len(rows)} rows")
        return
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (or --smoke with TRITON_INTERPRET=1)")
    device_name = torch.cuda.get_device_name()
    rows = run(MS, LLAMA2_7B + LLAMA2_70B, "cuda", False)
    out = Path(args.out or f"benchmarks/results/gemm_{device_name.replace(' ', '_')}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        f.write(f"# device: {device_name}; torch {torch.__version__}\n")
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, out.with_suffix(".png"), device_name)
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
