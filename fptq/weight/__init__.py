"""Weight quantizers: round-to-nearest and GPTQ (AWQ's scale search lives in transforms)."""

from fptq.weight.gptq import gptq_quantize
from fptq.weight.rtn import rtn_quantize

__all__ = ["gptq_quantize", "rtn_quantize"]
