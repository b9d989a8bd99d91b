"""Function-preserving equivalence transforms: per-input-channel scales folded into the model.

Each transform computes a scale s (pure function of statistics) and `fold_scale` applies
X' = X / s, W' = W * s. They are separate from quantization.
"""

from fptq.transforms.fold import fold_scale
from fptq.transforms.lae import lae_scale
from fptq.transforms.smoothquant import smoothquant_scale

__all__ = ["fold_scale", "lae_scale", "smoothquant_scale"]
