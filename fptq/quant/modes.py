"""The per-layer activation modes an activation strategy picks (`LayerMode`) and what each runs
as (`ActQuant`). The strategies themselves are plug-ins: `fptq.quant.act` (one file each)."""

import fnmatch
from enum import Enum
from typing import Dict, Optional


class ActQuant(str, Enum):
    """Runtime input quantization of one QuantLinear."""

    NONE = "none"
    STATIC = "static"  # per-tensor, scale fixed at calibration
    DYNAMIC = "dynamic"  # per-token, scale computed per row at run time

    def __str__(self) -> str:
        return self.value


class LayerMode(str, Enum):
    """What the activation strategy decided for one layer (what the report and store count)."""

    STATIC = "per_tensor_static"
    DYNAMIC = "per_token_dynamic"
    LAE = "lae_static"  # logarithmic activation equalization folded into the norm, then static
    NONE = "none"  # float input (weight-only schemes)

    def __str__(self) -> str:
        return self.value

    @property
    def runtime(self) -> ActQuant:
        return {
            LayerMode.STATIC: ActQuant.STATIC,
            LayerMode.LAE: ActQuant.STATIC,
            LayerMode.DYNAMIC: ActQuant.DYNAMIC,
            LayerMode.NONE: ActQuant.NONE,
        }[self]


def match_override(name: str, overrides: Dict[str, str]) -> Optional[LayerMode]:
    """The mode `act.overrides` gives module `name` (the first matching fnmatch pattern), or None."""
    for pattern, mode in overrides.items():
        if fnmatch.fnmatchcase(name, pattern):
            return LayerMode(mode)
    return None
