"""Per-layer quantization report: what each linear got and how much it lost."""

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional


@dataclass
class LayerRecord:
    name: str
    v: float  # calibration input range max|X| (before any transform)
    strategy: str  # per_tensor_static | per_token_dynamic | lae_static | none
    act: str  # runtime input quantization: static | dynamic | none
    transform: str  # the scale transform folded last into its input: lae | smoothquant | awq | none
    w_bits: int  # 16: float weights
    group_size: Optional[int]  # 0: per output channel; None: float weights
    ragged_group: bool  # in_features is not a multiple of the group size (last group shorter)
    weight_sqnr: float  # dB, quantized vs float weight (in the transformed space)
    output_sqnr: float  # dB, layer output on calibration rows vs the unquantized layer
    act_scale: Optional[float] = None
    input_transform: str = "none"  # the online op in the layer's input-transform slot (fptq.quant.online)


_FLOATS = ("v", "weight_sqnr", "output_sqnr")


@dataclass
class QuantReport:
    scheme: str
    layers: List[LayerRecord] = field(default_factory=list)
    seconds: float = 0.0
    memory: Dict[str, int] = field(default_factory=dict)  # byte counters (fptq.quant.pipeline)
    # what each whole-model transform did (its construction, bytes added, a learned rotation's loss)
    transforms: Dict[str, Dict] = field(default_factory=dict)

    def add(self, rec: LayerRecord) -> None:
        self.layers.append(rec)

    def rows(self) -> List[Dict]:
        return [
            {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(r).items()}
            for r in self.layers
        ]

    def summary(self) -> Dict:
        counts: Dict[str, int] = {}
        for r in self.layers:
            counts[r.strategy] = counts.get(r.strategy, 0) + 1
        finite = [r.output_sqnr for r in self.layers if math.isfinite(r.output_sqnr)]
        return {
            "layers": len(self.layers),
            "strategy_counts": counts,
            "lae_layers": sum(r.transform == "lae" for r in self.layers),
            "ragged_group_layers": sum(r.ragged_group for r in self.layers),
            "mean_output_sqnr_db": sum(finite) / len(finite) if finite else None,
            "min_output_sqnr_db": min(finite) if finite else None,
            "quantize_seconds": self.seconds,
            **{f"mem_{k}": v for k, v in self.memory.items()},
            "transforms": self.transforms,
        }

    @classmethod
    def from_json(cls, text: str) -> "QuantReport":
        d = json.loads(text)
        nan = float("nan")
        layers = [
            LayerRecord(**{k: (nan if v is None and k in _FLOATS else v) for k, v in r.items()})
            for r in d["layers"]
        ]
        mem = {k[4:]: v for k, v in d.get("summary", {}).items() if k.startswith("mem_")}
        summary = d.get("summary", {})
        return cls(
            d["scheme"], layers, summary.get("quantize_seconds", 0.0), mem, summary.get("transforms") or {}
        )

    def to_dict(self) -> Dict:
        return {"scheme": self.scheme, "summary": self.summary(), "layers": self.rows()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)
