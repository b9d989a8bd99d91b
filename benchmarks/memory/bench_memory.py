"""Peak host memory while quantizing LLaMA-shaped checkpoints of growing depth (CPU).

  python benchmarks/memory/bench_memory.py --work /tmp/fptq-mem            # all depths, all modes
  python benchmarks/memory/bench_memory.py --work /tmp/fptq-mem --before /path/to/old/checkout

Each checkpoint is random bf16 safetensors (hidden 2048, intermediate 5632, 32 heads, 4 KV heads,
vocab 32000: TinyLlama-1.1B's block shape), one shard per block, written once into --work.
Each measurement is a fresh process: load, calibrate (a few samples), quantize with W4A8 FPTQ
g128, then report peak RSS (getrusage ru_maxrss), the pipeline's byte counters and the packed
bytes. Modes:
  eager       the whole float model is loaded, then quantized in place (QuantLinear packed)
  sequential  model.onload=sequential: a skeleton, each block read from disk at its turn
  before      the eager path of an older checkout (--before), whose QuantLinear kept a dense
              float weight beside int8 codes: what this issue replaced
Writes results.jsonl, table.md and peak_rss.png next to this file (or --out).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HIDDEN, INTER, HEADS, KV_HEADS, VOCAB = 2048, 5632, 32, 4, 32000
DEPTHS = (4, 8, 16, 32)
HERE = Path(__file__).resolve().parent


def block_params() -> int:
    head_dim = HIDDEN // HEADS
    attn = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * KV_HEADS * head_dim
    return attn + 3 * HIDDEN * INTER + 2 * HIDDEN


def make_checkpoint(folder: Path, depth: int) -> None:
    """Random bf16 weights written block by block (never the whole model in memory)."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from fptq.models.loading import byte_tokenizer

    if (folder / "model.safetensors.index.json").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    byte_tokenizer().save_pretrained(str(folder))  # loading needs one; calibration uses random ids
    cfg = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=depth,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        vocab_size=VOCAB,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.save_pretrained(folder)
    g = torch.Generator().manual_seed(depth)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    kv = KV_HEADS * (HIDDEN // HEADS)
    weight_map = {}
    outside = {
        "model.embed_tokens.weight": rnd(VOCAB, HIDDEN),
        "lm_head.weight": rnd(VOCAB, HIDDEN),
        "model.norm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16),
    }
    save_file(outside, str(folder / "outside.safetensors"), metadata={"format": "pt"})
    weight_map.update({k: "outside.safetensors" for k in outside})
    for i in range(depth):
        p = f"model.layers.{i}."
        t = {
            p + "self_attn.q_proj.weight": rnd(HIDDEN, HIDDEN),
            p + "self_attn.k_proj.weight": rnd(kv, HIDDEN),
            p + "self_attn.v_proj.weight": rnd(kv, HIDDEN),
            p + "self_attn.o_proj.weight": rnd(HIDDEN, HIDDEN),
            p + "mlp.gate_proj.weight": rnd(INTER, HIDDEN),
            p + "mlp.up_proj.weight": rnd(INTER, HIDDEN),
            p + "mlp.down_proj.weight": rnd(HIDDEN, INTER),
            p + "input_layernorm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16),
        }
        name = f"block-{i:03d}.safetensors"
        save_file(t, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in t})
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


class RssSampler:
    """Peak RssAnon (heap: tensors) and VmRSS (also file pages mapped from the checkpoint) of this
    process, sampled every few ms from /proc/self/status."""

    def __init__(self, every_s: float = 0.005):
        import threading

        self.peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._t.start()

    def read(self) -> dict:
        out = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in self.peak:
                out[k] = int(v.split()[0]) * 1024
        return out

    def _run(self, every_s):
        while not self._stop.is_set():
            for k, v in self.read().items():
                self.peak[k] = max(self.peak[k], v)
            time.sleep(every_s)

    def stop(self) -> dict:
        self._stop.set()
        self._t.join()
        return dict(self.peak)


def measure(folder: str, mode: str, n_samples: int, seqlen: int) -> dict:
    """In this (fresh) process: quantize and report peak RSS and counters."""
    import torch

    from fptq.models.loading import ModelSpec, load_model
    from fptq.quant.pipeline import quantize_model
    from fptq.quant.scheme import ActSpec, QuantScheme, WeightSpec

    torch.set_num_threads(2)
    onload = "sequential" if mode == "sequential" else "eager"
    spec_kw = dict(name="mem", source="hf", path=folder, dtype="bfloat16")
    if mode != "before":
        spec_kw["onload"] = onload
    spec = ModelSpec(**spec_kw)
    sampler = RssSampler()
    base = sampler.read()  # after imports, before loading
    t0 = time.perf_counter()
    model, _ = load_model(spec, "/nonexistent")
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    scheme = QuantScheme(name="w4a8_fptq", weight=WeightSpec(group_size=128), act=ActSpec())
    ids = torch.randint(0, VOCAB, (n_samples, seqlen), generator=torch.Generator().manual_seed(0))
    kw = {}
    if mode == "sequential":
        from fptq.models.onload import BlockLoader

        kw["onload"] = BlockLoader(model, torch.bfloat16, "cpu").load
    report = quantize_model(model, scheme, ids, batch_size=n_samples, progress=False, propagate="float", **kw)
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    resident = sum(t.numel() * t.element_size() for t in model.state_dict().values() if not t.is_meta)
    return {
        "mode": mode,
        "depth": model.config.num_hidden_layers,
        "float_params_left": sum(p.numel() for p in model.parameters()),  # not packed (embeddings...)
        "block_params": block_params(),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_anon_bytes": peak["RssAnon"],
        "peak_vmrss_sampled_bytes": peak["VmRSS"],
        "base_anon_bytes": base["RssAnon"],
        "rss_after_load_bytes": rss_loaded,
        "model_bytes_after": resident,
        "memory_counters": getattr(report, "memory", {}),
        "seconds": seconds,
        "calib": f"{n_samples}x{seqlen}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", help="folder for the generated checkpoints (GBs)")
    ap.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    ap.add_argument("--modes", nargs="+", default=["before", "eager", "sequential"])
    ap.add_argument("--before", help="an older fptq checkout for mode 'before' (e.g. a git worktree)")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(measure(args._child[0], args._child[1], args.samples, args.seqlen)))
        return
    if not args.work:
        ap.error("--work is required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / "results.jsonl"
    for depth in args.depths:
        folder = Path(args.work) / f"llama-h{HIDDEN}-d{depth}"
        make_checkpoint(folder, depth)
        for mode in args.modes:
            env = dict(os.environ)
            if mode == "before":
                if not args.before:
                    print("skip mode 'before': no --before checkout", file=sys.stderr)
                    continue
                env["PYTHONPATH"] = args.before
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--_child",
                str(folder),
                mode,
                "--samples",
                str(args.samples),
                "--seqlen",
                str(args.seqlen),
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=args.before or None)
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"depth {depth} mode {mode} failed")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["checkpoint_bytes"] = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
            print(json.dumps(row), flush=True)
            with rows_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
    report(out)


def report(out: Path) -> None:
    """table.md and peak_rss.png from results.jsonl (the last row per depth and mode)."""
    rows = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[(r["depth"], r["mode"])] = r
    modes = [m for m in ("before", "eager", "sequential") if any(k[1] == m for k in rows)]
    depths = sorted({k[0] for k in rows})
    gb = 1e9
    lines = [
        "| depth | params (B) | bf16 checkpoint (GB) | "
        + " | ".join(f"peak RSS {m} (GB)" for m in modes)
        + " | packed bytes (GB) | largest float block (GB) |",
        "|---" * (5 + len(modes)) + "|",
    ]
    for d in depths:
        any_row = next(rows[(d, m)] for m in modes if (d, m) in rows)
        counters = rows.get((d, "sequential"), any_row).get("memory_counters", {})
        cells = [f"{rows[(d, m)]['peak_rss_bytes'] / gb:.2f}" if (d, m) in rows else "" for m in modes]
        lines.append(
            f"| {d} | {(d * block_params() + 2 * VOCAB * HIDDEN + HIDDEN) / 1e9:.2f} | "
            f"{any_row['checkpoint_bytes'] / gb:.2f} | "
            + " | ".join(cells)
            + f" | {counters.get('packed_bytes', 0) / gb:.3f} | {counters.get('block_float_bytes', 0) / gb:.3f} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in modes:
        xs = [d for d in depths if (d, m) in rows]
        ax.plot(xs, [rows[(d, m)]["peak_rss_bytes"] / gb for d in xs], "o-", label=m)
    ax.plot(
        depths,
        [rows[(d, modes[0])]["checkpoint_bytes"] / gb for d in depths],
        "k--",
        label="bf16 checkpoint size",
    )
    ax.set_xlabel("decoder blocks (hidden 2048, intermediate 5632)")
    ax.set_ylabel("peak host RSS (GB)")
    ax.set_title("Quantizing W4A8 FPTQ g128 on CPU: peak memory")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "peak_rss.png", dpi=120)


if __name__ == "__main__":
    main()
