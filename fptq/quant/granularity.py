"""Weight granularity as one value, end to end: `group_size`, with 0 meaning per output channel.

The YAML (`quant.weight.group_size: 0`), the spec, the results row, the per-layer report, a saved
checkpoint's layer config and the kernels' fixed configs all say per channel the same way. For a
layer with `in_features` inputs it resolves to a `GroupLayout`: the group size actually used (per
channel is one group spanning every input), the column range of each group and whether the last
group is ragged (shorter, GPTQ style). The packed buffers store the resolved size (a detail of the
packed format, `fptq.kernels.reference`); `group_size_value` maps it back.
"""

from dataclasses import dataclass
from typing import List, Tuple

import torch

PER_CHANNEL = 0  # group_size meaning one group per output channel (spanning every input)


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


def check_group_size(group_size: int, what: str = "weight.group_size") -> None:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 0:
        raise ValueError(
            f"{what} must be 0 (per output channel) or a positive group size, got {group_size!r}"
        )


def is_per_channel(group_size: int) -> bool:
    return group_size == PER_CHANNEL


def resolve(group_size: int, in_features: int, name: str = "") -> GroupLayout:
    """The layout of one layer. A group wider than the layer is an error (say which layer)."""
    check_group_size(group_size)
    if is_per_channel(group_size):
        return GroupLayout(in_features, in_features)
    if group_size > in_features:
        raise ValueError(
            f"{name or 'layer'}: weight.group_size={group_size} exceeds the layer's {in_features} "
            "input features; use a smaller group or weight.group_size=0 (per channel)"
        )
    return GroupLayout(in_features, group_size)


def group_size_value(layout: GroupLayout) -> int:
    """A resolved layout's group size as the spec writes it (0: per channel)."""
    return PER_CHANNEL if layout.per_channel else layout.group_size
