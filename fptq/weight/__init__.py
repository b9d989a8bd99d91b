"""Weight quantizers, one signature each: (W, layout, spec, stats, name) -> (codes, scale, zero).

`rtn` needs no calibration; `gptq` needs the layer's Hessian (stats.H); `awq` needs calibration
rows (stats.sample) for its clipping search. `fptq.scheme` validates `weight.algo` against
`WEIGHT_QUANTIZERS`; calibration accumulates Hessians only for `HESSIAN_ALGOS`.
"""

from fptq.registry import Registry
from fptq.weight.awq import awq_clip, quantize_awq
from fptq.weight.gptq import gptq_quantize, quantize_gptq
from fptq.weight.rtn import quantize_rtn, rtn_quantize

WEIGHT_QUANTIZERS: Registry = Registry("weight quantizer")
WEIGHT_QUANTIZERS.register("rtn")(quantize_rtn)
WEIGHT_QUANTIZERS.register("gptq")(quantize_gptq)
WEIGHT_QUANTIZERS.register("awq")(quantize_awq)
HESSIAN_ALGOS = ("gptq",)

__all__ = ["HESSIAN_ALGOS", "WEIGHT_QUANTIZERS", "awq_clip", "gptq_quantize", "rtn_quantize"]
