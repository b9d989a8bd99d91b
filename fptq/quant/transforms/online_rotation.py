"""`online_rotation`: a random orthogonal rotation of chosen linears' inputs, applied online.

For each targeted linear (fnmatch on the full module name, default every down_proj), a Haar-random
orthogonal Q is drawn per layer from (seed, name); W' = W Q is fused offline and x -> x Q runs in
QuantLinear's input-transform slot before the activation quantizer. In float it changes nothing
(the logits are preserved); quantized, the rotated input spreads outlier channels over all
channels, the idea of QuaRot's online R4 (Ashkboos et al. 2024, arXiv 2404.00456), which uses a
Hadamard instead of a dense random matrix (O(n log n) online, nothing stored).
"""

import fnmatch
from dataclasses import dataclass
from typing import Tuple

from fptq.quant.methods import TRANSFORMS, Needs, Transform, check
from fptq.quant.online import Orthogonal, random_orthogonal


@dataclass(frozen=True)
class OnlineRotationSettings:
    targets: Tuple[str, ...] = ("*.mlp.down_proj",)  # fnmatch patterns on full module names
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))
        check(bool(self.targets), "online_rotation.targets must name at least one pattern")


@TRANSFORMS.register
class OnlineRotation(Transform):
    name = "online_rotation"
    kind = "online"
    Settings = OnlineRotationSettings
    NEEDS = Needs(online=True)

    def online_op(self, name: str, in_features: int, settings: OnlineRotationSettings, seed: int, arch=None):
        if not any(fnmatch.fnmatchcase(name, p) for p in settings.targets):
            return None
        return Orthogonal(random_orthogonal(in_features, settings.seed, name))
