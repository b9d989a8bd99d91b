"""QuantLinear: integer weight codes + qparams, a per-layer activation plan, and its backend.

Backend `reference` simulates the integer pipeline in float: the input is quantized (per-tensor
static or per-token dynamic) and multiplied by the dequantized weight, the same product as
int8 x int4 -> int32 accumulation followed by the scales. Backend `triton` runs the packed
kernels of `fptq.kernels`. `set_backend` chooses it for a whole model and checks the kernels'
constraints once, then.
"""

import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fptq.act import ActQuant
from fptq.granularity import GroupLayout
from fptq.primitives import dequantize_weight, fake_quant_act_per_tensor, fake_quant_act_per_token

BACKENDS = ("reference", "triton")
KERNEL_W_BITS = (4, 8)
KERNEL_GROUP_MULTIPLE = 32  # a group's K-blocks must tile it (kernels/gemm.py)


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
        group_size: Optional[int] = None,  # resolved group size; None: in_features (per channel)
        act_mode: ActQuant = ActQuant.NONE,
        act_bits: int = 8,
        act_scale: Optional[torch.Tensor] = None,  # per-tensor static scale (scalar)
    ):
        super().__init__()
        act_mode = ActQuant(act_mode)
        if act_mode == ActQuant.STATIC and act_scale is None:
            raise ValueError("act_mode='static' needs act_scale")
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.layout = GroupLayout(self.in_features, group_size or self.in_features)
        self.w_bits = w_bits
        self.act_mode, self.act_bits = act_mode, act_bits
        dtype = weight.dtype
        if qweight is not None:
            weight = dequantize_weight(
                qweight.float(), w_scale.float(), None if w_zero is None else w_zero.float(), self.layout
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
        self._packed = None  # the triton backend's packed weight, built on first use

    @property
    def group_size(self) -> int:
        return self.layout.group_size

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_mode == ActQuant.STATIC:
            return fake_quant_act_per_tensor(x, self.act_scale, self.act_bits)
        if self.act_mode == ActQuant.DYNAMIC:
            return fake_quant_act_per_token(x, self.act_bits)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "triton":
            return self._triton_forward(x)
        return F.linear(self.quantize_input(x), self.weight, self.bias)

    def _packed_weight(self):
        from fptq.kernels.reference import pack_weight

        if self._packed is None or self._packed.data.device != self.qweight.device:
            self._packed = pack_weight(self.qweight, self.w_scale, self.w_zero, self.w_bits, self.group_size)
        return self._packed

    def _triton_forward(self, x: torch.Tensor) -> torch.Tensor:
        from fptq.kernels.gemm import gemm
        from fptq.kernels.quant_act import quant_act

        shape = x.shape
        static = float(self.act_scale) if self.act_mode == ActQuant.STATIC else None
        a_q, a_s = quant_act(x.reshape(-1, shape[-1]), static_scale=static, bits=self.act_bits)
        out_dtype = x.dtype if x.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float16
        y = gemm(a_q, a_s, self._packed_weight(), bias=self.bias, out_dtype=out_dtype)
        return y.reshape(*shape[:-1], y.shape[-1])

    def extra_repr(self) -> str:
        act = "none" if self.act_mode == ActQuant.NONE else f"{self.act_mode}{self.act_bits}"
        return (
            f"in={self.in_features}, out={self.out_features}, w_bits={self.w_bits}, "
            f"group={self.group_size}, act={act}, backend={self.backend}"
        )


def kernel_support_error(layer: QuantLinear) -> Optional[str]:
    """Why the triton kernels cannot run this layer, or None if they can."""
    if layer.qweight is None or layer.w_bits not in KERNEL_W_BITS:
        return f"needs {' or '.join(map(str, KERNEL_W_BITS))}-bit integer weights, got w_bits={layer.w_bits}"
    if layer.act_mode == ActQuant.NONE:
        return "runs W4A8/W8A8 (int8 activations); weight-only schemes need backend=reference"
    if layer.act_bits != 8:
        return f"needs int8 activations, got {layer.act_bits}-bit"
    if not layer.layout.per_channel and layer.group_size % KERNEL_GROUP_MULTIPLE:
        return f"needs a group size that is a multiple of {KERNEL_GROUP_MULTIPLE}, got {layer.group_size}"
    return None


def check_kernel_device(device: torch.device) -> None:
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"backend=triton needs a CUDA device, the model is on {device}; use backend=reference, "
            "or TRITON_INTERPRET=1 to run the kernels in Triton's CPU interpreter (very slow)"
        )


def set_backend(model: nn.Module, backend: str) -> int:
    """Switch every QuantLinear of `model` to `backend`; returns how many. Checks everything first:
    the device, and that the kernels support every layer (nothing is switched on an error)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    if backend == "triton":
        if layers:
            first = layers[0][1]
            check_kernel_device((first.qweight if first.qweight is not None else first.weight).device)
        bad = [(n, e) for n, m in layers if (e := kernel_support_error(m)) is not None]
        if bad:
            n, e = bad[0]
            raise ValueError(f"backend=triton cannot run {len(bad)} quantized linear(s); first: {n}: {e}")
    for _, m in layers:
        m.backend = backend
    return len(layers)
