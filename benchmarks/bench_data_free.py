"""Data-free quantization time: RTN weights with no (or per-token dynamic) activation quantization
need no calibration, so quantizing is one pass over the weights.

    python benchmarks/bench_data_free.py [--model smollm2-135m] [--repeats 3]
        -> benchmarks/data_free.json (and a markdown table on stdout)

For each scheme it times `quantize_model` on a freshly loaded model: with no data at all
(`calib.data_free_sample=0`: the report has no output SQNR), and with the default 4 calibration
samples of 512 tokens used only for the report's output SQNR (one float pass per block), and,
for contrast, with the SQNR measured on a full calibration set (128 x 512, timed once).
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fptq.data import CalibSpec, DataSpec, calibration_ids  # noqa: E402
from fptq.models.loading import ModelSpec, load_model  # noqa: E402
from fptq.quant.pipeline import quantize_model  # noqa: E402
from fptq.quant.scheme import ActSpec, QuantScheme, WeightSpec  # noqa: E402

SCHEMES = {
    "w4a16_rtn_g128": QuantScheme("w4a16_rtn_g128", WeightSpec(4, 128), None),
    "w4a8_dynamic": QuantScheme("w4a8_dynamic", WeightSpec(4, 128), ActSpec(strategy="per_token_dynamic")),
    "w8a8_rtn": QuantScheme("w8a8_rtn", WeightSpec(8, 0), ActSpec(strategy="per_token_dynamic")),
}
MODELS = {"smollm2-135m": ModelSpec(name="smollm2-135m", source="smollm2_gguf")}


def timed(model_spec, cache, scheme, ids) -> float:
    model, _ = load_model(model_spec, cache)
    t0 = time.perf_counter()
    quantize_model(model, scheme, ids, batch_size=8, progress=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", choices=sorted(MODELS))
    ap.add_argument("--cache", default=str(Path("~/.cache/fptq").expanduser()))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "data_free.json"))
    args = ap.parse_args()
    spec = MODELS[args.model]
    _, tok = load_model(spec, args.cache)
    vocab = tok.vocab_size if hasattr(tok, "vocab_size") else 49152
    sample = calibration_ids(CalibSpec(n_samples=4), tok, DataSpec(), vocab)
    full = calibration_ids(CalibSpec(n_samples=128), tok, DataSpec(), vocab)
    rows = []
    for name, scheme in SCHEMES.items():
        assert scheme.data_free
        none = [timed(spec, args.cache, scheme, None) for _ in range(args.repeats)]
        four = [timed(spec, args.cache, scheme, sample) for _ in range(args.repeats)]
        calibrated = timed(spec, args.cache, scheme, full)
        rows.append(
            dict(
                scheme=name,
                no_data_s=statistics.median(none),
                sqnr_sample_s=statistics.median(four),
                sqnr_on_128x512_s=calibrated,
            )
        )
        print(rows[-1], flush=True)
    out = dict(
        model=args.model,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        cpu=platform.processor() or platform.machine(),
        repeats=args.repeats,
        rows=rows,
    )
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print("| scheme | no data (s) | output SQNR on 4 x 512 (s) | output SQNR on 128 x 512 (s) |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['scheme']} | {r['no_data_s']:.2f} | {r['sqnr_sample_s']:.2f} | {r['sqnr_on_128x512_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
