import os

# Offline and quiet before anything imports transformers / datasets / wandb.
for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
try:  # Triton kernels run in the CPU interpreter when there is no GPU (set before any @triton.jit)
    import torch as _torch

    if not _torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:
    pass

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TESTS = Path(__file__).resolve().parent
TEXT = "The quick brown fox jumps over the lazy dog. " * 200


def fptq_env(tmp_path: Path) -> dict:
    """Environment of an fptq-run subprocess: offline, no W&B, a private cache, tests/ importable
    (for Hydra callbacks such as study_faults.FailOnce)."""
    return dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="disabled",
        FPTQ_CACHE_DIR=str(tmp_path / "cache"),
        PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    )


def _cli(args, tmp_path: Path, wiki: str) -> list:
    """The command line of `fptq-run debug=tiny <args>` on tmp_path/<wiki> (written if missing),
    with the store in tmp_path/results."""
    if not (tmp_path / wiki).exists():
        (tmp_path / wiki).write_text(TEXT)
    return [
        sys.executable,
        "-m",
        "fptq.study.cli",
        *args,
        "debug=tiny",
        f"data.wikitext2={tmp_path / wiki}",
        f"paths.results_dir={tmp_path / 'results'}",
        "eval.progress=false",
    ]


def fptq_popen(args, tmp_path: Path, wiki: str = "wiki.txt") -> subprocess.Popen:
    """fptq_run's job started in the background (text output in .stdout, stderr merged)."""
    return subprocess.Popen(
        _cli(args, tmp_path, wiki),
        cwd=tmp_path,
        env=fptq_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def fptq_run(args, tmp_path: Path, ok: bool = True, wiki: str = "wiki.txt") -> subprocess.CompletedProcess:
    """`fptq-run debug=tiny <args>` in tmp_path on a small text file (tmp_path/<wiki>), with the
    store in tmp_path/results; asserts the exit status."""
    proc = subprocess.run(
        _cli(args, tmp_path, wiki),
        cwd=tmp_path,
        env=fptq_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


TINY_CFG = dict(
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=258,
    max_position_embeddings=256,
)


# family -> (transformers config class, kwargs): architecture differences as data
OPT_CFG = dict(
    hidden_size=64,
    ffn_dim=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    vocab_size=258,
    max_position_embeddings=256,
    word_embed_proj_dim=64,
)
TINY_FAMILIES = {
    "llama": ("LlamaConfig", TINY_CFG),
    "qwen2": ("Qwen2Config", TINY_CFG),
    "gemma": ("GemmaConfig", dict(TINY_CFG, head_dim=16)),
    "opt": ("OPTConfig", OPT_CFG),
    "bloom": ("BloomConfig", dict(hidden_size=64, n_layer=2, n_head=4, vocab_size=258)),
    # sliding-window and global layers alternate; a window shorter than the calibration rows
    # (32) makes their masks differ
    "gemma2": ("Gemma2Config", dict(TINY_CFG, head_dim=16, sliding_window=8)),
    "gemma3": ("Gemma3TextConfig", dict(TINY_CFG, head_dim=16, sliding_window=8, sliding_window_pattern=2)),
    "phi3": ("Phi3Config", dict(TINY_CFG, pad_token_id=0, bos_token_id=1, eos_token_id=2)),
}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (fresh clone): data-backed test skipped")
    return SHARED_DATA


def tiny_model(kind: str = "llama", seed: int = 0, outliers: bool = True):
    """A tiny random causal LM of the given family, fp32, eval mode; optional planted outliers."""
    import transformers

    torch.manual_seed(seed)
    if kind not in TINY_FAMILIES:
        raise ValueError(kind)
    config_class, kwargs = TINY_FAMILIES[kind]
    cfg = getattr(transformers, config_class)(**kwargs)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ("norm" in name or "layer_norm" in name) and p.dim() == 1:
                if "bias" in name:
                    p.normal_(0, 0.1)  # non-trivial biases so LayerNorm folding is really tested
                else:
                    p.uniform_(0.5, 1.5)
        if outliers:
            plant_outliers(model)
    model.config.use_cache = False
    return model


def plant_outliers(model, channels=(3, 17), factor=60.0):
    """Scale a few channels of every attention-input norm: large, LAE-worthy activation channels."""
    for name, mod in model.named_modules():
        if name.endswith(("input_layernorm", "self_attn_layer_norm")) and hasattr(mod, "weight"):
            for c in channels:
                mod.weight.data[c] *= factor


@pytest.fixture
def calib_ids():
    return torch.randint(0, 258, (8, 32), generator=torch.Generator().manual_seed(0))


def compose_config(overrides):
    """fptq-run's config composed from conf/ with `overrides` (no Hydra run)."""
    from hydra import compose, initialize_config_dir

    from fptq.study.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)
