"""Resume a block-by-block quantization at its first unfinished block.

A 70B job runs for hours; a Slurm time limit, a preemption or a node failure used to throw all of
it away. With a `BlockState`, `fptq.quant.pipeline.quantize_model` writes after each block:

    <folder>/block-0007.pt      block 7 packed: its state dict, its QuantLinears' configs, its
                                report records
    <folder>/inputs-0008.pt     the hidden states that feed block 8 (calibration rows); the inputs of
                                the block before are kept too, so a damaged last block can be redone
    <folder>/manifest.json      written last: the job key, the block count, and per file its size
                                and blake2b digest

Every file goes through a temporary name and a rename, so a kill leaves whole files or none. On the
next launch of the same job (same job key) `resume` checks every file against the manifest, puts
the verified blocks back in the model (exactly the tensors that were packed), and returns the first
block to run and its inputs. A file that is missing, partial or corrupt is never trusted: its block
is quantized again from the last inputs that verify (block 0's are recomputed from the embedding).
What runs before the block loop (calibration capture, whole-model transforms such as rotations) runs
again; it is deterministic (a learned rotation is retrained: bit-identical only where its training
is). `clear` removes the folder once the job's row is written.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from fptq.files import write_json_atomic
from fptq.quant.report import LayerRecord

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
VERSION = 1


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _save_atomic(obj: Any, path: Path) -> Dict[str, Any]:
    """torch.save through a temporary file and a rename; returns the manifest entry."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"file": path.name, "bytes": path.stat().st_size, "digest": _digest(path)}


class BlockState:
    """The resume state of one job's block loop, in `folder` (the job's work folder)."""

    def __init__(self, folder, job: str):
        self.folder = Path(folder).expanduser()
        self.job = job
        self.manifest: Dict[str, Any] = {}
        self.resumed_at: Optional[int] = None  # the block this attempt started at (0: from scratch)
        self.n_blocks: Optional[int] = None

    # ---- reading -----------------------------------------------------------------------------------

    def _verified(self, entry: Optional[Dict[str, Any]]) -> Optional[Path]:
        if not entry:
            return None
        f = self.folder / entry["file"]
        try:
            if f.stat().st_size != entry["bytes"] or _digest(f) != entry["digest"]:
                log.warning("%s does not match its manifest entry (partial or corrupt): not used", f)
                return None
        except OSError:
            return None
        return f

    def _read_manifest(self, n_blocks: int) -> Dict[str, Any]:
        f = self.folder / MANIFEST
        if not f.is_file():
            return {}
        try:
            m = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            log.warning("%s is unreadable (%s): starting the job's blocks from the beginning", f, e)
            return {}
        if m.get("version") != VERSION or m.get("job") != self.job or m.get("n_blocks") != n_blocks:
            log.warning("%s belongs to another job or layout: starting from the beginning", f)
            return {}
        return m

    def resume(
        self, n_blocks: int, needs_inputs: bool = True
    ) -> Tuple[int, Optional[List[torch.Tensor]], List[Dict[str, Any]], float, Dict[str, int]]:
        """(first block to run, its input hidden states (None: recompute block 0's, or a run
        without calibration, `needs_inputs=False`), the verified payloads of the blocks before it,
        seconds spent by earlier attempts, memory counters)."""
        self.n_blocks = n_blocks
        m = self._read_manifest(n_blocks)
        blocks = m.get("blocks", {})
        done = 0
        while str(done) in blocks and self._verified(blocks[str(done)]) is not None:
            done += 1
        inputs = m.get("inputs", {})
        start, hidden = (0, None) if needs_inputs else (done, None)
        # the latest verified inputs of a block <= done (block 0's are recomputed from the embedding)
        for k in sorted((int(k) for k in inputs), reverse=True) if needs_inputs else []:
            if 0 < k <= done:
                f = self._verified(inputs[str(k)])
                if f is not None:
                    start, hidden = k, torch.load(f, map_location="cpu", weights_only=True)["hidden"]
                    break
        payloads = [
            torch.load(self.folder / blocks[str(i)]["file"], map_location="cpu", weights_only=True)
            for i in range(start)
        ]
        self.manifest = {
            "version": VERSION,
            "job": self.job,
            "n_blocks": n_blocks,
            "blocks": {str(i): blocks[str(i)] for i in range(start)},
            "inputs": {str(start): inputs[str(start)]} if str(start) in inputs and hidden is not None else {},
            "seconds": float(m.get("seconds", 0.0)) if start else 0.0,
            "memory": dict(m.get("memory", {})) if start else {},
        }
        self.resumed_at = start
        if start:
            log.info("resuming %s at block %d of %d (state in %s)", self.job, start, n_blocks, self.folder)
        elif blocks:
            log.info("%s: no usable block state in %s; quantizing from block 0", self.job, self.folder)
        return start, hidden, payloads, self.manifest["seconds"], self.manifest["memory"]

    # ---- writing -----------------------------------------------------------------------------------

    def save(
        self,
        bi: int,
        block: nn.Module,
        records: List[LayerRecord],
        hidden: Optional[List[torch.Tensor]],
        seconds: float,
        memory: Dict[str, int],
    ) -> None:
        """Block `bi` is finished: write it, the inputs of block bi + 1, then the manifest; drop the
        inputs older than block bi's."""
        from fptq.quant.qlinear import QuantLinear

        self.folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "layers": {n: m.to_config() for n, m in block.named_modules() if isinstance(m, QuantLinear)},
            "state": {k: v.detach().to("cpu") for k, v in block.state_dict().items()},
            "records": [asdict(r) for r in records],
        }
        m = self.manifest
        m["blocks"][str(bi)] = _save_atomic(payload, self.folder / f"block-{bi:04d}.pt")
        if hidden is not None and bi + 1 < (self.n_blocks or 0):
            hidden_cpu = [h.detach().to("cpu") for h in hidden]
            m["inputs"][str(bi + 1)] = _save_atomic(
                {"hidden": hidden_cpu}, self.folder / f"inputs-{bi + 1:04d}.pt"
            )
        stale = [k for k in m["inputs"] if int(k) < bi]
        for k in stale:
            m["inputs"].pop(k)
        m["seconds"], m["memory"] = seconds, dict(memory)
        write_json_atomic(self.folder / MANIFEST, m)
        for k in stale:
            (self.folder / f"inputs-{int(k):04d}.pt").unlink(missing_ok=True)

    def bytes(self) -> int:
        """The work folder's size now."""
        return (
            sum(p.stat().st_size for p in self.folder.glob("*") if p.is_file()) if self.folder.is_dir() else 0
        )

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def restore_block(
    block: nn.Module, payload: Dict[str, Any], dtype: torch.dtype, device: torch.device, add_kv=None
) -> List[LayerRecord]:
    """Put a saved block back on `device`: its QuantLinears from their configs, `add_kv(block)` if
    the scheme quantizes the KV cache, then every tensor exactly as saved. Returns its records."""
    from fptq.quant.qlinear import QuantLinear

    for name, cfg in payload["layers"].items():
        block.set_submodule(name, QuantLinear.from_config(cfg, dtype))
    if add_kv is not None:
        add_kv(block)
    block.load_state_dict({k: v.to(device) for k, v in payload["state"].items()}, strict=True, assign=True)
    nan = float("nan")
    return [
        LayerRecord(
            **{
                k: (nan if v is None and k in ("v", "weight_sqnr", "output_sqnr") else v)
                for k, v in r.items()
            }
        )
        for r in payload["records"]
    ]
