"""The measuring instrument for GPU code on a machine without a GPU: compile a kernel for sm_90a
(H100) on the CPU and read what it compiled to.

`triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))` runs Triton's whole pipeline
(TTIR -> TTGIR -> LLVM -> PTX -> cubin) with no device. The wheel's newest `ptxas` reports
registers and spills (`ptxas -v`), and its `nvdisasm` gives the SASS, from which `LoopStats`
counts the instructions of the main K loop, the loads in it and the tensor-core ops.

Run this module in a process without TRITON_INTERPRET (the kernels are then real `JITFunction`s):
`python -m fptq.kernels.sm90` prints one JSON line per compiled config (`fptq.kernels.configs`
lists them). Pinned to the Triton version in pyproject.toml: SASS and counts change with it.
"""

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

ARCH = 90
WARP_SIZE = 32
INSTR = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(.*?);")
LABEL = re.compile(r"^(\.L_x_\d+):")
BRANCH = re.compile(r"\bBRA\b.*`\((\.L_x_\d+)\)")


def _tool(name: str) -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} is not in the Triton wheel ({path}); the sm90 tier needs it")
    return path


def ptxas() -> str:
    """The wheel's newest ptxas: Triton 3.9 emits PTX 9.x, which the older bundled ptxas rejects."""
    for name in ("ptxas-blackwell", "ptxas"):
        try:
            return _tool(name)
        except FileNotFoundError:
            continue
    raise FileNotFoundError("no ptxas in the Triton wheel")


@dataclass(frozen=True)
class RegStats:
    registers: int
    spill_stores: int  # bytes
    spill_loads: int  # bytes
    shared: int  # bytes of static shared memory reported by ptxas (Triton's dynamic smem is separate)


def ptxas_stats(ptx: str, arch: str = "sm_90a") -> RegStats:
    """Registers and spills of the PTX's kernel, from `ptxas -v`."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        out = subprocess.run(
            [ptxas(), f"-arch={arch}", "-v", src, "-o", os.path.join(d, "k.cubin")],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    regs = re.search(r"Used (\d+) registers", out)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out)
    smem = re.search(r"(\d+) bytes smem", out)
    return RegStats(
        int(regs.group(1)) if regs else -1,
        int(spill.group(1)) if spill else 0,
        int(spill.group(2)) if spill else 0,
        int(smem.group(1)) if smem else 0,
    )


def sass(cubin: bytes) -> str:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run(
            [_tool("nvdisasm"), "-c", f.name], capture_output=True, text=True, check=True
        ).stdout


MMA_OPS = ("IMMA", "HMMA", "IGMMA", "HGMMA", "QGMMA")


@dataclass(frozen=True)
class LoopStats:
    """The main loop (the largest loop holding tensor-core ops) of a kernel's SASS, per thread."""

    instructions: int  # per iteration, per thread (= warp-instructions per warp)
    mma: int  # tensor-core instructions (IMMA: mma.sync, IGMMA: wgmma)
    wgmma: int
    byte_loads: int  # LDG.*.U8 / .S8: byte-wide global loads (gathers)
    sync_global_loads: int  # LDG of any width: synchronous loads into registers
    async_copies: int  # LDGSTS (cp.async) and UTMALDG (TMA)
    found: bool = True
    other_loops: int = 0  # instructions per iteration of the loops without tensor-core ops (prologues)
    outside: int = 0  # straight-line instructions outside every loop (prologue and epilogue), per program


def _instructions(text: str):
    """(index, label or None, instruction) for every SASS line."""
    out = []
    for line in text.splitlines():
        m = LABEL.match(line.strip())
        if m:
            out.append(("label", m.group(1)))
            continue
        m = INSTR.match(line)
        if m:
            out.append(("instr", m.group(1).strip()))
    return out


def main_loop(text: str) -> LoopStats:
    items = _instructions(text)
    label_at = {}
    loops = []  # (start, end) item indices
    for i, (kind, val) in enumerate(items):
        if kind == "label":
            label_at[val] = i
        else:
            m = BRANCH.search(val)
            if m and m.group(1) in label_at and label_at[m.group(1)] < i:
                loops.append((label_at[m.group(1)], i))
    in_loop = set()
    for lo, hi in loops:
        in_loop.update(range(lo, hi + 1))
    outside = sum(
        1 for i, (k, v) in enumerate(items) if k == "instr" and i not in in_loop and not v.startswith("NOP")
    )
    best, other = None, 0
    for lo, hi in loops:
        body = [v for k, v in items[lo : hi + 1] if k == "instr"]
        if any(any(op in v for op in MMA_OPS) for v in body):
            if best is None or len(body) > len(best):
                best = body
        elif len(body) > 2:  # not the trap loop at the end (a lone branch)
            other += len(body)
    if best is None:
        return LoopStats(0, 0, 0, 0, 0, 0, found=False, other_loops=other, outside=outside)
    body = [v for v in best if not v.startswith("NOP")]

    def count(pred):
        return sum(1 for v in body if pred(v))

    def opcode(v):
        parts = v.split()
        return parts[1] if parts[0].startswith("@") else parts[0]

    return LoopStats(
        instructions=len(body),
        mma=count(lambda v: opcode(v).split(".")[0] in MMA_OPS),
        wgmma=count(lambda v: opcode(v).split(".")[0] in ("IGMMA", "HGMMA", "QGMMA")),
        byte_loads=count(lambda v: opcode(v).startswith("LDG") and (".U8" in v or ".S8" in v)),
        sync_global_loads=count(lambda v: opcode(v).startswith("LDG") and not opcode(v).startswith("LDGSTS")),
        async_copies=count(lambda v: opcode(v).startswith(("LDGSTS", "UTMALDG", "UBLKCP"))),
        other_loops=other,
        outside=outside,
    )


def compile_sm90(
    jit_fn, signature: Dict[str, str], constexprs: Dict[str, object], aligned: List[str], **options
):
    """Compile `jit_fn` (a JITFunction) for sm_90a. signature: name -> Triton type ('*i8', 'i32', ...);
    constexprs: name -> value; aligned: arguments specialized as divisible by 16 (pointers from the
    caching allocator, strides and sizes that are multiples of 16), as the launcher would."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = jit_fn.arg_names
    sig = {n: ("constexpr" if n in constexprs else signature[n]) for n in names}
    consts = {(names.index(k),): v for k, v in constexprs.items()}
    attrs = {(names.index(k),): [["tt.divisibility", 16]] for k in aligned if k not in constexprs}
    src = ASTSource(jit_fn, sig, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", ARCH, WARP_SIZE), options=options)


@dataclass(frozen=True)
class Report:
    kernel: str
    config: Dict[str, object]
    registers: int
    spill_bytes: int
    shared_bytes: int  # Triton's dynamic shared memory (pipeline buffers)
    loop: Dict[str, object]
    weight_bytes_per_iter: int  # packed weight bytes one program reads per main-loop iteration
    warp_instr_per_weight_byte: float
    error: Optional[str] = None


def resolve(ref: str):
    """'package.module:attr.attr' -> the object (kernels are named, not imported, by the configs)."""
    import importlib

    mod, _, attrs = ref.partition(":")
    obj = importlib.import_module(mod)
    for a in attrs.split("."):
        obj = getattr(obj, a)
    return obj


def inspect_config(case) -> Report:
    """Compile one `fptq.kernels.configs.Case` and measure it."""
    try:
        k = compile_sm90(resolve(case.fn_ref), case.signature, case.constexprs, case.aligned, **case.options)
    except Exception as e:  # a config that does not compile is a finding, not a crash of the tier
        msg = str(e).strip().splitlines()
        return Report(
            case.kernel,
            case.describe(),
            -1,
            -1,
            -1,
            {},
            case.weight_bytes_per_iter,
            -1.0,
            msg[0] if msg else repr(e),
        )
    regs = ptxas_stats(k.asm["ptx"])
    loop = main_loop(sass(k.asm["cubin"]))
    wpi = case.weight_bytes_per_iter
    per_byte = loop.instructions * case.options["num_warps"] / wpi if wpi else 0.0
    return Report(
        case.kernel,
        case.describe(),
        regs.registers,
        regs.spill_stores + regs.spill_loads,
        int(k.metadata.shared),
        asdict(loop),
        wpi,
        round(per_byte, 4),
    )


def wgmma_waits() -> Dict[str, List[str]]:
    """The compiler probe (kernels/wgmma_probe.py): {dtype: the wgmma wait levels in the compiled
    SASS, in order} of the canonical TMA matmul in fp16 and in int8."""
    from fptq.kernels.wgmma_probe import _probe_matmul

    aligned = ["X", "B", "C", "N", "K", "stride_xm", "stride_bn", "stride_cm"]
    out = {}
    for dt in ("fp16", "i8"):
        sig = dict(X="*" + dt, B="*" + dt, C="*fp16", M="i32", N="i32", K="i32")
        sig.update(stride_xm="i32", stride_bn="i32", stride_cm="i32")
        k = compile_sm90(
            _probe_matmul, sig, dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64), aligned, num_warps=8, num_stages=4
        )
        out[dt] = re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x[0-9a-f]+)", sass(k.asm["cubin"]))
    return out


def collect(timeout: float = 1200, args=()) -> List[dict]:
    """Run `python -m fptq.kernels.sm90` in a process without TRITON_INTERPRET and return its
    reports (raises with the child's stderr if it fails)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, said out loud
    out = subprocess.run(
        [sys.executable, "-m", "fptq.kernels.sm90", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(f"python -m fptq.kernels.sm90 failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main(argv=None) -> int:
    if os.environ.get("TRITON_INTERPRET") == "1":
        os.environ.pop("TRITON_INTERPRET")
        os.execv(sys.executable, [sys.executable, "-m", "fptq.kernels.sm90", *(argv or sys.argv[1:])])
    import argparse
    from concurrent.futures import ProcessPoolExecutor

    from fptq.kernels import configs

    ap = argparse.ArgumentParser(description="compile every GPU config for sm_90a; one JSON line each")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--probe", action="store_true", help="only the compiler probe (kernels/wgmma_probe.py)")
    args = ap.parse_args(argv)
    if args.probe:
        print(json.dumps({"wgmma_waits": wgmma_waits()}), flush=True)
        return 0
    cases = configs.all_sm90_cases()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for report in pool.map(inspect_config, cases):
            print(json.dumps(asdict(report)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
