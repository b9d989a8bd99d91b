"""Unquantized (fp) perplexities, cached per model and protocol so sweeps compute them once."""

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

from fptq.files import write_json_atomic
from fptq.spec import RunSpec


def baseline_key(spec: RunSpec, dataset: str) -> str:
    m = spec.model
    ident = m.path or m.hf_id or (json.dumps(m.config, sort_keys=True) + f"/seed{m.seed}")
    return (
        f"{m.name}|{m.source}|{ident}|{m.dtype}|bos={m.add_bos}|{dataset}|{spec.eval.seqlen}|"
        f"{spec.eval.max_windows}|{spec.data.source}"
    )


class BaselineCache:
    def __init__(self, cache_dir: str):
        self.path = Path(cache_dir).expanduser() / "baselines.json"

    def _read(self) -> Dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        return self._read().get(key)

    def put(self, key: str, value: Dict[str, Any]) -> None:
        data = self._read()
        data[key] = value
        write_json_atomic(self.path, data)

    def get_or_compute(
        self, spec: RunSpec, datasets: Iterable[str], compute: Callable[[str], Dict[str, Any]]
    ) -> Dict[str, Dict[str, Any]]:
        """The fp result per dataset: cached, or computed now and cached."""
        out = {}
        for d in datasets:
            key = baseline_key(spec, d)
            out[d] = self.get(key)
            if out[d] is None:
                out[d] = compute(d)
                self.put(key, out[d])
        return out

    def put_all(self, spec: RunSpec, results: Dict[str, Dict[str, Any]]) -> None:
        """A float run's own results are the baseline: refresh the cache with them."""
        for d, r in results.items():
            self.put(baseline_key(spec, d), r)
