"""`lae_static`: LAE (act.equalizer) wherever a group can absorb it, per-tensor static everywhere."""

from fptq.quant.methods import ACT_STRATEGIES, ActStrategy, Needs
from fptq.quant.modes import LayerMode


@ACT_STRATEGIES.register
class LaeStatic(ActStrategy):
    name = "lae_static"
    NEEDS = Needs(ranges=True)

    def choose(self, v, can_lae, settings):
        return LayerMode.LAE if can_lae else LayerMode.STATIC
