"""Weight quantizers, one file each, registered in `fptq.quant.methods.WEIGHT_METHODS`:
`rtn` (no calibration), `gptq` (the layer's Hessian; arXiv 2210.17323), `awq` (AWQ's clipping
search on calibration rows; arXiv 2306.00978). One signature:
quantize(W, layout, spec, stats, name) -> (codes, scale, zero)."""

from fptq.quant.weight.gptq import gptq_quantize
from fptq.quant.weight.rtn import rtn_quantize

__all__ = ["gptq_quantize", "rtn_quantize"]
