"""Small file helpers shared by the data loaders, the task converters and the results store."""

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, List


def read_jsonl(path: Path) -> List[dict]:
    """One JSON object per non-blank line. A bad line is an error naming the file and the line."""
    path = Path(path)
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not a JSON object per line ({e.msg})") from None
    return out


def clean_json(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become null, tuples lists, keys strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write through a temporary file and rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(clean_json(obj), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
