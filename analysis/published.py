"""Published numbers (analysis/published.yaml), looked up by (model, method, metric).

Accuracies are stored in the file as printed (percent) and returned as fractions, like ours.
"""

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import yaml

PUBLISHED_FILE = Path(__file__).resolve().parent / "published.yaml"


@dataclass(frozen=True)
class Published:
    value: float  # in our units (accuracy as a fraction)
    source: str  # key into `sources`


@dataclass(frozen=True)
class PublishedSet:
    version: int
    sources: Dict[str, Dict[str, str]]
    numbers: Dict[Tuple[str, str, str], Published]

    def get(self, model: str, method: str, metric: str) -> Optional[Published]:
        return self.numbers.get((model, method, metric))

    def has_any(self, model: str, method: str, metrics) -> bool:
        return any((model, method, m) in self.numbers for m in metrics)


def is_accuracy(metric: str) -> bool:
    return not metric.startswith(("ppl_", "fp_ppl_")) and not metric.endswith("perplexity")


@functools.lru_cache(maxsize=4)
def load_published(path: str = str(PUBLISHED_FILE)) -> PublishedSet:
    data = yaml.safe_load(Path(path).read_text())
    sources = data["sources"]
    numbers = {}
    for i, n in enumerate(data["numbers"]):
        key = (n["model"], n["method"], n["metric"])
        if n["source"] not in sources:
            raise ValueError(f"{path}: number {i} cites unknown source {n['source']!r}")
        if key in numbers:
            raise ValueError(f"{path}: number {i} repeats {key}")
        v = float(n["value"])
        numbers[key] = Published(v / 100 if is_accuracy(n["metric"]) else v, n["source"])
    return PublishedSet(int(data["version"]), sources, numbers)
