"""What is resident at each step of quantizing (and evaluating) a LLaMA model, from its shape.

  python benchmarks/memory/memory_model.py             # LLaMA-2-70B on one 80 GB GPU, and the check
                                                       # of every term against benchmarks/memory/results.jsonl

The terms are the ones the pipeline counts (`QuantReport.memory`: the largest float block, the
calibration activations, the statistics, the packed total); `check()` recomputes them for the
benchmark's shape and compares with the counters measured there, byte for byte.
"""

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
GB = 1e9


@dataclass
class Shape:
    hidden: int
    inter: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def linears(self):
        """(name, in_features, out_features) of one block's linears."""
        h, kv = self.hidden, self.kv_heads * self.head_dim
        return [
            ("q", h, h), ("k", h, kv), ("v", h, kv), ("o", h, h),
            ("gate", h, self.inter), ("up", h, self.inter), ("down", self.inter, h),
        ]  # fmt: skip

    def block_linear_params(self) -> int:
        return sum(i * o for _, i, o in self.linears())

    def block_params(self) -> int:
        return self.block_linear_params() + 2 * self.hidden  # + two norms

    def outside_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden


LLAMA2_70B = Shape(hidden=8192, inter=28672, layers=80, heads=64, kv_heads=8, vocab=32000)
BENCH = Shape(hidden=2048, inter=5632, layers=4, heads=32, kv_heads=4, vocab=32000)


def packed_bytes(shape: Shape, bits=4, group=128, scale_bytes=2, asym=False) -> int:
    """Codes (nibbles or bytes) + one scale (+ int8 zero) per group and output channel, + the
    static activation scale (fp32) of each linear; ragged groups round up."""
    total = 0
    for _, i, o in shape.linears():
        code = (i + 1) // 2 * o if bits <= 4 else i * o
        groups = -(-i // group)
        total += code + groups * o * (scale_bytes + (1 if asym else 0)) + 4
    return total


def stats_bytes(shape: Shape, tokens: int, sample_rows=512, hessian=False) -> int:
    """absmax per input channel, the sampled rows (float32) and, for GPTQ, one Hessian per linear."""
    rows = min(sample_rows, tokens)
    total = 0
    for _, i, _ in shape.linears():
        total += 4 * i + rows * i * 4 + (i * i * 4 if hessian else 0)
    return total


def terms(shape: Shape, *, dtype_bytes=2, calib_tokens=128 * 512, hessian=False, scale_bytes=2):
    """Resident bytes by kind while quantizing block by block (model.onload=sequential)."""
    largest = max(i * o for _, i, o in shape.linears())
    return {
        "embeddings + head (float)": shape.outside_params() * dtype_bytes,
        "one float block": shape.block_params() * dtype_bytes,
        "calibration activations (in + out)": 2 * calib_tokens * shape.hidden * dtype_bytes,
        "statistics (samples" + (", Hessians)" if hessian else ")"): stats_bytes(
            shape, calib_tokens, hessian=hessian
        ),
        # fp32 temporaries while one linear is quantized and checked (weight copy, expanded scales,
        # quotient, codes, dequantized copy...): ~9 copies of the largest layer, measured (README)
        "quantizer temporaries (~9 x largest linear, fp32)": 9 * largest * 4,
        "packed blocks (all, at the end)": shape.layers * packed_bytes(shape, scale_bytes=scale_bytes),
    }


def check(results=HERE / "results.jsonl") -> list:
    """Each counter of the benchmark's sequential rows against this model's term."""
    out = []
    if not results.is_file():
        return out
    for line in results.read_text().splitlines():
        r = json.loads(line)
        c = r.get("memory_counters") or {}
        if r["mode"] != "sequential" or not c:
            continue
        s = Shape(BENCH.hidden, BENCH.inter, r["depth"], BENCH.heads, BENCH.kv_heads, BENCH.vocab)
        n, seqlen = (int(x) for x in r["calib"].split("x"))
        predicted = {
            "block_float_bytes": s.block_params() * 2,
            "calib_act_bytes": n * seqlen * s.hidden * 2,  # the inputs held (outputs: same size)
            "stats_bytes": stats_bytes(s, n * seqlen) - 4 * sum(i for _, i, _ in s.linears()),
            "packed_bytes": s.layers * packed_bytes(s),
        }
        out.append((r["depth"], {k: (predicted[k], c.get(k)) for k in predicted}))
    return out


def main() -> None:
    print("LLaMA-2-70B, W4A8 FPTQ g128 (fp16 scales), fp16 model, C4 128 x 512 calibration, 80 GB GPU\n")
    for hessian, label in ((False, "RTN weights (FPTQ)"), (True, "GPTQ weights")):
        t = terms(LLAMA2_70B, hessian=hessian)
        print(f"| {label} | GB |\n|---|---|")
        for k, v in t.items():
            print(f"| {k} | {v / GB:.2f} |")
        print(f"| **peak (all at once, the last block)** | **{sum(t.values()) / GB:.1f}** |\n")
    for depth, rows in check():
        ok = all(p == m for p, m in rows.values())
        print(
            f"depth {depth}: "
            + ", ".join(f"{k} {p} vs {m}" for k, (p, m) in rows.items())
            + f" -> {'exact' if ok else 'DIFF'}"
        )


if __name__ == "__main__":
    main()
