"""quantize_model: online ops -> statistics -> per-layer activation plan -> transforms -> weights -> swap.

One pipeline for every scheme (FPTQ, SmoothQuant, GPTQ, AWQ, RTN); a scheme is data, and every
name in it (weight quantizer, activation strategy, transform) is a registered method
(`fptq.quant.methods`). The pipeline asks the scheme's methods what they need (`Needs`: ranges,
Hessians, sample rows, sequential statistics, online ops) instead of branching on their names.
Blocks are processed one at a time and each block's quantized output feeds the next.
"""

import fnmatch
import logging
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from fptq.models.arch import FoldGroup, arch_of
from fptq.quant.blockstate import restore_block
from fptq.quant.calibration import (
    PROPAGATE,
    ChannelStats,
    capture_block_inputs,
    capture_block_kwargs,
    collect_stats,
    run_block,
    with_block_kwargs,
)
from fptq.quant.folding import BlockFolder
from fptq.quant.granularity import group_size_value
from fptq.quant.kv import add_kv_quant, head_dim, use_post_rope_attention
from fptq.quant.methods import TRANSFORMS, ModelContext
from fptq.quant.modes import ActQuant, LayerMode, match_override
from fptq.quant.online import OnlineOp, install
from fptq.quant.primitives import sqnr_db
from fptq.quant.qlinear import QuantLinear
from fptq.quant.report import LayerRecord, QuantReport
from fptq.quant.scheme import QuantScheme

log = logging.getLogger(__name__)


class _Memory:
    """Byte counters: peaks (see) and totals (add)."""

    def __init__(self):
        self.counters: Dict[str, int] = {}

    def see(self, key: str, n: int) -> None:
        self.counters[key] = max(self.counters.get(key, 0), n)

    def add(self, key: str, n: int) -> None:
        self.counters[key] = self.counters.get(key, 0) + n


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _ignored(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or name.endswith("." + p) or name == p for p in patterns)


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    scheme: QuantScheme,
    calib_ids: Optional[torch.Tensor],
    *,
    batch_size: int = 8,
    sample_rows: int = 512,
    seed: int = 0,
    progress: bool = True,
    propagate: str = "quantized",
    onload: Optional[Callable[[int, nn.Module], None]] = None,
    offload: Optional[Callable[[nn.Module], None]] = None,
    state=None,
) -> QuantReport:
    """Quantize `model` in place with `scheme`, calibrated on calib_ids (n_samples, seqlen).

    calib_ids=None: no calibration at all, a pass over the weights (only for a `scheme.data_free`
    one: RTN weights, dynamic or no activation quantization); the report has no output SQNR. A
    data-free scheme given a few samples uses them only for the report's output SQNR.

    propagate: "quantized" feeds each quantized block's output to the next (GPTQ's sequential
    pattern, two passes per block); "float" feeds the float outputs (one pass).
    onload(i, block): materialise block i's float weights before its turn (sequential onloading,
    `fptq.models.onload`); offload(block): move a finished, packed block to where it is kept.
    The report's `memory` holds byte counters: the largest float block, calibration activations,
    statistics (Hessians, samples) and the packed total.
    state: a `fptq.quant.blockstate.BlockState`: each finished block is written to it, and a job
    relaunched after a kill starts at its first unfinished block, bit-identical to an uninterrupted
    run.
    """
    if propagate not in PROPAGATE:
        raise ValueError(f"propagate must be one of {PROPAGATE}, got {propagate!r}")
    if calib_ids is None and not scheme.data_free:
        raise ValueError(f"scheme {scheme.name} reads calibration statistics; it needs calibration ids")
    t0 = time.perf_counter()
    report = QuantReport(scheme=scheme.name)
    if scheme.is_float:
        return report
    try:
        arch = arch_of(model)
    except NotImplementedError:
        if scheme.on_unknown_arch != "dynamic":
            raise
        _fallback_dynamic(model, scheme, report)
        report.seconds = time.perf_counter() - t0
        return report
    foldable = arch.can_fold(model.config)
    if not foldable and scheme.act is not None:
        log.warning(
            "%s: norms cannot absorb scales in this configuration; no LAE/SmoothQuant folding",
            type(model).__name__,
        )
    mem = _Memory()
    blocks = model.get_submodule(arch.blocks)
    if scheme.kv.bits and scheme.kv.position == "post_rope":
        use_post_rope_attention(model)
    model_tf = [t for t in scheme.transforms if TRANSFORMS.get(t).kind == "model"]
    for tname in model_tf:
        TRANSFORMS.get(tname).check_model(model.config, arch, scheme.transform_settings(tname))
    ctx = ModelContext(calib_ids=calib_ids, scheme=scheme, seed=seed, progress=progress)
    for tname in model_tf:  # whole-model rewrites (e.g. a residual rotation) come first
        t_start = time.perf_counter()
        info = TRANSFORMS.get(tname).apply_model(model, arch, scheme.transform_settings(tname), ctx)
        report.transforms[tname] = {**(info or {}), "seconds": time.perf_counter() - t_start}
    calibrate = calib_ids is not None
    batches = capture_block_inputs(model, blocks[0], calib_ids, batch_size) if calibrate else []
    block_kwargs = capture_block_kwargs(model, blocks, calib_ids, batch_size) if calibrate else None
    start, seconds_before = 0, 0.0
    if state is not None:
        start, hidden, payloads, seconds_before, counters = state.resume(len(blocks), calibrate)
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        kv = (lambda b: add_kv_quant(b, arch, model.config, scheme.kv.quant)) if scheme.kv.bits else None
        for i, payload in enumerate(payloads):  # the finished blocks, exactly as they were packed
            for rec in restore_block(blocks[i], payload, dtype, device, kv):
                report.add(rec)
            if offload is not None:
                offload(blocks[i])
        mem.counters.update(counters)
        if start and calibrate:
            batches = [(h.to(device), args, kw) for h, (_, args, kw) in zip(hidden, batches, strict=True)]
    if scheme.data_free:
        propagate = "float"  # the sample only measures output SQNR: one pass per block suffices
    needs = scheme.needs
    stat_kw = dict(hessian=needs.hessian, sample_rows=sample_rows)
    sequential = needs.sequential and not scheme.data_free
    online = [t for t in scheme.transforms if TRANSFORMS.get(t).needs(scheme.transform_settings(t)).online]
    hd = head_dim(model.config) if hasattr(model.config, "num_attention_heads") else None
    bar = tqdm(
        range(start, len(blocks)),
        desc=f"quantize {scheme.name}",
        initial=start,
        total=len(blocks),
        disable=not progress,
    )
    for bi in bar:
        block = blocks[bi]
        first_record = len(report.layers)
        if onload is not None:
            onload(bi, block)
        prefix = f"{arch.blocks}.{bi}"
        linears = {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}
        ops, hooks = _install_online(prefix, linears, online, scheme, seed, arch)
        batches = with_block_kwargs(batches, block_kwargs, bi)
        mem.see("block_float_bytes", _nbytes(block.state_dict().values()))
        mem.see("calib_act_bytes", _nbytes(h for h, _, _ in batches))
        float_out = [] if propagate == "float" and calibrate else None
        stats: Dict[str, Optional[ChannelStats]] = dict.fromkeys(linears)
        if calibrate:
            stats = collect_stats(
                block, linears, batches, block_name=prefix, seed=seed + bi, outputs=float_out, **stat_kw
            )
            mem.see("stats_bytes", _nbytes(t for st in stats.values() for t in [st.H, *st.sample]))
        v = {n: float("nan") if st is None else st.v for n, st in stats.items()}  # before any transform
        folder = BlockFolder(block, arch, foldable, linears, stats, scheme, hd) if calibrate else None
        modes = _equalize_and_plan(prefix, linears, v, folder, scheme)
        applied = folder.applied if folder is not None else {}
        for k, subset in enumerate(arch.sequential_subsets(linears) if sequential else [list(linears)]):
            if k > 0:  # true-sequential: this subset's inputs with the subsets before it quantized
                part = {n: linears[n] for n in subset}
                stats.update(
                    collect_stats(block, part, batches, block_name=prefix, seed=seed + bi, **stat_kw)
                )
            for n in subset:
                if _ignored(f"{prefix}.{n}", scheme.ignore):
                    continue
                ql, rec = _quantize_linear(
                    linears[n], stats[n], modes[n], scheme, f"{prefix}.{n}", ops.get(n)
                )
                block.set_submodule(n, ql)
                rec.v, rec.transform = v[n], applied.get(n, "none")
                if n in ops:
                    rec.input_transform = ops[n].kind
                report.add(rec)
                mem.add("packed_bytes", ql.nbytes())
        for h in hooks:  # the float linears are replaced; their QuantLinears carry the ops
            h.remove()
        if scheme.kv.bits:
            add_kv_quant(block, arch, model.config, scheme.kv.quant)
        del stats, linears
        if calibrate:
            batches = float_out if float_out is not None else run_block(block, batches)
        if state is not None:
            state.save(
                bi,
                block,
                report.layers[first_record:],
                [h for h, _, _ in batches] if calibrate else None,
                seconds_before + time.perf_counter() - t0,
                mem.counters,
            )
        if offload is not None:
            offload(block)
    report.memory = mem.counters
    report.seconds = seconds_before + time.perf_counter() - t0
    return report


def _fallback_dynamic(model: nn.Module, scheme: QuantScheme, report: QuantReport) -> None:
    """No ArchSpec: RTN weights and per-token dynamic activations on every linear, no calibration."""
    w = scheme.weight
    if w is not None and w.needs.calibration:
        raise NotImplementedError(
            f"{type(model).__name__} has no ArchSpec: {w.algo} reads calibration statistics and needs "
            "one (only a quantizer that reads none, such as rtn, can fall back)"
        )
    log.warning(
        "%s has no ArchSpec: falling back to per-token dynamic activations on every linear, "
        "no equalization (add a mapping to fptq.models.arch.ARCHS for the real scheme)",
        type(model).__name__,
    )
    # every layer gets this mode, whatever act.strategy says (there are no statistics to pick from)
    mode = LayerMode.DYNAMIC if scheme.act is not None else LayerMode.NONE
    for name, lin in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]:
        if _ignored(name, scheme.ignore):
            continue
        ql, rec = _quantize_linear(lin, None, mode, scheme, name)
        model.set_submodule(name, ql)
        report.add(rec)


def _install_online(prefix: str, linears, online: List[str], scheme: QuantScheme, seed: int, arch=None):
    """The scheme's online transforms on this block's float linears, before any statistics:
    {linear: op} and the pre-hooks that apply each op until the linear is replaced."""
    ops: Dict[str, OnlineOp] = {}
    hooks = []
    for tname in online:
        t, settings = TRANSFORMS.get(tname), scheme.transform_settings(tname)
        for n, lin in linears.items():
            if _ignored(f"{prefix}.{n}", scheme.ignore):
                continue
            op = t.online_op(f"{prefix}.{n}", lin.in_features, settings, seed, arch)
            if op is None:
                continue
            if n in ops:
                raise ValueError(f"{prefix}.{n}: two online transforms target it ({ops[n].kind}, {tname})")
            ops[n] = op
            hooks.append(install(lin, op))
    return ops, hooks


@dataclass
class BlockPlan:
    """What an activation strategy sees of one block (`fptq.quant.methods.ActStrategy.plan`)."""

    prefix: str  # the block's module name
    linears: Dict[str, nn.Linear]  # block-relative names
    v: Dict[str, float]  # each linear's calibration range max|X|, before any transform
    folder: Optional[BlockFolder]  # statistics and folding (None without calibration)
    groups: List[FoldGroup]  # groups that may absorb the LAE mode's equalization scale
    can_lae: Set[str]  # the linears in those groups
    scheme: QuantScheme


def _equalize_and_plan(
    prefix: str, linears, v: Dict[str, float], folder: Optional[BlockFolder], scheme: QuantScheme
) -> Dict[str, LayerMode]:
    """Fold the scheme's activation-statistics transforms (SmoothQuant), plan each linear's
    activation mode (the strategy, then `act.overrides`, then: LAE needs a group to absorb it),
    fold the LAE mode's equalizer (`act.equalizer`) into the groups where it was chosen, then the
    weight-aware searches (AWQ), which must see the final weights. No folder: no calibration.
    """
    scale_tf = [t for t in scheme.transforms if TRANSFORMS.get(t).kind == "scale"]
    if folder is not None:
        folder.apply([t for t in scale_tf if not TRANSFORMS.get(t).NEEDS.quantized_weights])
    groups = folder.lae_groups() if folder is not None else []
    if scheme.act is None:
        modes = {n: LayerMode.NONE for n in linears}
    else:
        can_lae = {m for g in groups for m in g.linears}
        plan = BlockPlan(prefix, linears, v, folder, groups, can_lae, scheme)
        modes = apply_overrides(prefix, scheme.act.method.plan(plan), scheme.act.overrides, can_lae)
    if folder is not None:
        for g in groups:
            if any(modes[m] == LayerMode.LAE for m in g.linears):
                folder.fold(g, scheme.act.equalizer)
        folder.apply([t for t in scale_tf if TRANSFORMS.get(t).NEEDS.quantized_weights])
    return modes


def apply_overrides(
    prefix: str, modes: Dict[str, LayerMode], overrides: Dict[str, str], can_lae: Set[str]
) -> Dict[str, LayerMode]:
    """The one place per-layer overrides apply: `act.overrides` (fnmatch on the full module name)
    replace the strategy's choice; then the LAE mode, which needs a group to absorb its scale, falls
    back to per-tensor static on a layer that has none."""
    out = {}
    for n, mode in modes.items():
        override = match_override(f"{prefix}.{n}", overrides)
        mode = override if override is not None else mode
        out[n] = LayerMode.STATIC if mode == LayerMode.LAE and n not in can_lae else mode
    return out


def _quantize_linear(
    lin: nn.Linear,
    st: Optional[ChannelStats],
    mode: LayerMode,
    scheme: QuantScheme,
    name: str,
    op: Optional[OnlineOp] = None,
):
    """One linear -> (QuantLinear, its report row). `st` is None without calibration."""
    w = scheme.weight
    W = lin.weight.detach()
    act_mode, act_scale, act_bits, act_rule = ActQuant.NONE, None, 8, "max"
    if scheme.act is not None:
        act_mode, act_bits, act_rule = mode.runtime, scheme.act.bits, scheme.act.scale_rule
        if act_mode == ActQuant.STATIC:
            act_scale = scheme.act.static_scale(st.absmax, st.sample_tensor() if st.sample else None)
    act = dict(act_mode=act_mode, act_bits=act_bits, act_rule=act_rule, act_scale=act_scale)
    layout, wsqnr = None, float("inf")
    if w is not None:
        layout = w.layout(W.shape[1], name)
        q, sc, z, *channel = w.method.quantize(W, layout, w, st, name)  # qoq: + a channel scale
        sdt = torch.float32 if w.scale_dtype == "float32" else W.dtype
        ql = QuantLinear.from_codes(
            q,
            sc,
            z,
            bits=w.bits,
            group_size=layout.group_size,
            bias=lin.bias,
            dtype=W.dtype,
            scale_dtype=sdt,
            float_zero=w.grid.float_zero,
            input_transform=op,
            channel_scale=channel[0] if channel else None,
            **act,
        )
        wsqnr = sqnr_db(W.float(), ql.dequantized_weight(torch.float32))
    else:
        ql = QuantLinear.from_float(W, lin.bias, input_transform=op, **act)
    out_sqnr = float("nan")
    if st is not None and st.sample:
        # output on calibration rows vs the unquantized layer, both in the transformed space
        X = st.sample_tensor()
        out_q = ql.forward_transformed(X.to(W.dtype)).float() - (0 if ql.bias is None else ql.bias.float())
        out_sqnr = sqnr_db(X @ W.float().T, out_q)
    rec = LayerRecord(
        name=name,
        v=float("nan"),
        strategy=mode.value,
        act=act_mode.value,
        transform="none",
        w_bits=w.bits if w is not None else 16,
        group_size=None if layout is None else group_size_value(layout),
        ragged_group=bool(layout is not None and layout.ragged),
        weight_sqnr=wsqnr,
        output_sqnr=out_sqnr,
        act_scale=None if act_scale is None else float(act_scale),
    )
    return ql, rec
