"""End-to-end speed on a GPU: a LLaMA-7B-shaped decoder (random weights, a few layers) in bf16
against W4A8 (int4 g128 / per-channel weights; int8 activations per tensor with a static scale,
FPTQ's mode for most layers, or per token) on the Triton backend. With static activations a
decode step runs one kernel per linear (quantization fused into the GEMM); per token, two.

    PYTHONPATH=. python benchmarks/bench_e2e.py --layers 4 --out benchmarks/results/e2e_<device>.json
    PYTHONPATH=. TRITON_INTERPRET=1 python benchmarks/bench_e2e.py --smoke

Reports decode tokens/s at batch 1 and 16 (one new token against a 512-token KV cache) and
prefill time for 2048 tokens. Speed does not depend on the weight values.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fptq.quant.granularity import resolve  # noqa: E402
from fptq.quant.primitives import Grid, quantize_weight  # noqa: E402
from fptq.quant.qlinear import QuantLinear, set_backend  # noqa: E402


def build(layers: int, hidden: int, inter: int, heads: int, kv_heads: int, dtype, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=32000,
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()


def to_w4a8(model, granularity: str, act: str = "static"):
    for layer in model.model.layers:
        for name, lin in list(layer.named_modules()):
            if isinstance(lin, torch.nn.Linear):
                K = lin.in_features
                layout = resolve(0 if granularity == "channel" else int(granularity), K)
                q, s, z = quantize_weight(lin.weight.float(), Grid(4, True), layout)
                ql = QuantLinear.from_codes(
                    q,
                    s,
                    z,
                    bits=4,
                    group_size=layout.group_size,
                    bias=lin.bias,
                    dtype=lin.weight.dtype,
                    act_mode=act,
                    act_scale=torch.tensor(0.05) if act == "static" else None,  # speed is value-blind
                )  # packed: no dense copy
                layer.set_submodule(name, ql)
    set_backend(model, "triton")
    return model


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def measure(model, device, batch_sizes, ctx, prefill, reps):
    from transformers import DynamicCache

    out = {}
    for B in batch_sizes:
        ids = torch.randint(0, 32000, (B, ctx), device=device)
        cache = DynamicCache()
        model(ids, past_key_values=cache, use_cache=True)
        step = torch.randint(0, 32000, (B, 1), device=device)
        times = []
        for _ in range(reps):
            c = DynamicCache()
            model(ids, past_key_values=c, use_cache=True)
            sync(device)
            t = time.perf_counter()
            model(step, past_key_values=c, use_cache=True)
            sync(device)
            times.append(time.perf_counter() - t)
        t_step = sorted(times)[len(times) // 2]
        out[f"decode_b{B}_tok_per_s"] = B / t_step
        out[f"decode_b{B}_ms_per_step"] = t_step * 1e3
    ids = torch.randint(0, 32000, (1, prefill), device=device)
    model(ids)
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        model(ids)
        sync(device)
        times.append(time.perf_counter() - t)
    out[f"prefill_{prefill}_ms"] = sorted(times)[len(times) // 2] * 1e3
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--group", default="128", help="weight group size, or 'channel' for per-channel")
    ap.add_argument("--act", default="static", choices=["static", "dynamic"], help="activation quantization")
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (TRITON_INTERPRET=1)")
    args = ap.parse_args()
    if args.smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("--smoke needs TRITON_INTERPRET=1")
        kw = dict(layers=1, hidden=64, inter=128, heads=4, kv_heads=2, dtype=torch.float32, device="cpu")
        base = measure(build(**kw), "cpu", [1], 8, 16, 1)
        w4 = measure(to_w4a8(build(**kw), 64, args.act), "cpu", [1], 8, 16, 1)
        print("smoke ok", base, w4)
        return
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU (or --smoke)")
    kw = dict(
        layers=args.layers,
        hidden=4096,
        inter=11008,
        heads=32,
        kv_heads=32,
        dtype=torch.bfloat16,
        device="cuda",
    )
    res = {
        "device": torch.cuda.get_device_name(),
        "layers": args.layers,
        "group": args.group,
        "act": args.act,
        "torch": torch.__version__,
    }
    res["bf16"] = measure(build(**kw), "cuda", [1, 16], 512, 2048, 10)
    torch.cuda.empty_cache()
    res["w4a8_triton"] = measure(to_w4a8(build(**kw), args.group, args.act), "cuda", [1, 16], 512, 2048, 10)
    res["speedup"] = {
        k: (
            res["w4a8_triton"][k] / res["bf16"][k]
            if "tok_per_s" in k
            else res["bf16"][k] / res["w4a8_triton"][k]
        )
        for k in res["bf16"]
    }
    print(json.dumps(res, indent=1))
    out = Path(args.out or f"benchmarks/results/e2e_{res['device'].replace(' ', '_')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
