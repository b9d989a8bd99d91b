"""Weight granularity as a value, resolved once per layer.

A spec says `channel` (one scale per output channel) or `group` of n input columns. For a layer
with `in_features` inputs this resolves to a `GroupLayout`: the group size actually used (per
channel is one group spanning every input), the column range of each group and whether the last
group is ragged (shorter, GPTQ style). Everything downstream (quantizers, QuantLinear, packed
kernels) takes the resolved integer group size; there is no sentinel.
"""

from dataclasses import dataclass
from typing import List, Tuple

import torch

GRANULARITIES = ("channel", "group")


@dataclass(frozen=True)
class GroupLayout:
    in_features: int
    group_size: int  # 1 <= group_size <= in_features; == in_features for per-channel

    def __post_init__(self):
        if not 1 <= self.group_size <= self.in_features:
            raise ValueError(
                f"group size must be in [1, in_features={self.in_features}], got {self.group_size}"
            )

    @property
    def per_channel(self) -> bool:
        return self.group_size == self.in_features

    @property
    def n_groups(self) -> int:
        return -(-self.in_features // self.group_size)

    @property
    def ragged(self) -> bool:
        """The last group is shorter than the others (in_features is not a multiple)."""
        return self.n_groups > 1 and self.in_features % self.group_size != 0

    def bounds(self) -> List[Tuple[int, int]]:
        """Column range [a, b) of each group."""
        g, n = self.group_size, self.in_features
        return [(a, min(a + g, n)) for a in range(0, n, g)]

    def expand(self, p: torch.Tensor) -> torch.Tensor:
        """(out, n_groups) -> (out, in_features), each group's value repeated over its columns."""
        sizes = torch.tensor([b - a for a, b in self.bounds()], device=p.device)
        return torch.repeat_interleave(p, sizes, dim=1)


def resolve(granularity: str, group_size: int, in_features: int, name: str = "") -> GroupLayout:
    """The layout of one layer. A group wider than the layer is an error (say which layer)."""
    if granularity == "channel":
        return GroupLayout(in_features, in_features)
    if granularity != "group":
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if group_size > in_features:
        raise ValueError(
            f"{name or 'layer'}: weight.group_size={group_size} exceeds the layer's {in_features} "
            "input features; use a smaller group or weight.granularity=channel"
        )
    return GroupLayout(in_features, group_size)
