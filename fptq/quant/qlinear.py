"""QuantLinear: packed integer weights + qparams, a per-layer activation plan, and its backend.

Storage is the one packed format of `fptq.kernels.reference` (4-bit codes two per byte, scales
in the model dtype or float32, integer or float zero points): no dense float weight is kept.
The buffers `qweight`, `w_scale`, `w_zero` and `act_scale` are what `state_dict` holds and what a
saved checkpoint stores.

Backend `reference` dequantizes the weight into a temporary per call and simulates the integer
pipeline in float: the input is quantized (per-tensor static or per-token dynamic) and multiplied
by the dequantized weight, the same product as int8 x int4 -> int32 accumulation followed by the
scales. Backend `triton` runs the packed kernels of `fptq.kernels` on the same buffers.
`set_backend` chooses it for a whole model and checks the kernels' constraints once, then.
Weight-free schemes (w_bits=16, activation quantization only) keep a float `weight` parameter.

The input-transform slot: an online op (`fptq.quant.online`, e.g. a rotation) applied to the input
before it is quantized; its weight counterpart is already fused into the packed weight. The layer
describes itself (`to_config`) and is rebuilt from that description (`from_config`): the layer
config of a saved checkpoint.
"""

import os
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fptq.kernels.reference import (
    PackedWeight,
    dequantize_packed,
    pack_weight,
    packed_shape,
    storage_bits,
)
from fptq.quant.granularity import PER_CHANNEL, GroupLayout, group_size_value
from fptq.quant.modes import ActQuant
from fptq.quant.online import OnlineOp, op_from_config
from fptq.quant.primitives import fake_quant_act_per_tensor, fake_quant_act_per_token

BACKENDS = ("reference", "triton")
WEIGHT_FORMATS = ("int", "qoq")
KERNEL_W_BITS = (4, 8)
FLOAT_BITS = 16  # w_bits of a layer whose weight stays float


class QuantLinear(nn.Module):
    """A linear layer with packed integer weights (or a float weight if w_bits=16).

    The constructor builds empty buffers of the right shapes (a skeleton that `load_state_dict`
    fills); `from_codes` packs a quantizer's output, `from_float` wraps a float weight.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = False,
        w_bits: int = 4,
        group_size: int = PER_CHANNEL,  # 0: per output channel; else columns per group
        symmetric: bool = True,
        float_zero: bool = False,  # zero points stored as floats (scale dtype), not integers
        scale_dtype: torch.dtype = torch.float32,
        dtype: torch.dtype = torch.float32,  # bias (and float weight) dtype: the model's
        act_mode: ActQuant = ActQuant.NONE,
        act_bits: int = 8,
        act_rule: str = "max",  # the activation quantizer's symmetric scale rule (fptq.quant.primitives)
        input_transform: Optional[OnlineOp] = None,  # applied to the input before it is quantized
        weight_format: str = "int",  # the packed format's variant: int | qoq (fptq.kernels.reference)
        device=None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.layout = GroupLayout(in_features, group_size or in_features)
        self.input_transform = input_transform
        self.w_bits = w_bits
        self.act_mode, self.act_bits, self.act_rule = ActQuant(act_mode), act_bits, act_rule
        if weight_format not in WEIGHT_FORMATS:
            raise ValueError(f"weight_format must be one of {WEIGHT_FORMATS}, got {weight_format!r}")
        self.weight_format = weight_format
        kw = dict(device=device)
        if w_bits == FLOAT_BITS:
            self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype, **kw), False)
            self.qweight = self.w_scale = self.w_zero = None
        elif weight_format == "qoq":  # int8 group scales and zeros under a float32 per-channel scale
            self.weight = None
            ng = self.layout.n_groups
            rows, cols = packed_shape(out_features, in_features, w_bits)
            self.register_buffer("qweight", torch.zeros(rows, cols, dtype=torch.int8, **kw))
            self.register_buffer("w_scale", torch.ones(ng, out_features, dtype=torch.int8, **kw))
            self.register_buffer("w_zero", torch.zeros(ng, out_features, dtype=torch.int8, **kw))
            self.register_buffer("w_channel_scale", torch.ones(out_features, dtype=torch.float32, **kw))
        if weight_format != "qoq":
            self.register_buffer("w_channel_scale", None)
        if w_bits != FLOAT_BITS and weight_format != "qoq":
            storage_bits(w_bits)  # validates the range
            self.weight = None
            ng = self.layout.n_groups
            rows, cols = packed_shape(out_features, in_features, w_bits)
            self.register_buffer("qweight", torch.zeros(rows, cols, dtype=torch.int8, **kw))
            self.register_buffer("w_scale", torch.ones(ng, out_features, dtype=scale_dtype, **kw))
            zdt = scale_dtype if float_zero else torch.int8
            zero = None if symmetric else torch.zeros(ng, out_features, dtype=zdt, **kw)
            self.register_buffer("w_zero", zero)
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, **kw) if bias else None)
        static = self.act_mode == ActQuant.STATIC
        self.register_buffer("act_scale", torch.ones((), dtype=torch.float32, **kw) if static else None)
        self.backend = "reference"

    # ---- construction from a quantizer's output -------------------------------------------------

    @classmethod
    def from_codes(
        cls,
        q: torch.Tensor,  # (out, in) integer codes
        scale: torch.Tensor,  # (out, n_groups)
        zero: Optional[torch.Tensor],  # (out, n_groups) or None (symmetric)
        *,
        bits: int,
        group_size: int = PER_CHANNEL,
        bias: Optional[torch.Tensor] = None,
        dtype: torch.dtype = torch.float32,
        scale_dtype: Optional[torch.dtype] = None,  # default: the model dtype
        float_zero: bool = False,
        act_mode: ActQuant = ActQuant.NONE,
        act_bits: int = 8,
        act_rule: str = "max",
        act_scale: Optional[torch.Tensor] = None,
        input_transform: Optional[OnlineOp] = None,
        channel_scale: Optional[torch.Tensor] = None,  # (out,): the qoq format (integer group scales)
    ) -> "QuantLinear":
        out_f, in_f = q.shape
        gs = group_size or in_f
        sdt = scale_dtype or dtype
        ql = cls(
            in_f,
            out_f,
            bias=bias is not None,
            w_bits=bits,
            group_size=gs,
            symmetric=zero is None,
            float_zero=float_zero,
            scale_dtype=sdt,
            dtype=dtype,
            act_mode=act_mode,
            act_bits=act_bits,
            act_rule=act_rule,
            input_transform=input_transform,
            weight_format="int" if channel_scale is None else "qoq",
            device="meta",
        )
        p = pack_weight(
            q, scale, zero, bits, gs, scale_dtype=sdt, float_zero=float_zero, channel_scale=channel_scale
        )
        ql.qweight, ql.w_scale, ql.w_zero, ql.w_channel_scale = p.data, p.scale, p.zero, p.channel_scale
        ql._set_common(bias, act_scale, dtype)
        return ql

    @classmethod
    def from_float(
        cls,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
        *,
        act_mode: ActQuant = ActQuant.NONE,
        act_bits: int = 8,
        act_rule: str = "max",
        act_scale: Optional[torch.Tensor] = None,
        input_transform: Optional[OnlineOp] = None,
    ) -> "QuantLinear":
        """Float weights, quantized activations (w_bits=16)."""
        out_f, in_f = weight.shape
        ql = cls(
            in_f,
            out_f,
            bias=bias is not None,
            w_bits=FLOAT_BITS,
            dtype=weight.dtype,
            act_mode=act_mode,
            act_bits=act_bits,
            act_rule=act_rule,
            input_transform=input_transform,
            device="meta",
        )
        ql.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        ql._set_common(bias, act_scale, weight.dtype)
        return ql

    def _set_common(self, bias, act_scale, dtype) -> None:
        if bias is not None:
            self.bias = bias.detach().to(dtype).clone()
        if self.act_mode == ActQuant.STATIC:
            if act_scale is None:
                raise ValueError("act_mode='static' needs act_scale")
            self.act_scale = act_scale.detach().float().reshape(()).clone()
        elif act_scale is not None:
            raise ValueError(f"act_scale is only used with act_mode='static', got act_mode={self.act_mode}")

    # ---- views ----------------------------------------------------------------------------------

    @property
    def group_size(self) -> int:
        return self.layout.group_size

    @property
    def is_packed(self) -> bool:
        return self.qweight is not None

    @property
    def packed(self) -> PackedWeight:
        """The kernels' view of this layer's buffers (no copy)."""
        if not self.is_packed:
            raise ValueError("a float-weight QuantLinear (w_bits=16) has no packed weight")
        return PackedWeight(
            self.qweight,
            self.w_scale,
            self.w_zero,
            self.w_bits,
            self.group_size,
            self.in_features,
            self.out_features,
            self.w_channel_scale,
        )

    @property
    def zero_kind(self) -> Optional[str]:
        """None (symmetric or float weight), "int" or "float" zero points."""
        return self.packed.zero_kind if self.is_packed else None

    def dequantized_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """(out, in) float weight: a temporary for packed layers."""
        if not self.is_packed:
            return self.weight if dtype is None else self.weight.to(dtype)
        return dequantize_packed(self.packed, dtype)

    def nbytes(self) -> int:
        """Bytes of this layer's tensors (what its state_dict stores)."""
        return sum(t.numel() * t.element_size() for t in self.state_dict().values())

    # ---- its description (a saved checkpoint's layer config) -----------------------------------

    def to_config(self) -> Dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "w_bits": self.w_bits,
            "group_size": group_size_value(self.layout),  # 0: per output channel
            "zero": self.zero_kind,  # None: symmetric
            "scale_dtype": None if self.w_scale is None else str(self.w_scale.dtype).removeprefix("torch."),
            "act": self.act_mode.value,
            "act_bits": self.act_bits,
            "act_rule": self.act_rule,
            "act_scale": None if self.act_scale is None else float(self.act_scale),
            "bias": self.bias is not None,
            "input_transform": None if self.input_transform is None else self.input_transform.to_config(),
            "format": self.weight_format,
        }

    @classmethod
    def from_config(cls, cfg: Dict[str, Any], dtype: torch.dtype, device="meta") -> "QuantLinear":
        """A skeleton of the layer `cfg` describes (load_state_dict fills its buffers)."""
        op = cfg.get("input_transform")
        return cls(
            cfg["in_features"],
            cfg["out_features"],
            bias=cfg["bias"],
            w_bits=cfg["w_bits"],
            group_size=cfg["group_size"],
            symmetric=cfg["zero"] is None,
            float_zero=cfg["zero"] == "float",
            scale_dtype=getattr(torch, cfg["scale_dtype"]) if cfg["scale_dtype"] else torch.float32,
            dtype=dtype,
            act_mode=ActQuant(cfg["act"]),
            act_bits=cfg["act_bits"],
            act_rule=cfg["act_rule"],
            input_transform=None if op is None else op_from_config(op, cfg["in_features"], device),
            weight_format=cfg.get("format", "int"),
            device=device,
        )

    # ---- forward --------------------------------------------------------------------------------

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_mode == ActQuant.STATIC:
            return fake_quant_act_per_tensor(x, self.act_scale, self.act_bits)
        if self.act_mode == ActQuant.DYNAMIC:
            return fake_quant_act_per_token(x, self.act_bits, self.act_rule)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = self.input_transform
        if (
            self.backend == "triton"
            and op is not None
            and op.kind == "hadamard"
            and self.act_mode != ActQuant.NONE
        ):
            return self._triton_forward(x, hadamard=op)  # the rotation fused into the quantizer
        if op is not None:
            x = op(x)
        return self.forward_transformed(x)

    def forward_transformed(self, x: torch.Tensor) -> torch.Tensor:
        """The layer on an input already in its transformed space (the input-transform slot done)."""
        if self.backend == "triton":
            return self._triton_forward(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(self.quantize_input(x), self.dequantized_weight(x.dtype), bias)

    def _triton_forward(self, x: torch.Tensor, hadamard=None) -> torch.Tensor:
        """quant_act + gemm, or one fused launch at decode sizes. `hadamard`: the layer's online
        Hadamard input transform (QuaRot's R4), fused into the quantizer (kernels/hadamard.py
        fwht_quant) or, before a fused decode GEMM, run by the Triton fwht."""
        from fptq.kernels.gemm import FUSE_MAX_M, FUSE_TOKEN_MAX_M, gemm, gemm_fused
        from fptq.kernels.quant_act import quant_act

        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        static = self.act_scale if self.act_mode == ActQuant.STATIC else None  # stays on the device
        out_dtype = x.dtype if x.dtype in (torch.float16, torch.bfloat16, torch.float32) else torch.float16
        if x2.shape[0] <= (FUSE_MAX_M if static is not None else FUSE_TOKEN_MAX_M):  # decode: one launch
            if hadamard is not None:
                from fptq.quant.hadamard import fwht_triton

                x2 = fwht_triton(x2 if hadamard.D is None else x2 * hadamard.D.to(x2.dtype))
            y = gemm_fused(x2, self.packed, static, bias=self.bias, out_dtype=out_dtype)
        else:
            if hadamard is not None:
                from fptq.quant.hadamard import fwht_quant_triton

                a_q, a_s = fwht_quant_triton(x2, static, self.act_bits, signs=hadamard.D)
            else:
                a_q, a_s = quant_act(x2, static_scale=static, bits=self.act_bits)
            y = gemm(a_q, a_s, self.packed, bias=self.bias, out_dtype=out_dtype)
        return y.reshape(*shape[:-1], y.shape[-1])

    def extra_repr(self) -> str:
        act = "none" if self.act_mode == ActQuant.NONE else f"{self.act_mode}{self.act_bits}"
        act += "" if self.act_rule == "max" else f" {self.act_rule}"
        zero = "" if self.w_zero is None else f", zero={str(self.w_zero.dtype).removeprefix('torch.')}"
        return (
            f"in={self.in_features}, out={self.out_features}, w_bits={self.w_bits}, "
            f"group={self.group_size}{zero}, act={act}, backend={self.backend}"
        )


def kernel_constraint_errors(
    w_bits: int,
    act_bits: Optional[int],
    group_size: int,
    per_channel: bool,
    float_zero: bool = False,
    act_rule: str = "max",
    weight_format: str = "int",
) -> List[str]:
    """Every reason the triton kernels cannot run a layer of this shape of scheme (act_bits None:
    weight-only). Used per layer by set_backend and per scheme by fptq.study.preflight."""
    out = []
    if weight_format not in ("int", "qoq"):
        out.append(
            f"runs the int and qoq packed formats; the {weight_format} format runs on backend=reference"
        )
    if weight_format == "qoq" and (per_channel or group_size % 64):
        out.append(f"runs qoq weights with whole 64-column groups, got group size {group_size}")
    if w_bits not in KERNEL_W_BITS:
        out.append(f"needs {' or '.join(map(str, KERNEL_W_BITS))}-bit integer weights, got w_bits={w_bits}")
    if float_zero:
        out.append("float zero points run on backend=reference only")
    if act_rule != "max":
        out.append(f"quantizes activations with the `max` scale rule only, got act.scale_rule={act_rule}")
    if act_bits is None:
        out.append("runs W4A8/W8A8 (int8 activations); weight-only schemes need backend=reference")
    elif act_bits != 8:
        out.append(f"needs int8 activations, got {act_bits}-bit")
    from fptq.kernels.configs import supported_group  # imports triton: only when asked

    if not per_channel and not supported_group(group_size):
        out.append(f"needs group size 32 or a multiple of 64 (kernels/configs.py), got {group_size}")
    return out


def kernel_support_error(layer: QuantLinear) -> Optional[str]:
    """Why the triton kernels cannot run this layer, or None if they can."""
    errors = kernel_constraint_errors(
        layer.w_bits if layer.is_packed else 16,
        None if layer.act_mode == ActQuant.NONE else layer.act_bits,
        layer.group_size,
        layer.layout.per_channel,
        float_zero=layer.zero_kind == "float",
        act_rule=layer.act_rule,
        weight_format=layer.weight_format,
    )
    return errors[0] if errors else None


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
            check_kernel_device(next(iter(first.state_dict().values())).device)
        bad = [(n, e) for n, m in layers if (e := kernel_support_error(m)) is not None]
        if bad:
            n, e = bad[0]
            raise ValueError(f"backend=triton cannot run {len(bad)} quantized linear(s); first: {n}: {e}")
    for _, m in layers:
        m.backend = backend
    return len(layers)
