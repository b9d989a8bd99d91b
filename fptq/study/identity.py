"""Content identities of a run's inputs: which model, which data, which code.

Paths are not identities (a study is moved, mounted elsewhere, resumed from another node), and
names are not either (`data.wikitext2` pointed at another file keeps the name). So a local file is
identified by a digest of its bytes, a model folder by its config and its weight files' names,
sizes and sampled content digests, a hub id by the id, and the code by a digest of the package's numeric source. The job key
(`fptq.study.jobkey`) and the fp-baseline cache (`fptq.study.baseline`) are built from these.
"""

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")

# the subpackages of fptq that present, route or record results but compute no number: editing
# them does not invalidate finished rows. Every other module of the package (quantization core,
# models, evaluation, data, the kernels) is part of the code version. The layout is the rule: a
# module that computes numbers does not belong in these packages.
PRESENTATION_PACKAGES = ("study", "analysis", "conf")


def source_tree() -> Optional[Path]:
    """fptq's own source tree when the package runs from one (editable install, plain checkout),
    else None (an installed wheel, even inside someone else's repository: the folder above the
    package counts only if its pyproject.toml is fptq's)."""
    top = Path(__file__).resolve().parents[2]
    pyproject = top / "pyproject.toml"
    if pyproject.is_file() and 'name = "fptq"' in pyproject.read_text(errors="replace"):
        return top
    return None


def digest(data: Any, n: int = 16) -> str:
    """A short sha256 of a JSON-serialisable value (keys sorted)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


@functools.lru_cache(maxsize=256)
def _file_sha(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (first 16 hex), memoised per (path, size, mtime) in-process."""
    st = Path(path).stat()
    return _file_sha(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


SAMPLE_BYTES = 4096  # bytes read at each sampled offset
SAMPLES_PER_FILE = 256  # offsets per weight file that is not safetensors


def _sample(f, offsets: Iterable[int], h) -> None:
    for off in offsets:
        f.seek(off)
        h.update(f.read(SAMPLE_BYTES))


@functools.lru_cache(maxsize=256)
def _weights_sha(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if path.endswith(".safetensors") and size >= 8:
            n = int.from_bytes(f.read(8), "little")
            header = f.read(n) if 0 < n <= size - 8 else b""
            h.update(header)
            try:
                tensors = json.loads(header)
            except ValueError:
                tensors = None
            if isinstance(tensors, dict):
                base = 8 + n
                for name in sorted(k for k in tensors if k != "__metadata__"):
                    lo, hi = tensors[name].get("data_offsets", (0, 0))
                    if hi > lo:  # the start, middle and end of every tensor's bytes
                        last = max(hi - SAMPLE_BYTES, lo)
                        _sample(f, (base + lo, base + (lo + last) // 2, base + last), h)
                return h.hexdigest()[:16]
        step = max(size // SAMPLES_PER_FILE, 1)
        _sample(f, range(0, size, step), h)
        _sample(f, (max(size - SAMPLE_BYTES, 0),), h)
    return h.hexdigest()[:16]


def weights_digest(path: Path) -> str:
    """A cheap content digest of a weight file: for safetensors, the header (every tensor's name,
    dtype, shape and offsets) and 3 x 4 KiB of each tensor's bytes (start, middle, end); for other
    formats, 256 evenly spaced 4 KiB samples and the tail. About 4 MB read for a 7B model instead of
    13 GB. A tensor replaced by one that agrees at every sampled byte goes unseen."""
    st = Path(path).stat()
    return _weights_sha(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def folder_fingerprint(folder: Path, suffixes: Iterable[str] = WEIGHT_SUFFIXES) -> Dict[str, Any]:
    """A model folder: the digest of config.json (and of quantization / tokenizer files), and per
    weight file its name, size and sampled content digest (`weights_digest`: hashing 140 GB of
    weights per job would cost minutes; a same-size file with other weights must not reuse rows)."""
    folder = Path(folder)
    out: Dict[str, Any] = {}
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "quant_report.json"):
        if (folder / name).is_file():
            out[name] = file_digest(folder / name)
    out["weights"] = sorted(
        (p.name, p.stat().st_size, weights_digest(p))
        for p in folder.iterdir()
        if p.is_file() and p.suffix in tuple(suffixes)
    )
    return out


def model_identity(model) -> Dict[str, Any]:
    """What model a `ModelSpec` denotes, independent of where its files are."""
    ident: Dict[str, Any] = {"source": model.source, "dtype": model.dtype, "add_bos": model.add_bos}
    if model.source == "random":
        ident.update(config_class=model.config_class, config=dict(model.config), seed=model.seed)
    elif model.path and Path(model.path).expanduser().is_dir():
        ident["files"] = folder_fingerprint(Path(model.path).expanduser())
    elif model.path:
        ident["missing_path"] = Path(model.path).name  # preflight reports it
    elif model.source == "smollm2_gguf":
        from fptq.models.loading import smollm2_gguf_path

        try:
            g = smollm2_gguf_path()
            ident["gguf"] = (g.name, g.stat().st_size, weights_digest(g))
        except (ModuleNotFoundError, FileNotFoundError):
            ident["gguf"] = None  # preflight reports it
    elif model.source == "gemma3_gguf":
        from fptq.models.loading import GEMMA3_SHA256

        ident["gguf"] = GEMMA3_SHA256  # the concatenation is checked against it when converted
    else:
        ident["hf_id"] = model.hf_id
    return ident


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A digest of the source that computes numbers: every .py file of the fptq package and its
    kernels, except the presentation packages (`PRESENTATION_PACKAGES`: fptq.study, fptq.analysis,
    the configs)."""
    root = Path(__file__).resolve().parents[1]  # the fptq package
    files = [p for p in root.rglob("*.py") if p.relative_to(root).parts[0] not in PRESENTATION_PACKAGES]
    kernels = root / "kernels"
    if not kernels.is_dir():  # a source checkout: kernels/ sits beside the package
        files += sorted((root.parent / "kernels").glob("*.py"))
    # names as in a wheel (fptq/kernels/x.py -> kernels/x.py), in name order: the same digest
    # from a wheel and from a checkout
    named = sorted(
        ((p.relative_to(root) if p.is_relative_to(root) else p.relative_to(root.parent)), p) for p in files
    )
    h = hashlib.sha256()
    for rel, p in named:
        h.update(rel.as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]
