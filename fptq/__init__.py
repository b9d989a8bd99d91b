"""fptq: W4A8 post-training quantization of LLMs (FPTQ, arXiv 2308.15987) and its baselines."""

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


def _map_folder(name: str) -> None:
    """Make the top-level folder `name` (`kernels/`, `analysis/`) importable as `fptq.<name>` from a
    source checkout.

    A wheel copies `kernels/` into `fptq/kernels/` (pyproject's package-dir mapping). An editable
    install cannot map a package without `__init__.py` below a regular package
    (pypa/setuptools#4943), and `kernels/` must have none so that it never shadows the PyPI
    `kernels` package that transformers probes (PyPI has an `analysis` too). So, when
    `fptq/<name>/` is absent and the source tree's `<name>/` is there, register it as the namespace
    package `fptq.<name>`. This also serves a plain checkout on PYTHONPATH (the GPU machines).
    """
    here = Path(__file__).resolve().parent
    src = here.parent / name
    if (here / name).is_dir() or not src.is_dir() or f"fptq.{name}" in sys.modules:
        return
    spec = importlib.util.spec_from_loader(f"fptq.{name}", loader=None, is_package=True)
    spec.submodule_search_locations = [str(src)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"fptq.{name}"] = module
    globals()[name] = module


_map_folder("kernels")
_map_folder("analysis")
