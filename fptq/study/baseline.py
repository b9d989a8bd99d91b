"""Unquantized (fp) perplexities, cached so that a sweep computes each once.

One file per entry under `<cache_dir>/baselines/`, written atomically (concurrent jobs on a shared
filesystem never corrupt each other's entries). The key is a digest of what the number depends
on: the model's content identity (`fptq.study.identity.model_identity`: files, not paths or names), the
evaluated token stream itself (so another data file, another tokenizer or another C4 cut is another
entry), the window length and the number of windows.
"""

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from fptq.files import write_json_atomic
from fptq.study.identity import digest, model_identity
from fptq.study.spec import RunSpec


def tokens_digest(ids: torch.Tensor) -> str:
    return hashlib.sha256(ids.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]


def baseline_key(spec: RunSpec, dataset: str, ids: torch.Tensor) -> str:
    return digest(
        {
            "model": model_identity(spec.model),
            "dataset": dataset,
            "tokens": tokens_digest(ids),
            "seqlen": spec.eval.seqlen,
            "max_windows": spec.eval.windows_for(dataset),
            **({"prompt": spec.eval.prompt} if spec.eval.prompt else {}),  # absent: keys unchanged
        }
    )


class BaselineCache:
    def __init__(self, cache_dir: str):
        self.dir = Path(cache_dir).expanduser() / "baselines"

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        try:
            return json.loads((self.dir / f"{key}.json").read_text())["result"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            return None

    def put(self, key: str, value: Dict[str, Any], about: Dict[str, Any]) -> None:
        write_json_atomic(self.dir / f"{key}.json", {"about": about, "result": value})

    def get_or_compute(
        self,
        spec: RunSpec,
        streams: Dict[str, torch.Tensor],
        compute: Callable[[str], Dict[str, Any]],
    ) -> Dict[str, Dict[str, Any]]:
        """The fp result per dataset: cached, or computed now and cached."""
        out = {}
        for d, ids in streams.items():
            key = baseline_key(spec, d, ids)
            out[d] = self.get(key)
            if out[d] is None:
                out[d] = compute(d)
                self.put(key, out[d], _about(spec, d))
        return out

    def put_all(self, spec: RunSpec, streams: Dict[str, torch.Tensor], results: Dict[str, Dict[str, Any]]):
        """A float run's own results are the baseline: refresh the cache with them."""
        for d, r in results.items():
            self.put(baseline_key(spec, d, streams[d]), r, _about(spec, d))


def _about(spec: RunSpec, dataset: str) -> Dict[str, Any]:
    """Human-readable context stored beside the number (not part of the key)."""
    return {"model": spec.model.name, "dataset": dataset, "seqlen": spec.eval.seqlen}
