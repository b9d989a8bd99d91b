"""QuantLinear: integer weight codes + qparams, and a per-layer activation plan.

forward (backend "reference") simulates the integer pipeline in float: the input is quantized
(per-tensor static or per-token dynamic int8) and multiplied by the dequantized weight. That is
the same product as int8 x int4 -> int32 accumulation followed by the scales. The packed Triton
path lives in `fptq.kernels` (backend "triton").
"""

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fptq.primitives import dequantize_weight, fake_quant_act_per_tensor, fake_quant_act_per_token

ACT_MODES = ("none", "static", "dynamic")
BACKENDS = ("reference", "triton")


class QuantLinear(nn.Module):
    def __init__(
        self,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        *,
        qweight: Optional[torch.Tensor] = None,  # integer codes (out, in), int8 storage
        w_scale: Optional[torch.Tensor] = None,  # (out, n_groups)
        w_zero: Optional[torch.Tensor] = None,  # (out, n_groups) or None (symmetric)
        w_bits: int = 16,
        group_size: int = -1,
        act_mode: str = "none",
        act_bits: int = 8,
        act_scale: Optional[torch.Tensor] = None,  # per-tensor static scale (scalar)
    ):
        super().__init__()
        if act_mode not in ACT_MODES:
            raise ValueError(f"act_mode must be one of {ACT_MODES}, got {act_mode!r}")
        if act_mode == "static" and act_scale is None:
            raise ValueError("act_mode='static' needs act_scale")
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.w_bits, self.group_size = w_bits, group_size
        self.act_mode, self.act_bits = act_mode, act_bits
        dtype = weight.dtype
        if qweight is not None:
            weight = dequantize_weight(
                qweight.float(), w_scale.float(), None if w_zero is None else w_zero.float(), group_size
            ).to(dtype)
            self.register_buffer("qweight", qweight.to(torch.int8))
            self.register_buffer("w_scale", w_scale.float())
            self.register_buffer("w_zero", None if w_zero is None else w_zero.float())
        else:
            self.qweight = self.w_scale = self.w_zero = None
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.register_buffer(
            "act_scale", None if act_scale is None else act_scale.detach().float().reshape(())
        )
        self.backend = "reference"
        self._packed = None

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_mode == "static":
            return fake_quant_act_per_tensor(x, self.act_scale, self.act_bits)
        if self.act_mode == "dynamic":
            return fake_quant_act_per_token(x, self.act_bits)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "triton":
            from fptq.kernels.linear import triton_forward

            return triton_forward(self, x)
        return F.linear(self.quantize_input(x), self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, w_bits={self.w_bits}, group={self.group_size}, "
            f"act={self.act_mode}{'' if self.act_mode == 'none' else self.act_bits}, backend={self.backend}"
        )
