"""`per_tensor_static`: every layer's input quantized with one scale fixed at calibration."""

from fptq.quant.methods import ACT_STRATEGIES, ActStrategy, Needs
from fptq.quant.modes import LayerMode


@ACT_STRATEGIES.register
class PerTensorStatic(ActStrategy):
    name = "per_tensor_static"
    NEEDS = Needs(ranges=True)

    def choose(self, v, can_lae, settings):
        return LayerMode.STATIC
