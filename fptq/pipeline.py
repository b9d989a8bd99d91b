"""quantize_model: statistics -> per-layer activation plan -> transforms -> weights -> swap.

One pipeline for every scheme (FPTQ, SmoothQuant, GPTQ, AWQ, RTN); a scheme is data.
Blocks are processed one at a time and each block's quantized output feeds the next.
"""

import fnmatch
import logging
import time
from typing import Dict

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from fptq.act import DYNAMIC, LAE, NONE, choose_mode, quant_mode
from fptq.arch import ArchSpec, arch_of
from fptq.calibration import ChannelStats, capture_block_inputs, collect_stats, run_block
from fptq.kv import add_kv_quant
from fptq.primitives import dequantize_weight, group_bounds, sqnr_db
from fptq.qlinear import QuantLinear
from fptq.report import LayerRecord, QuantReport
from fptq.scheme import QuantScheme
from fptq.transforms import fold_scale, lae_scale, smoothquant_scale
from fptq.transforms.awq import awq_clip, awq_scale
from fptq.weight import gptq_quantize, rtn_quantize

log = logging.getLogger(__name__)


def _ignored(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or name.endswith("." + p) or name == p for p in patterns)


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    scheme: QuantScheme,
    calib_ids: torch.Tensor,
    *,
    batch_size: int = 8,
    sample_rows: int = 512,
    seed: int = 0,
    progress: bool = True,
    propagate: str = "quantized",
) -> QuantReport:
    """Quantize `model` in place with `scheme`, calibrated on calib_ids (n_samples, seqlen).

    propagate: "quantized" feeds each quantized block's output to the next (GPTQ's sequential
    pattern, two passes per block); "float" feeds the float outputs (one pass).
    """
    if propagate not in ("quantized", "float"):
        raise ValueError(f"propagate must be 'quantized' or 'float', got {propagate!r}")
    t0 = time.perf_counter()
    report = QuantReport(scheme=scheme.name)
    if scheme.is_float:
        return report
    try:
        arch = arch_of(model)
    except NotImplementedError:
        if scheme.on_unknown_arch != "dynamic":
            raise
        return _fallback_dynamic(model, scheme, report, t0)
    foldable = arch.can_fold(model.config)
    if not foldable and scheme.act is not None:
        log.warning(
            "%s: norms cannot absorb scales in this configuration; no LAE/SmoothQuant folding",
            type(model).__name__,
        )
    blocks = model.get_submodule(arch.blocks)
    batches = capture_block_inputs(model, blocks[0], calib_ids, batch_size)
    for bi in tqdm(range(len(blocks)), desc=f"quantize {scheme.name}", disable=not progress):
        block = blocks[bi]
        prefix = f"{arch.blocks}.{bi}"
        linears = {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}
        float_out = [] if propagate == "float" else None
        stats = collect_stats(
            block,
            linears,
            batches,
            hessian=scheme.weight is not None and scheme.weight.algo == "gptq",
            sample_rows=sample_rows,
            block_name=prefix,
            seed=seed + bi,
            outputs=float_out,
        )
        quantized = {n: m for n, m in linears.items() if not _ignored(f"{prefix}.{n}", scheme.ignore)}
        v = {n: stats[n].v for n in linears}
        modes = _plan(arch, foldable, prefix, linears, stats, scheme)
        smooth = _apply_transforms(block, arch, foldable, linears, stats, modes, scheme)
        # float reference in the transformed space (the same function as before the transforms)
        ref = {n: (m.weight.detach().clone(), stats[n].sample_tensor()) for n, m in quantized.items()}
        for n, lin in quantized.items():
            ql, wsqnr, ragged = _quantize_linear(lin, stats[n], modes[n], scheme, f"{prefix}.{n}")
            block.set_submodule(n, ql)
            W0, X0 = ref[n]
            out_ref = X0 @ W0.float().T
            out_q = ql(stats[n].sample_tensor().to(ql.weight.dtype)).float() - (
                0 if ql.bias is None else ql.bias.float()
            )
            report.add(
                LayerRecord(
                    name=f"{prefix}.{n}",
                    v=v[n],
                    strategy=modes[n],
                    act=ql.act_mode,
                    transform=smooth.get(n, "none"),
                    w_bits=ql.w_bits,
                    group_size=ql.group_size,
                    ragged_group=ragged,
                    weight_sqnr=wsqnr,
                    output_sqnr=sqnr_db(out_ref, out_q),
                    act_scale=None if ql.act_scale is None else float(ql.act_scale),
                )
            )
        if scheme.kv.bits:
            add_kv_quant(block, arch, model.config, scheme.kv.bits)
        del stats, ref
        batches = float_out if float_out is not None else run_block(block, batches)
    report.seconds = time.perf_counter() - t0
    return report


def _fallback_dynamic(model: nn.Module, scheme: QuantScheme, report: QuantReport, t0: float) -> QuantReport:
    """No ArchSpec: RTN weights and per-token dynamic activations on every linear, no calibration."""
    w = scheme.weight
    if w is not None and w.algo != "rtn":
        raise NotImplementedError(
            f"{type(model).__name__} has no ArchSpec: {w.algo} needs one (only rtn can fall back)"
        )
    log.warning(
        "%s has no ArchSpec: falling back to per-token dynamic activations on every linear, "
        "no equalization (add a mapping to fptq.arch.ARCHS for the real scheme)",
        type(model).__name__,
    )
    for name, lin in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]:
        if _ignored(name, scheme.ignore):
            continue
        st = ChannelStats(absmax=torch.ones(lin.in_features))
        mode = DYNAMIC if scheme.act is not None else NONE  # the mode, not act.strategy, decides
        ql, wsqnr, ragged = _quantize_linear(lin, st, mode, scheme, name)
        model.set_submodule(name, ql)
        report.add(
            LayerRecord(
                name=name,
                v=float("nan"),
                strategy=mode,
                act=ql.act_mode,
                transform="none",
                w_bits=ql.w_bits,
                group_size=ql.group_size,
                ragged_group=ragged,
                weight_sqnr=wsqnr,
                output_sqnr=float("nan"),
            )
        )
    report.seconds = time.perf_counter() - t0
    return report


def _plan(arch: ArchSpec, foldable: bool, prefix: str, linears, stats, scheme: QuantScheme) -> Dict[str, str]:
    if scheme.act is None:
        return {n: NONE for n in linears}
    modes = {}
    for n in linears:
        group = arch.group_of(n) if foldable else None
        norm_fed = group is not None and all(m in linears for m in group.linears)
        modes[n] = choose_mode(f"{prefix}.{n}", stats[n].v, norm_fed, scheme.act)
    return modes


def _apply_transforms(
    block, arch, foldable, linears, stats: Dict[str, ChannelStats], modes, scheme
) -> Dict[str, str]:
    """Fold equalization scales into the block; keep the statistics in sync. Returns name -> transform."""
    applied: Dict[str, str] = {}

    def fold(group, s, tag):
        members = [linears[m] for m in group.linears]
        fold_scale(block.get_submodule(group.source), members, s, group.kind)
        for m in group.linears:
            stats[m].rescale(s)
            applied[m] = tag

    norm_groups = [g for g in arch.norm_groups() if foldable and all(m in linears for m in g.linears)]
    if "smoothquant" in scheme.transforms:
        for g in norm_groups:
            x = stats[g.linears[0]].absmax
            fold(
                g,
                smoothquant_scale(x, [linears[m].weight for m in g.linears], scheme.smoothquant_alpha),
                "smoothquant",
            )
    for g in norm_groups:
        if any(modes[m] == LAE for m in g.linears):
            x = stats[g.linears[0]].absmax
            if scheme.act.equalizer == "lae":
                fold(g, lae_scale(x), "lae")
            else:
                fold(
                    g,
                    smoothquant_scale(x, [linears[m].weight for m in g.linears], scheme.smoothquant_alpha),
                    "smoothquant",
                )
    if scheme.weight is not None and scheme.weight.algo == "awq":
        for g in arch.groups:
            if not all(m in linears for m in g.linears) or (g.norm_fed and not foldable):
                continue
            X = stats[g.linears[0]].sample_tensor()
            s = awq_scale(X, [linears[m].weight for m in g.linears], scheme.weight)
            fold(g, s, "awq")
    return applied


def _quantize_linear(lin: nn.Linear, st: ChannelStats, mode: str, scheme: QuantScheme, name: str):
    w = scheme.weight
    W = lin.weight.detach()
    ragged = False
    kwargs = {}
    if w is not None:
        if w.granularity == "group" and w.group_size > W.shape[1]:
            raise ValueError(
                f"{name}: weight.group_size={w.group_size} exceeds the layer's {W.shape[1]} input features"
            )
        ragged = len(group_bounds(W.shape[1], w.group)) > 1 and W.shape[1] % w.group != 0
        if w.algo == "gptq":
            q, sc, z = gptq_quantize(
                W, st.H, w.bits, w.group, w.symmetric, w.damp, w.block_size, w.act_order, name
            )
        else:
            clip = awq_clip(st.sample_tensor(), W, w) if w.algo == "awq" and w.awq_clip else None
            q, sc, z = rtn_quantize(W, w.bits, w.group, w.symmetric, clip)
        kwargs = dict(qweight=q, w_scale=sc, w_zero=z, w_bits=w.bits, group_size=w.group)
        wsqnr = sqnr_db(W.float(), dequantize_weight(q, sc, z, w.group))
    else:
        wsqnr = float("inf")
    act_mode, act_scale, act_bits = "none", None, 8
    if scheme.act is not None:
        act_mode, act_bits = quant_mode(mode), scheme.act.bits
        if act_mode == "static":
            act_scale = st.absmax.max().clamp(min=1e-8) / (2 ** (act_bits - 1) - 1)
    ql = QuantLinear(W, lin.bias, act_mode=act_mode, act_bits=act_bits, act_scale=act_scale, **kwargs)
    return ql, wsqnr, ragged
