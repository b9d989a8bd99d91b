"""Transforms, one file each, registered in `fptq.quant.methods.TRANSFORMS`, separate from
quantization and function-preserving in float:
- per-channel scales folded into a norm or a linear (`fold.fold_scale`): `lae` (FPTQ),
  `smoothquant`, `awq` (its scale search);
- online ops in QuantLinear's input-transform slot (`fptq.quant.online`): `online_rotation`
  (a random orthogonal matrix, R4-style);
- whole-model rewrites before the block loop (kind `model`).
"""

from fptq.quant.transforms.fold import fold_scale
from fptq.quant.transforms.lae import lae_scale
from fptq.quant.transforms.smoothquant import smoothquant_scale

__all__ = ["fold_scale", "lae_scale", "smoothquant_scale"]
