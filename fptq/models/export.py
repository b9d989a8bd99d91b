"""Export to compressed-tensors, the format vLLM and llm-compressor read, through that package.

Each quantized linear becomes a compressed-tensors module: its dense weight is our dequantized
weight, its `weight_scale` / `weight_zero_point` / `input_scale` are our qparams, and the
package's own compressor packs it (`pack-quantized` for <= 4-bit weights, `int-quantized` for
8-bit). Layers are grouped by scheme into `config_groups` that target module names exactly, so
FPTQ's per-layer activation strategy (static per-tensor here, dynamic per-token there) is
expressed as it is. Conventions: compressed-tensors codes are signed for every scheme (int4:
-8..7), so an asymmetric code u in 0..15 is exported as u - 8 with zero point z - 8; q - z is
unchanged. One layer is made dense at a time: peak memory is the packed model plus one layer.

Not expressible, refused with a message: float zero points, float-weight layers (w_bits=16),
ragged last groups (compressed-tensors' group packing needs in_features % group_size == 0),
and our KV-cache fake quantization (per token and head; compressed-tensors' kv_cache_scheme is
another scheme).
"""

import copy
import json
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from fptq.kernels.reference import code_offset
from fptq.models.checkpoint import CONFIG_NAME, check_destination, replace_folder
from fptq.quant.modes import ActQuant
from fptq.quant.qlinear import QuantLinear
from fptq.quant.rotation import ModelRotations

CT_INSTALL = "pip install compressed-tensors"


log = logging.getLogger(__name__)


def _ct():
    try:
        import compressed_tensors  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the compressed-tensors export needs the package: {CT_INSTALL}") from e


def export_error(ql: QuantLinear) -> Optional[str]:
    """Why a layer cannot be exported, or None."""
    if not ql.is_packed:
        return "float weights (w_bits=16) have no compressed-tensors weight scheme here"
    if ql.zero_kind == "float":
        return "float zero points are not a compressed-tensors int scheme"
    if ql.act_mode == ActQuant.DYNAMIC and ql.act_rule != "max":
        return (
            f"per-token activations with scale rule {ql.act_rule}: compressed-tensors computes absmax / qmax"
        )
    if ql.layout.ragged:
        return (
            f"in_features={ql.in_features} is not a multiple of group {ql.group_size} (a ragged last "
            "group); compressed-tensors' group strategy needs whole groups: pick a group size that divides it"
        )
    return None


def _args(ql: QuantLinear):
    from compressed_tensors.quantization import QuantizationArgs

    per_channel = ql.layout.per_channel
    weights = QuantizationArgs(
        num_bits=ql.w_bits,
        type="int",
        symmetric=ql.w_zero is None,
        strategy="channel" if per_channel else "group",
        group_size=None if per_channel else ql.group_size,
    )
    acts = None
    if ql.act_mode == ActQuant.STATIC:
        acts = QuantizationArgs(
            num_bits=ql.act_bits, type="int", symmetric=True, strategy="tensor", dynamic=False
        )
    elif ql.act_mode == ActQuant.DYNAMIC:
        acts = QuantizationArgs(
            num_bits=ql.act_bits, type="int", symmetric=True, strategy="token", dynamic=True
        )
    return weights, acts


def _key(weights, acts) -> Tuple[str, str]:
    return (weights.model_dump_json(), acts.model_dump_json() if acts is not None else "")


def _ct_zero(ql: QuantLinear) -> Optional[torch.Tensor]:
    """Our stored zero points in compressed-tensors' signed convention, (out, n_groups) int8."""
    if ql.w_zero is None:
        return None
    # stored zero = z - code_offset; compressed-tensors' zero = z - 2^(b-1)
    shift = code_offset(ql.w_bits, symmetric=False) - 2 ** (ql.w_bits - 1)
    return (ql.w_zero.to(torch.int32).T + shift).to(torch.int8).contiguous()


def _dense_module(ql: QuantLinear, scheme, dtype) -> nn.Linear:
    """An nn.Linear carrying our dequantized weight and qparams, initialised for compressed-tensors."""
    from compressed_tensors.quantization import QuantizationStatus
    from compressed_tensors.quantization.lifecycle.initialize import initialize_module_for_quantization

    lin = nn.Linear(ql.in_features, ql.out_features, bias=ql.bias is not None, device="meta", dtype=dtype)
    lin.weight = nn.Parameter(ql.dequantized_weight(dtype), requires_grad=False)
    if ql.bias is not None:
        lin.bias = nn.Parameter(ql.bias.to(dtype), requires_grad=False)
    initialize_module_for_quantization(lin, scheme, force_zero_point=False)
    with torch.no_grad():
        if ql.weight_format == "qoq":  # integer group scales under a channel scale: their product
            scale = ql.w_scale.T.float() * ql.w_channel_scale[:, None]
        else:
            scale = ql.w_scale.T
        lin.weight_scale.data = scale.contiguous().to(lin.weight_scale.dtype)
        if ql.w_zero is not None:
            lin.weight_zero_point.data = _ct_zero(ql)
        if ql.act_mode == ActQuant.STATIC:
            lin.input_scale.data = ql.act_scale.reshape(1).to(lin.input_scale.dtype)
    lin.quantization_status = QuantizationStatus.FROZEN
    return lin


def ct_format(w_bits: int) -> str:
    return "pack-quantized" if w_bits <= 4 else "int-quantized"


def export_compressed_tensors(
    model: nn.Module, folder, *, tokenizer=None, overwrite: bool = False, ignore=("lm_head",)
) -> Dict[str, Any]:
    """Write `model` (quantized by fptq) as a compressed-tensors folder; returns a summary."""
    _ct()
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.compressors.base import compress_module
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme, QuantizationStatus

    t0 = time.perf_counter()
    if any(getattr(m, "fptq_kv_bits", 0) for m in model.modules()):
        raise ValueError(
            "compressed-tensors export: KV-cache fake quantization (quant.kv) is not expressible"
        )
    if not ModelRotations.of(model).empty:
        raise ValueError(
            "compressed-tensors export: online rotations outside the linear layers (QuaRot's R3 on queries "
            "and keys, or R1 after Gemma's sandwich post-norms) are not expressible; save an fptq checkpoint "
            "(save.path=...) instead, or quantize with quant.transform_args.quarot.r3=false on a family "
            "without post-norms"
        )
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    if not layers:
        raise ValueError("compressed-tensors export: the model has no quantized linear layers")
    bad = [(n, e) for n, m in layers.items() if (e := export_error(m)) is not None]
    if bad:
        raise ValueError(
            f"compressed-tensors export: {len(bad)} layer(s) cannot be expressed; first: {bad[0][0]}: {bad[0][1]}"
        )
    folder = check_destination(folder, overwrite)
    dtype = next(model.parameters()).dtype
    groups: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for n, m in layers.items():
        w, a = _args(m)
        g = groups.setdefault(
            _key(w, a), {"weights": w, "acts": a, "names": [], "format": ct_format(m.w_bits)}
        )
        g["names"].append(n)
    schemes = {}
    for i, g in enumerate(groups.values()):
        schemes[f"group_{i}"] = QuantizationScheme(
            targets=g["names"], weights=g["weights"], input_activations=g["acts"], format=g["format"]
        )
    by_name = {n: s for s in schemes.values() for n in s.targets}
    out = copy.deepcopy(model)  # packed: cheap
    for n, m in layers.items():
        lin = _dense_module(m, by_name[n], dtype)
        compress_module(lin)  # the package's own packing
        out.set_submodule(n, lin)
    formats = sorted({g["format"] for g in groups.values()})
    qconfig = QuantizationConfig(
        config_groups=schemes,
        format=formats[0] if len(formats) == 1 else "mixed-precision",
        quantization_status=QuantizationStatus.COMPRESSED,
        ignore=list(ignore),
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if hasattr(out.config, "quantization_config"):
            del out.config.quantization_config
        out.save_pretrained(str(tmp))
        ModelCompressor(quantization_config=qconfig).update_config(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        check_destination(folder, overwrite)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    ops = _write_input_transforms(folder, layers)
    _write_weight_formats(folder, layers)
    return {
        "input_transforms": ops,
        "path": str(folder),
        "groups": len(schemes),
        "format": cfg["quantization_config"]["format"],
        "seconds": time.perf_counter() - t0,
    }


INPUT_TRANSFORMS = "fptq_input_transforms"  # config.json key and tensor file stem


def _write_input_transforms(folder: Path, layers: Dict[str, QuantLinear]) -> int:
    """Record the layers' input-transform slots (online ops, e.g. a rotation fused into the exported
    weight): `quantization_config.fptq_input_transforms` names each op and its tensors, which go to
    `fptq_input_transforms.safetensors`. compressed-tensors and vLLM do not apply them: a consumer
    must run each op on the layer's input (`load_decompressed` does)."""
    ops = {n: m.input_transform for n, m in layers.items() if m.input_transform is not None}
    if not ops:
        return 0
    from safetensors.torch import save_file

    log.warning(
        "%d layer(s) carry an online input transform (%s); the export records it in %s, but "
        "compressed-tensors consumers (vLLM, llm-compressor) do not apply it",
        len(ops),
        ", ".join(sorted({op.kind for op in ops.values()})),
        INPUT_TRANSFORMS,
    )
    tensors = {
        f"{n}.input_transform.{k}": v.contiguous().cpu()
        for n, op in ops.items()
        for k, v in op.state_dict().items()
    }
    save_file(tensors, str(folder / f"{INPUT_TRANSFORMS}.safetensors"))
    cfg_file = folder / CONFIG_NAME
    cfg = json.loads(cfg_file.read_text())
    cfg["quantization_config"][INPUT_TRANSFORMS] = {n: op.to_config() for n, op in ops.items()}
    cfg_file.write_text(json.dumps(cfg, indent=2))
    return len(ops)


WEIGHT_FORMATS = "fptq_weight_formats"  # config.json key: layers stored in a format other than "int"


def _write_weight_formats(folder: Path, layers: Dict[str, QuantLinear]) -> int:
    """Tag the layers whose fptq format is not the plain one. A "qoq" layer (QServe's progressive
    group quantization) is exported as standard asymmetric int4 groups whose float scale is the
    product s_channel * s_group; the tag says the scales factor into an int8 per-group scale and a
    float per-channel one, so a consumer with a QoQ kernel can run the integer int4 -> int8 path."""
    tagged = {n: m.weight_format for n, m in layers.items() if m.weight_format != "int"}
    if tagged:
        cfg_file = folder / CONFIG_NAME
        cfg = json.loads(cfg_file.read_text())
        cfg["quantization_config"][WEIGHT_FORMATS] = tagged
        cfg_file.write_text(json.dumps(cfg, indent=2))
    return len(tagged)


class _WithInput(nn.Module):
    """A decompressed linear behind its recorded input transform."""

    def __init__(self, op: nn.Module, linear: nn.Module):
        super().__init__()
        self.op, self.linear = op, linear

    def forward(self, x):
        return self.linear(self.op(x))


def load_decompressed(folder, dtype=torch.float32) -> nn.Module:
    """Load a compressed-tensors folder through transformers + compressed-tensors, decompressed
    to dense weights by the package itself (what the round-trip test compares with ours); recorded
    input transforms are put back in front of their layers."""
    _ct()
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    from fptq.quant.online import op_from_config

    model = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=dtype, quantization_config=CompressedTensorsConfig(run_compressed=False)
    ).eval()
    cfg = json.loads((Path(folder) / CONFIG_NAME).read_text())
    ops = cfg.get("quantization_config", {}).get(INPUT_TRANSFORMS) or {}
    if ops:
        from safetensors.torch import load_file

        tensors = load_file(str(Path(folder) / f"{INPUT_TRANSFORMS}.safetensors"))
        for name, op_cfg in ops.items():
            lin = model.get_submodule(name)
            op = op_from_config(op_cfg, lin.in_features)
            prefix = f"{name}.input_transform."
            op.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
            model.set_submodule(name, _WithInput(op, lin))
    return model
