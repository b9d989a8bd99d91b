"""The GPU check of the W4A8 kernels: one run that fits a lent GPU's few minutes, compiles included.

    benchmarks/gpu/check.sh OUT_DIR                                   # on an H100 / H200
    TRITON_INTERPRET=1 python benchmarks/gpu/check.py OUT_DIR --rehearse   # the CPU rehearsal (a test)

Three sections, each timed against one budget (BUDGET_S, 8 minutes; a section that would pass it is
cut short and says so), then a table printed last. Writes OUT_DIR/check.json and OUT_DIR/check.md
(2 files). Runs under whatever torch and Triton the machine has (written for torch >= 2.4,
Triton >= 3.2; the lent H200 has torch 2.11 and Triton 3.6); it needs transformers only for the end
to end section, and says so if it is missing.

1. Correctness on the device: `gemm` (per channel: exact int32 accumulators; g128, g32, asymmetric
   and 8-bit weights; split-K), `gemm_fused` (static and per-token activations), `quant_act` (static
   and per token) and the inline-asm paths (the nibble unpack and the `cvt.rni` rounding run on a GPU
   only, the interpreter skips them: exact ties check the rounding), against
   `fptq.kernels.reference.gemm_int_ref` and the library's quantizers. Fresh random inputs per check,
   outputs poisoned first (the caching allocator hands the poisoned block back), ragged shapes.
2. Timing: configs from `fptq.kernels.configs.pick` (no autotuning), every one compiled in a warm-up
   pass before any timing. LLaMA-2-7B and 70B shapes at M = 1, 16, 2048 against torch bf16 matmul and
   `torch._int_mm` with its per-token quantization; median of `do_bench`, CUDA graphs for M <= 16;
   achieved TB/s against a measured device-to-device copy.
3. End to end: decode tokens/s of a LLaMA-shaped model of a few layers with random weights, bf16
   against W4A8 (static and dynamic activations), StaticCache and a CUDA graph, and a logits check of
   the Triton backend against the reference backend.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BUDGET_S = 480.0  # the whole run, compiles included
MAX_FILES = 8

# (name, K, N): LLaMA-2-7B's linears (q/k/v fused) and 70B's MLP
SHAPES = [
    ("7B qkv", 4096, 12288),
    ("7B o_proj", 4096, 4096),
    ("7B gate/up", 4096, 11008),
    ("7B down", 11008, 4096),
    ("70B gate/up", 8192, 28672),
    ("70B down", 28672, 8192),
]
MS = [1, 16, 2048]
# (M, N, K): ragged on every side (N off the tiles, K off the groups and the 64-wide packing chunks)
CHECK_SHAPES = [(1, 4136, 4096), (5, 1000, 1088), (33, 2056, 4160), (300, 1544, 2048)]
REHEARSE = dict(
    shapes=[("tiny a", 128, 96), ("tiny b", 320, 40)],
    ms=[1, 3, 20],
    check_shapes=[(1, 40, 128), (5, 24, 192), (17, 72, 320)],
    model=dict(layers=1, hidden=128, inter=256, heads=4, kv_heads=2, vocab=256, ctx=8),
)
MODEL = dict(layers=4, hidden=4096, inter=11008, heads=32, kv_heads=32, vocab=32000, ctx=512)


class Budget:
    def __init__(self, seconds: float):
        self.t0 = time.perf_counter()
        self.seconds = seconds

    def used(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.used()


# ---- environment ----------------------------------------------------------------------------------


def environment(device: str) -> dict:
    import triton

    env = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        triton=triton.__version__,
        cuda=torch.version.cuda,
        device=device,
        interpret=os.environ.get("TRITON_INTERPRET") == "1",
    )
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(name=p.name, sms=p.multi_processor_count, capability=f"{p.major}.{p.minor}")
        env["memory_gib"] = round(p.total_memory / 2**30, 1)
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
        except Exception as e:  # no nvidia-smi: say so, carry on
            env["driver"] = f"unknown ({type(e).__name__})"
    else:
        env.update(name=platform.processor() or "cpu")
    missing = []
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        missing.append("transformers (the end-to-end section; carry it as a wheel)")
    env["missing"] = missing
    return env


# ---- helpers --------------------------------------------------------------------------------------


def packed(N, K, bits, group, sym, device, gen):
    """A random weight quantized by the library and packed: (PackedWeight on device, group_size)."""
    from fptq.kernels.reference import pack_weight
    from fptq.quant.granularity import GroupLayout
    from fptq.quant.primitives import Grid, quantize_weight

    W = torch.randn(N, K, generator=gen)
    layout = GroupLayout(K, K if group == 0 else group)
    if bits == "qoq":  # QServe's progressive weights (the "qoq" packed format)
        from fptq.quant.weight.qoq import qoq_quantize

        q4, s2, z, s1 = qoq_quantize(W, layout)
        w = pack_weight(q4, s2, z, 4, layout.group_size, channel_scale=s1)
    else:
        q, s, z = quantize_weight(W, Grid(bits, sym), layout)
        w = pack_weight(q, s, z, bits, layout.group_size)
    return _on(w, device)


def poison(shape, dtype, device):
    """Fill a block of the output's size with garbage and free it: the caching allocator returns that
    block to the kernel's torch.empty, so an element the kernel skips reads as garbage."""
    if device != "cuda":
        return
    fill = float("nan") if dtype.is_floating_point else -77
    t = torch.full(shape, fill, dtype=dtype, device=device)
    del t


def act_ref(x, static_scale=None):
    """The library's activation quantizers (round half to even): int8 codes and (M,) scales."""
    from fptq.quant.primitives import quantize_act_per_token

    if static_scale is None:
        q, s = quantize_act_per_token(x.float())
        return q.to(torch.int8), s.reshape(-1).float()
    q = torch.clamp(torch.round(x.float() / static_scale), -128, 127).to(torch.int8)
    return q, torch.full((x.shape[0],), float(static_scale), dtype=torch.float32, device=x.device)


def close(out, ref, rel=2e-5):
    """(ok, error / allowed): error against the largest |ref|, float32 outputs."""
    if out.shape != ref.shape:
        return False, float("inf")
    if not torch.isfinite(out).all():
        return False, float("inf")
    err = (out.float() - ref.float()).abs().max().item()
    allowed = rel * max(ref.float().abs().max().item(), 1e-6)
    return err <= allowed, err / allowed


# ---- 1. correctness -------------------------------------------------------------------------------


def correctness(device, shapes, budget) -> list:
    from fptq.kernels.gemm import gemm, gemm_fused
    from fptq.kernels.quant_act import quant_act
    from fptq.kernels.reference import gemm_int_ref, int_acc_ref

    rows = []
    seed = [1000]

    def gen():
        seed[0] += 1
        return torch.Generator().manual_seed(seed[0])

    def record(check, shape, ok, ratio, note=""):
        rows.append(
            dict(check=check, shape="x".join(map(str, shape)), ok=bool(ok), err_ratio=ratio, note=note)
        )

    weights = [  # (name, bits, group, symmetric)
        ("w4 per channel", 4, 0, True),
        ("w4 g128", 4, 128, True),
        ("w4 g128 asym", 4, 128, False),
        ("w4 g32", 4, 32, True),
        ("w8 per channel", 8, 0, True),
        ("w4 qoq g128 (integer second level, SWAR asm)", "qoq", 128, False),
    ]
    for M, N, K in shapes:
        if budget.left() < 0.5 * budget.seconds:
            record("(rest)", (M, N, K), False, None, "skipped: half the budget spent on correctness")
            break
        x = (torch.randn(M, K, generator=gen()) * 3).to(device)
        # quant_act, per token and static, against the library's quantizer
        for static in (None, 0.02):
            poison((M, K), torch.int8, device)
            q, s = quant_act(
                x, static_scale=None if static is None else torch.tensor([static], device=device)
            )
            rq, rs = act_ref(x, static)
            ok = torch.equal(q, rq) and torch.allclose(s, rs, rtol=1e-6, atol=0)
            record(f"quant_act {'static' if static else 'per token'}", (M, K), ok, None)
        a_q, a_s = act_ref(x)
        for name, bits, group, sym in weights:
            w = packed(N, K, bits, group, sym, device, gen())
            poison((M, N), torch.float32, device)
            out = gemm(a_q, a_s, w, out_dtype=torch.float32)
            ok, r = close(out, gemm_int_ref(a_q.cpu(), a_s.cpu(), _cpu(w)).to(device))
            record(f"gemm {name}", (M, N, K), ok, r)
            if group == 0 and bits == 4 and sym:
                poison((M, N), torch.int32, device)
                raw = gemm(a_q, a_s, w, raw=True)
                ok = torch.equal(raw.cpu(), int_acc_ref(a_q.cpu(), _cpu(w)))
                record("gemm w4 per channel, exact int32", (M, N, K), ok, None)
            if name == "w4 g128":
                poison((M, N), torch.float32, device)
                out3 = gemm(a_q, a_s, w, out_dtype=torch.float32, split_k=3)
                ok, r = close(out3, gemm_int_ref(a_q.cpu(), a_s.cpu(), _cpu(w)).to(device))
                record("gemm w4 g128, split-K 3", (M, N, K), ok, r)
        if M <= 16:  # the fused paths (decode sizes)
            wq = packed(N, K, "qoq", 128, False, device, gen())
            poison((M, N), torch.float32, device)
            out = gemm_fused(x, wq, torch.tensor([0.02], device=device), out_dtype=torch.float32)
            rq, rs = act_ref(x, 0.02)
            ok, r = close(out, gemm_int_ref(rq.cpu(), rs.cpu(), _cpu(wq)).to(device))
            record("gemm_fused static qoq g128", (M, N, K), ok, r)
            w = packed(N, K, 4, 128, True, device, gen())
            for static in (0.02, None):
                ss = None if static is None else torch.tensor([static], device=device)
                poison((M, N), torch.float32, device)
                out = gemm_fused(x, w, ss, out_dtype=torch.float32)
                rq, rs = act_ref(x, static)
                ok, r = close(out, gemm_int_ref(rq.cpu(), rs.cpu(), _cpu(w)).to(device))
                record(f"gemm_fused {'static' if static else 'per token'} g128", (M, N, K), ok, r)
    # rounding ties through the fused static path (cvt.rni on a GPU): x / s = k + 1/2 exactly
    M, N, K = 2, 64, 256
    k = torch.randint(-100, 100, (M, K), generator=gen()).float()
    x = ((k + 0.5) * 0.25).to(device)  # scale 0.25: every value sits on a tie
    w = packed(N, K, 4, 128, True, device, gen())
    out = gemm_fused(x, w, torch.tensor([0.25], device=device), out_dtype=torch.float32)
    rq, rs = act_ref(x, 0.25)  # torch.round: half to even
    ok, r = close(out, gemm_int_ref(rq.cpu(), rs.cpu(), _cpu(w)).to(device))
    record("gemm_fused static, exact rounding ties", (M, N, K), ok, r)
    q, _ = quant_act(x, static_scale=0.25)
    record("quant_act static, exact rounding ties", (M, K), torch.equal(q, rq), None)
    return rows


def _on(w, device):
    """The PackedWeight `w` with its tensors on `device`."""
    from fptq.kernels.reference import PackedWeight

    return PackedWeight(
        **{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(w).items()}
    )


def _cpu(w):
    return _on(w, "cpu")


# ---- 2. timing ------------------------------------------------------------------------------------


def bench(fn, device, graph: bool):
    """Median microseconds: do_bench (CUDA graphs for small M), or one wall-clock call on the CPU."""
    if device != "cuda":
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e6
    import triton.testing as tt

    if graph:
        try:
            return tt.do_bench_cudagraph(fn, rep=20, return_mode="median") * 1e3
        except Exception:  # capture refused: eager timing, said in the row
            pass
    return tt.do_bench(fn, warmup=10, rep=40, return_mode="median") * 1e3


def copy_bandwidth(device) -> float:
    """TB/s of a device-to-device copy (bytes read + written), the achievable HBM ceiling."""
    if device != "cuda":
        return float("nan")
    import triton.testing as tt

    a = torch.empty(2**30, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    ms = tt.do_bench(lambda: b.copy_(a), warmup=5, rep=30, return_mode="median")
    return 2 * a.numel() / (ms * 1e-3) / 1e12


def _ours(x, w, scale, fused, dtype):
    """Our linear as the Triton backend dispatches it: one fused launch, or quant_act then gemm."""
    from fptq.kernels.gemm import gemm, gemm_fused
    from fptq.kernels.quant_act import quant_act

    if fused:
        return lambda: gemm_fused(x, w, scale, out_dtype=dtype)
    return lambda: gemm(*quant_act(x, static_scale=scale), w, out_dtype=dtype)


def variants(M, N, K, device, dtype, gen):
    """name -> (fn, bytes moved): bf16, torch._int_mm with its quantization, and ours."""
    from fptq.kernels.gemm import FUSE_MAX_M, FUSE_TOKEN_MAX_M

    x = torch.randn(M, K, generator=gen).to(device=device, dtype=dtype)
    Wf = (torch.randn(N, K, generator=gen) * 0.02).to(device=device, dtype=dtype)
    out = {"bf16 matmul": (lambda: torch.nn.functional.linear(x, Wf), N * K * 2 + M * K * 2 + M * N * 2)}
    if device == "cuda" and hasattr(torch, "_int_mm"):
        W8 = torch.randint(-127, 128, (K, N), dtype=torch.int8, device=device)
        w8s = torch.rand(N, device=device) * 1e-3
        Mp = max(M, 32)  # torch._int_mm takes M > 16: decode rows are padded

        xp = torch.zeros(Mp, K, dtype=dtype, device=device)
        xp[:M] = x

        def int_mm():
            s = xp.abs().amax(1, keepdim=True).float().clamp_min(1e-8) / 127
            q = torch.round(xp.float() / s).clamp(-128, 127).to(torch.int8)
            return (torch._int_mm(q, W8).float() * s * w8s).to(dtype)[:M]

        out["torch._int_mm W8A8 + quant"] = (int_mm, N * K + Mp * K * 2 + M * N * 2)
    ss = torch.tensor([0.02], device=device)
    for name, group, static, bits in (("W4A8 g128 static", 128, True, 4), ("W4A8 g128 dynamic", 128, False, 4),
                                      ("W4A8 channel dynamic", 0, False, 4),
                                      ("W4A8 qoq g128 dynamic", 128, False, "qoq")):  # fmt: skip
        w = packed(N, K, bits, group, bits == 4, device, gen)
        scale = ss if static else None
        fused = M <= (FUSE_MAX_M if static else FUSE_TOKEN_MAX_M)
        fn = _ours(x, w, scale, fused, dtype)
        scales = (-(-K // group) if group else 1) * N * (2 if bits == "qoq" else 4) + (
            N * 4 if bits == "qoq" else 0
        )
        acts = M * K * 2 if fused else M * K * 2 + 2 * M * K
        out[name + (" (fused)" if fused else "")] = (fn, N * K // 2 + scales + acts + M * N * 2)
    return out


def timing(device, shapes, ms, budget, dtype) -> dict:
    from fptq.kernels.gemm import use_fixed_configs

    use_fixed_configs(True)  # configs.pick: no autotune sweep
    gen = torch.Generator().manual_seed(7)
    cases = []
    t0 = time.perf_counter()
    for name, K, N in shapes:  # warm-up pass: every config compiles here, before any timing
        for M in ms:
            for vname, (fn, nbytes) in variants(M, N, K, device, dtype, gen).items():
                fn()
                cases.append((name, K, N, M, vname, fn, nbytes))
        if device == "cuda":
            torch.cuda.synchronize()
        if budget.left() < 0.45 * budget.seconds:
            break
    warm_s = time.perf_counter() - t0
    bw = copy_bandwidth(device)
    rows, timed = [], 0
    for name, K, N, M, vname, fn, nbytes in cases:
        if budget.left() < 0.3 * budget.seconds:
            rows.append(dict(shape=name, M=M, variant=vname, us=None, note="skipped: budget"))
            continue
        us = bench(fn, device, graph=M <= 16)
        timed += 1
        rows.append(dict(shape=name, K=K, N=N, M=M, variant=vname, us=us, tb_s=nbytes / (us * 1e-6) / 1e12))
    base = {(r["shape"], r["M"]): r["us"] for r in rows if r["variant"] == "bf16 matmul" and r["us"]}
    for r in rows:
        b = base.get((r["shape"], r["M"]))
        r["vs_bf16"] = b / r["us"] if b and r.get("us") else None
    return dict(rows=rows, warmup_s=warm_s, copy_tb_s=bw, timed=timed, launched=len(cases))


def planned_compiles(shapes, ms, sms=132) -> dict:
    """The distinct kernel specializations the timing section launches, counted before it runs (by
    construction): GEMM (tile, split, group, fused, static, even K / N, M == 1) and quant_act
    (row width, static). Triton compiles each once."""
    import triton

    from fptq.kernels import configs
    from fptq.kernels.gemm import FUSE_MAX_M, FUSE_TOKEN_MAX_M

    gemm_keys, qa_keys = set(), set()
    for _, K, N in shapes:
        for M in ms:
            for group, static, qoq in (
                (128, True, False),
                (128, False, False),
                (0, False, False),
                (128, False, True),
            ):
                fused = M <= (FUSE_MAX_M if static else FUSE_TOKEN_MAX_M)
                tile = configs.default_tile(M, group, qoq)
                split = configs.split_for(M, N, K, tile[0], tile[1], tile[2], sms)
                gemm_keys.add(
                    (
                        tile,
                        split,
                        group,
                        qoq,
                        fused,
                        static and fused,
                        K % tile[2] == 0,
                        N % tile[1] == 0,
                        M == 1,
                    )
                )
                if not fused:
                    qa_keys.add((configs.quant_act_params(K)[:2], static))
    return dict(
        gemm=len(gemm_keys),
        quant_act=len(qa_keys),
        timings=len(shapes) * len(ms) * 6,
        triton=triton.__version__,
    )


# ---- 3. end to end --------------------------------------------------------------------------------


def build_model(cfg, device, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    c = LlamaConfig(
        hidden_size=cfg["hidden"],
        intermediate_size=cfg["inter"],
        num_hidden_layers=cfg["layers"],
        num_attention_heads=cfg["heads"],
        num_key_value_heads=cfg["kv_heads"],
        vocab_size=cfg["vocab"],
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(c).to(device=device, dtype=dtype).eval()


def to_w4a8(model, act: str, group: int = 128):
    """Every decoder linear to a packed W4A8 QuantLinear (random weights: the values do not matter
    for speed; the static scale is the layer input's absmax over a short calibration batch / 127)."""
    from fptq.quant.granularity import resolve
    from fptq.quant.primitives import Grid, quantize_weight
    from fptq.quant.qlinear import QuantLinear, set_backend

    amax = {}

    def hook(module, inputs, output):
        amax[id(module)] = max(amax.get(id(module), 0.0), inputs[0].abs().max().item())

    hooks = [
        m.register_forward_hook(hook) for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)
    ]
    dev = next(model.parameters()).device
    with torch.no_grad():
        model(torch.randint(0, model.config.vocab_size, (1, 32), device=dev))
    for h in hooks:
        h.remove()
    for layer in model.model.layers:
        for name, lin in list(layer.named_modules()):
            if isinstance(lin, torch.nn.Linear):
                layout = resolve(group, lin.in_features)
                q, s, z = quantize_weight(lin.weight.float(), Grid(4, True), layout)
                scale = torch.tensor(max(amax[id(lin)], 1e-6) / 127, device=dev) if act == "static" else None
                ql = QuantLinear.from_codes(q, s, z, bits=4, group_size=layout.group_size, bias=lin.bias,
                                            act_mode=act, act_scale=scale)  # fmt: skip
                layer.set_submodule(name, ql.to(dev))
    set_backend(model, "triton")
    return model


def decode_rate(model, batch, ctx, device, graph: bool):
    """Tokens/s of one decode step against a `ctx`-token StaticCache (a CUDA graph replay on a GPU)."""
    from transformers import StaticCache

    try:  # transformers >= 4.56: the batch size is taken from the first update
        cache = StaticCache(config=model.config, max_cache_len=ctx + 4)
    except TypeError:
        cache = StaticCache(config=model.config, max_batch_size=batch, max_cache_len=ctx + 4, device=device)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, ctx), device=device)
    with torch.no_grad():
        model(ids, past_key_values=cache, use_cache=True, cache_position=torch.arange(ctx, device=device))
    step = torch.randint(0, vocab, (batch, 1), device=device)
    pos = torch.tensor([ctx], device=device)

    def fn():
        with torch.no_grad():
            return model(step, past_key_values=cache, use_cache=True, cache_position=pos).logits

    mode = "eager"
    if device == "cuda" and graph:
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    fn()
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            run, mode = g.replay, "cuda graph"
        except Exception as e:
            run, mode = fn, f"eager (graph capture failed: {type(e).__name__}: {str(e)[:120]})"
    else:
        run = fn
    us = bench(run, device, graph=False)
    return dict(tokens_per_s=batch / (us * 1e-6), us_per_step=us, mode=mode)


def logits_check(model, device):
    """The W4A8 model's logits on the Triton backend against the reference backend (same codes)."""
    from fptq.quant.qlinear import set_backend

    ids = torch.randint(0, model.config.vocab_size, (2, 24), device=device, generator=None)
    with torch.no_grad():
        set_backend(model, "reference")
        ref = model(ids).logits.float()
        set_backend(model, "triton")
        out = model(ids).logits.float()
    rel = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
    top1 = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
    return dict(max_rel_err=rel, top1_agree=top1, ok=bool(rel < 2e-2 and top1 > 0.95))


def end_to_end(device, cfg, budget, dtype, batches=(1, 16)) -> dict:
    res = dict(config=cfg, runs=[])
    model = build_model(cfg, device, dtype)
    for b in batches:
        res["runs"].append(dict(model="bf16", batch=b, **decode_rate(model, b, cfg["ctx"], device, True)))
    for act in ("static", "dynamic"):
        if budget.left() < 0.1 * budget.seconds:
            res["runs"].append(dict(model=f"W4A8 {act}", note="skipped: budget"))
            continue
        model = to_w4a8(build_model(cfg, device, dtype), act)
        res[f"logits_{act}"] = logits_check(model, device)
        for b in batches:
            res["runs"].append(
                dict(model=f"W4A8 g128 {act}", batch=b, **decode_rate(model, b, cfg["ctx"], device, True))
            )
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    base = {r["batch"]: r["tokens_per_s"] for r in res["runs"] if r.get("model") == "bf16"}
    for r in res["runs"]:
        if "tokens_per_s" in r:
            r["vs_bf16"] = r["tokens_per_s"] / base[r["batch"]]
    return res


# ---- report ---------------------------------------------------------------------------------------


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def render(result) -> str:
    env = result["environment"]
    L = [f"# GPU check of the W4A8 kernels: {env.get('name')}", ""]
    L.append(
        f"{env.get('name')} ({env.get('sms', '-')} SMs, capability {env.get('capability', '-')}), driver "
        f"{env.get('driver', '-')}, CUDA {env.get('cuda')}, torch {env['torch']}, Triton {env['triton']}, "
        f"Python {env['python']}{' (Triton interpreter: a rehearsal, not a measurement)' if env['interpret'] else ''}. "
        f"Wall time {result['wall_s']:.0f} s of a {BUDGET_S:.0f} s budget."
    )
    p = result["planned"]
    L.append(
        f"\nTiming section, by construction: {p['gemm']} GEMM and {p['quant_act']} quant_act "
        f"specializations to compile (fixed configs, no autotuning), {p['timings']} timings."
    )
    if env.get("missing"):
        L.append(f"\nMissing: {', '.join(env['missing'])}.")
    for sec, err in result["errors"].items():
        L.append(f"\n**{sec} failed:** `{err.splitlines()[-1] if err else ''}`")
    corr = result.get("correctness") or []
    bad = [r for r in corr if not r["ok"]]
    L += ["", f"## Correctness: {len(corr) - len(bad)} of {len(corr)} checks pass", ""]
    L.append("| check | shape | ok | error / allowed | note |")
    L.append("|---|---|---|---|---|")
    for r in corr:
        L.append(
            f"| {r['check']} | {r['shape']} | {'yes' if r['ok'] else '**NO**'} | {fmt(r['err_ratio'], '.3f')} | {r['note']} |"
        )
    t = result.get("timing")
    if t:
        L += ["", "## Timing (median us; CUDA graphs for M <= 16)", ""]
        L.append(
            f"Device-to-device copy: {fmt(t['copy_tb_s'])} TB/s. {t['launched']} variants launched in the warm-up "
            f"pass ({t['warmup_s']:.0f} s, compiles included), {t['timed']} timed."
        )
        L.append("")
        L.append("| shape | M | variant | us | TB/s | bf16 time / this |")
        L.append("|---|---|---|---|---|---|")
        for r in t["rows"]:
            L.append(
                f"| {r['shape']} | {r['M']} | {r['variant']} | {fmt(r.get('us'), '.1f')} | {fmt(r.get('tb_s'))} | "
                f"{fmt(r.get('vs_bf16'))} |"
            )
    e = result.get("end_to_end")
    if e:
        c = e["config"]
        L += [
            "",
            f"## End to end: decode, {c['layers']} LLaMA layers ({c['hidden']} / {c['inter']}), {c['ctx']}-token StaticCache",
            "",
        ]
        for act in ("static", "dynamic"):
            lc = e.get(f"logits_{act}")
            if lc:
                L.append(
                    f"- W4A8 {act}: Triton logits against the reference backend: max relative error "
                    f"{lc['max_rel_err']:.2e}, top-1 agreement {lc['top1_agree']:.3f} ({'ok' if lc['ok'] else '**NOT OK**'})"
                )
        L.append("")
        L.append("| model | batch | tokens/s | us / step | bf16 time / this | mode |")
        L.append("|---|---|---|---|---|---|")
        for r in e["runs"]:
            L.append(
                f"| {r['model']} | {r.get('batch', '-')} | {fmt(r.get('tokens_per_s'), '.1f')} | {fmt(r.get('us_per_step'), '.1f')} | "
                f"{fmt(r.get('vs_bf16'))} | {r.get('mode', r.get('note', ''))} |"
            )
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder for check.json and check.md")
    ap.add_argument("--rehearse", action="store_true", help="tiny shapes on the CPU (TRITON_INTERPRET=1)")
    ap.add_argument("--sections", default="correctness,timing,end_to_end")
    args = ap.parse_args(argv)
    budget = Budget(BUDGET_S)
    if args.rehearse:
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("--rehearse runs the kernels in Triton's interpreter: set TRITON_INTERPRET=1")
        device, dtype = "cpu", torch.float32
        shapes, ms, check_shapes, model_cfg = (
            REHEARSE["shapes"],
            REHEARSE["ms"],
            REHEARSE["check_shapes"],
            REHEARSE["model"],
        )
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run this on the GPU machine, or rehearse with --rehearse")
        device, dtype = "cuda", torch.bfloat16
        shapes, ms, check_shapes, model_cfg = SHAPES, MS, CHECK_SHAPES, MODEL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = dict(environment=environment(device), errors={}, planned=planned_compiles(shapes, ms))
    sections = args.sections.split(",")
    print(json.dumps(result["environment"]), flush=True)
    for sec in sections:
        t0 = time.perf_counter()
        try:
            if sec == "correctness":
                result[sec] = correctness(device, check_shapes, budget)
            elif sec == "timing":
                result[sec] = timing(device, shapes, ms, budget, dtype)
            elif sec == "end_to_end":
                if any("transformers" in m for m in result["environment"]["missing"]):
                    raise RuntimeError("transformers is not installed")
                result[sec] = end_to_end(
                    device, model_cfg, budget, dtype, batches=(1, 2) if args.rehearse else (1, 16)
                )
            else:
                raise SystemExit(f"unknown section {sec!r}")
        except Exception:
            result["errors"][sec] = traceback.format_exc()
            print(result["errors"][sec], file=sys.stderr, flush=True)
        print(f"{sec}: {time.perf_counter() - t0:.1f} s", flush=True)
        result["wall_s"] = budget.used()  # written after every section: a run cut short keeps what it has
        (out / "check.json").write_text(json.dumps(result, indent=1, default=str))
    result["wall_s"] = budget.used()
    (out / "check.json").write_text(json.dumps(result, indent=1, default=str))
    text = render(result)
    (out / "check.md").write_text(text)
    print(text, flush=True)
    failed = [r for r in result.get("correctness") or [] if not r["ok"]]
    for act in ("static", "dynamic"):
        lc = (result.get("end_to_end") or {}).get(f"logits_{act}")
        if lc and not lc["ok"]:
            failed.append(act)
    return 1 if failed or result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
