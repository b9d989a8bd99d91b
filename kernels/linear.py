"""QuantLinear's `triton` backend: packed weights, fused activation quantization, W4A8/W8A8 GEMM."""

import torch
import torch.nn as nn

from fptq.kernels.reference import PackedWeight, pack_weight


def packed_weight(layer) -> PackedWeight:
    """Pack a QuantLinear's integer codes once (cached on the layer)."""
    if layer.qweight is None or layer.w_bits not in (4, 8):
        raise ValueError(f"{layer}: the triton backend needs 4- or 8-bit integer weights")
    if layer._packed is None or layer._packed.data.device != layer.qweight.device:
        layer._packed = pack_weight(
            layer.qweight, layer.w_scale, layer.w_zero, layer.w_bits, layer.group_size
        )
    return layer._packed


def check_supported(layer) -> None:
    if layer.act_mode == "none":
        raise ValueError(
            f"{layer}: the triton backend runs W4A8/W8A8 (int8 activations); use backend='reference' for weight-only schemes"
        )
    if layer.act_bits != 8:
        raise ValueError(f"{layer}: the triton backend needs int8 activations, got {layer.act_bits}-bit")
    packed_weight(layer)


def triton_forward(layer, x: torch.Tensor) -> torch.Tensor:
    from fptq.kernels.gemm import gemm
    from fptq.kernels.quant_act import quant_act

    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    static = float(layer.act_scale) if layer.act_mode == "static" else None
    a_q, a_s = quant_act(x2, static_scale=static, bits=layer.act_bits)
    out_dtype = x.dtype if x.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float16
    y = gemm(a_q, a_s, packed_weight(layer), bias=layer.bias, out_dtype=out_dtype)
    return y.reshape(*shape[:-1], y.shape[-1])


def set_backend(model: nn.Module, backend: str) -> int:
    """Switch every QuantLinear in `model` to `backend` ('reference' or 'triton'); returns the count."""
    from fptq.qlinear import BACKENDS, QuantLinear

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    n = 0
    for m in model.modules():
        if isinstance(m, QuantLinear):
            if backend == "triton":
                check_supported(m)
            m.backend = backend
            n += 1
    return n
