"""Small file helpers shared by the data loaders, the task converters and the results store."""

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, List, Optional


class DataError(ValueError):
    """A data file or data set that cannot serve the job (named, with what was expected)."""


def read_jsonl(path: Path, field: Optional[str] = None, limit: Optional[int] = None) -> List[dict]:
    """One JSON object per non-blank line; with `field`, each must have that string field. A bad
    line is an error naming the file, the line and what was expected. `limit`: stop after n."""
    path = Path(path)
    out: List[dict] = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{i}: not UTF-8 text ({e.reason} at byte {e.start} of the line); "
                    "expected one JSON object per line"
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{i}: expected one JSON object per line ({e.msg} at column {e.colno})"
                ) from None
            if field is not None and not (isinstance(obj, dict) and isinstance(obj.get(field), str)):
                got = f"keys {sorted(obj)}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
                raise DataError(
                    f"{path}:{i}: expected a JSON object with a string field {field!r}, got {got}"
                )
            out.append(obj)
            if limit is not None and len(out) >= limit:
                break
    return out


def read_text(path: Path, expected: str = "text", limit: Optional[int] = None) -> str:
    """A UTF-8 text file (the first `limit` bytes if given); a decoding error names the file, the
    line and what was expected."""
    path = Path(path)
    data = path.read_bytes() if limit is None else path.open("rb").read(limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if limit is not None and e.start >= len(data) - 4:  # a character cut by the limit
            return data[: e.start].decode("utf-8")
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start}); expected {expected}"
        ) from None


def clean_json(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become null, tuples lists, keys strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any, indent: Optional[int] = 1) -> None:
    """Write JSON through a temporary file and rename: readers never see half a file."""
    write_text_atomic(path, json.dumps(clean_json(obj), indent=indent))


def current_umask() -> int:
    """The process's umask: from /proc/self/status where Linux shows it, else by setting it and
    setting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(folder: Path) -> None:
    """Give a finished folder written through temporary names (mkdtemp makes it 0700, safetensors
    and mkstemp make files 0600) the modes a plain `open`/`mkdir` would have under the umask, so a
    shared filesystem's other users can read a study's checkpoints and caches."""
    mask = current_umask()
    folder = Path(folder)
    for p in [folder, *folder.rglob("*")]:
        if p.is_symlink():
            continue
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, fsync, rename (atomic on POSIX and NFS)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600: honour the umask, as open() does
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
