"""Evaluation text (GPTQ protocol) and calibration samples, from the hub or from local files.

`source: auto` loads from the Hugging Face hub when it is reachable and otherwise from local
files (each set's `local_path`, else the shared data folder), saying so in the log.
"""

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from fptq.files import DataError, read_jsonl, read_text
from fptq.hub import SOURCES, use_hub
from fptq.quant.calibration import PROPAGATE
from fptq.study.identity import source_tree

log = logging.getLogger(__name__)

EVAL_SETS = ("wikitext2", "ptb", "c4")
CALIB_SOURCES = ("c4", "wikitext2_train", "wikitext2", "random")
# file names inside the shared data folder (see its README)
LOCAL_FILES = {
    "wikitext2": "wikitext2/wikitext2_raw_test.txt",
    "wikitext2_train": "wikitext2/wikitext2_raw_train.txt",
    "ptb": "ptb/ptb.test.txt",
    "c4": "c4/c4_validation_head.jsonl",
    "c4_train": "c4/c4_train_head.jsonl",
}
C4_EVAL_WINDOWS = 256  # GPTQ's C4 evaluation: the first 256 x seqlen tokens


@dataclass(frozen=True)
class DataSpec:
    """Where the data sets come from. `root`: the shared data folder (auto-detected when None)."""

    source: str = "auto"
    root: Optional[str] = None
    wikitext2: Optional[str] = None  # explicit local file per set (overrides root)
    ptb: Optional[str] = None
    c4: Optional[str] = None
    c4_train: Optional[str] = None
    wikitext2_train: Optional[str] = None  # calibration only (calib.source=wikitext2_train)

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"data.source must be one of {SOURCES}, got {self.source!r}")


@dataclass(frozen=True)
class CalibSpec:
    # c4 (train crops, GPTQ style) | wikitext2_train (GPTQ's other calibration set) | wikitext2
    # (test-set crops: debugging only, it leaks the evaluation text) | random tokens
    source: str = "c4"
    n_samples: int = 128
    seqlen: int = 512
    seed: Optional[int] = None  # null: the run's top-level `seed` (both are recorded)
    batch_size: int = 8
    # next block's calibration inputs: the quantized block's outputs (GPTQ's sequential pattern)
    # or the float block's (one pass per block instead of two: about 2x faster, less faithful)
    propagate: str = "quantized"
    # a data-free scheme (QuantScheme.data_free) is not calibrated: it reads this many samples
    # (of calib.seqlen tokens) only for the per-layer report's output SQNR, measured on up to 512
    # token rows drawn from them per layer (0: skip it, and read no data)
    data_free_sample: int = 4

    def __post_init__(self):
        if self.data_free_sample < 0:
            raise ValueError(f"calib.data_free_sample must be >= 0, got {self.data_free_sample}")
        if self.propagate not in PROPAGATE:
            raise ValueError(f"calib.propagate must be one of {PROPAGATE}, got {self.propagate!r}")
        if self.source not in CALIB_SOURCES:
            raise ValueError(f"calib.source must be one of {CALIB_SOURCES}, got {self.source!r}")
        if self.n_samples < 1 or self.seqlen < 2:
            raise ValueError(
                f"calib needs n_samples >= 1 and seqlen >= 2, got {self.n_samples}, {self.seqlen}"
            )


def data_root_candidates() -> List[Tuple[str, Path]]:
    """Where the shared data folder is looked for when data.root is not set, in order:
    $FPTQ_DATA_DIR, beside the source checkout (../shared/data), then shared/data in the working
    folder or any parent."""
    out: List[Tuple[str, Path]] = []
    if os.environ.get("FPTQ_DATA_DIR"):
        out.append(("$FPTQ_DATA_DIR", Path(os.environ["FPTQ_DATA_DIR"]).expanduser()))
    checkout = source_tree()
    if checkout is not None:
        out.append(("beside the source checkout", checkout.parent / "shared" / "data"))
    cwd = Path.cwd().resolve()
    out += [("above the working folder", d / "shared" / "data") for d in (cwd, *cwd.parents)]
    return out


def shared_data_root(spec: DataSpec) -> Optional[Path]:
    if spec.root:  # an explicit root is the only candidate: a wrong one is an error, not a fallback
        root = Path(spec.root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data.root={spec.root!r} is not a folder")
        return root
    for _why, c in data_root_candidates():
        if c.is_dir():
            return c
    return None


def local_file(name: str, spec: DataSpec) -> Path:
    explicit = getattr(spec, name)
    if explicit:
        path = Path(explicit).expanduser().absolute()
    else:
        root = shared_data_root(spec)
        if root is None:
            tried = ", ".join(f"{why} ({p})" for why, p in data_root_candidates()[:3])
            raise FileNotFoundError(
                f"no local copy of {name}: set data.{name}=/path/to/{Path(LOCAL_FILES[name]).name} or "
                f"data.root (or $FPTQ_DATA_DIR) to a folder laid out like shared/data. Looked: {tried}"
            )
        path = root / LOCAL_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f"{name}: expected the file {path}; point data.{name}=... at your copy")
    return path


def _use_hub(name: str, spec: DataSpec) -> bool:
    if use_hub(spec.source, f"data.{name}"):
        return True
    log.info("%s: loading the local copy %s", name, local_file(name, spec))
    return False


def _wikitext2(spec: DataSpec, split: str = "test") -> str:
    name = "wikitext2" if split == "test" else f"wikitext2_{split}"
    if _use_hub(name, spec):
        from datasets import load_dataset

        return "\n\n".join(load_dataset("wikitext", "wikitext-2-raw-v1", split=split)["text"])
    return read_text(local_file(name, spec), f"raw WikiText-2 {split} text")


def _ptb(spec: DataSpec) -> str:
    if _use_hub("ptb", spec):
        from datasets import load_dataset

        return " ".join(load_dataset("ptb_text_only", "penn_treebank", split="test")["sentence"])
    lines = read_text(local_file("ptb", spec), "PTB test text, one sentence a line").splitlines()
    return " ".join(line.strip() for line in lines)


def _c4_docs(spec: DataSpec, split: str) -> List[str]:
    name = "c4" if split == "validation" else "c4_train"
    if _use_hub(name, spec):
        from datasets import load_dataset

        shard = (
            "en/c4-validation.00000-of-00008.json.gz"
            if split == "validation"
            else "en/c4-train.00000-of-01024.json.gz"
        )
        return load_dataset("allenai/c4", data_files={split: shard}, split=split)["text"]
    return [d["text"] for d in read_jsonl(local_file(name, spec), field="text")]


def _c4(spec: DataSpec) -> str:
    return " ".join(_c4_docs(spec, "validation")[:1100])


EVAL_TEXT: Dict[str, Callable[[DataSpec], str]] = {"wikitext2": _wikitext2, "ptb": _ptb, "c4": _c4}


def eval_tokens(name: str, tokenizer, spec: DataSpec, seqlen: int) -> torch.Tensor:
    """The token stream of an evaluation set, GPTQ protocol (no special tokens)."""
    if name not in EVAL_TEXT:
        raise ValueError(f"unknown evaluation set {name!r}; known: {sorted(EVAL_TEXT)}")
    ids = torch.tensor(tokenizer(EVAL_TEXT[name](spec), add_special_tokens=False).input_ids, dtype=torch.long)
    if name == "c4":
        ids = ids[: C4_EVAL_WINDOWS * seqlen]
    return ids


def calib_file(calib: CalibSpec) -> Optional[str]:
    """The data set calibration reads (a LOCAL_FILES name), or None for random tokens."""
    return {"c4": "c4_train", "wikitext2": "wikitext2", "wikitext2_train": "wikitext2_train"}.get(
        calib.source
    )


def calibration_ids(
    calib: CalibSpec, tokenizer, spec: DataSpec, vocab_size: int, seed: int = 0
) -> torch.Tensor:
    """(n_samples, seqlen) token ids: seeded random crops of documents, or random vocabulary tokens.
    The seed is calib.seed when set, else `seed` (the run's top-level seed)."""
    seed = calib.seed if calib.seed is not None else seed
    if calib.source == "random":  # FPTQ's data-free calibration (paper Table 6)
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, vocab_size, (calib.n_samples, calib.seqlen), generator=g)
    rng = random.Random(seed)
    if calib.source in ("wikitext2", "wikitext2_train"):  # GPTQ's get_wikitext2: random crops
        text = _wikitext2(spec, "train" if calib.source == "wikitext2_train" else "test")
        ids = tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) <= calib.seqlen + 1:
            raise DataError(
                f"calibration on {calib.source}: the text has {len(ids)} tokens, too short for crops of "
                f"calib.seqlen={calib.seqlen}; lower calib.seqlen or use a longer file"
            )
        starts = [rng.randint(0, len(ids) - calib.seqlen - 1) for _ in range(calib.n_samples)]
        return torch.tensor([ids[s : s + calib.seqlen] for s in starts], dtype=torch.long)
    docs = _c4_docs(spec, "train")
    if not docs:
        raise DataError("calibration on c4: the C4 train file has no documents")
    out = []
    for _ in range(calib.n_samples):  # GPTQ's get_c4: a random document longer than seqlen, a random crop
        for _attempt in range(1000):
            enc = tokenizer(docs[rng.randint(0, len(docs) - 1)], add_special_tokens=False).input_ids
            if len(enc) > calib.seqlen:
                break
        else:
            raise DataError(
                f"calibration on c4: no document among 1000 drawn from the {len(docs)} in the C4 train "
                f"file is longer than calib.seqlen={calib.seqlen} tokens; lower calib.seqlen or use a "
                "file with longer documents"
            )
        s = rng.randint(0, len(enc) - calib.seqlen - 1)
        out.append(enc[s : s + calib.seqlen])
    return torch.tensor(out, dtype=torch.long)
