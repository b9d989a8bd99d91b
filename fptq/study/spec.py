"""The run-level specs: what one `fptq-run` job is (model, scheme, calibration, evaluation, data,
logger, paths), frozen and validated at construction. `fptq.study.config` builds a `RunSpec` from a
composed Hydra config; library users can build one directly."""

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from fptq.data import EVAL_SETS, CalibSpec, DataSpec
from fptq.eval.tasks import check_tasks
from fptq.hub import SOURCES
from fptq.models.loading import ModelSpec
from fptq.quant.qlinear import BACKENDS
from fptq.quant.scheme import QuantScheme
from fptq.study.runlog import LoggerSpec

DEVICES = ("auto", "cpu", "cuda")
SAVE_FORMATS = ("fptq", "compressed-tensors")


@dataclass(frozen=True)
class EvalSpec:
    datasets: Tuple[str, ...] = ("wikitext2",)  # perplexity sets: wikitext2, ptb, c4
    seqlen: int = 2048
    max_windows: Optional[int] = 8  # None: the whole test set (WikiText-2: 148 windows of 2048)
    # per-set window counts that replace max_windows for that set, e.g. {c4: 10}
    windows: Dict[str, Optional[int]] = field(default_factory=dict)
    # a fixed prompt before every perplexity window (after the BOS), context only, never scored:
    # prompt-led windows (a shared system prompt), e.g. for quant.kv.keep_first
    prompt: Optional[str] = None
    baseline: bool = True  # also report the unquantized model (cached per model and protocol)
    progress: bool = True
    # lm-eval tasks: lambada_openai, piqa, arc_easy, arc_challenge, hellaswag, winogrande, boolq,
    # openbookqa, mmlu (57 subjects, `mmlu_shots`-shot)
    tasks: Tuple[str, ...] = ()
    limit: Optional[int] = None  # documents per task (None: all)
    mmlu_limit: Optional[int] = None  # questions per MMLU subject (None: eval.limit)
    batch_size: int = 8
    mmlu_shots: int = 5
    task_source: str = "auto"  # auto (follows data.source) | hub | local
    task_data: Optional[str] = None  # local task data folder (default: the shared data folder)

    def windows_for(self, dataset: str) -> Optional[int]:
        """The windows evaluated on `dataset`: its `windows` entry, else max_windows."""
        return self.windows.get(dataset, self.max_windows)

    def __post_init__(self):
        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        check_tasks(self.tasks)
        if self.task_source not in SOURCES:
            raise ValueError(f"eval.task_source must be one of {SOURCES}, got {self.task_source!r}")
        if self.mmlu_limit is not None and self.mmlu_limit < 1:
            raise ValueError(f"eval.mmlu_limit must be >= 1 or null, got {self.mmlu_limit}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"eval.limit must be >= 1 or null (all), got {self.limit}")
        if self.batch_size < 1 or self.mmlu_shots < 0:
            raise ValueError("eval.batch_size must be >= 1 and eval.mmlu_shots >= 0")
        for d in self.datasets:
            if d not in EVAL_SETS:
                raise ValueError(f"unknown evaluation set {d!r}; known: {EVAL_SETS}")
        if self.seqlen < 2:
            raise ValueError(f"eval.seqlen must be >= 2, got {self.seqlen}")
        object.__setattr__(self, "windows", dict(self.windows or {}))
        for d, w in self.windows.items():
            if d not in EVAL_SETS:
                raise ValueError(f"eval.windows names an unknown evaluation set {d!r}; known: {EVAL_SETS}")
            if w is not None and w < 1:
                raise ValueError(f"eval.windows.{d} must be >= 1 or null (all), got {w}")
        if self.max_windows is not None and self.max_windows < 1:
            raise ValueError(f"eval.max_windows must be >= 1 or null (all), got {self.max_windows}")


@dataclass(frozen=True)
class PathsSpec:
    cache_dir: str = "~/.cache/fptq"  # converted models, fp baselines
    results_dir: str = "results"  # the results store (results.jsonl) that analysis/ reads


@dataclass(frozen=True)
class SaveSpec:
    """Write the quantized model as a checkpoint folder (fptq.models.checkpoint) after quantization.
    A later run evaluates it with model.source=quantized model.path=<folder>, no calibration."""

    dir: Optional[str] = None  # null: do not save; "auto": <run dir>/checkpoint; else a folder
    overwrite: bool = False  # replace a non-empty folder (written beside it, then renamed)
    # fptq: our packed folder (reloads with model=saved); compressed-tensors: for vLLM /
    # llm-compressor (fptq.models.export; weights checked bit for bit against the package's decompression)
    format: str = "fptq"

    def __post_init__(self):
        if self.format not in SAVE_FORMATS:
            raise ValueError(f"save.format must be one of {SAVE_FORMATS}, got {self.format!r}")


@dataclass(frozen=True)
class RunSpec:
    experiment_name: str = "adhoc"
    seed: int = 0  # drives every random choice (calibration crops unless calib.seed is set, samples)
    # skip the job if the results store already has its row (same job key: fptq.study.jobkey);
    # resume=false runs it again and replaces the row
    resume: bool = True
    # write each finished block's state to the store's work folder (<results_dir>/work/<job key>) so
    # that a killed, timed-out or preempted job relaunched with the same key starts at its first
    # unfinished block (fptq.quant.blockstate); removed once the row is written
    resume_blocks: bool = True
    device: str = "auto"
    # quantized linears: reference (float simulation) | triton (packed W4A8/W8A8 kernels)
    backend: str = "reference"
    model: ModelSpec = field(default_factory=ModelSpec)
    quant: QuantScheme = field(default_factory=QuantScheme)
    calib: CalibSpec = field(default_factory=CalibSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    data: DataSpec = field(default_factory=DataSpec)
    logger: LoggerSpec = field(default_factory=LoggerSpec)
    paths: PathsSpec = field(default_factory=PathsSpec)
    save: SaveSpec = field(default_factory=SaveSpec)

    @property
    def calib_seed(self) -> int:
        """The seed of the calibration crops: calib.seed if set, else the run's seed."""
        return self.calib.seed if self.calib.seed is not None else self.seed

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.quant.is_float and self.model.onload == "sequential" and self.eval.tasks:
            raise ValueError(
                "quant=fp with model.onload=sequential evaluates perplexity block by block; lm-eval tasks "
                "need the whole float model: use model.onload=eager for them"
            )
        if self.save.dir is not None and self.quant.is_float:
            raise ValueError("save.dir is set but quant=fp: there is no quantized model to save")
        if self.quant.kv.keep_first >= self.eval.seqlen:
            raise ValueError(
                f"quant.kv.keep_first={self.quant.kv.keep_first} keeps the whole window of eval.seqlen="
                f"{self.eval.seqlen} (nothing left at kv.bits); keep fewer positions than the window"
            )
        if self.save.dir is not None and self.model.source == "quantized":
            raise ValueError(
                "save.dir is set but the model is already a saved checkpoint (model.source=quantized)"
            )
