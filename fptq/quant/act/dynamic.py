"""`per_token_dynamic`: every layer's input quantized per token at run time (no calibration)."""

from fptq.quant.methods import ACT_STRATEGIES, ActStrategy, Needs
from fptq.quant.modes import LayerMode


@ACT_STRATEGIES.register
class PerTokenDynamic(ActStrategy):
    name = "per_token_dynamic"
    NEEDS = Needs()

    def choose(self, v, can_lae, settings):
        return LayerMode.DYNAMIC
