"""Hub or local files? One decision for every data source (evaluation text, calibration, tasks),
answered fast, so offline runs never hang on a look-up."""

import functools
import os
import socket

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
SOURCES = ("auto", "hub", "local")  # auto: the hub when reachable, else local files


@functools.lru_cache(maxsize=1)
def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in OFFLINE_VARS):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def use_hub(source: str, what: str) -> bool:
    """True: load `what` from the hub; False: from local files. source=hub with no hub is an error."""
    if source not in SOURCES:
        raise ValueError(f"{what}: source must be one of {SOURCES}, got {source!r}")
    if source == "local":
        return False
    if hub_reachable():
        return True
    if source == "hub":
        raise RuntimeError(f"{what}: source=hub but the Hugging Face hub is unreachable; use auto or local")
    return False
