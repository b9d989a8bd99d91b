"""Checks that run before any work (before loading weights, the fp baseline or calibration):
everything about a job that can be known from its config, the model's config and the first
records of its data files. All problems are reported together, each saying what to do.

- the backend against the device, and against the scheme (kernel-supported bits and groups);
- the model: its files, a known architecture, and the weight group size against every quantized
  layer's width (from the model config, on a meta-device skeleton: no weights are read);
- the data: each file the job reads exists and its first records parse (evaluation, lm-eval task
  data); the calibration file parses whole and can hold a crop of calib.seqlen tokens.
"""

import fnmatch
import logging
from pathlib import Path
from typing import Any, List, Optional

import torch

from fptq.eval.tasks import tasks_from_hub
from fptq.files import read_jsonl, read_text
from fptq.hub import hub_reachable, use_hub
from fptq.models.loading import random_config
from fptq.study.spec import RunSpec

log = logging.getLogger(__name__)
FIRST_RECORDS = 5  # JSONL records parsed per file
FIRST_BYTES = 1 << 16  # bytes of a text file decoded


class PreflightError(ValueError):
    def __init__(self, problems: List[str]):
        self.problems = problems
        super().__init__(
            "the job cannot run; fix these before any work is done:\n  - " + "\n  - ".join(problems)
        )


def preflight(spec: RunSpec, device: torch.device) -> None:
    problems: List[str] = []
    problems += backend_problems(spec, device)
    config = model_config(spec, problems)
    if config is not None:
        problems += layer_problems(spec, config)
        problems += position_problems(spec, config)
    problems += data_problems(spec)
    if problems:
        raise PreflightError(problems)


# ---- backend --------------------------------------------------------------------------------------


def backend_problems(spec: RunSpec, device: torch.device) -> List[str]:
    """backend=triton: the device, and the scheme against the kernels' constraints (the same
    checks set_backend makes per layer after quantization)."""
    if spec.backend != "triton":
        return []
    from fptq.quant.qlinear import check_kernel_device, kernel_constraint_errors

    out = []
    try:
        check_kernel_device(device)
    except RuntimeError as e:
        out.append(str(e))
    w, a = spec.quant.weight, spec.quant.act
    errors = kernel_constraint_errors(
        w.bits if w else 16,
        a.bits if a else None,
        w.group_size if w else 0,
        per_channel=w is None or w.per_channel,
        float_zero=w is not None and w.grid.float_zero,
        act_rule=a.scale_rule if a else "max",
        weight_format=w.method.format if w else "int",
    )
    return out + [f"backend=triton {e} (quant={spec.quant.name})" for e in errors]


# ---- model ----------------------------------------------------------------------------------------


def model_config(spec: RunSpec, problems: List[str]) -> Optional[Any]:
    """The transformers config of the job's model, read without weights; None if it cannot be
    known yet (a hub id with no hub: loading reports that) or is broken (then a problem)."""
    m = spec.model
    try:
        if m.source == "random":
            return random_config(m)
        if m.source == "quantized":
            from fptq.models.checkpoint import read_quantization_config

            read_quantization_config(m.path)  # a missing or foreign folder fails here, named
            return None  # quantized already: no group sizes to check
        from transformers import AutoConfig

        if m.path:
            folder = Path(m.path).expanduser()
            if not (folder / "config.json").is_file():
                problems.append(
                    f"model.path={m.path!r}: no config.json there; point model.path at a folder holding "
                    "config.json and the weights"
                )
                return None
            return AutoConfig.from_pretrained(str(folder))
        if m.source == "gemma3_gguf":
            from fptq.models.loading import gemma3_folder_cached, gemma3_gguf_parts

            cached = gemma3_folder_cached(spec.paths.cache_dir)
            if cached is not None:
                return AutoConfig.from_pretrained(str(cached))
            gemma3_gguf_parts()  # the packages are there (the conversion runs at load time)
            return None
        if m.source == "smollm2_gguf":
            from fptq.models.loading import smollm2_folder_cached, smollm2_gguf_path

            cached = smollm2_folder_cached(spec.paths.cache_dir)
            if cached is not None:
                return AutoConfig.from_pretrained(str(cached))
            g = smollm2_gguf_path()
            return AutoConfig.from_pretrained(str(g.parent), gguf_file=g.name)
        if hub_reachable():
            return AutoConfig.from_pretrained(m.hf_id)
        problems.append(
            f"model {m.name!r}: the Hugging Face hub is unreachable (or HF_HUB_OFFLINE is set) and no "
            f"local copy was given; download {m.hf_id!r} elsewhere and pass model.path=/its/folder"
        )
    except (OSError, ValueError, ModuleNotFoundError) as e:
        msg = str(e)
        problems.append(msg if msg.startswith(f"model {m.name!r}") else f"model {m.name!r}: {msg}")
    return None


def position_problems(spec: RunSpec, config) -> List[str]:
    """Windows longer than the positions the model was trained for (max_position_embeddings): past
    them a learned position table has no entry and RoPE extrapolates, so the perplexity would not
    measure the model."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "max_position_embeddings", None)
    if not isinstance(n, int) or n <= 0:
        return []
    out = []
    if spec.eval.seqlen > n:
        out.append(
            f"eval.seqlen={spec.eval.seqlen} is beyond the {n} positions model {spec.model.name!r} "
            f"supports (max_position_embeddings); use eval.seqlen<={n}"
        )
    if not spec.quant.is_float and spec.calib.source != "random" and spec.calib.seqlen > n:
        out.append(
            f"calib.seqlen={spec.calib.seqlen} is beyond the {n} positions model {spec.model.name!r} "
            f"supports; use calib.seqlen<={n}"
        )
    return out


def layer_problems(spec: RunSpec, config) -> List[str]:
    """Architecture mapping and group size against every quantized linear's input width."""
    from fptq.models.arch import ARCHS
    from fptq.models.onload import empty_model

    model = empty_model(config, torch.float32)
    arch_name = type(model).__name__
    if arch_name not in ARCHS and spec.quant.on_unknown_arch == "error" and not spec.quant.is_float:
        return [
            f"no architecture mapping for {arch_name}; known: {sorted(ARCHS)}. Add an ArchSpec to "
            "fptq.models.arch.ARCHS, or set quant.on_unknown_arch=dynamic"
        ]
    out = transform_problems(spec, config, model)
    w = spec.quant.weight
    if w is None or w.per_channel:
        return out
    too_narrow = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or any(fnmatch.fnmatch(name, p) for p in spec.quant.ignore):
            continue
        if w.group_size > mod.in_features:
            too_narrow.setdefault(mod.in_features, name)
    return out + [
        f"quant.weight.group_size={w.group_size} is wider than {name} ({width} inputs, and every layer "
        f"of that width); use a group size <= {min(too_narrow)} or weight=int4_channel"
        for width, name in sorted(too_narrow.items())
    ]


def transform_problems(spec: RunSpec, config, model) -> List[str]:
    """Each transform against the architecture and its sizes (a rotation on a family with no mapping
    for it, a size with no Hadamard and no fallback), and whole-model rewrites against sequential
    onloading (which never holds the whole model)."""
    from fptq.models.arch import ARCHS
    from fptq.quant.methods import TRANSFORMS

    out = []
    arch = ARCHS.get(type(model).__name__)
    for name in spec.quant.transforms:
        t, settings = TRANSFORMS.get(name), spec.quant.transform_settings(name)
        if t.needs(settings).whole_model and spec.model.onload == "sequential":
            out.append(
                f"transform {name!r} rewrites the whole model before the block loop; it cannot run with "
                "model.onload=sequential (blocks are loaded one at a time): use model.onload=eager"
            )
        if arch is None:
            continue
        try:
            t.check_model(config, arch, settings)
        except (NotImplementedError, ValueError) as e:
            out.append(f"transform {name!r} on {type(model).__name__}: {e}")
    return out


# ---- data -----------------------------------------------------------------------------------------


def data_problems(spec: RunSpec) -> List[str]:
    from fptq.data import calib_file, local_file
    from fptq.study.jobkey import data_files

    out = []
    calib = calib_file(spec.calib) if f"calib:{calib_file(spec.calib)}" in data_files(spec) else None
    for name in dict.fromkeys(data_files(spec).values()):
        try:
            if use_hub(spec.data.source, f"data.{name}"):
                continue
            path = local_file(name, spec.data)
            check_data_file(name, path)
            if name == calib:
                check_calib_file(name, path, spec.calib.seqlen)
        except (OSError, ValueError, RuntimeError) as e:
            out.append(str(e))
    if spec.eval.tasks:
        out += task_problems(spec)
    return out


def check_data_file(name: str, path: Path) -> None:
    """Parse the first records of a data set's local file; raises ValueError naming the file, the
    line and what was expected."""
    if path.suffix == ".jsonl":
        if not read_jsonl(path, field="text", limit=FIRST_RECORDS):
            raise ValueError(f'{path}: no records; expected JSON lines like {{"text": ...}} ({name})')
    else:
        head = read_text(path, f"{name} as UTF-8 text", limit=FIRST_BYTES)
        if not head.strip():
            raise ValueError(f"{path}: empty; expected {name} as UTF-8 text")


def check_calib_file(name: str, path: Path, seqlen: int) -> None:
    """The whole calibration file parses (a torn line anywhere is found now, not after the model
    load and the fp baseline), and it can hold a crop of calib.seqlen tokens. A token covers at
    least one byte, so text of at most seqlen + 1 bytes (a C4 file whose every document has at most
    seqlen bytes) is certainly too short; the exact token count needs the tokenizer and is checked
    right after the model load, before the fp baseline."""
    if path.suffix == ".jsonl":
        docs = read_jsonl(path, field="text")
        longest = max((len(d["text"].encode()) for d in docs), default=0)
        if longest <= seqlen:
            raise ValueError(
                f"{path}: no document is longer than calib.seqlen={seqlen} tokens (the longest has "
                f"{longest} bytes); lower calib.seqlen or use a file with longer documents ({name})"
            )
    else:
        n = len(read_text(path, f"{name} as UTF-8 text").encode())
        if n <= seqlen + 1:
            raise ValueError(
                f"{path}: {n} bytes, too short for calibration crops of calib.seqlen={seqlen} tokens; "
                f"lower calib.seqlen or use a longer file ({name})"
            )


def task_problems(spec: RunSpec) -> List[str]:
    from fptq.eval.tasks import task_data_root, task_files

    e = spec.eval
    if tasks_from_hub(e.task_source, spec.data):
        return []
    try:
        root = task_data_root(spec.data, e.task_data)
    except (FileNotFoundError, ValueError) as err:
        return [str(err)]
    out = []
    for t in e.tasks:
        files = task_files(t, root)
        if not files:
            out.append(
                f"task {t}: no data files under {root}; set eval.task_data=/folder laid out like shared/data"
            )
        for rel in files[:1] if t == "mmlu" else files:
            f = root / rel
            try:
                if not f.is_file():
                    raise FileNotFoundError(
                        f"task {t}: expected the file {f}; set eval.task_data=/folder laid out like shared/data"
                    )
                if f.suffix == ".jsonl":
                    read_jsonl(f, limit=FIRST_RECORDS)
                else:
                    read_text(f, f"task {t} data as UTF-8 text", limit=FIRST_BYTES)
            except (OSError, ValueError) as err:
                out.append(str(err))
    return out
