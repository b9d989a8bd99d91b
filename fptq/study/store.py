"""The results store: one row file per job, gathered on read.

    <results_dir>/rows/<job_key>.json     one finished job's flat row (what analysis/ reads)
    <results_dir>/layers/<job_key>.json   its per-layer quantization report (for the figures;
                                          legacy rows: layers/<run_id>.json)
    <results_dir>/results.jsonl           read-only legacy log (older stores, committed tables)

Why files and not one appended, locked JSONL: a study's jobs run on many nodes against a shared
filesystem, where `flock` may be missing (Lustre mounted without `-o flock`) or emulated (NFS), and
`O_APPEND` is not atomic on NFS, so concurrent appends can interleave or tear lines. Each job
instead writes its own file through a temporary name and `os.replace`, which is atomic on POSIX
filesystems and on NFS: a reader sees a whole row or none, writers never contend, and a rerun of
the same job replaces its row instead of adding a second one. A job that fails or is killed leaves
no row, so the next attempt of the sweep runs it again (`fptq.study.jobkey`).

Readers skip and report anything that is not a complete row (a torn legacy line, a foreign file).
"""

import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from fptq.files import clean_json, write_json_atomic, write_text_atomic
from fptq.study.row import Row

log = logging.getLogger(__name__)
STORE_NAME = "results.jsonl"  # the legacy single-file store, still read
ROWS = "rows"
LAYERS = "layers"


class StoreError(ValueError):
    """A results store that cannot take a job's row (said before the job's work)."""


class ResultStore:
    def __init__(self, results_dir: str):
        self.dir = Path(results_dir).expanduser()
        self.path = self.dir / STORE_NAME  # legacy
        self.rows_dir = self.dir / ROWS
        self.layers_dir = self.dir / LAYERS

    # ---- writing --------------------------------------------------------------------------------

    def check_writable(self, key: str) -> None:
        """Raise StoreError, before any work, if job `key`'s row or layer file cannot be written:
        something that is not a regular file (a folder, a FIFO) sits at its path, or a store folder
        is a file."""
        for d in (self.dir, self.rows_dir, self.layers_dir):
            if d.exists() and not d.is_dir():
                raise StoreError(f"{d} is not a folder: the results store needs it as one (move it away)")
        for f in (self.rows_dir / f"{key}.json", self.layers_dir / f"{key}.json"):
            if (f.exists() or f.is_symlink()) and not f.is_file():
                raise StoreError(
                    f"{f} is not a regular file, so this job's row cannot be written there: remove or "
                    "rename it, then run again"
                )

    def put(self, key: str, row: Row, layers: Optional[Dict[str, Any]] = None) -> Path:
        """Record job `key`'s row (replacing an earlier one), and its per-layer report if given.
        The layer report goes first, so a row on disk always has its layers beside it."""
        if layers is not None:
            write_json_atomic(self.layers_dir / f"{key}.json", layers, indent=None)
        f = self.rows_dir / f"{key}.json"
        write_json_atomic(f, dict(row.to_dict(), job_key=key), indent=None)
        return f

    # ---- reading --------------------------------------------------------------------------------

    def get(self, key: str) -> Optional[Row]:
        """Job `key`'s complete row, or None."""
        f = self.rows_dir / f"{key}.json"
        if not f.is_file():
            return None
        row, problem = _parse_row(_read(f))
        if problem:
            log.warning("%s: %s; the job will run again", f, problem)
            return None
        return row

    def layers(self, row: Row) -> Optional[Dict[str, Any]]:
        """A row's per-layer report: from the store, else from the run's output folder."""
        candidates = [self.layers_dir / f"{row.get(k)}.json" for k in ("job_key", "run_id") if row.get(k)]
        if row.get("output_dir"):
            candidates.append(Path(row["output_dir"]) / "quant_report.json")
        for f in candidates:
            if f.is_file():
                try:
                    return json.loads(f.read_text())
                except (OSError, json.JSONDecodeError) as e:
                    log.warning("%s: unreadable layer report (%s)", f, e)
        return None

    def read(self, report: Optional[List[str]] = None) -> List[Row]:
        """Every complete row: the legacy JSONL's, then one per row file (oldest first). Bad lines
        and files are skipped, logged, and appended to `report` if a list is given."""
        problems = report if report is not None else []
        rows = []
        for where, row, problem in self._scan():
            if problem:
                problems.append(f"{where}: {problem}; skipped")
                log.warning("%s: %s; skipped", where, problem)
            else:
                rows.append(row)
        return sorted(rows, key=lambda r: r.finished_at)

    def _scan(self) -> Iterator[Tuple[str, Optional[Row], Optional[str]]]:
        if self.path.is_file():
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for i, line in enumerate(f, 1):
                    if line.strip():
                        row, problem = _parse_row(line)
                        yield f"{self.path}:{i}", row, problem
        if self.rows_dir.is_dir():
            for p in sorted(self.rows_dir.glob("*.json")):
                if not p.is_file():
                    yield str(p), None, "not a regular file"
                    continue
                try:
                    text = _read(p)
                except OSError as e:
                    yield str(p), None, f"unreadable ({e.strerror or e})"
                    continue
                row, problem = _parse_row(text)
                yield str(p), row, problem


def _read(p: Path) -> str:
    return p.read_text(encoding="utf-8", errors="replace")


def _parse_row(text: str) -> Tuple[Optional[Row], Optional[str]]:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not a complete JSON row ({e.msg} at column {e.colno})"
    if not isinstance(row, dict) or "experiment" not in row or "scheme" not in row:
        return None, "not a results row (no experiment/scheme)"
    try:
        return Row.from_dict(row), None
    except (TypeError, ValueError, AttributeError) as e:
        return None, f"not a results row ({e})"


def write_jsonl(path: Path, rows: List[Row]) -> None:
    """A snapshot of rows as one JSONL file (written whole, atomically): for committing a study's
    rows beside its tables."""
    text = "".join(json.dumps(clean_json(r.to_dict()), sort_keys=True) + "\n" for r in rows)
    write_text_atomic(Path(path), text)
