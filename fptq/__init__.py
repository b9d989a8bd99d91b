"""fptq: W4A8 post-training quantization of LLMs (FPTQ, arXiv 2308.15987) and its baselines."""

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


def _map_kernels() -> None:
    """Make the top-level `kernels/` folder importable as `fptq.kernels` from a source checkout.

    A wheel copies `kernels/` into `fptq/kernels/` (pyproject's package-dir mapping). An editable
    install cannot map a package without `__init__.py` below a regular package
    (pypa/setuptools#4943), and `kernels/` must have none so that it never shadows the PyPI
    `kernels` package that transformers probes. So, when `fptq/kernels/` is absent and the source
    tree's `kernels/` is there, register it as the namespace package `fptq.kernels`. This also
    serves a plain checkout on PYTHONPATH (the GPU benchmark machines).
    """
    here = Path(__file__).resolve().parent
    src = here.parent / "kernels"
    if (here / "kernels").is_dir() or not src.is_dir() or "fptq.kernels" in sys.modules:
        return
    spec = importlib.util.spec_from_loader("fptq.kernels", loader=None, is_package=True)
    spec.submodule_search_locations = [str(src)]
    module = importlib.util.module_from_spec(spec)
    sys.modules["fptq.kernels"] = module
    globals()["kernels"] = module


_map_kernels()
