"""Saved quantized checkpoints: an HF-style folder that any run evaluates without calibration.

Layout of a saved folder:
  config.json          the model's config plus `quantization_config` (quant_method "fptq", the
                       packed format version, the scheme, the base model, and per layer: bits,
                       group size, zero kind, scale dtype, activation mode and static scale)
  model.safetensors    the state_dict as it is in memory: packed codes, scales, zeros, act scales
                       (or model-0000i-of-0000n.safetensors + model.safetensors.index.json)
  tokenizer files, quant_report.json
The tensors are the in-memory buffers byte for byte, so a loaded model's logits are identical.
A folder is written beside its destination and renamed into place: never half-written.
"""

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from fptq import __version__
from fptq.files import honour_umask
from fptq.kernels.reference import FORMAT_VERSION
from fptq.models.arch import arch_of
from fptq.models.onload import (
    SAFETENSORS_INDEX,
    SAFETENSORS_SINGLE,
    CheckpointError,
    SafetensorsReader,
    empty_model,
    retie,
    tied_aliases,
)
from fptq.quant.kv import KVQuant, add_kv_quant, use_post_rope_attention
from fptq.quant.qlinear import QuantLinear
from fptq.quant.rotation import ModelRotations

log = logging.getLogger(__name__)

QUANT_METHOD = "fptq"
CONFIG_NAME = "config.json"
REPORT_NAME = "quant_report.json"
MAX_SHARD_BYTES = 5 * 2**30  # the hub's usual shard size
# the layout of quantization_config: 2 = schemes with per-method settings, group_size 0 for per
# channel, layer configs from QuantLinear.to_config with the input-transform slot (none before)
CONFIG_VERSION = 2


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


# ---- what is saved ------------------------------------------------------------------------------


def quantization_config(model: nn.Module, scheme, base_model: Optional[Dict[str, Any]] = None) -> Dict:
    layers = {n: m.to_config() for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    return {
        "quant_method": QUANT_METHOD,
        "format_version": FORMAT_VERSION,
        "config_version": CONFIG_VERSION,
        "fptq_version": __version__,
        "dtype": _dtype_name(next(model.parameters()).dtype),
        "scheme": json.loads(json.dumps(asdict(scheme))),
        "base_model": base_model or {},
        "kv_bits": scheme.kv.bits,
        "kv_position": scheme.kv.position,
        "kv": scheme.kv.quant.to_config() if scheme.kv.bits else None,
        "layers": layers,
        # structural rotations (fptq.quant.rotation): post-norm wrappers, R3 in the attention call
        "rotations": ModelRotations.of(model).to_config(),
    }


def _unique_tensors(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The state_dict without tied duplicates (the first name of a shared tensor is kept)."""
    seen, out = set(), {}
    for name, t in model.state_dict().items():
        if t.is_meta:
            raise ValueError(f"cannot save {name}: it is still on the meta device (not loaded)")
        key = (t.data_ptr(), t.dtype, tuple(t.shape)) if t.numel() else (name,)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().contiguous().cpu()
    return out


def _shards(tensors: Dict[str, torch.Tensor], max_bytes: int) -> List[Dict[str, torch.Tensor]]:
    shards, cur, size = [], {}, 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if cur and size + n > max_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = t
        size += n
    return shards + [cur] if cur else shards


def _write_tensors(folder: Path, tensors: Dict[str, torch.Tensor], max_shard_bytes: int) -> int:
    """Write the tensors (one file, or shards and an index); returns their total bytes."""
    from safetensors.torch import save_file

    meta = {"format": "pt", "quant_method": QUANT_METHOD, "format_version": str(FORMAT_VERSION)}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    shards = _shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        save_file(shards[0], str(folder / SAFETENSORS_SINGLE), metadata=meta)
        return total
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata=meta)
        weight_map.update({k: fname for k in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=1))
    return total


def check_destination(folder, overwrite: bool) -> Path:
    folder = Path(folder).expanduser()
    if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
        # never replaced, even with overwrite: a file is not a checkpoint folder
        raise FileExistsError(
            f"{folder} is a file, not a folder; a checkpoint is a folder: choose a folder path (save.dir)"
        )
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{folder} exists and is not empty; choose another folder or pass overwrite=True "
            "(save.overwrite=true) to replace it"
        )
    return folder


def replace_folder(tmp: Path, folder: Path) -> None:
    """Move a finished `tmp` folder to `folder`, replacing what is there (never half-written)."""
    honour_umask(tmp)
    old = None
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_quantized(
    model: nn.Module,
    folder,
    *,
    scheme,
    tokenizer=None,
    report=None,
    base_model: Optional[Dict[str, Any]] = None,
    overwrite: bool = False,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> Dict[str, Any]:
    """Write the quantized `model` as an HF-style folder; returns {"path", "bytes", "seconds"}."""
    t0 = time.perf_counter()
    folder = check_destination(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        nbytes = _write_tensors(tmp, _unique_tensors(model), max_shard_bytes)
        cfg = model.config.to_dict()
        cfg["quantization_config"] = quantization_config(model, scheme, base_model)
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, default=str))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if report is not None:
            (tmp / REPORT_NAME).write_text(report.to_json())
        check_destination(folder, overwrite)  # nobody wrote there meanwhile
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"path": str(folder), "bytes": nbytes, "seconds": time.perf_counter() - t0}


# ---- loading ------------------------------------------------------------------------------------


def read_quantization_config(folder) -> Dict[str, Any]:
    """The checkpoint's quantization_config, checked to be fptq's own format at this version."""
    cfg_file = Path(folder).expanduser() / CONFIG_NAME
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file} is missing: {folder} is not a saved checkpoint folder")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from e
    qc = cfg.get("quantization_config")
    if not qc:
        raise CheckpointError(
            f"{folder} is a float model (config.json has no quantization_config); load it with "
            "model.source=hf model.path=... and quantize it"
        )
    method = qc.get("quant_method")
    if method != QUANT_METHOD:
        raise CheckpointError(
            f"{folder} was saved in the {method!r} format, not fptq's; fptq loads its own checkpoints "
            f"(quant_method {QUANT_METHOD!r}). A compressed-tensors export is for vLLM / llm-compressor."
        )
    version = qc.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder} holds packed format version {version}; this fptq ({__version__}) reads version "
            f"{FORMAT_VERSION}. Re-quantize with this version, or load it with the fptq that saved it "
            f"({qc.get('fptq_version')})."
        )
    if qc.get("config_version") != CONFIG_VERSION:
        raise CheckpointError(
            f"{folder} was saved by an older fptq ({qc.get('fptq_version')}, quantization_config layout "
            f"{qc.get('config_version', 1)}); this fptq reads layout {CONFIG_VERSION} (schemes with "
            "per-method settings, input-transform slots). Re-quantize the model with this version."
        )
    bad = layer_mismatch(qc)
    if bad:
        raise CheckpointError(
            f"{folder}: its quantization_config contradicts its own layers ({len(bad)}: "
            + "; ".join(bad[:3])
            + "); the config was edited or mixed with other tensors. Quantize the model again."
        )
    return qc


def scheme_mismatch(saved: Dict[str, Any], scheme) -> List[str]:
    """Fields where a checkpoint's scheme differs from `scheme` ("path: saved X, asked Y"); the
    preset name is not compared."""
    asked = json.loads(json.dumps(asdict(scheme)))
    out: List[str] = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in [*a, *(k for k in b if k not in a)]:  # the specs' field order
                if path or k != "name":
                    walk(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        elif a != b:
            out.append(f"{path}: checkpoint {a!r}, run {b!r}")

    walk(saved, asked, "")
    return out


def layer_mismatch(qc: Dict[str, Any]) -> List[str]:
    """Layers whose stored configuration contradicts the scheme the checkpoint claims (weight bits,
    symmetry, activation bits): a hand-edited `scheme` must not relabel the tensors it describes."""
    w = (qc.get("scheme") or {}).get("weight") or {}
    a = (qc.get("scheme") or {}).get("act") or {}
    out = []
    for name, lc in (qc.get("layers") or {}).items():
        if "bits" in w and lc.get("w_bits") != w["bits"]:
            out.append(f"{name} stores {lc.get('w_bits')}-bit weights, the scheme says {w['bits']}")
        elif "symmetric" in w and (lc.get("zero") is None) != bool(w["symmetric"]):
            out.append(
                f"{name} stores {'symmetric' if lc.get('zero') is None else 'asymmetric'} weights, "
                f"the scheme says symmetric={w['symmetric']}"
            )
        elif a and a.get("bits") is not None and lc.get("act") != "none" and lc.get("act_bits") != a["bits"]:
            out.append(
                f"{name} quantizes activations to {lc.get('act_bits')} bits, the scheme says {a['bits']}"
            )
    return out


def check_scheme(folder, scheme) -> Dict[str, Any]:
    qc = read_quantization_config(folder)
    diff = scheme_mismatch(qc["scheme"], scheme)
    if diff:
        raise CheckpointError(
            f"{folder} was quantized with scheme {qc['scheme'].get('name')!r}, the run asks for "
            f"{scheme.name!r}; they differ in {len(diff)} field(s): "
            + "; ".join(diff[:5])
            + ". Pass the checkpoint's scheme (quant=...) or quantize again."
        )
    return qc


def load_quantized(folder, dtype: Optional[torch.dtype] = None, device="cpu") -> nn.Module:
    """A saved checkpoint as a ready model: no calibration, tensors exactly as saved."""
    from transformers import AutoConfig

    folder = Path(folder).expanduser()
    qc = read_quantization_config(folder)
    reader = SafetensorsReader(folder)
    config = AutoConfig.from_pretrained(str(folder))
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # ours, not a transformers quantizer's
    dtype = dtype or _dtype(qc["dtype"])
    model = empty_model(config, dtype)
    for name, lc in qc["layers"].items():
        model.set_submodule(name, QuantLinear.from_config(lc, dtype))
    ModelRotations.restore(model, qc.get("rotations"))
    names = list(model.state_dict(keep_vars=True))
    aliases = tied_aliases(model, reader.keys())
    missing = [n for n in names if aliases.get(n, n) not in reader]
    extra = sorted(set(reader.keys()) - {aliases.get(n, n) for n in names})
    if missing or extra:
        raise CheckpointError(
            f"{folder}: the tensors do not match its quantization_config ({len(missing)} missing, e.g. "
            f"{missing[:3]}; {len(extra)} unexpected, e.g. {extra[:3]}); the folder was altered or mixed"
        )
    # the skeleton's dtypes: the model dtype for float weights, the stored ones for packed buffers
    want = {aliases.get(n, n): t.dtype for n, t in model.state_dict(keep_vars=True).items()}
    got = reader.get_many(set(want), want.get, device)
    try:
        model.load_state_dict({n: got[aliases.get(n, n)] for n in names}, strict=True, assign=True)
    except RuntimeError as e:  # shapes that contradict the layer configs (e.g. int4-packed as 8-bit)
        raise CheckpointError(
            f"{folder}: the stored tensors do not have the shapes its quantization_config implies; "
            f"the folder was altered or mixed ({str(e).splitlines()[-1].strip()[:300]})"
        ) from None
    retie(model)
    if qc.get("kv_bits"):
        arch = arch_of(model)
        position = qc.get("kv_position", "pre_rope")  # saved before the option existed: pre_rope
        if position == "post_rope":
            use_post_rope_attention(model)
        for block in model.get_submodule(arch.blocks):
            add_kv_quant(
                block,
                arch,
                model.config,
                KVQuant(**(qc.get("kv") or {"bits": qc["kv_bits"], "position": position})),
            )
    model.eval()
    return model
