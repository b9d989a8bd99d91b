"""`quarot`: QuaRot's rotations (Ashkboos et al. 2024, arXiv 2404.00456), fused offline and online.

R1 (residual stream; randomized Hadamard of the hidden size), R2 (per head on v_proj/o_proj), both
fused into the weights before the block loop; R4 (a Hadamard on down_proj's input) in QuantLinear's
input-transform slot; R3 (a Hadamard on queries and keys after RoPE) in the attention call. The
machinery and the exactness argument are in `fptq.quant.rotation`. In float the logits are
unchanged (tests/quant/test_rotation.py); quantized, outlier channels are spread over all channels
so one per-tensor or per-token scale fits.

Where we depart from QuaRot: a hidden size with no known Hadamard gets a Haar-random orthogonal
matrix only if `fallback=random` (QuaRot stores a few extra orders, e.g. 172 for LLaMA-2's 11008);
Gemma-2/3's sandwich post-norms get R1 online after the norm (QuaRot does not cover them); the
quantizers that follow are ours (the scheme's), so QuaRot + FPTQ's layerwise policy composes.
"""

from dataclasses import dataclass
from typing import Any, Dict

from fptq.quant.methods import TRANSFORMS, Needs, Transform, check, one_of
from fptq.quant.rotation import (
    CONSTRUCTIONS,
    FALLBACKS,
    check_arch,
    construction,
    enable_qk_rotation,
    erased_channels,
    fuse_norms,
    make_rotation,
    partial_rotation,
    rotate_heads,
    rotate_residual,
    sizes,
    untie,
)


@dataclass(frozen=True)
class QuaRotSettings:
    r1: str = "hadamard"  # the residual rotation: hadamard (randomized) | random | none
    r2: str = "hadamard"  # per head on v_proj/o_proj: hadamard | random | none
    r3: bool = True  # Hadamard on q and k after RoPE (matters for KV quantization)
    r4: bool = True  # online Hadamard on down_proj's input
    fallback: str = "none"  # a size with no known Hadamard: none (refuse) | random (orthogonal)
    seed: int = 0  # the random signs of R1/R2 (and the fallback matrices)
    # residual channels some norm erases (gain ~0) stay out of R1 (fptq.quant.rotation.erased_channels);
    # off: QuaRot rotates every channel. On Gemma-3-270m it is what keeps W8 working (ppl 274 -> 58)
    keep_erased: bool = False

    def __post_init__(self):
        one_of(self.r1, CONSTRUCTIONS, "quarot.r1")
        one_of(self.r2, CONSTRUCTIONS, "quarot.r2")
        one_of(self.fallback, FALLBACKS, "quarot.fallback")
        check(isinstance(self.r3, bool) and isinstance(self.r4, bool), "quarot.r3/r4 must be booleans")


def check_kv(r3: bool, scheme, name: str) -> None:
    """R3 rotates K after RoPE: KV quantized before RoPE would never see it."""
    check(
        not (r3 and scheme.kv.bits and scheme.kv.position == "pre_rope"),
        f"{name}.r3 rotates keys after RoPE, but quant.kv.position=pre_rope quantizes them before: set "
        f"quant.kv.position=post_rope (what a serving engine caches) or quant.transform_args.{name}.r3=false",
    )


def check_sizes(config, r1: str, r2: str, r3: bool, r4: bool, fallback: str, name: str) -> Dict[str, str]:
    """What each rotation gets on this model ('hadamard 36x16', 'random', 'none'); refuses sizes with
    no Hadamard and no fallback."""
    sz = sizes(config)
    out = {"r1": construction(sz["hidden"], r1, fallback, f"{name}.r1 (hidden {sz['hidden']})")}
    if "head_dim" in sz:
        out["r2"] = construction(sz["head_dim"], r2, fallback, f"{name}.r2 (head_dim {sz['head_dim']})")
        hd = sz["head_dim"]
        out["r3"] = construction(hd, "hadamard" if r3 else "none", fallback, f"{name}.r3 (head_dim {hd})")
    if r4 and "intermediate" in sz:
        n = sz["intermediate"]
        out["r4"] = construction(n, "hadamard", fallback, f"{name}.r4 (intermediate {n})")
    return out


def rotate(model, arch, r1_op, r2_ops, r3_op) -> Dict[str, Any]:
    """Untie, fuse norms, fuse R1 and R2 (one op per layer, or None), enable R3 (an op, or None).
    Returns what it did."""
    info: Dict[str, Any] = {"untied_bytes": 0, "online_post_norms": 0}
    if r1_op is not None:
        info["untied_bytes"] = untie(model)
        fuse_norms(model, arch)
        info["online_post_norms"] = len(rotate_residual(model, arch, r1_op))
    if r2_ops is not None:
        for block, op in zip(model.get_submodule(arch.blocks), r2_ops, strict=True):
            rotate_heads(block, arch, model.config, op.matrix())
    if r3_op is not None:
        enable_qk_rotation(model, arch, r3_op)
    return info


class RotationTransform(Transform):
    """What QuaRot and SpinQuant share: a whole-model rewrite, R4 online, R3 against pre-RoPE KV,
    the architecture and size checks. `rotations(settings)` -> (r1, r2) constructions."""

    kind = "model"

    def rotations(self, settings) -> tuple:
        return settings.r1, settings.r2

    def needs(self, settings) -> Needs:
        return Needs(whole_model=True, online=settings.r4)

    def check_scheme(self, settings, scheme) -> None:
        check_kv(settings.r3, scheme, self.name)

    def check_model(self, config, arch, settings) -> Dict[str, str]:
        """Refuse what the model cannot take; returns what each rotation gets (check_sizes)."""
        r1, r2 = self.rotations(settings)
        s = settings
        check_arch(arch, config, r1=r1 != "none", r2=r2 != "none", r3=s.r3, r4=s.r4, what=self.name)
        return check_sizes(config, r1, r2, s.r3, s.r4, s.fallback, self.name)

    def online_op(self, name: str, in_features: int, settings, seed: int, arch=None):
        return r4_op(name, in_features, settings.r4, settings.fallback, settings.seed, arch)


@TRANSFORMS.register
class QuaRot(RotationTransform):
    name = "quarot"
    Settings = QuaRotSettings

    def apply_model(self, model, arch, settings: QuaRotSettings, ctx) -> Dict[str, Any]:
        s = settings
        built = self.check_model(model.config, arch, s)
        r1 = None
        if s.r1 != "none":
            r1, built["r1"] = residual_rotation(
                model, arch, s.r1, s.fallback, s.seed, s.keep_erased, "quarot.r1"
            )
        r2 = None
        if s.r2 != "none":
            hd, n = sizes(model.config)["head_dim"], len(model.get_submodule(arch.blocks))
            r2 = [make_rotation(hd, s.r2, s.fallback, s.seed, f"quarot.r2.{i}") for i in range(n)]
        r3 = qk_op(model.config, s.r3, s.fallback, s.seed)
        return {**built, **rotate(model, arch, r1, r2, r3)}


def r4_op(name: str, in_features: int, r4: bool, fallback: str, seed: int, arch):
    """R4 on the FFN's output projection (`arch.down_proj`): a plain Hadamard of its input size
    (QuaRot's online Hadamard), or the random fallback."""
    if not r4 or arch is None or not name.endswith("." + arch.down_proj):
        return None
    return make_rotation(in_features, "hadamard", fallback, seed, f"r4.{name}", randomize=False)


def residual_rotation(model, arch, kind: str, fallback: str, seed: int, keep_erased: bool, name: str):
    """R1 as an op and what it was built as: over every channel, or over those no norm erases."""
    n = model.config.hidden_size
    keep = erased_channels(model, arch) if keep_erased else []
    if keep:
        return partial_rotation(n, keep, kind, fallback, seed, name)
    return make_rotation(n, kind, fallback, seed, name), construction(n, kind, fallback, name)


def qk_op(config, r3: bool, fallback: str, seed: int):
    """R3: a plain Hadamard of head_dim (or the random fallback), or None."""
    if not r3:
        return None
    return make_rotation(sizes(config)["head_dim"], "hadamard", fallback, seed, "r3", randomize=False)
